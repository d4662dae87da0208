//! The NTP packet decoder (time requests and replies): any bytes decode or fail without
//! panicking, and what decodes re-encodes to bytes that decode the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wavesync_common::wire::ntp::NtpPacket;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = NtpPacket::decode(data) {
        let again = NtpPacket::decode(&p.encode()).expect("a re-encoded packet decodes");
        assert_eq!(p, again);
    }
});
