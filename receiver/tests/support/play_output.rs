//! Drives an output as the receiver's loop does, for the tests of the sound-server outputs.
//! Include with `#[path = "support/play_output.rs"] mod play_output;`.

use std::time::{Duration, Instant};

use wavesync_receiver::output::{Output, OutputError, WriteMeta};

pub const RATE: u32 = 48_000;
pub const NS: i64 = 1_000_000_000;

/// Writes `frames` of a stereo tone as the receiver's loop does; returns (elapsed, frame-0
/// instants implied by every settled prediction, delays in frames).
pub fn play<O: Output + ?Sized>(
    out: &mut O,
    frames: usize,
) -> Result<(f64, Vec<i64>, Vec<i64>), OutputError> {
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
            assert!(timeouts < 10, "the server stopped consuming");
            continue;
        }
        let t = match out.timing() {
            Err(OutputError::Underrun) => {
                // Ran dry (this thread descheduled on a loaded host): reported once, cured in
                // place.
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

/// Checks 2 s of [`play`]: paced in real time, settled soon, and one timeline: every
/// prediction of frame 0 agrees with the others (within 200 us), except across a reported
/// underrun (the test thread descheduled on a loaded host), which moves the timeline by the
/// silence played. Returns the delays' range in frames.
pub fn assert_one_timeline(
    elapsed: f64,
    frame0: &[i64],
    delays: &[i64],
    underruns: u64,
) -> (i64, i64) {
    let held = *delays.iter().max().expect("settled readings") as f64 / RATE as f64;
    assert!(
        elapsed > 2.0 - held - 0.1 && elapsed < 3.5,
        "2 s of audio took {elapsed:.3} s (held {held:.3} s)"
    );
    assert!(frame0.len() > 50, "only {} settled readings", frame0.len());
    let steps: Vec<i64> = frame0.windows(2).map(|w| (w[1] - w[0]).abs()).collect();
    let jumps = steps.iter().filter(|s| **s > 500_000).count() as u64;
    let worst = steps
        .iter()
        .filter(|s| **s <= 500_000)
        .max()
        .copied()
        .unwrap_or(0);
    let range = (
        *delays.iter().min().unwrap_or(&0),
        *delays.iter().max().unwrap_or(&0),
    );
    eprintln!(
        "2 s in {elapsed:.3} s; {} settled readings; successive predictions of frame 0 within \
         {:.1} us; {jumps} jumps, {underruns} underruns; delay {}..{} frames",
        frame0.len(),
        worst as f64 / 1e3,
        range.0,
        range.1
    );
    assert!(
        worst < 200_000,
        "predictions of one frame differ by {worst} ns"
    );
    // Every jump was announced as an underrun, so the playout can land exactly again (how
    // many a loaded host makes is not this test's business).
    assert!(
        jumps <= underruns,
        "{jumps} jumps for {underruns} underruns"
    );
    range
}

/// The next frame is ahead of now by about what is queued plus the server's delay (< 200 ms).
pub fn assert_next_frame_ahead<O: Output + ?Sized>(out: &mut O) {
    let t = loop {
        match out.timing() {
            Err(OutputError::Underrun) => continue,
            r => break r.expect("timing"),
        }
    };
    let ahead = t.next_frame_local - wavesync_receiver::clock_io::monotonic_ns();
    assert!(
        ahead > 0 && ahead < NS / 5,
        "next frame {ahead} ns from now (delay {} frames)",
        t.delay_frames
    );
}

/// Plays on until the output fails (its server was stopped): the error, within 5 s.
pub fn play_until_lost<O: Output + ?Sized>(out: &mut O) -> OutputError {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(
            Instant::now() < end,
            "the loss of the server never surfaced"
        );
        if let Err(e) = play(out, RATE as usize / 10) {
            return e;
        }
    }
}

/// Retries `recover` until the server is back (at most 10 s); returns how long it took.
pub fn reconnect<O: Output + ?Sized>(out: &mut O) -> Duration {
    let back = Instant::now();
    while let Err(e) = out.recover(&OutputError::Disconnected) {
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "no reconnect after the server came back: {e}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    back.elapsed()
}
