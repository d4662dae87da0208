//! This host's clocks: CLOCK_MONOTONIC (the timeline of clock domain `master`), CLOCK_REALTIME
//! (what kernel receive stamps are in), and absolute sleeps on CLOCK_MONOTONIC.

use wavesync_common::time::{LocalNs, NS_PER_SEC};

// The casts are needed where time_t / c_long are 32 bits (32-bit ARM).
#[allow(clippy::unnecessary_cast)]
fn read(id: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass; these clock ids always exist on
    // Linux, so it cannot fail (0 would be a harmless fallback).
    let rc = unsafe { libc::clock_gettime(id, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as i64 * NS_PER_SEC + ts.tv_nsec as i64
}

/// CLOCK_MONOTONIC in ns: the sender's timeline.
pub fn monotonic_ns() -> LocalNs {
    read(libc::CLOCK_MONOTONIC)
}

/// CLOCK_REALTIME in ns.
pub fn realtime_ns() -> i64 {
    read(libc::CLOCK_REALTIME)
}

/// Maps a CLOCK_REALTIME instant of the recent past (a kernel receive stamp) to
/// CLOCK_MONOTONIC by the clocks' present difference: `mono_now - (real_now - real)`.
pub fn realtime_to_monotonic(real: i64) -> LocalNs {
    let mono = monotonic_ns();
    let now_real = realtime_ns();
    mono - (now_real - real)
}

/// Sleeps until CLOCK_MONOTONIC reads `deadline` (returns at once if it already has). A signal
/// may end the sleep early; callers loop on their own condition.
pub fn sleep_until(deadline: LocalNs) {
    if deadline <= monotonic_ns() {
        return;
    }
    let ts = libc::timespec {
        tv_sec: (deadline / NS_PER_SEC) as libc::time_t,
        tv_nsec: (deadline % NS_PER_SEC) as libc::c_long,
    };
    // SAFETY: clock_nanosleep reads the timespec we pass; with TIMER_ABSTIME the remaining-time
    // pointer is unused and may be null.
    unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts,
            std::ptr::null_mut(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep_until_reaches_its_deadline() {
        let deadline = monotonic_ns() + 3_000_000;
        sleep_until(deadline);
        assert!(monotonic_ns() >= deadline);
    }

    #[test]
    fn a_realtime_instant_maps_to_the_matching_monotonic_instant() {
        let real = realtime_ns() - 5_000_000;
        let mono = monotonic_ns();
        let mapped = realtime_to_monotonic(real);
        // 5 ms ago, give or take the time between the reads.
        assert!(
            (mono - 5_000_000 - mapped).abs() < 1_000_000,
            "{mapped} {mono}"
        );
    }
}
