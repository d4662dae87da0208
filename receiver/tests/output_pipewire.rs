//! The native PipeWire output (`--output pipewire`) against a private headless PipeWire: it
//! links to the default sink, is paced by the graph in real time, its predictions of one frame
//! agree with each other cycle after cycle, and losing the daemon surfaces as a typed error
//! that a reconnect cures once the daemon is back.
//!
//! A separate test binary: it points this process's PipeWire environment at the private
//! daemon. Exact playout against the stamps is measured black-box by the lab
//! (`lab/run --blackbox`, `lab/tests/lab_run.rs`).
#![cfg(feature = "pipewire")]

use std::process::Command;

use wavesync_receiver::output::pipewire::{PipeWireConfig, PipeWireOutput};
use wavesync_receiver::output::{Output, OutputError};

#[path = "support/headless_pipewire.rs"]
mod headless_pipewire;
use headless_pipewire::Daemon;
#[path = "support/play_output.rs"]
mod play_output;
use play_output::{
    assert_next_frame_ahead, assert_one_timeline, play, play_until_lost, reconnect, RATE,
};

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
    let underruns = out.underruns();
    assert_one_timeline(elapsed, &frame0, &delays, underruns);
    assert_next_frame_ahead(&mut out);

    // The daemon goes away under the playing stream: a typed, recoverable error; reconnecting
    // fails (clearly) while it is away and succeeds once it is back.
    daemon.run("stop").expect("stop the daemon");
    let gone = play_until_lost(&mut out);
    assert!(matches!(gone, OutputError::Disconnected), "got {gone}");
    assert!(gone.is_recoverable());
    let down = out.recover(&gone).expect_err("no daemon to reconnect to");
    eprintln!("daemon gone: {gone}; reconnect: {down}");
    assert!(
        matches!(down, OutputError::PipeWire { op: "connect", .. }),
        "got {down}"
    );
    daemon.run("start").expect("start the daemon again");
    reconnect(&mut out);
    let (_, frame0, _) = play(&mut out, RATE as usize / 2).expect("plays again");
    assert!(!frame0.is_empty(), "never consuming after the reconnect");
    out.close();
}
