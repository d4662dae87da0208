//! The receiver end to end through `--output pulse`: a stream from the test sender plays
//! through pipewire-pulse on a private headless PipeWire into its null sink. The receiver locks
//! its clock, plays (the sink's monitor carries the tone), reports a sound server's delay and
//! a small sync error; the PulseAudio server restarted mid-stream, it plays in sync again within
//! 2 s of the server's return, and finishes cleanly.
#![cfg(feature = "pulse")]

mod support;

use std::process::{Command, Stdio};

use std::time::{Duration, Instant};

use support::*;

#[path = "support/headless_pipewire.rs"]
mod headless_pipewire;
use headless_pipewire::Daemon;

/// RMS of `secs` seconds recorded from the null sink's monitor (stereo f32).
fn monitor_rms(secs: f64) -> f64 {
    // SIGINT: parec flushes what it recorded and exits.
    let out = Command::new("timeout")
        .args([
            "-s",
            "INT",
            &secs.to_string(),
            "parec",
            "-d",
            "ci-null-sink.monitor",
        ])
        .args([
            "--raw",
            "--format=float32le",
            "--channels=2",
            "--rate=48000",
        ])
        .arg("--latency-msec=20")
        .stderr(Stdio::inherit())
        .output()
        .expect("run parec (pulseaudio-utils)");
    let samples: Vec<f32> = out
        .stdout
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert!(
        samples.len() > 48_000,
        "parec recorded only {} samples",
        samples.len()
    );
    (samples.iter().map(|s| (*s as f64).powi(2)).sum::<f64>() / samples.len() as f64).sqrt()
}

#[test]
fn receiver_plays_through_pulseaudio_locked_with_a_sane_delay_and_survives_a_restart() {
    let Some(daemon) = Daemon::start() else {
        return;
    };
    let scratch = Scratch::new("pulse-receiver");
    let g = group(41);
    let sender = TestSender::start(g, 200, 0);
    let sock = scratch.path("rx.sock");
    let args: Vec<String> = [
        "--listen",
        &g.to_string(),
        "--interface",
        "127.0.0.1",
        "--output",
        "pulse",
        "--device",
        "ci-null-sink",
        "--status-socket",
        sock.to_str().expect("utf-8 path"),
        "--status-interval",
        "0.25",
        "--duration",
        "12",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let err = scratch.path("rx.err");
    let mut rx = spawn_receiver(None, &args, &err);

    // Playing and locked within 5 s.
    let start = Instant::now();
    let playing = loop {
        if let Some(s) = read_status(&sock) {
            if s.state == "playing" && s.clock_locked && s.sync_error_us.is_some() {
                break s;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "not playing and locked in 5 s:\n{}",
            std::fs::read_to_string(&err).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let to_playing = start.elapsed();
    // The tone reaches the sink (the test signal is far above -40 dBFS).
    let rms = monitor_rms(1.5);
    // Settled: the last status, a few seconds into the run.
    std::thread::sleep(Duration::from_millis(1500));
    let settled = read_status(&sock).expect("status while playing");

    // The server restarts (down 0.3 s, as a restart takes): back in sync within 2 s of its return.
    daemon.run("pulse-stop").expect("stop pipewire-pulse");
    std::thread::sleep(Duration::from_millis(300));
    daemon
        .run("pulse-start")
        .expect("start pipewire-pulse again");
    let back = Instant::now();
    let opens = || {
        std::fs::read_to_string(&err)
            .unwrap_or_default()
            .matches("output open:")
            .count()
    };
    let resynced = loop {
        if opens() >= 2 {
            if let Some(s) = read_status(&sock) {
                if s.state == "playing" && s.sync_error_us.is_some_and(|e| e.abs() < 1000.0) {
                    break back.elapsed();
                }
            }
        }
        assert!(
            back.elapsed() < Duration::from_secs(2),
            "not playing in sync 2 s after the server came back:\n{}",
            std::fs::read_to_string(&err).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let rms_after = monitor_rms(1.0);
    let text = finish(&mut rx, &err, Duration::from_secs(10));
    for l in text
        .lines()
        .filter(|l| l.contains("playback]") || l.contains("output::pulse]"))
    {
        eprintln!("{l}");
    }
    let stats = sender.stop();
    eprintln!(
        "playing after {:.2} s; monitor RMS {rms:.3}; device delay {:.2} ms, sync error {:?} us, \
         underruns {}, resyncs {}; sender {stats:?}",
        to_playing.as_secs_f64(),
        settled.device_delay_ms,
        settled.sync_error_us,
        settled.underruns,
        settled.resyncs
    );
    eprintln!(
        "server restarted: playing in sync again {:.2} s after it came back; monitor RMS {rms_after:.3}",
        resynced.as_secs_f64()
    );
    assert!(rms > 0.01, "the sink's monitor is silent (RMS {rms})");
    assert!(
        rms_after > 0.01,
        "the sink's monitor is silent after the restart (RMS {rms_after})"
    );
    assert_eq!(settled.state, "playing", "{text}");
    assert!(playing.clock_locked && settled.clock_locked, "{text}");
    // A sound server's delay: more than nothing, well under 200 ms.
    assert!(
        settled.device_delay_ms > 0.5 && settled.device_delay_ms < 200.0,
        "device delay {} ms\n{text}",
        settled.device_delay_ms
    );
    let e = settled.sync_error_us.expect("a sync error once playing");
    assert!(e.abs() < 1000.0, "sync error {e} us\n{text}");
    assert!(text.contains("PulseAudio stream ended"), "{text}");
}
