//! The NACK decoder (RTCP generic NACK): any bytes decode or fail without panicking; the lost
//! sequence numbers it lists are bounded by its entries, and re-encoded they decode to the
//! same set.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use wavesync_common::wire::nack::{self, Nack, MAX_ENTRIES, MAX_LEN};

fuzz_target!(|data: &[u8]| {
    if let Ok(n) = Nack::decode(data) {
        assert!((1..=MAX_ENTRIES).contains(&n.entry_count()));
        assert_eq!(n.entries().count(), n.entry_count());
        let lost: Vec<u16> = n.lost().collect();
        assert!(lost.len() <= 17 * n.entry_count());
        let mut out = [0u8; MAX_LEN];
        let e = nack::encode(n.sender_ssrc, n.media_ssrc, &lost, &mut out)
            .expect("a decoded NACK's list re-encodes");
        let again = Nack::decode(&out[..e.len]).expect("a re-encoded NACK decodes");
        assert_eq!(
            (again.sender_ssrc, again.media_ssrc),
            (n.sender_ssrc, n.media_ssrc)
        );
        let want: BTreeSet<u16> = lost[..e.consumed].iter().copied().collect();
        let got: BTreeSet<u16> = again.lost().collect();
        assert_eq!(want, got);
    }
});
