//! End to end on loopback: a master (the sending engine, in-process) streams to two receivers
//! (the receiver daemon, in-process, virtual DACs recording what they play); `wavesync rooms
//! --json` lists both by name within 2 s, and `wavesync room` changes one room at a time,
//! checked on the audio each virtual DAC played, not on the status: volume 50 scales the
//! samples by (50/100)^2, `channels left` plays L on both outputs, `off` silences that room
//! only, `trim +5` moves that room's playback by 5 ms against the other (from the DACs' play
//! logs); bad input gives clear errors; a restarted receiver keeps its settings and id; a
//! restarted master has its table back within 2 s.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use support::*;

/// The last `secs` seconds of what a virtual DAC has flushed to its audio file, as frames.
fn tail(path: &Path, secs: f64) -> Vec<[f32; 2]> {
    let bytes = std::fs::read(path).unwrap_or_default();
    let frames: Vec<[f32; 2]> = bytes
        .chunks_exact(8)
        .map(|c| {
            [
                f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                f32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            ]
        })
        .collect();
    let n = ((secs * RATE) as usize).min(frames.len());
    frames[frames.len() - n..].to_vec()
}

fn rms(frames: &[[f32; 2]], ch: usize) -> f64 {
    let s: f64 = frames.iter().map(|f| (f[ch] as f64).powi(2)).sum();
    (s / frames.len().max(1) as f64).sqrt()
}

/// A virtual DAC's log: (stream position of the first frame, frames, CLOCK_REALTIME ns it
/// played) per write of audio.
fn play_log(path: &Path) -> Vec<(f64, u64, f64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let pos: f64 = f.next()?.parse().ok()?;
            let frames: u64 = f.next()?.parse().ok()?;
            let real: f64 = f.next()?.parse().ok()?;
            (pos >= 0.0).then_some((pos, frames, real))
        })
        .collect()
}

/// When stream position `p` played by `log`, ns.
fn played_at(log: &[(f64, u64, f64)], p: f64) -> Option<f64> {
    log.iter()
        .rev()
        .find(|(pos, frames, _)| *pos <= p && p < pos + *frames as f64)
        .map(|(pos, _, real)| real + (p - pos) / RATE * 1e9)
}

/// How much earlier `a` played than `b`, us, at the latest position both logs hold.
fn lead_us(a: &Path, b: &Path) -> f64 {
    let (la, lb) = (play_log(a), play_log(b));
    let end = |l: &[(f64, u64, f64)]| l.last().map_or(0.0, |(p, n, _)| p + *n as f64);
    let p = end(&la).min(end(&lb)) - 4800.0;
    match (played_at(&la, p), played_at(&lb, p)) {
        (Some(x), Some(y)) => (y - x) / 1e3,
        _ => panic!("position {p} not in both logs"),
    }
}

/// Waits until the audio files hold what was played after a change (the DAC flushes its file
/// every second; 0.3 s are kept back for the ramp and the device buffer).
fn settle() {
    thread::sleep(Duration::from_millis(1600));
}

#[test]
fn rooms_are_listed_and_set_one_at_a_time() {
    let s = Scratch::new("wsrooms");
    let (pa, pb) = (free_port(), free_port());
    let stop = Arc::new(AtomicBool::new(false));
    let dests = vec![
        SocketAddr::from(([127, 0, 0, 1], pa)),
        SocketAddr::from(([127, 0, 0, 1], pb)),
    ];
    let (control, master_thread) = start_master(dests.clone(), 0, stop.clone(), two_tones);
    let master = format!("127.0.0.1:{control}");

    let started = Instant::now();
    let kitchen = start_receiver(&s, "kitchen", pa, 9);
    let bath = start_receiver(&s, "bath", pb, 18);

    // Both listed with their names within 2 s.
    let listed = loop {
        let l = rooms(&master);
        if room(&l, "kitchen").is_some() && room(&l, "bath").is_some() {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "not both listed within 2 s: {l:?}"
        );
        thread::sleep(Duration::from_millis(100));
    };
    eprintln!("both rooms listed after {listed:?}");
    let l = rooms(&master);
    let k = room(&l, "kitchen").expect("kitchen");
    for key in [
        "id",
        "name",
        "address",
        "state",
        "sync_error_us",
        "volume",
        "muted",
        "trim_ms",
        "channels",
    ] {
        assert!(k.get(key).is_some(), "key {key} missing in {k}");
    }
    assert_eq!(k["volume"], 100);
    assert!(k["address"]
        .as_str()
        .unwrap_or("")
        .starts_with("127.0.0.1:"));

    // Playing, both.
    while !rooms(&master)
        .iter()
        .filter(|r| r["state"] == "playing")
        .count()
        .eq(&2)
    {
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "not both playing"
        );
        thread::sleep(Duration::from_millis(200));
    }
    thread::sleep(Duration::from_millis(1200));
    let (ka, ba) = (s.path("kitchen.f32"), s.path("bath.f32"));
    let before_k = tail(&ka, 0.3);
    let before_b = tail(&ba, 0.3);
    let k_level = rms(&before_k, 0);
    assert!(
        (k_level - 0.5 / 2f64.sqrt()).abs() < 0.02,
        "kitchen L rms {k_level}"
    );
    assert!(
        before_b.iter().filter(|f| f[0] != f[1]).count() > before_b.len() / 2,
        "L and R differ before"
    );

    // Volume 50 on the kitchen; channels left in the bathroom.
    let said = ok(&room_cmd(&master, &["kitchen", "volume", "50"]));
    assert!(said.contains("kitchen: volume 50"), "{said}");
    ok(&room_cmd(&master, &["bath", "channels", "left"]));
    // Idempotent: again, same outcome.
    ok(&room_cmd(&master, &["bath", "channels", "left"]));
    settle();
    let k_after = tail(&ka, 0.3);
    let ratio = rms(&k_after, 0) / k_level;
    eprintln!("kitchen at volume 50: level ratio {ratio:.4} (expected 0.25)");
    assert!((ratio - 0.25).abs() < 0.01, "volume 50: ratio {ratio}");
    let b_after = tail(&ba, 0.3);
    assert!(
        b_after.iter().all(|f| f[0] == f[1]),
        "channels left: R = L on every frame"
    );
    assert!((rms(&b_after, 1) - 0.5 / 2f64.sqrt()).abs() < 0.02);
    let b_level = rms(&b_after, 0);

    // Off silences the kitchen only.
    ok(&room_cmd(&master, &["kitchen", "off"]));
    settle();
    assert!(
        tail(&ka, 0.3).iter().all(|f| f[0] == 0.0 && f[1] == 0.0),
        "kitchen off: silence"
    );
    let b_still = rms(&tail(&ba, 0.3), 0);
    assert!(
        (b_still - b_level).abs() < 0.02,
        "bath untouched: {b_still}"
    );
    let l = rooms(&master);
    let k = room(&l, "kitchen").expect("kitchen");
    assert_eq!(
        (
            k["volume"].as_u64(),
            k["off"].as_bool(),
            k["state"].as_str()
        ),
        (Some(50), Some(true), Some("off"))
    );
    assert_eq!(room(&l, "bath").expect("bath")["channels"], "left");

    // Trim +5 ms in the bathroom: it plays 5 ms earlier than the kitchen from one resync on.
    let (kl, bl) = (s.path("kitchen.log"), s.path("bath.log"));
    let before = lead_us(&bl, &kl);
    ok(&room_cmd(&master, &["bath", "trim", "+5"]));
    settle();
    let after = lead_us(&bl, &kl);
    eprintln!("bath's lead over the kitchen: {before:+.1} us before trim +5, {after:+.1} us after");
    assert!(
        (after - before - 5000.0).abs() < 200.0,
        "trim +5: moved by {} us",
        after - before
    );

    // Bad input: clear errors naming the room or the value; garbage to the master changes
    // nothing.
    let out = room_cmd(&master, &["garage", "volume", "10"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("\"garage\": no such room"),
        "{err}"
    );
    assert!(err.contains("kitchen") && err.contains("bath"), "{err}");
    let out = room_cmd(&master, &["kitchen", "volume", "500"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("volume 500 is out of range"),
        "{err}"
    );
    let out = room_cmd(&master, &["kitchen", "trim", "600000"]);
    assert!(!out.status.success());
    let junk = UdpSocket::bind("127.0.0.1:0").expect("socket");
    for bytes in [
        &[0x80u8, 201, 0, 1, 1, 2, 3, 4][..],
        &[
            0x80, 201, 0, 1, 1, 2, 3, 4, 0x80, 204, 0, 30, 0, 0, 0, 0, b'W', b'S', b'R', b'P',
        ][..],
        &[
            0x83, 204, 0, 3, 0, 0, 0, 0, b'W', b'S', b'C', b'M', 0, 0, 0, 1,
        ][..],
    ] {
        junk.send_to(bytes, ("127.0.0.1", control)).expect("send");
    }
    assert_eq!(rooms(&master).len(), 2, "garbage adds no room");

    // The kitchen restarts and keeps its settings (the state file), and its id.
    let id = k["id"].clone();
    let old_address = k["address"].clone();
    kitchen.join().expect("kitchen ran");
    let restarted = Instant::now();
    let kitchen = start_receiver(&s, "kitchen", pa, 6);
    thread::sleep(Duration::from_millis(300));
    let state = std::fs::read_to_string(s.path("kitchen.state.toml")).expect("state file");
    assert!(
        state.contains("volume = 50") && state.contains("off = true"),
        "{state}"
    );
    loop {
        let l = rooms(&master);
        let k = room(&l, "kitchen").expect("kitchen still listed");
        // A new process reports from a new port: the entry moves to it.
        if k["address"] != old_address {
            assert_eq!(k["id"], id, "same receiver id after a restart");
            assert_eq!(k["volume"], 50);
            assert_eq!(k["state"], "off");
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(3),
            "kitchen not back: {k}"
        );
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(rooms(&master).len(), 2, "one entry per receiver");

    // The master restarts (same control port, a new stream): the table comes back from the
    // next reports.
    stop.store(true, Ordering::Relaxed);
    master_thread.join().expect("master");
    let stop = Arc::new(AtomicBool::new(false));
    let (again, master_thread) = start_master(dests, control, stop.clone(), two_tones);
    assert_eq!(again, control);
    let restarted = Instant::now();
    loop {
        let l = rooms(&master);
        if room(&l, "kitchen").is_some() && room(&l, "bath").is_some() {
            eprintln!(
                "table rebuilt {:?} after the master restarted",
                restarted.elapsed()
            );
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(2),
            "table not rebuilt within 2 s: {l:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    kitchen.join().expect("kitchen ran again");
    bath.join().expect("bath ran");
    stop.store(true, Ordering::Relaxed);
    master_thread.join().expect("master");
}
