//! The audio packet decoder (RTP, play-time extension) and the datagram classifier: any bytes
//! decode or fail without panicking, and what decodes re-encodes to bytes that decode the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wavesync_common::wire::{classify, rtp::AudioPacket};

fuzz_target!(|data: &[u8]| {
    let _ = classify(data);
    if let Ok(p) = AudioPacket::decode(data) {
        let mut out = vec![0u8; p.encoded_len()];
        let n = p.encode(&mut out).expect("a decoded packet re-encodes");
        let again = AudioPacket::decode(&out[..n]).expect("a re-encoded packet decodes");
        assert_eq!(p, again);
    }
});
