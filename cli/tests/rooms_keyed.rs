//! The rooms control path with a household key: a keyed master and a keyed receiver; the
//! `wavesync` command reaches the master only with the key (`--key-file`): with it the room
//! is listed and a command changes it; without it, or with another key, the master ignores
//! the request and the command says why it got no answer.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;
use wavesync_common::format::StreamFormat;
use wavesync_engine::EngineConfig;

fn new_key(s: &Scratch, name: &str) -> String {
    let p = s.path(name);
    let out = wavesync(&["key", "new", p.to_str().expect("utf-8")]);
    ok(&out);
    p.to_str().expect("utf-8").to_string()
}

#[test]
fn the_command_reaches_a_keyed_master_only_with_the_key() {
    let s = Scratch::new("wsrooms-keyed");
    let key = new_key(&s, "key");
    let other = new_key(&s, "other");
    let stop = Arc::new(AtomicBool::new(false));
    let data = free_port();
    let mut cfg = EngineConfig::new(
        StreamFormat::DEFAULT,
        vec![format!("127.0.0.1:{data}").parse().expect("address")],
    );
    cfg.key_file = Some(key.clone().into());
    let (control, master) = start_master_with(cfg, stop.clone(), two_tones);
    let rx = start_receiver_with(&s, "study", data, 8, &["--key-file", &key]);
    let at = format!("127.0.0.1:{control}");

    // With the key: the room reports (sealed) and the list comes back (sealed both ways).
    let t0 = Instant::now();
    loop {
        let out = wavesync(&["rooms", "--json", "--master", &at, "--key-file", &key]);
        let text = ok(&out);
        if text.contains("\"study\"") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(8), "not listed: {text}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let done = wavesync(&[
        "room",
        "study",
        "volume",
        "30",
        "--master",
        &at,
        "--key-file",
        &key,
    ]);
    assert!(ok(&done).contains("volume 30"), "{}", ok(&done));

    // Without the key (none at /etc/wavesync/key here), and with another: no answer, and the
    // error says what to try.
    let plain = wavesync(&["room", "study", "volume", "80", "--master", &at]);
    assert!(!plain.status.success());
    let why = String::from_utf8_lossy(&plain.stderr);
    assert!(
        why.contains("no answer") && why.contains("--key-file"),
        "{why}"
    );
    let wrong = wavesync(&["rooms", "--master", &at, "--key-file", &other]);
    assert!(!wrong.status.success());
    let why = String::from_utf8_lossy(&wrong.stderr);
    assert!(why.contains("same one"), "{why}");
    // Nothing they sent changed the room.
    let list = wavesync(&["rooms", "--json", "--master", &at, "--key-file", &key]);
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).expect("JSON");
    let study = v
        .as_array()
        .and_then(|a| a.iter().find(|r| r["name"] == "study"))
        .expect("the room");
    assert_eq!(study["volume"], 30);

    stop.store(true, Ordering::Relaxed);
    let _ = master.join();
    let _ = rx.join();
}
