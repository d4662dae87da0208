//! The native PipeWire output (`--output pipewire`) against a private headless PipeWire: it
//! links to the default sink, is paced by the graph in real time, its predictions of one frame
//! agree with each other cycle after cycle, and losing the daemon surfaces as a typed error
//! that a reconnect cures once the daemon is back.
//!
//! A separate test binary: it points this process's PipeWire environment at the private
//! daemon. Exact playout against the stamps is measured black-box by the lab
//! (`lab/run --blackbox`, `lab/tests/lab_run.rs`).

use std::process::Command;
use std::time::{Duration, Instant};

use wavesync_receiver::clock_io::monotonic_ns;
use wavesync_receiver::output::pipewire::{PipeWireConfig, PipeWireOutput};
use wavesync_receiver::output::{Output, OutputError, WriteMeta};

#[path = "support/headless_pipewire.rs"]
mod headless_pipewire;
use headless_pipewire::Daemon;

const RATE: u32 = 48_000;
const NS: i64 = 1_000_000_000;

/// Writes `frames` of a tone as the receiver's loop does; returns (elapsed, frame-0 instants
/// implied by every settled prediction, delays in frames).
fn play(out: &mut PipeWireOutput, frames: usize) -> Result<(f64, Vec<i64>, Vec<i64>), OutputError> {
    let buf: Vec<f32> = (0..2048)
        .map(|i| ((i / 2) as f32 * 0.05).sin() * 0.3)
        .collect();
    let started = Instant::now();
    let mut written = 0usize;
    let mut frame0 = Vec::new();
    let mut delays = Vec::new();
    let mut timeouts = 0;
    while written < frames {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{frames} frames not taken in 10 s (written {written})"
        );
        if !out.wait(200)? {
            timeouts += 1;
            assert!(timeouts < 10, "the graph stopped consuming");
            continue;
        }
        let t = match out.timing() {
            Err(OutputError::Underrun) => {
                // The ring ran dry (this thread descheduled on a loaded host): reported once,
                // cured in place.
                out.recover(&OutputError::Underrun)?;
                continue;
            }
            r => r?,
        };
        if t.settled {
            frame0.push((t.next_frame_local - written as i64 * NS / RATE as i64).ns());
            delays.push(t.delay_frames);
        }
        let n = t.avail_frames.min(1024);
        written += out.write(&buf[..n * 2], &WriteMeta::default())?;
    }
    Ok((started.elapsed().as_secs_f64(), frame0, delays))
}

fn links() -> String {
    Command::new("pw-link")
        .arg("-l")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

#[test]
fn output_pipewire_plays_in_real_time_on_one_timeline_and_survives_the_daemon() {
    let Some(daemon) = Daemon::start() else {
        return;
    };
    let mut out = PipeWireOutput::new(PipeWireConfig::default());
    let info = out.open(RATE, 2).expect("open a PipeWire stream");
    eprintln!("pipewire: {info}");
    let (elapsed, frame0, delays) = play(&mut out, 2 * RATE as usize).expect("play 2 s");

    // Linked by the session manager to the default sink (the CI null sink).
    let l = links();
    assert!(
        l.contains("wavesync-receiver:output_FL") && l.contains("|-> ci-null-sink:playback_FL"),
        "not linked to the default sink:\n{l}"
    );
    // Real-time pacing: 2 s of audio minus what is queued took about 2 s.
    let held = *delays.iter().max().expect("settled readings") as f64 / RATE as f64;
    assert!(
        elapsed > 2.0 - held - 0.1 && elapsed < 3.5,
        "2 s of audio took {elapsed:.3} s (held {held:.3} s)"
    );
    // Settled soon: the predictions from the graph's cycles cover most of the run.
    assert!(frame0.len() > 50, "only {} settled readings", frame0.len());
    // One timeline: every prediction of frame 0 agrees with the others, except where the
    // graph ran dry (the test thread descheduled on a loaded host), which moves the timeline
    // by the silence played and is reported as an underrun.
    let underruns = out.underruns();
    let steps: Vec<i64> = frame0.windows(2).map(|w| (w[1] - w[0]).abs()).collect();
    let jumps = steps.iter().filter(|s| **s > 500_000).count() as u64;
    let worst = steps
        .iter()
        .filter(|s| **s <= 500_000)
        .max()
        .copied()
        .unwrap_or(0);
    eprintln!(
        "2 s in {elapsed:.3} s; {} settled readings; successive predictions of frame 0 within \
         {:.1} us; {jumps} jumps, {underruns} underruns; delay {}..{} frames",
        frame0.len(),
        worst as f64 / 1e3,
        delays.iter().min().unwrap_or(&0),
        delays.iter().max().unwrap_or(&0)
    );
    assert!(
        worst < 200_000,
        "predictions of one frame differ by {worst} ns"
    );
    // Every jump was announced as an underrun (ring dry, or the graph skipped cycles), so the
    // playout can land exactly again (how many a loaded host makes is not this test's business).
    assert!(
        jumps <= underruns,
        "{jumps} jumps for {underruns} underruns"
    );
    // The next frame is ahead of now by about what is queued (plus the graph's delay).
    let t = loop {
        match out.timing() {
            Err(OutputError::Underrun) => continue,
            r => break r.expect("timing"),
        }
    };
    let ahead = t.next_frame_local - monotonic_ns();
    assert!(
        ahead > 0 && ahead < NS / 5,
        "next frame {ahead} ns from now (delay {} frames)",
        t.delay_frames
    );

    // The daemon goes away under the playing stream: a typed, recoverable error; reconnecting
    // fails (clearly) while it is away and succeeds once it is back.
    daemon.run("stop").expect("stop the daemon");
    let end = Instant::now() + Duration::from_secs(5);
    let gone = loop {
        assert!(
            Instant::now() < end,
            "the loss of the daemon never surfaced"
        );
        match play(&mut out, RATE as usize / 10) {
            Err(e) => break e,
            Ok(_) => continue,
        }
    };
    assert!(matches!(gone, OutputError::Disconnected), "got {gone}");
    assert!(gone.is_recoverable());
    let down = out.recover(&gone).expect_err("no daemon to reconnect to");
    eprintln!("daemon gone: {gone}; reconnect: {down}");
    assert!(
        matches!(down, OutputError::PipeWire { op: "connect", .. }),
        "got {down}"
    );
    daemon.run("start").expect("start the daemon again");
    let end = Instant::now() + Duration::from_secs(10);
    while let Err(e) = out.recover(&OutputError::Disconnected) {
        assert!(
            Instant::now() < end,
            "no reconnect after the daemon came back: {e}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, frame0, _) = play(&mut out, RATE as usize / 2).expect("plays again");
    assert!(!frame0.is_empty(), "never consuming after the reconnect");
    out.close();
}
