//! Recovery from disruption on the real daemon: a master restarted mid-stream (new stream id,
//! same control port), a receiver restarted, a 10 s partition, a step of the master's timeline,
//! and a change of the stream's format. After each, the receiver must be back in sync (every
//! frame within 1 ms of its due time, measured against what the sender stamped) within 2 s,
//! and keep playing. The figures are printed (see docs/resend.md).

mod support;

use std::time::Duration;

use support::*;
use wavesync_common::format::{SampleFormat, StreamFormat};
use wavesync_receiver::clock_io::realtime_ns;

/// Largest absolute sync error that counts as "in sync", us (robust on a loaded machine; the
/// locked figures are tens of us).
const BOUND_US: f64 = 1000.0;
/// Recovery must take at most this long, s.
const RECOVERY_S: f64 = 2.0;

fn sleep_s(s: f64) {
    std::thread::sleep(Duration::from_secs_f64(s));
}

/// Seconds from `event` until the receiver was in sync for good (up to `until`), checking that
/// it then played audio of this stream for most of the rest of the window; prints the figures.
fn recovery(
    what: &str,
    log: &[Played],
    sent: &[SentPacket],
    rate: f64,
    event: i64,
    until: i64,
) -> f64 {
    let rmm = real_minus_mono();
    let errors = sync_errors(log, sent, rate, rmm, event, until);
    let Some(at) = settled_at(&errors, BOUND_US) else {
        panic!(
            "[{what}] never back in sync; errors (t s, us): {:?}",
            errors
                .iter()
                .map(|e| ((e.0 - event) as f64 / 1e9, e.1))
                .collect::<Vec<_>>()
        );
    };
    let after: Vec<f64> = errors
        .iter()
        .filter(|e| e.0 >= at)
        .map(|e| e.1.abs())
        .collect();
    let frames: u64 = log
        .iter()
        .filter(|w| w.real_ns >= at && w.real_ns < until)
        .filter(|w| {
            w.pos
                .is_some_and(|p| due_real(sent, p, rate, rmm).is_some())
        })
        .map(|w| w.frames)
        .sum();
    let secs = (at - event) as f64 / 1e9;
    let mut v = after.clone();
    let (p50, p99, max) = percentiles(&mut v);
    eprintln!(
        "[{what}] in sync {secs:.3} s after the event; then {:.2} s of audio, error p50 {p50:.1} us, \
         p99 {p99:.1} us, max {max:.1} us",
        frames as f64 / rate
    );
    let window = (until - at) as f64 / 1e9;
    assert!(
        frames as f64 / rate > 0.8 * window - 0.3,
        "[{what}] played only {:.2} s of the {window:.2} s after recovering",
        frames as f64 / rate
    );
    secs
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn a_restarted_master_is_followed_and_in_sync_within_2_s() {
    assert!(can_unshare_time(), "needs time namespaces (root, as CI)");
    let scratch = Scratch::new("master-restart");
    let g = group(0);
    let port = free_port();
    let opts = SenderOpts {
        control_port: port,
        ..SenderOpts::default()
    };
    let first = TestSender::with(g, opts.clone());
    let mut rx: Vec<RxProcess> = (0..2)
        .map(|i| {
            spawn_receiver(
                Some(3_600 + i * 977),
                &rx_args(
                    g,
                    &scratch,
                    &format!("r{i}"),
                    50 - 100 * i as i32,
                    10.0,
                    &[],
                ),
                &scratch.path(&format!("r{i}.err")),
            )
        })
        .collect();
    sleep_s(4.0);
    let first_sent = first.sent();
    let first_stats = first.stop();
    let event = realtime_ns();
    let second = TestSender::with(
        g,
        SenderOpts {
            ssrc: 0x7e57_0002,
            ..opts
        },
    );
    sleep_s(5.0);
    let until = realtime_ns();
    for (i, p) in rx.iter_mut().enumerate() {
        let text = finish(
            p,
            &scratch.path(&format!("r{i}.err")),
            Duration::from_secs(20),
        );
        assert!(
            text.contains("stream 7e570001") && text.contains("stream 7e570002"),
            "receiver {i} followed both runs:\n{text}"
        );
        let log = read_log(&scratch.path(&format!("r{i}.log")));
        // In sync with the first run before the restart...
        let before = sync_errors(
            &log,
            &first_sent,
            48_000.0,
            real_minus_mono(),
            event - 1_500_000_000,
            event - 200_000_000,
        );
        assert!(
            !before.is_empty() && before.iter().all(|e| e.1.abs() < BOUND_US),
            "receiver {i} in sync before the restart: {before:?}"
        );
        // ...and with the second within 2 s of it.
        let secs = recovery(
            &format!("master restart, receiver {i}"),
            &log,
            &second.sent(),
            48_000.0,
            event,
            until,
        );
        assert!(secs <= RECOVERY_S, "receiver {i}: {secs:.3} s");
    }
    eprintln!(
        "first run: {first_stats:?}\nsecond run: {:?}",
        second.stop()
    );
}

#[test]
fn a_restarted_receiver_is_in_sync_within_2_s_of_its_start() {
    assert!(can_unshare_time(), "needs time namespaces (root, as CI)");
    let scratch = Scratch::new("rx-restart");
    let g = group(1);
    let sender = TestSender::with(g, SenderOpts::default());
    let mut first = spawn_receiver(
        Some(7_777),
        &rx_args(g, &scratch, "first", 80, 30.0, &[]),
        &scratch.path("first.err"),
    );
    sleep_s(3.0);
    assert!(first.terminate().is_some(), "the first receiver stops");
    let event = realtime_ns();
    let mut second = spawn_receiver(
        Some(99_999),
        &rx_args(g, &scratch, "second", -80, 5.0, &[]),
        &scratch.path("second.err"),
    );
    let text = finish(
        &mut second,
        &scratch.path("second.err"),
        Duration::from_secs(20),
    );
    let until = realtime_ns();
    let log = read_log(&scratch.path("second.log"));
    let secs = recovery(
        "receiver restart",
        &log,
        &sender.sent(),
        48_000.0,
        event,
        until,
    );
    assert!(secs <= RECOVERY_S, "{secs:.3} s\n{text}");
}

#[test]
fn after_a_10_s_partition_the_receiver_is_back_in_sync_within_2_s() {
    assert!(can_unshare_time(), "needs time namespaces (root, as CI)");
    let scratch = Scratch::new("partition");
    let g = group(2);
    let sender = TestSender::with(g, SenderOpts::default());
    let mut rx = spawn_receiver(
        Some(4_242),
        &rx_args(g, &scratch, "r", 40, 19.0, &[]),
        &scratch.path("r.err"),
    );
    sleep_s(3.5);
    sender.set_partitioned(true);
    let cut = realtime_ns();
    sleep_s(10.0);
    sender.set_partitioned(false);
    let event = realtime_ns();
    let text = finish(&mut rx, &scratch.path("r.err"), Duration::from_secs(30));
    let until = realtime_ns();
    let log = read_log(&scratch.path("r.log"));
    // Silence during the partition (once the buffered latency has played out).
    let during: u64 = log
        .iter()
        .filter(|w| w.pos.is_some() && w.real_ns > cut + 500_000_000 && w.real_ns < event)
        .map(|w| w.frames)
        .sum();
    assert_eq!(during, 0, "audio played during the partition");
    assert!(text.contains("silent"), "the silence was noticed:\n{text}");
    let secs = recovery("partition", &log, &sender.sent(), 48_000.0, event, until);
    assert!(secs <= RECOVERY_S, "{secs:.3} s\n{text}");
    let c = final_counts(&text).expect("final counters");
    eprintln!("[partition] {c:?}\n{:?}", sender.stop());
}

#[test]
fn after_a_partition_long_enough_to_release_the_device_it_is_reopened() {
    assert!(can_unshare_time(), "needs time namespaces (root, as CI)");
    // The device is released after 30 s without the stream; the same stream coming back must
    // open it again (it used to wait for a new stream id forever).
    let scratch = Scratch::new("long-partition");
    let g = group(7);
    let sender = TestSender::with(g, SenderOpts::default());
    let mut rx = spawn_receiver(
        Some(6_161),
        &rx_args(g, &scratch, "r", 10, 43.0, &[]),
        &scratch.path("r.err"),
    );
    sleep_s(3.0);
    sender.set_partitioned(true);
    sleep_s(34.0);
    sender.set_partitioned(false);
    let event = realtime_ns();
    let text = finish(&mut rx, &scratch.path("r.err"), Duration::from_secs(30));
    let until = realtime_ns();
    assert!(text.contains("releasing the device"), "{text}");
    assert!(text.matches("output open").count() >= 2, "{text}");
    let log = read_log(&scratch.path("r.log"));
    let secs = recovery(
        "partition 34 s, device released",
        &log,
        &sender.sent(),
        48_000.0,
        event,
        until,
    );
    assert!(secs <= RECOVERY_S, "{secs:.3} s\n{text}");
}

#[test]
fn after_the_master_stops_sending_for_10_s_the_receiver_is_back_in_sync_within_2_s() {
    assert!(can_unshare_time(), "needs time namespaces (root, as CI)");
    let scratch = Scratch::new("pause");
    let g = group(6);
    let sender = TestSender::with(g, SenderOpts::default());
    let mut rx = spawn_receiver(
        Some(5_151),
        &rx_args(g, &scratch, "r", -40, 19.0, &[]),
        &scratch.path("r.err"),
    );
    sleep_s(3.5);
    sender.set_paused(true);
    let cut = realtime_ns();
    sleep_s(10.0);
    sender.set_paused(false);
    let event = realtime_ns();
    let text = finish(&mut rx, &scratch.path("r.err"), Duration::from_secs(30));
    let until = realtime_ns();
    let log = read_log(&scratch.path("r.log"));
    let during: u64 = log
        .iter()
        .filter(|w| w.pos.is_some() && w.real_ns > cut + 500_000_000 && w.real_ns < event)
        .map(|w| w.frames)
        .sum();
    assert_eq!(during, 0, "audio played during the pause");
    // The master is alive (its status messages go on): the receiver waits for audio.
    assert!(text.contains("waiting for audio"), "{text}");
    let secs = recovery(
        "sender paused 10 s",
        &log,
        &sender.sent(),
        48_000.0,
        event,
        until,
    );
    assert!(secs <= RECOVERY_S, "{secs:.3} s\n{text}");
    let c = final_counts(&text).expect("final counters");
    assert_eq!(c.lost, 0, "a pause is not a loss: {c:?}");
    eprintln!("[pause] {c:?}\n{:?}", sender.stop());
}

#[test]
fn a_step_of_the_masters_timeline_is_detected_and_resynced_within_2_s() {
    assert!(can_unshare_time(), "needs time namespaces (root, as CI)");
    let scratch = Scratch::new("step");
    let g = group(3);
    let sender = TestSender::with(g, SenderOpts::default());
    let mut rx = spawn_receiver(
        Some(31_337),
        &rx_args(g, &scratch, "r", -30, 26.0, &[]),
        &scratch.path("r.err"),
    );
    // After the time client's warm-up: it asks only once a second by then.
    sleep_s(21.5);
    sender.step_timeline(2_000_000_000);
    let event = realtime_ns();
    let text = finish(&mut rx, &scratch.path("r.err"), Duration::from_secs(20));
    let until = realtime_ns();
    assert!(text.contains("jumped"), "the step was detected:\n{text}");
    let log = read_log(&scratch.path("r.log"));
    let secs = recovery(
        "timeline step +2 s",
        &log,
        &sender.sent(),
        48_000.0,
        event,
        until,
    );
    assert!(secs <= RECOVERY_S, "{secs:.3} s\n{text}");
}

/// The master is replaced mid-stream: a first master (default options) streams to a receiver
/// in a time namespace shifted `shift_s`, until `swap_after_s`; then it stops and a second
/// master with `second` options (same control port) takes over. Returns the receiver's log
/// text and how long it took to be back in sync with the second master.
struct Swap {
    name: &'static str,
    salt: u16,
    shift_s: u64,
    ppm: i32,
    run_s: f64,
    swap_after_s: f64,
    second: SenderOpts,
    /// Where the second master's timeline stands when it starts, given this process's
    /// CLOCK_MONOTONIC then (None: the same timeline as the first master's).
    second_timeline: Option<fn(i64) -> i64>,
}

fn swap_masters(sw: Swap) -> (String, f64) {
    assert!(can_unshare_time(), "needs time namespaces (root, as CI)");
    let scratch = Scratch::new(sw.name);
    let g = group(sw.salt);
    let port = free_port();
    let first = TestSender::with(
        g,
        SenderOpts {
            control_port: port,
            ..SenderOpts::default()
        },
    );
    let mut rx = spawn_receiver(
        Some(sw.shift_s),
        &rx_args(g, &scratch, "r", sw.ppm, sw.run_s, &[]),
        &scratch.path("r.err"),
    );
    sleep_s(sw.swap_after_s);
    first.stop();
    let event = realtime_ns();
    let rate = sw.second.format.rate as f64;
    let timeline_offset_ns = match sw.second_timeline {
        Some(at) => {
            let now = wavesync_receiver::clock_io::monotonic_ns();
            at(now.ns()) - now.ns()
        }
        None => sw.second.timeline_offset_ns,
    };
    let second = TestSender::with(
        g,
        SenderOpts {
            control_port: port,
            timeline_offset_ns,
            ..sw.second
        },
    );
    let text = finish(&mut rx, &scratch.path("r.err"), Duration::from_secs(20));
    let until = realtime_ns();
    let log = read_log(&scratch.path("r.log"));
    let secs = recovery(sw.name, &log, &second.sent(), rate, event, until);
    (text, secs)
}

#[test]
fn a_new_stream_format_reopens_the_device_and_plays() {
    let (text, secs) = swap_masters(Swap {
        name: "format",
        salt: 4,
        shift_s: 1_234,
        ppm: 0,
        run_s: 9.0,
        swap_after_s: 3.5,
        second: SenderOpts {
            ssrc: 0x7e57_0044,
            format: StreamFormat {
                rate: 44_100,
                channels: 1,
                sample: SampleFormat::L16,
            },
            ..SenderOpts::default()
        },
        second_timeline: None,
    });
    let opens = text.matches("output open").count();
    assert!(opens >= 2, "the device was reopened:\n{text}");
    assert!(text.contains("output open: 44100 Hz, 1 ch"), "{text}");
    assert!(secs <= RECOVERY_S, "{secs:.3} s\n{text}");
}

/// The master is restarted on another host's clock after the time client's warm-up, when it
/// asks only once a second: the receiver's clock model of it is stale, its stamps far off.
fn restarted_on_another_clock(name: &'static str, salt: u16, timeline: fn(i64) -> i64) {
    let (text, secs) = swap_masters(Swap {
        name,
        salt,
        shift_s: 2_024,
        ppm: 20,
        run_s: 26.0,
        swap_after_s: 22.0,
        second: SenderOpts {
            ssrc: 0x7e57_0055,
            ..SenderOpts::default()
        },
        second_timeline: Some(timeline),
    });
    assert!(
        text.contains("off our clock of the master"),
        "the stale clock was noticed at once:\n{text}"
    );
    assert!(secs <= RECOVERY_S, "{secs:.3} s\n{text}");
}

#[test]
fn a_master_restarted_on_a_host_booted_seconds_ago_is_followed_within_2_s() {
    // Far back, whatever this host's uptime: the new timeline starts 5 s after its epoch.
    restarted_on_another_clock("master-back", 5, |_| 5 * 1_000_000_000);
}

#[test]
fn a_master_restarted_on_a_host_up_for_a_year_is_followed_within_2_s() {
    // Far forward: a year ahead of this host's clock.
    restarted_on_another_clock("master-ahead", 6, |now| now + 365 * 86_400 * 1_000_000_000);
}
