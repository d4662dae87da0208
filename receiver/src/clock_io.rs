//! Reading this host's clocks.

use nix::time::{clock_gettime, ClockId};
use wavesync_common::time::{LocalNs, NS_PER_SEC};

fn read(id: ClockId) -> i64 {
    // clock_gettime cannot fail for these clock ids on Linux; 0 is a harmless fallback.
    clock_gettime(id)
        .map(|t| t.tv_sec() * NS_PER_SEC + t.tv_nsec())
        .unwrap_or(0)
}

/// CLOCK_MONOTONIC in ns: the receiver's local clock.
pub fn monotonic_ns() -> LocalNs {
    read(ClockId::CLOCK_MONOTONIC)
}

/// CLOCK_REALTIME in ns.
pub fn realtime_ns() -> i64 {
    read(ClockId::CLOCK_REALTIME)
}

/// Maps a CLOCK_REALTIME instant from the recent past (a kernel receive stamp) to
/// CLOCK_MONOTONIC by the clocks' present difference.
pub fn realtime_to_monotonic(real: i64) -> LocalNs {
    let mono = monotonic_ns();
    let now_real = realtime_ns();
    mono - (now_real - real)
}
