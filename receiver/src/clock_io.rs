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

/// The CLOCK_MONOTONIC offset of a process's time namespace against the initial one, ns, from
/// `/proc/<pid>/timens_offsets` (`self` when `pid` is None); 0 where the file has no such line
/// (a kernel without time namespaces).
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
