//! The real ALSA path, end to end: the receiver daemon plays a stream through alsa-lib into a
//! headless PipeWire (so the device is paced in real time and reports a real delay), through a
//! `type file` tee that keeps a byte-exact copy of everything written. With drift correction
//! off and no loss, what reached the device must be the sender's samples, bit for bit, in one
//! piece, or in as many pieces as the receiver counted resyncs (a loaded machine makes the
//! headless PipeWire graph miss cycles; the receiver then jumps to stay on time, and says so).

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;
use wavesync_common::sample::f32_to_i16;

struct Daemon(PathBuf);

impl Daemon {
    fn start(dir: &Path) -> (Daemon, HashMap<String, String>) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/headless-pipewire");
        let out = Command::new(script)
            .arg("start")
            .arg(dir)
            .output()
            .expect("run scripts/headless-pipewire");
        assert!(
            out.status.success(),
            "headless PipeWire did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env_text = std::fs::read_to_string(dir.join("env")).expect("env file");
        let env = env_text
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        (Daemon(dir.to_path_buf()), env)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/headless-pipewire");
        let _ = Command::new(script).arg("stop").arg(&self.0).status();
    }
}

/// Decodes the tee's raw file in the device format the receiver logged, to 16-bit values,
/// refusing any sample that is not exactly a 16-bit value (a converted or resampled one).
fn decode(raw: &[u8], format: &str) -> Vec<Option<i16>> {
    let exact = |x: f64| {
        let q = x * 32_768.0;
        (q.fract() == 0.0 && (-32_768.0..32_768.0).contains(&q)).then_some(q as i16)
    };
    match format {
        "S16_LE" => raw
            .chunks_exact(2)
            .map(|b| Some(i16::from_le_bytes([b[0], b[1]])))
            .collect(),
        "S24_3LE" => raw
            .chunks_exact(3)
            .map(|b| exact((i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) as f64 / 8_388_608.0))
            .collect(),
        "S24_LE" => raw
            .chunks_exact(4)
            .map(|b| {
                exact(
                    ((i32::from_le_bytes([b[0], b[1], b[2], b[3]]) << 8) >> 8) as f64 / 8_388_608.0,
                )
            })
            .collect(),
        "S32_LE" => raw
            .chunks_exact(4)
            .map(|b| exact(i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64 / 2_147_483_648.0))
            .collect(),
        "FLOAT_LE" => raw
            .chunks_exact(4)
            .map(|b| exact(f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64))
            .collect(),
        other => panic!("unexpected device format {other}"),
    }
}

fn expected(n: u64) -> [i16; 2] {
    let mut f = [0.0f32; 2];
    signal(n, &mut f);
    [f32_to_i16(f[0]), f32_to_i16(f[1])]
}

#[test]
fn lossless_run_reaches_the_alsa_device_bit_exact() {
    let scratch = Scratch::new("alsa-path");
    let (_pw, env) = Daemon::start(&scratch.path("pw"));
    let (home, raw) = file_pcm_home(&scratch, "wstee", "pipewire");
    let g = group(5);
    let sender = TestSender::start(g, 200, 0);
    let log = scratch.path("rx.err");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wavesync-receiver"));
    cmd.envs(&env)
        .env("HOME", &home)
        .env("RUST_LOG", "info")
        .args(["--listen", &g.to_string(), "--interface", "127.0.0.1"])
        .args([
            "--device",
            "wstee",
            "--no-drift-correction",
            "--duration",
            "7",
        ])
        .args(["--status-interval", "0", "--status-socket"])
        .arg(scratch.path("rx.sock"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"));
    let mut rx = RxProcess(cmd.spawn().expect("spawn wavesync-receiver"));
    let status = rx.wait_for(Duration::from_secs(30));
    let stats = sender.stop();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!("{text}\nsender: {} packets", stats.core.packets_sent);
    assert!(
        status.is_some_and(|s| s.success()),
        "receiver failed: {status:?}"
    );
    let format = logged_device_format(&text).expect("the receiver logged the device format");
    let bytes = std::fs::read(&raw).expect("the tee wrote its file");
    let samples = decode(&bytes, &format);
    let frames: Vec<[Option<i16>; 2]> = samples.chunks_exact(2).map(|c| [c[0], c[1]]).collect();
    // Find where the stream starts in the file, then its frame index in the sender's signal.
    let start = frames
        .iter()
        .position(|f| f[0].is_some_and(|v| v != 0))
        .expect("audio reached the device");
    let probe: Vec<[Option<i16>; 2]> = frames[start..(start + 64).min(frames.len())].to_vec();
    let n0 = (0..48_000 * 20)
        .find(|&n| {
            probe
                .iter()
                .enumerate()
                .all(|(k, f)| *f == expected(n + k as u64).map(Some))
        })
        .expect("the first frames played are the sender's signal");
    // Walk the file: each frame is either exactly the signal's next frame, or silence the
    // receiver inserted, or the start of a piece the receiver jumped to (a resync, when the
    // device's timeline slipped). Every jump must be one the receiver counted, and no frame
    // may be anything but an exact copy of the signal or silence.
    // The receiver's own count of where it jumped: resyncs, and underruns (the device
    // restarts where the stream is due).
    let counter = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.split(&format!(" {name} ")).nth(1))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("the receiver logged no {name} count"))
    };
    let resyncs = counter("resyncs") + counter("underruns");
    let walk = walk_pieces(&frames[start..], n0);
    eprintln!(
        "device format {format}; {} frames written, audio from frame {start}; {} exact frames in {} piece(s) (longest {:.2} s), {} silent, {} off the signal; receiver resyncs and underruns {resyncs}",
        frames.len(),
        walk.exact,
        walk.jumps + 1,
        walk.longest as f64 / 48_000.0,
        walk.silent,
        walk.off,
    );
    assert_eq!(
        walk.off, 0,
        "every frame is the signal, bit for bit, or silence"
    );
    assert!(
        walk.jumps as u64 <= resyncs,
        "{} jumps in the signal but the receiver counted {resyncs} resyncs and underruns",
        walk.jumps
    );
    assert!(
        walk.exact >= 48_000 * 3,
        "at least 3 s of the 7 s run reached the device bit-exact, got {} frames",
        walk.exact
    );
    if resyncs == 0 {
        assert_eq!(walk.jumps, 0);
        assert!(walk.longest >= 48_000 * 3, "one piece without resyncs");
    }
}

/// What [`walk_pieces`] found.
#[derive(Debug, Default)]
struct Walk {
    /// Frames exactly equal to the signal at the current alignment.
    exact: usize,
    /// Longest run of such frames.
    longest: usize,
    /// Silent frames (inserted by a start or a resync).
    silent: usize,
    /// Frames neither silent nor matching the signal at any alignment near the current one.
    off: usize,
    /// Changes of alignment.
    jumps: usize,
}

/// Follows the signal through `frames`, starting at signal frame `n0`, re-aligning (within
/// one second either way) when the frames stop matching.
fn walk_pieces(frames: &[[Option<i16>; 2]], n0: u64) -> Walk {
    const PROBE: usize = 32;
    let mut w = Walk::default();
    let (mut n, mut run, mut i) = (n0, 0usize, 0usize);
    while i < frames.len() {
        let f = frames[i];
        if f == expected(n).map(Some) {
            w.exact += 1;
            run += 1;
            w.longest = w.longest.max(run);
            n += 1;
            i += 1;
            continue;
        }
        run = 0;
        if f == [Some(0), Some(0)] {
            w.silent += 1;
            i += 1;
            continue;
        }
        let probe = &frames[i..(i + PROBE).min(frames.len())];
        let found = (n.saturating_sub(48_000)..n + 48_000).find(|&m| {
            probe
                .iter()
                .enumerate()
                .all(|(k, f)| *f == expected(m + k as u64).map(Some))
        });
        match found {
            Some(m) => {
                w.jumps += 1;
                n = m;
            }
            None => {
                w.off += 1;
                n += 1;
                i += 1;
            }
        }
    }
    w
}
