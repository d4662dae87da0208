//! The household key end to end, with the real binaries in a loopback-only network namespace:
//! - a keyed sender and a keyed receiver play, while an unkeyed sender on the same host and
//!   group (an attacker's stream: another id from the same address, which an open receiver
//!   would switch to at once) is dropped and counted, never followed;
//! - a receiver with another key plays nothing and says why once.
//!
//! Needs the sender binary built beside the receiver's (`cargo test --workspace` builds both)
//! and `unshare -n` (root, as in CI).

mod support;

use std::path::Path;
use std::process::Command;

use support::{read_log, sender_and_receiver, Scratch};

/// Runs `script` in a new network namespace with loopback up and multicast routed to it;
/// returns its stderr.
fn in_namespace(script: &str, args: &[&Path]) -> String {
    let full = format!("set -e\nip link set lo up\nip route add 224.0.0.0/4 dev lo\n{script}");
    let out = Command::new("unshare")
        .args(["-n", "bash", "-c", &full, "keys"])
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .expect("run unshare (util-linux)");
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "the namespace run failed ({}; needs root for unshare -n):\n{text}",
        out.status
    );
    text
}

fn audio_frames(log: &Path) -> u64 {
    read_log(log)
        .iter()
        .filter(|p| p.pos.is_some())
        .map(|p| p.frames)
        .sum()
}

#[test]
fn a_keyed_receiver_plays_the_keyed_stream_and_drops_an_unkeyed_one() {
    let (sender, receiver) = sender_and_receiver();
    let scratch = Scratch::new("keys-attacker");
    let key = scratch.path("key");
    wavesync_net::protection::write_new_key(&key, false).unwrap();
    let log = scratch.path("dac.log");
    let sock = scratch.path("status.sock");
    let text = in_namespace(
        r#"
        "$1" --input tone:440 --duration 8 --key-file "$3" &
        tx=$!
        sleep 0.5
        "$1" --input tone:880 --duration 7 --control-port 45399 --name attacker &
        evil=$!
        "$2" --key-file "$3" --output virtual --virtual-log "$4" --status-socket "$5" \
            --status-interval 1 --duration 7
        wait $tx $evil
        "#,
        &[&sender, &receiver, &key, &log, &sock],
    );
    assert!(
        text.contains("only authenticated datagrams are used"),
        "{text}"
    );
    assert!(text.contains("clock locked"), "{text}");
    let followed = text.matches("wavesync_receiver::network] stream ").count();
    assert_eq!(followed, 1, "only the keyed stream is followed:\n{text}");
    assert_eq!(
        text.matches("sends without a key").count(),
        1,
        "the mismatch is said once:\n{text}"
    );
    let last = text
        .lines()
        .rev()
        .find(|l| l.contains("wavesync_receiver::daemon] stopped:"))
        .unwrap_or("");
    assert!(last.contains("| key "), "{last}");
    assert!(
        !last.contains("no key 0,"),
        "unkeyed datagrams were counted: {last}"
    );
    let audio = audio_frames(&log);
    assert!(audio >= 4 * 48_000, "played only {audio} frames:\n{text}");
}

#[test]
fn a_receiver_with_another_key_plays_nothing_and_says_so_once() {
    let (sender, receiver) = sender_and_receiver();
    let scratch = Scratch::new("keys-wrong");
    let (ours, theirs) = (scratch.path("ours"), scratch.path("theirs"));
    wavesync_net::protection::write_new_key(&ours, false).unwrap();
    wavesync_net::protection::write_new_key(&theirs, false).unwrap();
    let log = scratch.path("dac.log");
    let sock = scratch.path("status.sock");
    let text = in_namespace(
        r#"
        "$1" --input tone:440 --duration 5 --key-file "$3" &
        tx=$!
        "$2" --key-file "$4" --output virtual --virtual-log "$5" --status-socket "$6" \
            --status-interval 1 --duration 4
        wait $tx
        "#,
        &[&sender, &receiver, &theirs, &ours, &log, &sock],
    );
    assert_eq!(
        text.matches("sends with another key").count(),
        1,
        "one clear line:\n{text}"
    );
    assert!(!text.contains("clock locked"), "{text}");
    assert_eq!(audio_frames(&log), 0, "{text}");
}

#[test]
fn a_key_rotation_mid_stream_leaves_no_gap() {
    let (sender, receiver) = sender_and_receiver();
    let scratch = Scratch::new("keys-rotation");
    let hex = |name: &str| -> String {
        let p = scratch.path(name);
        wavesync_net::protection::write_new_key(&p, false).unwrap();
        std::fs::read(&p)
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let (a, b) = (hex("a"), hex("b"));
    // One key file shared by both programs; each step replaces it (atomically, by rename).
    let key = scratch.path("key");
    std::fs::write(&key, format!("{a}\n")).unwrap();
    let step = |name: &str, text: String| {
        let p = scratch.path(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let both = step("ab", format!("{a}\n{b}\n")); // b accepted alongside
    let swapped = step("ba", format!("{b}\n{a}\n")); // b seals, a still accepted
    let only_b = step("b-only", format!("{b}\n")); // a dropped (grace period)
    let log = scratch.path("dac.log");
    let sock = scratch.path("status.sock");
    let text = in_namespace(
        r#"
        "$1" --input tone:440 --duration 10 --key-file "$3" &
        tx=$!
        "$2" --key-file "$3" --output virtual --virtual-log "$4" --status-socket "$5" \
            --status-interval 1 --duration 9 &
        rx=$!
        sleep 2.5; cp "$6" "$3.new"; mv "$3.new" "$3"
        sleep 2.5; cp "$7" "$3.new"; mv "$3.new" "$3"
        sleep 2.5; cp "$8" "$3.new"; mv "$3.new" "$3"
        wait $rx $tx
        "#,
        &[
            &sender, &receiver, &key, &log, &sock, &both, &swapped, &only_b,
        ],
    );
    assert!(
        text.matches("changed: sealing with").count() == 6,
        "both programs applied the three changes:\n{text}"
    );
    let last = text
        .lines()
        .rev()
        .find(|l| l.contains("wavesync_receiver::daemon] stopped:"))
        .unwrap_or("");
    assert!(
        last.contains("refused 0 "),
        "nothing refused: {last}\n{text}"
    );
    // No gap from the keys: nothing refused (above) and nothing lost. (Late packets and
    // concealment on a starved CPU are the scheduler's, and are not asserted on here.)
    let counts = support::final_counts(last).expect("the receiver's final status line");
    assert_eq!(counts.lost, 0, "no gap:\n{text}");
    let audio = audio_frames(&log);
    assert!(audio >= 6 * 48_000, "played only {audio} frames:\n{text}");
}
