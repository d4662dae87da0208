//! The status message decoder (RTCP APP "WSYN"): any bytes decode or fail without panicking,
//! and what decodes re-encodes to bytes that decode the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wavesync_common::wire::status::{Status, MAX_LEN};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = Status::decode(data) {
        let mut out = [0u8; MAX_LEN];
        let n = s.encode(&mut out).expect("a decoded status re-encodes");
        let again = Status::decode(&out[..n]).expect("a re-encoded status decodes");
        assert_eq!(s, again);
    }
});
