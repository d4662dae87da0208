//! The protection layer (common/src/protect.rs). The first byte picks what the rest is:
//! - even: a datagram off the network, opened with the test key: it must be refused or, if it
//!   opens (only inputs sealed with that key can), give a body the decoders take without panic,
//!   and never open twice (replay);
//! - odd: a message to seal (bit 1: encrypt): it must open again to exactly itself, and the
//!   sealed datagram with any one byte changed (chosen by the message) must be refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wavesync_common::protect::{Key, Opener, Sealer, OVERHEAD};
use wavesync_common::time::LocalNs;
use wavesync_common::wire::{
    classify, nack::Nack, ntp::NtpPacket, rtp::AudioPacket, status::Status,
};

/// The key of the seed corpus (fuzz/corpus/protect/).
const KEY: [u8; 32] = [7; 32];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let key = Key::from_bytes(&KEY);
    if mode & 1 == 0 {
        let mut buf = rest.to_vec();
        let mut opener = Opener::new(key);
        if let Ok(n) = opener.open(LocalNs::from_ns(0), &mut buf) {
            assert_eq!(n + OVERHEAD, rest.len());
            let body = &buf[..n];
            let _ = classify(body);
            let _ = AudioPacket::decode(body);
            let _ = Status::decode(body);
            let _ = NtpPacket::decode(body);
            let _ = Nack::decode(body);
            let mut again = rest.to_vec();
            assert!(
                opener.open(LocalNs::from_ns(0), &mut again).is_err(),
                "a replay opened"
            );
        }
    } else {
        let mut buf = vec![0u8; rest.len() + OVERHEAD];
        buf[..rest.len()].copy_from_slice(rest);
        let salt = rest.iter().fold(0u64, |h, &b| h.rotate_left(5) ^ b as u64);
        let mut sealer = Sealer::new(key.clone(), salt, mode & 2 != 0);
        let Ok(m) = sealer.seal(&mut buf, rest.len()) else {
            assert!(rest.len() > u16::MAX as usize);
            return;
        };
        let mut tampered = buf.clone();
        let mut opener = Opener::new(key);
        assert_eq!(
            opener.open(LocalNs::from_ns(0), &mut buf[..m]),
            Ok(rest.len())
        );
        assert_eq!(&buf[..rest.len()], rest);
        let at = salt as usize % m;
        tampered[at] ^= (mode >> 2).max(1);
        assert!(Opener::new(Key::from_bytes(&KEY))
            .open(LocalNs::from_ns(0), &mut tampered[..m])
            .is_err());
    }
});
