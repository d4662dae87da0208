//! Nanosecond time on local clocks and on the shared timeline, and the 64-bit NTP format.
//!
//! Every time inside WaveSync is an `i64` count of nanoseconds. Two kinds must never be mixed:
//! [`LocalNs`] is this host's CLOCK_MONOTONIC; [`TimelineNs`] is the master's timeline (by default
//! the master's CLOCK_MONOTONIC, see [`crate::format::ClockDomain`]). The clock model
//! (`crate::clock`) is the only bridge between them.
//!
//! On the wire, timeline instants travel as 64-bit NTP-format timestamps (RFC 5905: 32 bits of
//! seconds, 32 bits of fraction), counted from the domain's epoch. The fraction's resolution
//! (0.23 ns) is finer than a nanosecond, so nanoseconds survive a round trip exactly.
//!
//! **The timeline's valid range** is one NTP era counted from the domain's epoch:
//! `0 <= t < TIMELINE_END_NS` (2^32 s, about 136 years). Every timeline instant that goes on
//! the wire must lie in it; [`ntp64_from_timeline`] refuses the others. Decoding cannot leave
//! it (the seconds field has 32 bits). A master's CLOCK_MONOTONIC is never negative, but it is
//! near zero on a host that booted seconds ago: the range starts at 0 so that such a master
//! works, and anything that shifts a timeline (a test, a clock domain) must keep it at or
//! above 0. The senders check where times enter ([`crate::sender::SenderCore::push_audio`]
//! and its time service) and count what they refuse; nothing is clamped silently.

/// Nanoseconds of this host's CLOCK_MONOTONIC.
pub type LocalNs = i64;
/// Nanoseconds on the master's timeline.
pub type TimelineNs = i64;

/// Nanoseconds in one second.
pub const NS_PER_SEC: i64 = 1_000_000_000;

/// The end (exclusive) of the timeline's valid range: 2^32 s, one NTP era.
pub const TIMELINE_END_NS: i64 = (1i64 << 32) * NS_PER_SEC;

/// Whether `t` lies in the timeline's valid range `[0, TIMELINE_END_NS)`.
pub fn timeline_in_range(t: TimelineNs) -> bool {
    (0..TIMELINE_END_NS).contains(&t)
}

/// A timeline instant outside `[0, TIMELINE_END_NS)`: it cannot be put on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "timeline time {t_ns} ns is outside the valid range 0..2^32 s (a clock or offset that puts \
     the timeline before its epoch or more than 136 years after it)"
)]
pub struct OutOfTimeline {
    /// The refused instant, ns.
    pub t_ns: i64,
}

/// Encodes a timeline instant as a 64-bit NTP timestamp, or refuses one outside the valid
/// range (where [`ntp64_from_ns`] would clamp or wrap it).
pub fn ntp64_from_timeline(t: TimelineNs) -> Result<u64, OutOfTimeline> {
    if timeline_in_range(t) {
        Ok(ntp64_from_ns(t))
    } else {
        Err(OutOfTimeline { t_ns: t })
    }
}

/// Encodes nanoseconds since the epoch as a 64-bit NTP timestamp (seconds.fraction), rounding
/// the fraction to nearest. Negative inputs clamp to 0; inputs beyond 2^32 s wrap the seconds
/// field as NTP eras do. For timeline instants use [`ntp64_from_timeline`], which refuses
/// those instead; this one is for opaque values (a client's own transmit stamp, echoed back).
pub fn ntp64_from_ns(ns: i64) -> u64 {
    let ns = ns.max(0) as u64;
    let secs = ns / NS_PER_SEC as u64;
    let sub = ns % NS_PER_SEC as u64;
    let frac = ((sub << 32) + NS_PER_SEC as u64 / 2) / NS_PER_SEC as u64;
    // `frac` can round up to exactly 2^32 only for sub >= 999_999_999.88 ns, impossible for
    // integer nanoseconds, so it always fits in 32 bits.
    (secs << 32).wrapping_add(frac)
}

/// Decodes a 64-bit NTP timestamp to nanoseconds since the epoch, rounding to nearest.
pub fn ns_from_ntp64(ntp: u64) -> i64 {
    let secs = ntp >> 32;
    let frac = ntp & 0xffff_ffff;
    // Rounding to nearest could carry a fraction just under 1 s into the next second (and the
    // last one of the era out of the valid range); no integer nanosecond encodes that high, so
    // capping keeps every round trip exact and every result below [`TIMELINE_END_NS`].
    let sub = ((frac * NS_PER_SEC as u64 + (1 << 31)) >> 32).min(NS_PER_SEC as u64 - 1);
    (secs * NS_PER_SEC as u64 + sub) as i64
}

/// Converts a duration in frames at `rate` Hz to nanoseconds (exact to the nearest ns).
pub fn frames_to_ns(frames: i64, rate: u32) -> i64 {
    ((frames as i128 * NS_PER_SEC as i128) / rate as i128) as i64
}

/// Converts a duration in nanoseconds to (fractional) frames at `rate` Hz.
pub fn ns_to_frames_f64(ns: i64, rate: u32) -> f64 {
    ns as f64 * rate as f64 / NS_PER_SEC as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_values() {
        assert_eq!(ntp64_from_ns(0), 0);
        assert_eq!(ntp64_from_ns(NS_PER_SEC), 1 << 32);
        assert_eq!(ntp64_from_ns(NS_PER_SEC / 2), 1 << 31);
        assert_eq!(ns_from_ntp64(3 << 31), 3 * NS_PER_SEC / 2);
        assert_eq!(ntp64_from_ns(-5), 0);
        assert_eq!(frames_to_ns(48_000, 48_000), NS_PER_SEC);
        assert_eq!(frames_to_ns(1, 48_000), 20_833);
    }

    #[test]
    fn the_timeline_range_is_one_era_from_zero() {
        assert_eq!(ntp64_from_timeline(0), Ok(0));
        assert_eq!(
            ntp64_from_timeline(TIMELINE_END_NS - 1).map(ns_from_ntp64),
            Ok(TIMELINE_END_NS - 1)
        );
        assert_eq!(ntp64_from_timeline(-1), Err(OutOfTimeline { t_ns: -1 }));
        assert!(ntp64_from_timeline(TIMELINE_END_NS).is_err());
        // Everything a decoder can produce is in range.
        assert!(timeline_in_range(ns_from_ntp64(u64::MAX)));
        assert!(timeline_in_range(ns_from_ntp64(0)));
    }

    proptest! {
        #[test]
        fn ns_round_trip_is_exact(ns in 0i64..(1i64 << 32) * NS_PER_SEC / 2) {
            prop_assert_eq!(ns_from_ntp64(ntp64_from_ns(ns)), ns);
        }

        #[test]
        fn every_ntp_timestamp_decodes_into_the_timeline_range(ntp in any::<u64>()) {
            prop_assert!(timeline_in_range(ns_from_ntp64(ntp)));
        }

        #[test]
        fn ntp_encoding_is_monotonic(a in 0i64..4_000_000_000_000_000_000, d in 0i64..1_000_000) {
            prop_assert!(ntp64_from_ns(a) <= ntp64_from_ns(a + d));
        }
    }
}
