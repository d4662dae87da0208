//! `lab/run` end to end, short: two receivers on the wired profile play in sync, the black-box
//! measurement (two more receivers through PipeWire, recorded together, cross-correlated)
//! agrees with the log-based skew, and nothing is left behind (issue 6); keyed rooms hold
//! against an attacker host on the bridge (issue 17); the clock domains play in sync (issue
//! 14); a black-box room on `--output pulse` and one on `--output pipewire` started 2.3 s later
//! play together (issue 18). Needs the receiver and sender binaries
//! built next to this crate's (`cargo test --workspace` or `cargo build -p wavesync-receiver
//! -p wavesync-sender`) and permission to make namespaces; without them it fails under CI=true
//! and says why otherwise.

#[path = "../../test-support/skip.rs"]
mod skip;

use std::path::{Path, PathBuf};
use std::process::Command;
use wavesync_lab::topology;

const PREFIX: &str = "wslabr";

/// Runs `lab/run --no-build --profile wired --receivers 2 --master sender` with `args` under
/// its own namespace prefix; returns its exit status success, stdout, and stderr with the
/// named files' last lines appended. Returns `None` (after `skip_or_fail`) when it cannot run
/// here.
fn lab_run(prefix: &str, args: &[&str], tails: &[&str]) -> Option<(bool, String, String)> {
    lab_run_env(prefix, args, tails, &[])
}

/// [`lab_run`] with more environment (`WSLAB_BB_OUTPUT`, ...).
fn lab_run_env(
    prefix: &str,
    args: &[&str],
    tails: &[&str],
    env: &[(&str, &str)],
) -> Option<(bool, String, String)> {
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
        .args(["--master", "sender"])
        .args(args)
        .arg("--out")
        .arg(&out)
        .env("CARGO_TARGET_DIR", target)
        .env("WSLAB_PREFIX", prefix)
        .envs(env.iter().copied());
    if debug {
        cmd.arg("--debug");
    }
    let res = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&res.stdout).into_owned();
    // The parts' last words, for a failure message (the directory goes).
    let mut stderr = String::from_utf8_lossy(&res.stderr).into_owned();
    for f in tails {
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
    Some((res.status.success(), stdout, stderr))
}

/// The run's last line, its JSON figures, once the run succeeded (else its output, in the panic).
fn final_json(ok: bool, stdout: &str, stderr: &str) -> serde_json::Value {
    assert!(ok, "{stdout}\n{stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last:?}\n{stderr}"))
}

#[test]
fn short_wired_run_plays_in_sync_agrees_black_box_and_cleans_up() {
    let Some((ok, stdout, stderr)) = lab_run(
        PREFIX,
        &["--seconds", "20", "--blackbox", "--latency-ms", "150"],
        &["bb1.out", "bb2.out", "blackbox.out", "blackbox.xcorr.err"],
    ) else {
        return;
    };
    let v = final_json(ok, &stdout, &stderr);
    assert_eq!(v["profile"], "wired");
    assert_eq!(v["receivers"], 2);
    // Both receivers played the same stream positions (or there would be no skew figures),
    // within a millisecond of each other.
    let p99 = v["skew_p99_us"]
        .as_f64()
        .unwrap_or_else(|| panic!("no skew: {stdout}\n{stderr}"));
    assert!(p99 < 1000.0, "skew p99 {p99} us\n{stdout}");
    assert!(v["rx_rss_kib"].as_u64().is_some_and(|r| r > 0), "{stdout}");
    // The receivers' counters were read from their status sockets.
    assert!(v["concealed_frames"].as_u64().is_some(), "{stdout}");
    // Black-box: the recording of two more receivers, cross-correlated, tells the same story
    // as the logs (a graph-cycle bias would be 2.7 ms or more).
    let bb = v["blackbox_skew_p99_us"]
        .as_f64()
        .unwrap_or_else(|| panic!("no black-box skew: {stdout}\n{stderr}"));
    assert!(
        (bb - p99).abs() < 200.0,
        "black-box skew p99 {bb} us, logs {p99} us\n{stdout}"
    );
}

/// Issue 17's attacker (docs/lab.md): with a household key on the master and the rooms, a
/// host without it forges and replays audio and status with the stream's source address, races
/// forged time replies and commands to the rooms and floods the master with forged NACKs. The
/// rooms play on, nothing forged is heard, their clocks and settings do not move, every drop is
/// counted, and the master resends nothing for the stranger.
#[test]
fn keyed_rooms_hold_against_an_attacker_on_the_bridge() {
    let Some((ok, stdout, stderr)) = lab_run(
        "wslaba",
        &["--seconds", "12", "--attack"],
        &["attack.out", "attack-judge.err", "master.out", "rx1.out"],
    ) else {
        return;
    };
    assert!(ok, "{stdout}\n{stderr}");
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("attack: "))
        .unwrap_or_else(|| panic!("no attack line\n{stdout}\n{stderr}"));
    let v: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    assert_eq!(v["ok"], true, "{line}");
    let a = &v["attack"];
    for k in [
        "forged_audio",
        "forged_status",
        "replayed",
        "forged_time",
        "forged_nacks",
    ] {
        assert!(a[k].as_u64().is_some_and(|n| n > 50), "{k}: {line}");
    }
    let rooms = v["rooms"].as_array().expect("rooms");
    assert_eq!(rooms.len(), 2, "{line}");
    for r in rooms {
        assert_eq!(r["loud_samples"], 0, "{line}");
        assert!(r["replayed"].as_u64().is_some_and(|n| n > 0), "{line}");
        assert!(r["audio_s"].as_f64().is_some_and(|s| s > 8.0), "{line}");
    }
    // Every forged NACK was refused by the master's key (none reached its resend budget).
    assert!(
        v["master_refused"].as_u64() >= a["forged_nacks"].as_u64(),
        "{line}"
    );
    // The run's own figures: still in sync under attack.
    let run = final_json(ok, &stdout, &stderr);
    let p99 = run["skew_p99_us"].as_f64().expect("skew");
    assert!(p99 < 1000.0, "skew p99 {p99} us under attack\n{stdout}");
}

/// Issue 14's clock domains in the lab (docs/lab.md): a master stamping on CLOCK_REALTIME
/// (`system`) and one stamping on the lab's own chronyd's clock (`ntp`, every host's time
/// queries through a relay of the profile); the receivers follow the stream's domain by
/// themselves and play in sync.
#[test]
fn short_runs_in_the_system_and_ntp_domains_play_in_sync() {
    for (clock, prefix) in [("system", "wslabs"), ("ntp", "wslabn")] {
        let Some((ok, stdout, stderr)) = lab_run(
            prefix,
            &["--seconds", "12", "--clock", clock],
            &["master.out", "rx1.out", "rx2.out"],
        ) else {
            return;
        };
        let v = final_json(ok, &stdout, &format!("{clock}: {stderr}"));
        assert!(
            v["profile"].as_str().is_some_and(|p| p.contains(clock)),
            "{clock}: {v}"
        );
        let p99 = v["skew_p99_us"]
            .as_f64()
            .unwrap_or_else(|| panic!("{clock}: no skew: {stdout}\n{stderr}"));
        assert!(p99 < 1000.0, "{clock}: skew p99 {p99} us\n{stdout}");
    }
}

#[test]
fn a_pulse_room_and_a_late_pipewire_room_play_together_black_box() {
    let env = [
        ("WSLAB_BB_OUTPUT", "pulse,pipewire"),
        ("WSLAB_BB_LATE_S", "2.3"),
    ];
    let Some((ok, stdout, stderr)) = lab_run_env(
        "wslabp",
        &["--seconds", "12", "--blackbox", "--latency-ms", "150"],
        &["bb1.out", "bb2.out", "blackbox.out", "blackbox.xcorr.err"],
        &env,
    ) else {
        return;
    };
    let v = final_json(ok, &stdout, &stderr);
    // Measured here 50-350 us (the PulseAudio room early: pipewire-pulse's reply latency, see
    // docs/outputs.md); the target of 50 us is not met through pipewire-pulse. This
    // bound catches what the timing replies' two corrections fixed: the room 2.3 ms late.
    let bb = v["blackbox_skew_p99_us"].as_f64().unwrap_or(f64::NAN);
    eprintln!("pulse vs pipewire (started 2.3 s later), black-box skew p99 {bb:.1} us");
    assert!(
        bb < 1000.0,
        "black-box skew p99 {bb} us\n{stdout}\n{stderr}"
    );
}
