//! The native PulseAudio output (`--output pulse`) against pipewire-pulse on a private headless
//! PipeWire: it plays into the default sink in real time, its predictions of one frame agree
//! with each other reply after reply, the delay it reports is that of a sound server, and a
//! restarted PulseAudio server surfaces as a typed error that a reconnect cures once the
//! server is back.
//!
//! A separate test binary: it points this process's PipeWire and PulseAudio environment at the
//! private daemon.
#![cfg(feature = "pulse")]

use std::process::Command;

use wavesync_receiver::output::pulse::{PulseConfig, PulseOutput};
use wavesync_receiver::output::{Output, OutputError};

#[path = "support/headless_pipewire.rs"]
mod headless_pipewire;
use headless_pipewire::Daemon;
#[path = "support/play_output.rs"]
mod play_output;
use play_output::{
    assert_next_frame_ahead, assert_one_timeline, play, play_until_lost, reconnect, RATE,
};

/// `pactl list short sink-inputs` (one line per playing stream: index, sink index, ...).
fn sink_inputs() -> String {
    Command::new("pactl")
        .args(["list", "short", "sink-inputs"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

#[test]
fn output_pulse_plays_in_real_time_on_one_timeline_and_survives_a_server_restart() {
    let Some(daemon) = Daemon::start() else {
        return;
    };
    let mut out = PulseOutput::new(PulseConfig {
        sink: Some("ci-null-sink".into()),
        ..PulseConfig::default()
    });
    let info = out.open(RATE, 2).expect("open a PulseAudio stream");
    eprintln!("pulse: {info}");
    assert!(info.device.contains("ci-null-sink"), "{info}");
    let (elapsed, frame0, delays) = play(&mut out, 2 * RATE as usize).expect("play 2 s");
    assert!(
        !sink_inputs().trim().is_empty(),
        "no sink input while playing"
    );

    let (dmin, dmax) = assert_one_timeline(elapsed, &frame0, &delays, out.underruns());
    // A sound server's delay: typically more than nothing (it is at or below zero only just
    // before the stream runs dry), never 200 ms.
    let mut sorted = delays.clone();
    sorted.sort_unstable();
    let median = sorted[sorted.len() / 2];
    assert!(
        median > 0 && dmax < RATE as i64 / 5,
        "delay {dmin}..{dmax} frames, median {median}"
    );
    assert_next_frame_ahead(&mut out);

    // The PulseAudio server restarts under the playing stream (PipeWire stays): a typed,
    // recoverable error; reconnecting fails clearly while it is away and succeeds once back.
    daemon.run("pulse-stop").expect("stop pipewire-pulse");
    let gone = play_until_lost(&mut out);
    assert!(matches!(gone, OutputError::Disconnected), "got {gone}");
    assert!(gone.is_recoverable());
    let down = out.recover(&gone).expect_err("no server to reconnect to");
    eprintln!("server gone: {gone}; reconnect: {down}");
    assert!(
        matches!(down, OutputError::Pulse { op: "connect", .. }),
        "got {down}"
    );
    daemon
        .run("pulse-start")
        .expect("start pipewire-pulse again");
    let took = reconnect(&mut out);
    let (_, frame0, _) = play(&mut out, RATE as usize / 2).expect("plays again");
    assert!(!frame0.is_empty(), "never settled after the reconnect");
    eprintln!(
        "reconnected {:.2} s after the server came back",
        took.as_secs_f64()
    );
    out.close();
}
