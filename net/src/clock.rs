//! This host's clocks: CLOCK_MONOTONIC (a program's local time, and the timeline of clock
//! domain `master`), CLOCK_REALTIME (what kernel receive stamps and the `system`/`ntp` domains
//! are in), and absolute sleeps on CLOCK_MONOTONIC.
//!
//! Every read is one vDSO call (no system call, no allocation, no lock): real-time safe.

use nix::sys::time::TimeSpec;
use nix::time::{clock_gettime, clock_nanosleep, ClockId, ClockNanosleepFlags};
use wavesync_common::time::{LocalNs, NS_PER_SEC};

/// A `timespec` in ns. The conversions are needed where `time_t` / `c_long` are 32 bits
/// (32-bit ARM) and are no-ops elsewhere.
#[allow(clippy::useless_conversion)]
pub(crate) fn timespec_ns(ts: &TimeSpec) -> i64 {
    i64::from(ts.tv_sec()) * NS_PER_SEC + i64::from(ts.tv_nsec())
}

fn read(id: ClockId) -> i64 {
    // clock_gettime cannot fail for these clock ids on Linux; 0 is a harmless fallback.
    clock_gettime(id).map(|t| timespec_ns(&t)).unwrap_or(0)
}

/// CLOCK_MONOTONIC in ns.
pub fn monotonic_ns() -> LocalNs {
    LocalNs::from_ns(read(ClockId::CLOCK_MONOTONIC))
}

/// CLOCK_REALTIME in ns.
pub fn realtime_ns() -> i64 {
    read(ClockId::CLOCK_REALTIME)
}

/// CLOCK_REALTIME minus CLOCK_MONOTONIC now, ns: the realtime read against the midpoint of two
/// monotonic reads around it.
pub fn realtime_minus_monotonic_ns() -> i64 {
    let m0 = monotonic_ns();
    let r = realtime_ns();
    let m1 = monotonic_ns();
    r - (m0 + (m1 - m0) / 2).ns()
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
    let ts = TimeSpec::from_duration(std::time::Duration::from_nanos(deadline.ns().max(0) as u64));
    // EINTR ends the sleep early, as documented; no other error is possible with these
    // arguments.
    let _ = clock_nanosleep(
        ClockId::CLOCK_MONOTONIC,
        ClockNanosleepFlags::TIMER_ABSTIME,
        &ts,
    );
}

/// The CLOCK_MONOTONIC offset of a process's time namespace against the initial one, ns, from
/// `/proc/<pid>/timens_offsets` (`self` when `pid` is None); 0 where the file has no such line,
/// or for `self` where there is no such file (a kernel without time namespaces).
pub fn timens_monotonic_offset_ns(pid: Option<u32>) -> std::io::Result<i64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/timens_offsets"),
        None => "/proc/self/timens_offsets".to_string(),
    };
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(parse_monotonic_offset_ns(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && pid.is_none() => Ok(0),
        Err(e) => Err(e),
    }
}

/// The `monotonic <s> <ns>` line of a `timens_offsets` text, in ns (0 if absent).
pub fn parse_monotonic_offset_ns(text: &str) -> i64 {
    text.lines()
        .find_map(|line| {
            let mut w = line.split_whitespace();
            if w.next()? != "monotonic" {
                return None;
            }
            let s: i64 = w.next()?.parse().ok()?;
            let ns: i64 = w.next()?.parse().ok()?;
            Some(s.saturating_mul(NS_PER_SEC).saturating_add(ns))
        })
        .unwrap_or(0)
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

    #[test]
    fn the_realtime_offset_matches_separate_reads() {
        let off = realtime_minus_monotonic_ns();
        let direct = realtime_ns() - monotonic_ns().ns();
        assert!((off - direct).abs() < 1_000_000, "{off} {direct}");
    }
}
