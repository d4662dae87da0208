//! From the graph's clock to the timeline: the capture time of a block of audio.
//!
//! In the process callback, `pw_stream_get_time_n` reports `now`: the driver's time of the
//! current graph cycle, in CLOCK_MONOTONIC nanoseconds. The block the sink receives in that
//! cycle is the audio the graph produced for that instant, so `now` is the capture time of its
//! first frame. The sender engine adds the latency and counts frames from there.
//!
//! The timeline is the master's CLOCK_MONOTONIC in the `master` domain (identity), and
//! CLOCK_REALTIME in the `system` and `ntp` domains (this host's UTC, disciplined by NTP/PTP):
//! there the offset REALTIME - MONOTONIC is read at each block, three vDSO clock reads, which
//! is real-time safe.

use wavesync_common::format::ClockDomain;
use wavesync_common::time::{LocalNs, TimelineNs};
use wavesync_net::clock;

/// Maps graph (CLOCK_MONOTONIC) times to timeline times for one clock domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimelineMap {
    domain: ClockDomain,
}

impl TimelineMap {
    /// A map for `domain`.
    pub fn new(domain: ClockDomain) -> Self {
        TimelineMap { domain }
    }

    /// The timeline time of graph time `graph_now` (CLOCK_MONOTONIC ns). Real-time safe.
    pub fn to_timeline(&self, graph_now: LocalNs) -> TimelineNs {
        match self.domain {
            // On the master itself, by definition of the domain.
            ClockDomain::Master => TimelineNs::from_master_monotonic(graph_now),
            // The timeline is this host's CLOCK_REALTIME, in ns.
            ClockDomain::Ntp | ClockDomain::System => {
                TimelineNs::from_ns(graph_now.ns() + clock::realtime_minus_monotonic_ns())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_is_identity() {
        let m = TimelineMap::new(ClockDomain::Master);
        assert_eq!(
            m.to_timeline(LocalNs::from_ns(123_456_789)),
            TimelineNs::from_ns(123_456_789)
        );
    }

    #[test]
    fn system_adds_the_realtime_offset() {
        let m = TimelineMap::new(ClockDomain::System);
        let mono = clock::monotonic_ns();
        let real = clock::realtime_ns();
        let mapped = m.to_timeline(mono);
        // The offset is read a few microseconds after our own reads.
        assert!(
            (mapped.ns() - real).abs() < 50_000_000,
            "{mapped} vs {real}"
        );
    }
}
