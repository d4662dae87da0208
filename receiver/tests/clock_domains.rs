//! Clock domains on the real daemon.
//!
//! - A receiver told to read an NTP server (`--ntp HOST`), against a stream in clock domain
//!   `master`: it must say so at once, once, in its log and its status, ask that server
//!   nothing, ask the master for nothing, and play nothing. (It used to lock onto UTC, apply
//!   it to the master's monotonic stamps and count every packet late, silently.)
//! - A stream in clock domain `system` (stamped on CLOCK_REALTIME), a receiver with the
//!   default `--clock auto` in a time namespace whose CLOCK_MONOTONIC is hours off: it plays
//!   on CLOCK_REALTIME without a single time query, every frame within 1 ms of its stamp
//!   (measured against what the sender stamped; the locked figures are tens of us).

mod support;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use support::*;
use wavesync_common::format::ClockDomain;
use wavesync_receiver::clock_io::realtime_ns;

/// Largest absolute sync error that counts as "in sync", us (robust on a loaded machine).
const BOUND_US: f64 = 1000.0;

#[test]
fn an_ntp_receiver_refuses_a_master_stream_at_once_and_plays_nothing() {
    let scratch = Scratch::new("clock-mismatch");
    let g = group(11);
    // An NTP server that counts what it is asked (and never answers).
    let ntp = UdpSocket::bind("127.0.0.1:0").expect("bind the NTP stand-in");
    ntp.set_nonblocking(true).expect("non-blocking");
    let ntp_addr = ntp.local_addr().expect("address").to_string();
    let sender = TestSender::start(g, 120, 0);
    let started = Instant::now();
    let mut rx = spawn_receiver(
        None,
        &rx_args(g, &scratch, "rx", 0, 5.0, &["--ntp", &ntp_addr]),
        &scratch.path("rx.err"),
    );
    // The status says why within 2 s (a status message a second, published every 200 ms).
    let mut problem = None;
    while started.elapsed() < Duration::from_secs(4) && problem.is_none() {
        std::thread::sleep(Duration::from_millis(100));
        problem = read_status(&scratch.path("rx.sock")).and_then(|s| s.clock_problem);
    }
    let seen_after = started.elapsed();
    let text = finish(&mut rx, &scratch.path("rx.err"), Duration::from_secs(15));
    let stats = sender.stop();
    eprintln!("{text}\nstatus after {seen_after:?}: {problem:?}");
    let problem = problem.expect("the status names the clock problem");
    assert!(
        seen_after < Duration::from_secs(3),
        "said at once: {seen_after:?}"
    );
    for said in [&problem, &text] {
        assert!(
            said.contains("clock domain master")
                && said.contains(&format!("NTP server {ntp_addr}"))
                && said.contains("nothing plays")
                && said.contains("--clock auto"),
            "{said}"
        );
    }
    assert_eq!(
        text.matches("wrong clock for this stream").count(),
        1,
        "logged once:\n{text}"
    );
    assert!(!text.contains("clock locked"), "{text}");
    assert!(!text.contains("no clock of the master"), "{text}");
    let mut buf = [0u8; 64];
    let asked = std::iter::from_fn(|| ntp.recv_from(&mut buf).ok()).count();
    assert_eq!(
        asked, 0,
        "the NTP server of a mismatched receiver is not asked"
    );
    assert_eq!(
        stats.core.ntp_replies + stats.core.ntp_dropped,
        0,
        "nor the master's time service"
    );
    assert_eq!(stats.core.nacks_received, 0, "nor are resends asked for");
    let played = played_frames(&read_log(&scratch.path("rx.log")));
    assert_eq!(played, 0, "nothing played at a wrong time");
}

#[test]
fn a_system_domain_stream_plays_on_the_realtime_clock_without_time_queries() {
    assert!(
        can_unshare_time(),
        "this test needs time namespaces (run as root, as CI does)"
    );
    let scratch = Scratch::new("clock-system");
    let g = group(12);
    // The master's timeline is CLOCK_REALTIME: its monotonic clock plus their difference.
    let sender = TestSender::with(
        g,
        SenderOpts {
            latency_ms: 120,
            clock_domain: ClockDomain::System,
            timeline_offset_ns: real_minus_mono(),
            ..SenderOpts::default()
        },
    );
    let start = realtime_ns();
    // CLOCK_MONOTONIC 3 h off the master's: only CLOCK_REALTIME is shared.
    let mut rx = spawn_receiver(
        Some(3 * 3600),
        &rx_args(g, &scratch, "rx", 60, 7.0, &[]),
        &scratch.path("rx.err"),
    );
    let text = finish(&mut rx, &scratch.path("rx.err"), Duration::from_secs(20));
    let end = realtime_ns();
    let sent = sender.sent();
    let stats = sender.stop();
    eprintln!("{text}");
    assert!(text.contains("clock system"), "{text}");
    assert!(!text.contains("wrong clock"), "{text}");
    assert_eq!(
        stats.core.ntp_replies + stats.core.ntp_dropped,
        0,
        "no time queries in `system`"
    );
    let log = read_log(&scratch.path("rx.log"));
    let errors = sync_errors(&log, &sent, 48_000.0, real_minus_mono(), start, end);
    let Some(at) = settled_at(&errors, BOUND_US) else {
        panic!("never in sync: {errors:?}");
    };
    let mut after: Vec<f64> = errors
        .iter()
        .filter(|e| e.0 >= at)
        .map(|e| e.1.abs())
        .collect();
    let in_sync_s = (end - at) as f64 / 1e9;
    let (p50, p99, max) = percentiles(&mut after);
    eprintln!(
        "system domain: in sync {:.2} s after start, then {} writes: |error| p50 {p50:.1} us, \
         p99 {p99:.1} us, max {max:.1} us",
        (at - start) as f64 / 1e9,
        after.len()
    );
    assert!(
        in_sync_s > 4.0,
        "in sync for the last {in_sync_s:.1} s of a 7 s run"
    );
}
