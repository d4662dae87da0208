//! `lab/run` end to end, short (issue 6's CI run): two receivers on the wired profile play in
//! sync, the black-box measurement (two more receivers through PipeWire, recorded together,
//! cross-correlated) agrees with the log-based skew, and nothing is left behind. And issue 18's
//! mixed pair: one black-box room on `--output pulse` (through pipewire-pulse), one on
//! `--output pipewire` started 2.3 s later, in the same graph. Needs the receiver and sender
//! binaries built next to this crate's (`cargo test --workspace` or `cargo build -p
//! wavesync-receiver -p wavesync-sender`) and permission to make namespaces; skips with the
//! reason printed otherwise.

#[path = "../../test-support/skip.rs"]
mod skip;

use std::path::{Path, PathBuf};
use std::process::Command;
use wavesync_lab::topology;

/// Runs `lab/run --blackbox` (wired, 2 receivers, `seconds`, latency 150 ms) with the namespace
/// prefix `prefix` and the environment `env`; returns its JSON line and stdout (panicking with
/// the black-box receivers' last words when it fails), or `None` when it cannot run here.
fn run_lab(
    prefix: &str,
    seconds: u32,
    env: &[(&str, &str)],
) -> Option<(serde_json::Value, String)> {
    let lab = PathBuf::from(env!("CARGO_BIN_EXE_wavesync-lab"));
    let Some(profile_dir) = lab.parent() else {
        panic!("no parent for {}", lab.display());
    };
    for bin in ["wavesync-receiver", "wavesync-sender"] {
        let path = profile_dir.join(bin);
        if !path.exists() {
            skip::skip_or_fail(&format!("{} is not built", path.display()));
            return None;
        }
    }
    if let Err(e) = topology::check_permitted(prefix) {
        skip::skip_or_fail(&format!("cannot create network namespaces here: {e}"));
        return None;
    }
    let target = profile_dir.parent().unwrap_or(Path::new("."));
    let debug = profile_dir.file_name().is_some_and(|n| n == "debug");
    let out = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("run");
    let mut cmd = Command::new("bash");
    cmd.arg(&script)
        .args(["--no-build", "--profile", "wired", "--receivers", "2"])
        .args([
            "--seconds",
            &seconds.to_string(),
            "--master",
            "sender",
            "--blackbox",
        ])
        .args(["--latency-ms", "150", "--out"])
        .arg(&out)
        .env("CARGO_TARGET_DIR", target)
        .env("WSLAB_PREFIX", prefix)
        .envs(env.iter().copied());
    if debug {
        cmd.arg("--debug");
    }
    let res = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&res.stdout).into_owned();
    // The black-box receivers' last words, for a failure message (the directory goes).
    let mut stderr = String::from_utf8_lossy(&res.stderr).into_owned();
    for f in ["bb1.out", "bb2.out", "blackbox.out", "blackbox.xcorr.err"] {
        let text = std::fs::read_to_string(out.join(f)).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(6).collect();
        stderr.push_str(&format!(
            "\n--- {f} (last lines, newest first):\n{}",
            tail.join("\n")
        ));
    }
    let _ = std::fs::remove_dir_all(&out);
    assert!(
        topology::namespaces(prefix).unwrap().is_empty(),
        "namespaces left"
    );
    assert!(res.status.success(), "{stdout}\n{stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    let v: serde_json::Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last:?}\n{stderr}"));
    assert!(
        v["blackbox_skew_p99_us"].as_f64().is_some(),
        "no black-box skew: {stdout}\n{stderr}"
    );
    Some((v, stdout))
}

#[test]
fn short_wired_run_plays_in_sync_agrees_black_box_and_cleans_up() {
    let Some((v, stdout)) = run_lab("wslabr", 20, &[]) else {
        return;
    };
    assert_eq!(v["profile"], "wired");
    assert_eq!(v["receivers"], 2);
    // Both receivers played the same stream positions (or there would be no skew figures),
    // within a millisecond of each other.
    let p99 = v["skew_p99_us"]
        .as_f64()
        .unwrap_or_else(|| panic!("no skew: {stdout}"));
    assert!(p99 < 1000.0, "skew p99 {p99} us\n{stdout}");
    assert!(v["rx_rss_kib"].as_u64().is_some_and(|r| r > 0), "{stdout}");
    // The receivers' counters were read from their status sockets.
    assert!(v["concealed_frames"].as_u64().is_some(), "{stdout}");
    // Black-box: the recording of two more receivers, cross-correlated, tells the same story
    // as the logs (a graph-cycle bias would be 2.7 ms or more).
    let bb = v["blackbox_skew_p99_us"].as_f64().unwrap_or(f64::NAN);
    assert!(
        (bb - p99).abs() < 200.0,
        "black-box skew p99 {bb} us, logs {p99} us\n{stdout}"
    );
}

#[test]
fn a_pulse_room_and_a_late_pipewire_room_play_together_black_box() {
    let env = [
        ("WSLAB_BB_OUTPUT", "pulse,pipewire"),
        ("WSLAB_BB_LATE_S", "2.3"),
    ];
    let Some((v, stdout)) = run_lab("wslabp", 12, &env) else {
        return;
    };
    // Measured here 50-350 us (the PulseAudio room early: pipewire-pulse's reply latency, see
    // docs/outputs.md); the target of 50 us is not met through pipewire-pulse. This
    // bound catches what the timing replies' two corrections fixed: the room 2.3 ms late.
    let bb = v["blackbox_skew_p99_us"].as_f64().unwrap_or(f64::NAN);
    eprintln!("pulse vs pipewire (started 2.3 s later), black-box skew p99 {bb:.1} us");
    assert!(bb < 1000.0, "black-box skew p99 {bb} us\n{stdout}");
}
