//! A host whose only interface is loopback (a fresh network namespace: `lo` up and
//! `224.0.0.0/4` routed to it, nothing else): `wavesync-sender --input tone:440` and
//! `wavesync-receiver` with their default network and clock options play. Linux sends the
//! multicast there from 0.0.0.0 while the time service answers from 127.0.0.1; the receiver
//! used to ask 0.0.0.0, refuse every answer and wait for the clock for ever, saying nothing.
//!
//! Needs the sender binary built beside the receiver's (`cargo test --workspace` builds both)
//! and `unshare -n` (root, as in CI): it fails, naming what is missing, where either is not.

mod support;

use std::process::Command;

use support::{read_log, sender_and_receiver, Scratch};

#[test]
fn sender_and_receiver_with_default_options_play_on_a_loopback_only_host() {
    let (sender, receiver) = sender_and_receiver();
    let scratch = Scratch::new("loopback-defaults");
    let log = scratch.path("dac.log");
    let sock = scratch.path("status.sock");
    // Only the output and where the receiver keeps its files are chosen; every network and
    // clock option is the default.
    let script = r#"
        set -e
        ip link set lo up
        ip route add 224.0.0.0/4 dev lo
        "$1" --input tone:440 --duration 8 &
        tx=$!
        "$2" --output virtual --virtual-log "$3" --status-socket "$4" --status-interval 1 --duration 7
        wait $tx
    "#;
    let out = Command::new("unshare")
        .args(["-n", "bash", "-c", script, "loopback"])
        .arg(&sender)
        .arg(&receiver)
        .arg(&log)
        .arg(&sock)
        .env("STATE_DIRECTORY", &scratch.0)
        .env("RUST_LOG", "info")
        .output()
        .expect("run unshare (util-linux)");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the namespace run failed ({}; needs root for unshare -n):\n{text}",
        out.status
    );
    assert!(
        text.contains("from 127.0.0.1:"),
        "the stream is attributed to this host's loopback address:\n{text}"
    );
    assert!(!text.contains("no clock of the master"), "{text}");
    assert!(text.contains("clock locked"), "{text}");
    let played = read_log(&log);
    let audio: u64 = played
        .iter()
        .filter(|p| p.pos.is_some())
        .map(|p| p.frames)
        .sum();
    // 7 s run; the stream's latency and the clock's start take well under 2 s.
    assert!(
        audio >= 4 * 48_000,
        "played only {audio} frames of audio:\n{text}"
    );
}
