//! What the end-to-end tests of the `wavesync` command share: a master (the engine,
//! in-process), receiver daemons in threads on virtual DACs, and running the command.

// Each test binary uses its own part of this.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use clap::Parser;
use serde_json::Value;
use wavesync_common::format::StreamFormat;
use wavesync_engine::{Engine, EngineConfig};
use wavesync_net::clock;
use wavesync_receiver::config::{Args, Config};

pub const RATE: f64 = 48_000.0;

pub fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(prefix: &str) -> Self {
        let d = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("scratch dir");
        Scratch(d)
    }
    pub fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The master: the engine sending what `fill(n, frames)` writes (interleaved stereo, frames
/// from `n` on) in real time. `control_port` 0 takes a free port.
pub fn start_master(
    dests: Vec<SocketAddr>,
    control_port: u16,
    stop: Arc<AtomicBool>,
    fill: impl FnMut(u64, &mut [f32]) + Send + 'static,
) -> (u16, JoinHandle<()>) {
    let mut cfg = EngineConfig::new(StreamFormat::DEFAULT, dests);
    cfg.control_port = control_port;
    start_master_with(cfg, stop, fill)
}

/// [`start_master`] with a configuration of the caller's (a key, ...).
pub fn start_master_with(
    mut cfg: EngineConfig,
    stop: Arc<AtomicBool>,
    mut fill: impl FnMut(u64, &mut [f32]) + Send + 'static,
) -> (u16, JoinHandle<()>) {
    cfg.name = "rooms-test".into();
    // Streams through silence (calibration's master is silent between runs), as a player
    // that keeps playing would.
    cfg.silence_timeout_ns = None;
    let (engine, mut input) = Engine::start(cfg).expect("engine");
    let port = engine.control_port();
    let h = thread::spawn(move || {
        let block = 480usize;
        // Clock domain `master`: the timeline is this host's CLOCK_MONOTONIC.
        let mono = clock::monotonic_ns;
        let t0 = mono();
        let mut n = 0u64;
        let mut buf = vec![0f32; block * 2];
        while !stop.load(Ordering::Relaxed) {
            fill(n, &mut buf);
            let at = t0 + (n as f64 / RATE * 1e9) as i64;
            let wait = at - mono();
            if wait > 0 {
                thread::sleep(Duration::from_nanos(wait as u64));
            }
            input.push(at, &buf);
            n += block as u64;
        }
        let _ = engine.stop();
    });
    (port, h)
}

/// L = 0.5 sin(441 Hz), R = 0.25 sin(331 Hz), for [`start_master`].
pub fn two_tones(n: u64, buf: &mut [f32]) {
    for (k, f) in buf.chunks_exact_mut(2).enumerate() {
        let t = (n + k as u64) as f64 / RATE;
        f[0] = (0.5 * (t * 2.0 * std::f64::consts::PI * 441.0).sin()) as f32;
        f[1] = (0.25 * (t * 2.0 * std::f64::consts::PI * 331.0).sin()) as f32;
    }
}

/// A receiver daemon in a thread, for `secs` seconds.
pub fn start_receiver(s: &Scratch, name: &str, port: u16, secs: u32) -> JoinHandle<()> {
    start_receiver_with(s, name, port, secs, &[])
}

/// [`start_receiver`] with more options (`--key-file PATH`, ...).
pub fn start_receiver_with(
    s: &Scratch,
    name: &str,
    port: u16,
    secs: u32,
    extra: &[&str],
) -> JoinHandle<()> {
    let p = |ext: &str| {
        s.path(&format!("{name}.{ext}"))
            .to_str()
            .expect("utf-8")
            .to_string()
    };
    std::fs::write(s.path("empty.toml"), "").expect("config");
    let args = Args::parse_from(
        [
            "wavesync-receiver".to_string(),
            "--config".into(),
            s.path("empty.toml").to_str().expect("utf-8").into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--output".into(),
            "virtual".into(),
            "--virtual-audio".into(),
            p("f32"),
            "--virtual-log".into(),
            p("log"),
            "--status-socket".into(),
            p("sock"),
            "--state-file".into(),
            p("state.toml"),
            "--name".into(),
            name.into(),
            "--status-interval".into(),
            "0".into(),
            "--duration".into(),
            secs.to_string(),
        ]
        .into_iter()
        .chain(extra.iter().map(|a| a.to_string())),
    );
    let cfg = Config::load(&args).expect("receiver config");
    thread::spawn(move || wavesync_receiver::daemon::run(cfg).expect("receiver ran"))
}

pub fn wavesync(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wavesync"))
        .args(args)
        .output()
        .expect("run wavesync")
}

pub fn rooms(master: &str) -> Vec<Value> {
    let out = wavesync(&["rooms", "--json", "--master", master]);
    assert!(
        out.status.success(),
        "wavesync rooms failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    v.as_array().expect("an array").clone()
}

pub fn room<'a>(list: &'a [Value], name: &str) -> Option<&'a Value> {
    list.iter().find(|r| r["name"] == name)
}

pub fn room_cmd(master: &str, args: &[&str]) -> Output {
    let mut a = vec!["room"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["--master", master]);
    wavesync(&a)
}

pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
