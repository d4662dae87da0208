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
//! - The real programs, in a network namespace of their own (loopback only), the receiver in a
//!   shifted time namespace with its default `--clock auto`: `wavesync-sender --clock system`,
//!   and `wavesync-sender --clock ntp --ntp 127.0.0.1:PORT` against a chronyd of the test's
//!   own (its own config, pid and drift files in a scratch directory, an unprivileged port,
//!   `-x`: it never touches a clock) serving this host's CLOCK_REALTIME. The receiver must play
//!   and report a small sync error; in `ntp` it must have read the server the stream names.

#[path = "../../test-support/skip.rs"]
mod skip;
mod support;

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Stdio};
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

/// Runs `script` under `unshare -n` (a loopback-only network namespace with multicast routed to
/// `lo`) with `args` as $1.., for at most 30 s; while it runs, reads the receiver's status
/// socket `sock` once it has played for a while. Returns the script's output (both programs'
/// logs) and that status.
fn run_in_netns(
    script: &str,
    args: &[&Path],
    sock: &Path,
    scratch: &Scratch,
) -> (String, Option<wavesync_receiver::status::StatusReport>) {
    let out = std::fs::File::create(scratch.path("run.log")).expect("log file");
    let err = out.try_clone().expect("log file");
    let full = format!("set -e\nip link set lo up\nip route add 224.0.0.0/4 dev lo\n{script}");
    let mut child = Command::new("unshare")
        .args(["-n", "bash", "-c", &full, "netns"])
        .args(args)
        .env("STATE_DIRECTORY", &scratch.0)
        .env("RUST_LOG", "info")
        .stdout(out)
        .stderr(err)
        .stdin(Stdio::null())
        .spawn()
        .expect("run unshare (util-linux)");
    let start = Instant::now();
    let mut status = None;
    let mut finished = false;
    while start.elapsed() < Duration::from_secs(30) {
        if let Ok(Some(_)) = child.try_wait() {
            finished = true;
            break;
        }
        // The last snapshot before the receiver stops (its run is 9 s).
        if start.elapsed() > Duration::from_secs(6) {
            if let Some(s) = read_status(sock) {
                status = Some(s);
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    if !finished {
        let _ = child.kill();
    }
    let exit = child.wait().ok().filter(|_| finished);
    let text = std::fs::read_to_string(scratch.path("run.log")).unwrap_or_default();
    assert!(
        exit.is_some_and(|s| s.success()),
        "the namespace run failed ({exit:?}; needs root for unshare -n and --time):\n{text}"
    );
    (text, status)
}

/// What a receiver that played a real sender's stream must show.
fn assert_played_in_sync(
    what: &str,
    text: &str,
    status: Option<wavesync_receiver::status::StatusReport>,
    log: &Path,
) -> wavesync_receiver::status::StatusReport {
    let s = status.unwrap_or_else(|| panic!("[{what}] no status read:\n{text}"));
    let played = played_frames(&read_log(log));
    let sync = s.sync_error_us.unwrap_or(f64::NAN);
    eprintln!(
        "[{what}] played {:.2} s of audio; status: sync error {sync:+.1} us, clock offset \
         {:+.6} s, {} time queries ({} answered)",
        played as f64 / 48_000.0,
        s.clock_offset_s,
        s.time_queries,
        s.time_answered
    );
    assert!(!text.contains("wrong clock"), "[{what}]\n{text}");
    assert!(
        played >= 4 * 48_000,
        "[{what}] played only {played} frames:\n{text}"
    );
    assert!(
        s.state == "playing" && s.clock_locked,
        "[{what}] {s:?}\n{text}"
    );
    assert!(
        sync.abs() < BOUND_US,
        "[{what}] sync error {sync} us:\n{text}"
    );
    assert_eq!(s.late, 0, "[{what}] {s:?}");
    s
}

#[test]
fn the_real_sender_in_clock_domain_system_plays_on_a_receiver_with_default_options() {
    if !can_unshare_time() {
        skip::skip_or_fail("no time namespaces here (run as root, as CI does)");
        return;
    }
    let (sender, receiver) = sender_and_receiver();
    let scratch = Scratch::new("clock-system-real");
    let (log, sock) = (scratch.path("dac.log"), scratch.path("status.sock"));
    let script = r#"
        "$1" --input tone:440 --clock system --duration 11 &
        tx=$!
        unshare --time --monotonic 10800 --boottime 10800 "$2" --output virtual \
            --virtual-ppm 40 --virtual-log "$3" --status-socket "$4" --status-interval 1 \
            --duration 9
        wait $tx
    "#;
    let (text, status) = run_in_netns(script, &[&sender, &receiver, &log, &sock], &sock, &scratch);
    assert!(text.contains("clock domain system"), "{text}");
    assert!(text.contains("clock system"), "{text}");
    let s = assert_played_in_sync("system", &text, status, &log);
    assert_eq!(s.time_queries, 0, "no time queries in `system`");
}

#[test]
fn the_real_sender_in_clock_domain_ntp_reads_a_real_ntp_server_and_so_do_receivers() {
    let Some(chronyd) = ["/usr/sbin/chronyd", "/sbin/chronyd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        skip::skip_or_fail("chronyd is not installed (apt-get install chrony; scripts/setup)");
        return;
    };
    if !can_unshare_time() {
        skip::skip_or_fail("no time namespaces here (run as root, as CI does)");
        return;
    }
    let (sender, receiver) = sender_and_receiver();
    let scratch = Scratch::new("clock-ntp-real");
    let (log, sock) = (scratch.path("dac.log"), scratch.path("status.sock"));
    // The recipe of docs/timing.md: a private chronyd, nothing shared with a host daemon.
    let conf = scratch.path("chrony.conf");
    std::fs::write(
        &conf,
        format!(
            "port 11123\nbindaddress 127.0.0.1\nallow 127.0.0.1\nlocal stratum 8\ncmdport 0\n\
             pidfile {d}/chrony.pid\ndriftfile {d}/drift\n",
            d = scratch.0.display()
        ),
    )
    .expect("chrony.conf");
    let chronyd = Path::new(chronyd);
    let script = r#"
        "$5" -x -d -f "$6" > "$7" 2>&1 &
        ntp=$!
        trap 'kill $ntp' EXIT
        # chronyd is serving once it answers; the sender's own start waits up to 5 s too.
        sleep 0.5
        "$1" --input tone:440 --clock ntp --ntp 127.0.0.1:11123 --duration 11 &
        tx=$!
        unshare --time --monotonic 10800 --boottime 10800 "$2" --output virtual \
            --virtual-ppm -40 --virtual-log "$3" --status-socket "$4" --status-interval 1 \
            --duration 9
        wait $tx
    "#;
    let chrony_log = scratch.path("chronyd.log");
    let (text, status) = run_in_netns(
        script,
        &[&sender, &receiver, &log, &sock, chronyd, &conf, &chrony_log],
        &sock,
        &scratch,
    );
    assert!(
        text.contains("clock domain ntp: the timeline is NTP server 127.0.0.1:11123"),
        "{text}\n{}",
        std::fs::read_to_string(&chrony_log).unwrap_or_default()
    );
    assert!(text.contains("clock ntp"), "{text}");
    let s = assert_played_in_sync("ntp", &text, status, &log);
    assert!(
        s.time_answered > 0,
        "the receiver read the NTP server the stream names: {s:?}"
    );
    // The timeline is UTC from 1970 as chronyd serves it (this host's CLOCK_REALTIME); the
    // receiver's monotonic clock is the host's plus 3 h (a new time namespace's offsets count
    // from the host's clocks, not from ours: the tests may run in a shifted one themselves).
    let ours = wavesync_receiver::clock_io::timens_monotonic_offset_ns(None).unwrap_or(0);
    let expected = (real_minus_mono() + ours) as f64 / 1e9 - 10_800.0;
    assert!(
        (s.clock_offset_s - expected).abs() < 0.01,
        "offset {} s, expected about {expected} s",
        s.clock_offset_s
    );
}
