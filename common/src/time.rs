//! Nanosecond time on local clocks and on the shared timeline, and the 64-bit NTP format.
//!
//! Every time inside WaveSync is a count of nanoseconds in an `i64`, of one of two kinds that
//! must never be mixed, and the compiler keeps them apart:
//!
//! - [`LocalNs`] is an instant of this host's CLOCK_MONOTONIC;
//! - [`TimelineNs`] is an instant of the master's timeline (by default the master's
//!   CLOCK_MONOTONIC, see [`crate::format::ClockDomain`]).
//!
//! Both are newtypes over `i64` with the same small arithmetic: an instant plus or minus a
//! duration (a plain `i64` of nanoseconds) is an instant of the same kind, the difference of
//! two instants of one kind is a duration, and instants never add. Durations stay plain `i64`.
//! [`LocalNs::ns`] / [`TimelineNs::ns`] and `from_ns` open and close the box where a raw count
//! is needed (a syscall, a log line, a test constant).
//!
//! Only two bridges lead from one kind to the other:
//!
//! - the clock model: [`crate::clock::ClockEstimate::to_timeline`] and
//!   [`crate::clock::ClockEstimate::to_local`], which is how a receiver reads the timeline;
//! - [`TimelineNs::from_master_monotonic`], the identity that holds only on the master itself
//!   in clock domain `master`, where the timeline *is* the master's CLOCK_MONOTONIC (the
//!   engine's clock, the sender's and the PipeWire module's capture times). Every use of it
//!   names that assumption.
//!
//! In clock domains `system` and `ntp` the timeline is UTC counted from the Unix epoch
//! (1970-01-01), as CLOCK_REALTIME counts it: in `system` it is this host's CLOCK_REALTIME,
//! read as a raw count and boxed with [`TimelineNs::from_ns`] where it is declared to be the
//! timeline; in `ntp` it is an NTP server's clock, whose answers count from 1900 and are
//! moved to the Unix epoch by [`utc_timeline_from_ntp64`]. Counted from 1970 the UTC timeline
//! stays inside the valid range until 2106 (counted from 1900, as NTP does, it would leave it
//! in February 2036), and the two domains share one timeline.
//!
//! On the wire, timeline instants travel as 64-bit NTP-format timestamps (RFC 5905: 32 bits of
//! seconds, 32 bits of fraction), counted from the domain's epoch ([`ntp64_from_timeline`],
//! [`timeline_from_ntp64`]). The fraction's resolution (0.23 ns) is finer than a nanosecond, so
//! nanoseconds survive a round trip exactly. A time client's own transmit stamp (T1, a
//! [`LocalNs`]) also travels in that format, but only to be echoed back: it is encoded and
//! decoded as an opaque count ([`ntp64_from_ns`], [`ns_from_ntp64`]), never read as a timeline
//! instant.
//!
//! **The timeline's valid range** is one NTP era counted from the domain's epoch:
//! `0 <= t < TIMELINE_END_NS` (2^32 s, about 136 years). Every timeline instant that goes on
//! the wire must lie in it; [`ntp64_from_timeline`] refuses the others. Decoding cannot leave
//! it (the seconds field has 32 bits). A master's CLOCK_MONOTONIC is never negative, but it is
//! near zero on a host that booted seconds ago: the range starts at 0 so that such a master
//! works, and anything that shifts a timeline (a test, a clock domain) must keep it at or
//! above 0. The senders check where times enter ([`crate::sender::SenderCore::push_audio`]
//! and its time service) and count what they refuse; nothing is clamped silently.

use std::ops::{Add, AddAssign, Sub, SubAssign};

/// Defines an instant type: a newtype over `i64` nanoseconds with instant arithmetic.
macro_rules! instant {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(i64);

        impl $name {
            /// The earliest representable instant.
            pub const MIN: Self = Self(i64::MIN);
            /// The latest representable instant.
            pub const MAX: Self = Self(i64::MAX);

            /// The instant `ns` nanoseconds after this clock's zero.
            pub const fn from_ns(ns: i64) -> Self {
                Self(ns)
            }

            /// Nanoseconds since this clock's zero.
            pub const fn ns(self) -> i64 {
                self.0
            }

            /// This instant plus a duration in ns, saturating at the ends of the range.
            pub const fn saturating_add(self, d: i64) -> Self {
                Self(self.0.saturating_add(d))
            }

            /// This instant minus a duration in ns, saturating at the ends of the range.
            pub const fn saturating_sub(self, d: i64) -> Self {
                Self(self.0.saturating_sub(d))
            }
        }

        impl Add<i64> for $name {
            type Output = Self;
            fn add(self, d: i64) -> Self {
                Self(self.0 + d)
            }
        }

        impl Sub<i64> for $name {
            type Output = Self;
            fn sub(self, d: i64) -> Self {
                Self(self.0 - d)
            }
        }

        impl AddAssign<i64> for $name {
            fn add_assign(&mut self, d: i64) {
                self.0 += d;
            }
        }

        impl SubAssign<i64> for $name {
            fn sub_assign(&mut self, d: i64) {
                self.0 -= d;
            }
        }

        /// Formats the raw count of nanoseconds, as logs and tests print times.
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Display::fmt(&self.0, f)
            }
        }

        /// The duration between two instants, in ns.
        impl Sub for $name {
            type Output = i64;
            fn sub(self, earlier: Self) -> i64 {
                self.0 - earlier.0
            }
        }
    };
}

instant! {
    /// An instant of this host's CLOCK_MONOTONIC, in nanoseconds. Never mixed with a
    /// [`TimelineNs`]: the clock model converts between them.
    LocalNs
}

instant! {
    /// An instant of the master's timeline, in nanoseconds. Never mixed with a [`LocalNs`]:
    /// the clock model converts between them.
    TimelineNs
}

impl TimelineNs {
    /// The timeline instant that is `t` on the master's own CLOCK_MONOTONIC.
    ///
    /// Valid **only in clock domain `master`, on the master itself**, where the timeline is by
    /// definition the master's CLOCK_MONOTONIC. Anywhere else (a receiver, another clock
    /// domain) the two differ and only the clock model converts.
    pub const fn from_master_monotonic(t: LocalNs) -> Self {
        Self(t.ns())
    }
}

/// Nanoseconds in one second.
pub const NS_PER_SEC: i64 = 1_000_000_000;

/// The end (exclusive) of the timeline's valid range: 2^32 s, one NTP era.
pub const TIMELINE_END_NS: i64 = (1i64 << 32) * NS_PER_SEC;

/// Whether `t` lies in the timeline's valid range `[0, TIMELINE_END_NS)`.
pub fn timeline_in_range(t: TimelineNs) -> bool {
    (0..TIMELINE_END_NS).contains(&t.ns())
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
        Ok(ntp64_from_ns(t.ns()))
    } else {
        Err(OutOfTimeline { t_ns: t.ns() })
    }
}

/// Decodes a 64-bit NTP timestamp as a timeline instant (always in the valid range).
pub fn timeline_from_ntp64(ntp: u64) -> TimelineNs {
    TimelineNs::from_ns(ns_from_ntp64(ntp))
}

/// Seconds from the NTP epoch (1900-01-01 UTC) to the Unix epoch (1970-01-01 UTC).
pub const NTP_TO_UNIX_S: u32 = 2_208_988_800;

/// Decodes an NTP server's UTC timestamp (seconds since 1900, RFC 5905) as an instant of the
/// UTC timeline of clock domains `ntp` and `system`, which counts from the Unix epoch
/// (1970-01-01 UTC, as CLOCK_REALTIME does). The era is taken to be the one that puts the
/// instant between 1970 and 2106 (the seconds are subtracted modulo 2^32), so the NTP era
/// change of February 2036 passes unnoticed; the result is always in the timeline's range.
pub fn utc_timeline_from_ntp64(ntp: u64) -> TimelineNs {
    let secs = ((ntp >> 32) as u32).wrapping_sub(NTP_TO_UNIX_S) as u64;
    timeline_from_ntp64((secs << 32) | (ntp & 0xffff_ffff))
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

/// Decodes a 64-bit NTP timestamp to nanoseconds since the epoch, rounding to nearest. For
/// timeline instants use [`timeline_from_ntp64`]; this one is for opaque values.
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
        let t = TimelineNs::from_ns;
        assert_eq!(ntp64_from_timeline(t(0)), Ok(0));
        assert_eq!(
            ntp64_from_timeline(t(TIMELINE_END_NS - 1)).map(timeline_from_ntp64),
            Ok(t(TIMELINE_END_NS - 1))
        );
        assert_eq!(ntp64_from_timeline(t(-1)), Err(OutOfTimeline { t_ns: -1 }));
        assert!(ntp64_from_timeline(t(TIMELINE_END_NS)).is_err());
        // Everything a decoder can produce is in range.
        assert!(timeline_in_range(timeline_from_ntp64(u64::MAX)));
        assert!(timeline_in_range(timeline_from_ntp64(0)));
    }

    #[test]
    fn utc_from_an_ntp_server_counts_from_1970_across_the_2036_era_change() {
        // 2026-12-07 00:00:00 UTC: 1796601600 s after 1970.
        let unix = 1_796_601_600u64;
        let ntp = (unix + NTP_TO_UNIX_S as u64) << 32 | (1 << 31);
        assert_eq!(
            utc_timeline_from_ntp64(ntp),
            TimelineNs::from_ns(unix as i64 * NS_PER_SEC + NS_PER_SEC / 2)
        );
        // 2036-02-07 06:28:16 UTC is second 0 of NTP era 1: 2^32 - 2208988800 s after 1970.
        let era1 = (1u64 << 32) - NTP_TO_UNIX_S as u64;
        assert_eq!(
            utc_timeline_from_ntp64(5 << 32),
            TimelineNs::from_ns((era1 + 5) as i64 * NS_PER_SEC)
        );
        assert_eq!(
            utc_timeline_from_ntp64((NTP_TO_UNIX_S as u64) << 32),
            TimelineNs::from_ns(0)
        );
    }

    proptest! {
        #[test]
        fn ns_round_trip_is_exact(ns in 0i64..(1i64 << 32) * NS_PER_SEC / 2) {
            prop_assert_eq!(ns_from_ntp64(ntp64_from_ns(ns)), ns);
        }

        #[test]
        fn every_ntp_timestamp_decodes_into_the_timeline_range(ntp in any::<u64>()) {
            prop_assert!(timeline_in_range(timeline_from_ntp64(ntp)));
        }

        #[test]
        fn ntp_encoding_is_monotonic(a in 0i64..4_000_000_000_000_000_000, d in 0i64..1_000_000) {
            prop_assert!(ntp64_from_ns(a) <= ntp64_from_ns(a + d));
        }
    }
}
