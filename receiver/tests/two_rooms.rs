//! Two rooms in sync: one stream, two receiver processes in different time namespaces (their
//! CLOCK_MONOTONIC hours apart) with virtual DACs whose crystals run 80 ppm fast and 80 ppm
//! slow. After lock, what they play must stay together. The bound asserted (1 ms) is robust on
//! a loaded 2-core machine; the lab reports the real figures.

mod support;

use std::time::Duration;

use support::*;

fn receiver_args(
    group: std::net::SocketAddr,
    ppm: i32,
    scratch: &Scratch,
    name: &str,
) -> Vec<String> {
    [
        "--listen",
        &group.to_string(),
        "--interface",
        "127.0.0.1",
        "--output",
        "virtual",
        "--virtual-ppm",
        &ppm.to_string(),
        "--virtual-log",
        scratch
            .path(&format!("{name}.log"))
            .to_str()
            .expect("utf-8 path"),
        "--status-socket",
        scratch
            .path(&format!("{name}.sock"))
            .to_str()
            .expect("utf-8 path"),
        "--status-interval",
        "2",
        "--duration",
        "9",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn two_receivers_in_shifted_time_namespaces_play_in_sync() {
    assert!(
        can_unshare_time(),
        "this test needs time namespaces (run as root, as CI does)"
    );
    let scratch = Scratch::new("two-rooms");
    let g = group(0);
    let sender = TestSender::start(g, 120, 0);
    let mut a = spawn_receiver(
        Some(5 * 3600),
        &receiver_args(g, 80, &scratch, "a"),
        &scratch.path("a.err"),
    );
    let mut b = spawn_receiver(
        Some(123_456),
        &receiver_args(g, -80, &scratch, "b"),
        &scratch.path("b.err"),
    );
    for (name, rx) in [("a", &mut a), ("b", &mut b)] {
        let mut status = None;
        for _ in 0..200 {
            if let Some(s) = rx.0.try_wait().expect("wait") {
                status = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let err = std::fs::read_to_string(scratch.path(&format!("{name}.err"))).unwrap_or_default();
        assert!(
            status.is_some_and(|s| s.success()),
            "receiver {name} did not finish cleanly: {status:?}\n{err}"
        );
        eprintln!("--- receiver {name} ---\n{err}");
    }
    let stats = sender.stop();
    let la = read_log(&scratch.path("a.log"));
    let lb = read_log(&scratch.path("b.log"));
    let played = |l: &[Played]| {
        l.iter()
            .filter(|w| w.pos.is_some())
            .map(|w| w.frames)
            .sum::<u64>()
    };
    let (pa, pb) = (played(&la), played(&lb));
    eprintln!("sender: {stats:?}\nplayed frames: a {pa}, b {pb}");
    assert!(
        pa > 48_000 * 5 && pb > 48_000 * 5,
        "both rooms played >5 s of audio"
    );
    // Skew over the last part of the run (after 3 s: clock burst, start, controller settled).
    let mut skews = skews_us(&la, &lb, 3.0, 480.0);
    assert!(
        skews.len() > 200,
        "enough common positions: {}",
        skews.len()
    );
    let (p50, p99, max) = percentiles(&mut skews);
    eprintln!("inter-room skew after lock: p50 {p50:.1} us, p99 {p99:.1} us, max {max:.1} us");
    assert!(p99 < 1000.0, "p99 skew {p99:.1} us >= 1 ms");
}
