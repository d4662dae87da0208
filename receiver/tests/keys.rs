//! The household key end to end, with the real binaries in a loopback-only network namespace:
//! - a keyed sender and a keyed receiver play, while an unkeyed sender on the same host and
//!   group (an attacker's stream: another id from the same address, which an open receiver
//!   would switch to at once) is dropped and counted, never followed;
//! - a receiver with another key plays nothing and says why once;
//! - the key rotated mid-stream in three steps (docs/security.md): nothing refused or lost.
//!
//! Needs the sender binary built beside the receiver's (`cargo test --workspace` builds both)
//! and `unshare -n` (root, as in CI).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{read_log, sender_and_receiver, Scratch};

/// Runs `script` in a new network namespace with loopback up and multicast routed to it, and
/// returns its stderr and the audio frames the receiver's virtual DAC played. The script finds
/// the sender in `$TX`, the receiver in `$RX`, the receiver's output options (virtual DAC,
/// status socket, a status line a second) in `$OUT`, and `files` in `$1`, `$2`, ...
fn in_namespace(scratch: &Scratch, script: &str, files: &[&Path]) -> (String, u64) {
    let (sender, receiver) = sender_and_receiver();
    let log = scratch.path("dac.log");
    let full = format!(
        "set -e\nip link set lo up\nip route add 224.0.0.0/4 dev lo\n\
         TX=\"$WS_TX\"; RX=\"$WS_RX\"\n\
         OUT=\"--output virtual --virtual-log $WS_LOG --status-socket $WS_SOCK --status-interval 1\"\n\
         {script}"
    );
    let out = Command::new("unshare")
        .args(["-n", "bash", "-c", &full, "keys"])
        .args(files)
        .env("WS_TX", &sender)
        .env("WS_RX", &receiver)
        .env("WS_LOG", &log)
        .env("WS_SOCK", scratch.path("status.sock"))
        .env("STATE_DIRECTORY", &scratch.0)
        .env("RUST_LOG", "info")
        .output()
        .expect("run unshare (util-linux)");
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "the namespace run failed ({}; needs root for unshare -n):\n{text}",
        out.status
    );
    let audio = read_log(&log)
        .iter()
        .filter(|p| p.pos.is_some())
        .map(|p| p.frames)
        .sum();
    (text, audio)
}

/// The receiver's last status line.
fn final_line(text: &str) -> &str {
    text.lines()
        .rev()
        .find(|l| l.contains("wavesync_receiver::daemon] stopped:"))
        .unwrap_or("")
}

/// A fresh key file in `scratch` named `name`.
fn new_key(scratch: &Scratch, name: &str) -> PathBuf {
    let p = scratch.path(name);
    wavesync_net::protection::write_new_key(&p, false).unwrap();
    p
}

#[test]
fn a_keyed_receiver_plays_the_keyed_stream_and_drops_an_unkeyed_one() {
    let scratch = Scratch::new("keys-attacker");
    let key = new_key(&scratch, "key");
    let (text, audio) = in_namespace(
        &scratch,
        r#"
        "$TX" --input tone:440 --duration 8 --key-file "$1" &
        tx=$!
        sleep 0.5
        "$TX" --input tone:880 --duration 7 --control-port 45399 --name attacker &
        evil=$!
        "$RX" --key-file "$1" $OUT --duration 7
        wait $tx $evil
        "#,
        &[&key],
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
    let last = final_line(&text);
    assert!(last.contains("| key "), "{last}");
    assert!(
        !last.contains("no key 0,"),
        "unkeyed datagrams were counted: {last}"
    );
    assert!(audio >= 4 * 48_000, "played only {audio} frames:\n{text}");
}

#[test]
fn a_receiver_with_another_key_plays_nothing_and_says_so_once() {
    let scratch = Scratch::new("keys-wrong");
    let (ours, theirs) = (new_key(&scratch, "ours"), new_key(&scratch, "theirs"));
    let (text, audio) = in_namespace(
        &scratch,
        r#"
        "$TX" --input tone:440 --duration 5 --key-file "$1" &
        tx=$!
        "$RX" --key-file "$2" $OUT --duration 4
        wait $tx
        "#,
        &[&theirs, &ours],
    );
    assert_eq!(
        text.matches("sends with another key").count(),
        1,
        "one clear line:\n{text}"
    );
    assert!(!text.contains("clock locked"), "{text}");
    assert_eq!(audio, 0, "{text}");
}

#[test]
fn a_key_rotation_mid_stream_leaves_no_gap() {
    let scratch = Scratch::new("keys-rotation");
    let hex = |name: &str| -> String {
        let p = new_key(&scratch, name);
        let bytes = std::fs::read(p).unwrap();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    };
    let (a, b) = (hex("a"), hex("b"));
    // One key file shared by both programs; each step replaces it (atomically, by rename).
    let step = |name: &str, text: String| {
        let p = scratch.path(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let key = step("key", format!("{a}\n"));
    let both = step("ab", format!("{a}\n{b}\n")); // b accepted alongside
    let swapped = step("ba", format!("{b}\n{a}\n")); // b seals, a still accepted
    let only_b = step("b-only", format!("{b}\n")); // a dropped (grace period)
    let (text, audio) = in_namespace(
        &scratch,
        r#"
        "$TX" --input tone:440 --duration 10 --key-file "$1" &
        tx=$!
        "$RX" --key-file "$1" $OUT --duration 9 &
        rx=$!
        for next in "$2" "$3" "$4"; do
            sleep 2.5; cp "$next" "$1.new"; mv "$1.new" "$1"
        done
        wait $rx $tx
        "#,
        &[&key, &both, &swapped, &only_b],
    );
    assert_eq!(
        text.matches("changed: sealing with").count(),
        6,
        "both programs applied the three changes:\n{text}"
    );
    // No gap from the keys: nothing refused and nothing lost. (Late packets and concealment
    // on a starved CPU are the scheduler's, and are not asserted on here.)
    let last = final_line(&text);
    assert!(
        last.contains("refused 0 "),
        "nothing refused: {last}\n{text}"
    );
    let counts = support::final_counts(last).expect("the receiver's final status line");
    assert_eq!(counts.lost, 0, "no gap:\n{text}");
    assert!(audio >= 6 * 48_000, "played only {audio} frames:\n{text}");
}
