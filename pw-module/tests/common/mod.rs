//! Test bed for the module: a private headless PipeWire + WirePlumber per test
//! (`scripts/headless-pipewire`), the module's `.so` under its install name, a UDP listener on
//! loopback, a known signal as a WAV file, and `pw-dump`/`pw-play`/`wpctl` helpers.
//!
//! [`Daemon`] stops its PipeWire on drop, also when the test fails. The test process makes
//! itself a child subreaper, so the daemons it starts (orphaned by the start script) are
//! reparented to it and their exit status can be read: that is how a crash on exit ("double
//! free", SIGSEGV) is told apart from a clean exit.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use serde_json::Value;
use wavesync_common::format::SampleFormat;
use wavesync_common::wire::rtp::AudioPacket;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The workspace root (parent of this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crate has a parent dir")
        .to_path_buf()
}

/// A fresh scratch directory under the system temp dir, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("wavesync-pwtest-{}-{tag}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The built module (`libpipewire_module_wavesync.so`, next to the test binary's deps).
fn built_module() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let deps = exe.parent().expect("deps dir");
    for dir in [deps, deps.parent().unwrap_or(deps)] {
        let p = dir.join("libpipewire_module_wavesync.so");
        if p.exists() {
            return p;
        }
    }
    panic!(
        "libpipewire_module_wavesync.so not found near {}",
        exe.display()
    );
}

/// A module directory holding the module under its install name, plus PipeWire's own.
pub struct ModuleDir {
    scratch: Scratch,
}

impl ModuleDir {
    pub fn new() -> ModuleDir {
        let scratch = Scratch::new("modules");
        std::os::unix::fs::symlink(
            built_module(),
            scratch.path().join("libpipewire-module-wavesync.so"),
        )
        .expect("symlink module");
        ModuleDir { scratch }
    }

    /// The value for `PIPEWIRE_MODULE_DIR`.
    pub fn env_value(&self) -> String {
        format!(
            "{}:/usr/lib/x86_64-linux-gnu/pipewire-0.3",
            self.scratch.path().display()
        )
    }
}

fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) takes plain integers and changes only
        // this process's reaping role.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(rc, 0, "prctl(PR_SET_CHILD_SUBREAPER)");
    });
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// Not our (reparented) child, or still running after the wait.
    Unknown,
}

/// Waits up to `timeout` for `pid` (a reparented orphan) to exit and reaps it.
pub fn reap(pid: i32, timeout: Duration) -> Exit {
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: waitpid with WNOHANG on a specific pid writes only `status`.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc == pid {
            if libc::WIFEXITED(status) {
                return Exit::Code(libc::WEXITSTATUS(status));
            }
            if libc::WIFSIGNALED(status) {
                return Exit::Signal(libc::WTERMSIG(status));
            }
        }
        if rc < 0 || Instant::now() > deadline {
            return Exit::Unknown;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A headless PipeWire + WirePlumber, stopped on drop.
pub struct Daemon {
    dir: PathBuf,
    _scratch: Scratch,
    _modules: ModuleDir,
    module_dir_env: String,
    stopped: bool,
}

/// What happened when a daemon did not come up.
#[derive(Debug)]
pub struct StartFailure {
    pub script_stderr: String,
    pub log: String,
    pub exit: Exit,
}

impl Daemon {
    /// Starts a daemon with `dropins` (file name, content) in its `pipewire.conf.d/`.
    /// `debug`: run PipeWire with `PIPEWIRE_DEBUG=3` so the module's info lines are logged.
    pub fn start(dropins: &[(&str, String)], debug: bool) -> Result<Daemon, StartFailure> {
        become_subreaper();
        let scratch = Scratch::new("daemon");
        let modules = ModuleDir::new();
        let mut files = Vec::new();
        for (name, content) in dropins {
            let p = scratch.path().join(name);
            fs::write(&p, content).expect("write drop-in");
            files.push(p);
        }
        let dir = scratch.path().join("pw");
        let mut cmd = Command::new(repo_root().join("scripts/headless-pipewire"));
        cmd.arg("start").arg(&dir).args(&files);
        cmd.env("PIPEWIRE_MODULE_DIR", modules.env_value());
        // WirePlumber remembers volumes in $XDG_STATE_HOME: keep each daemon's to itself, or
        // one test's `wpctl set-volume` leaks into every later daemon (and the user's).
        let state = scratch.path().join("state");
        fs::create_dir_all(&state).expect("state dir");
        cmd.env("XDG_STATE_HOME", &state);
        if debug {
            cmd.env("PIPEWIRE_DEBUG", "3");
        } else {
            cmd.env_remove("PIPEWIRE_DEBUG");
        }
        let out = cmd.output().expect("run headless-pipewire");
        let module_dir_env = modules.env_value();
        let daemon = Daemon {
            dir: dir.clone(),
            _scratch: scratch,
            _modules: modules,
            module_dir_env,
            stopped: false,
        };
        if !out.status.success() {
            let exit = daemon
                .pid("pipewire")
                .map(|p| reap(p, Duration::from_secs(5)))
                .unwrap_or(Exit::Unknown);
            let failure = StartFailure {
                script_stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                log: daemon.log(),
                exit,
            };
            drop(daemon);
            return Err(failure);
        }
        Ok(daemon)
    }

    fn pid(&self, name: &str) -> Option<i32> {
        fs::read_to_string(self.dir.join(format!("{name}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("pipewire.log")).unwrap_or_default()
    }

    /// The runtime dir clients connect through.
    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// The `PIPEWIRE_MODULE_DIR` value the daemon runs with.
    pub fn module_dir_env(&self) -> &str {
        &self.module_dir_env
    }

    /// A command set up to talk to this daemon.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("XDG_RUNTIME_DIR", self.runtime_dir())
            .env("PIPEWIRE_RUNTIME_DIR", self.runtime_dir())
            .env_remove("PIPEWIRE_REMOTE")
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env_remove("PIPEWIRE_DEBUG");
        c
    }

    /// `pw-dump` as JSON.
    pub fn dump(&self) -> Vec<Value> {
        let out = self.command("pw-dump").output().expect("run pw-dump");
        serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap_or_default()
    }

    /// The pw-dump object of the node named `name`, waiting up to 5 s for it.
    pub fn wait_node(&self, name: &str) -> Option<Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(n) = self.dump().into_iter().find(|o| {
                o["type"] == "PipeWire:Interface:Node" && o["info"]["props"]["node.name"] == name
            }) {
                return Some(n);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Plays `wav` into the node `target` with `pw-play`, to the end.
    pub fn play(&self, target: &str, wav: &Path) {
        let status = self
            .command("pw-play")
            .arg("--target")
            .arg(target)
            .arg(wav)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run pw-play");
        assert!(status.success(), "pw-play failed: {status}");
    }

    /// Starts `pw-play` in the background.
    pub fn spawn_play(&self, target: &str, wav: &Path) -> Child {
        self.command("pw-play")
            .arg("--target")
            .arg(target)
            .arg(wav)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pw-play")
    }

    /// Stops WirePlumber and PipeWire with SIGTERM and returns PipeWire's exit (its log stays
    /// readable until drop).
    pub fn stop(&mut self) -> Exit {
        let mut exit = Exit::Unknown;
        for name in ["wireplumber", "pipewire"] {
            if let Some(pid) = self.pid(name) {
                // SAFETY: kill(2) with a pid read from the pid file the script wrote.
                unsafe { libc::kill(pid, libc::SIGTERM) };
                let e = reap(pid, Duration::from_secs(10));
                if name == "pipewire" {
                    exit = e;
                }
            }
        }
        self.stopped = true;
        exit
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !self.stopped {
            self.stop();
        }
        let _ = Command::new(repo_root().join("scripts/headless-pipewire"))
            .arg("stop")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A free UDP port on loopback (bound and released; good enough for tests).
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("bind a free port")
}

/// A drop-in that loads the module with `args` (text inside `args = { ... }`).
pub fn module_dropin(args: &str, nofail: bool) -> (&'static str, String) {
    let flags = if nofail { "flags = [ nofail ]" } else { "" };
    (
        "50-wavesync.conf",
        format!(
            "context.modules = [\n  {{ name = libpipewire-module-wavesync\n    args = {{ {args} }}\n    {flags}\n  }}\n]\n"
        ),
    )
}

/// The arguments every streaming test uses: one loopback destination and a free control port.
pub fn loopback_args(port: u16, extra: &str) -> String {
    format!(
        "destination.ip = \"127.0.0.1\" destination.port = {port} wavesync.control.port = {} {extra}",
        free_udp_port()
    )
}

pub use wavesync_net::clock::monotonic_ns;

/// One datagram and when it arrived (CLOCK_MONOTONIC of this process).
pub struct Datagram {
    pub at: i64,
    pub bytes: Vec<u8>,
}

/// A UDP socket on 127.0.0.1 collecting datagrams on a thread until stopped.
pub struct Listener {
    pub port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<Datagram>>>,
}

impl Listener {
    pub fn start() -> Listener {
        Listener::start_on("127.0.0.1:0")
    }

    /// A listener bound to `addr` (e.g. `"[::1]:0"`).
    pub fn start_on(addr: &str) -> Listener {
        let sock = UdpSocket::bind(addr).expect("bind listener");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let port = sock.local_addr().expect("addr").port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = vec![0u8; 65536];
            while !s2.load(Ordering::SeqCst) {
                if let Ok(n) = sock.recv(&mut buf) {
                    got.push(Datagram {
                        at: monotonic_ns().ns(),
                        bytes: buf[..n].to_vec(),
                    });
                }
            }
            got
        });
        Listener {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops and returns everything received.
    pub fn finish(mut self) -> Vec<Datagram> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A decoded audio packet with its arrival time.
#[derive(Clone, Debug)]
pub struct Packet {
    pub at: i64,
    pub marker: bool,
    pub format: SampleFormat,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub play_time: i64,
    /// Interleaved samples as i32 (L16 or L24 values).
    pub samples: Vec<i32>,
}

/// Decodes the audio packets among `datagrams` (status messages and others are skipped).
pub fn audio_packets(datagrams: &[Datagram]) -> Vec<Packet> {
    datagrams
        .iter()
        .filter_map(|d| {
            let p = AudioPacket::decode(&d.bytes).ok()?;
            let samples = match p.format {
                SampleFormat::L16 => p
                    .payload
                    .chunks_exact(2)
                    .map(|b| i16::from_be_bytes([b[0], b[1]]) as i32)
                    .collect(),
                SampleFormat::L24 => p
                    .payload
                    .chunks_exact(3)
                    .map(|b| i32::from_be_bytes([b[0], b[1], b[2], 0]) >> 8)
                    .collect(),
            };
            Some(Packet {
                at: d.at,
                marker: p.marker,
                format: p.format,
                seq: p.seq,
                timestamp: p.timestamp,
                ssrc: p.ssrc,
                play_time: p.play_time.ns(),
                samples,
            })
        })
        .collect()
}

/// A deterministic, never-silent stereo test signal of `frames` frames (16-bit), different
/// on each channel, so its start can be found and compared sample by sample.
pub fn test_signal(frames: usize) -> Vec<i16> {
    let mut x: u32 = 0x1234_5678;
    let mut out = Vec::with_capacity(frames * 2);
    for i in 0..frames {
        // A 440 Hz sine at -6 dBFS on the left, with a little noise so no two stretches
        // repeat; a 660 Hz sine at -12 dBFS on the right.
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let noise = ((x >> 16) as i32 % 512) - 256;
        let t = i as f64 / 48_000.0;
        let l = (16_384.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i32 + noise;
        let r = (8_192.0 * (2.0 * std::f64::consts::PI * 660.0 * t).sin()) as i32 - noise;
        let nz = |v: i32| if v == 0 { 1 } else { v };
        out.push(nz(l) as i16);
        out.push(nz(r) as i16);
    }
    out
}

/// Writes `samples` (interleaved stereo 16-bit, 48 kHz) as a WAV file.
pub fn write_wav(path: &Path, samples: &[i16]) {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 48_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("create wav");
    for s in samples {
        w.write_sample(*s).expect("write sample");
    }
    w.finalize().expect("finalize wav");
}

/// Concatenated samples of consecutive packets (by sequence number) starting at `from`.
pub fn stream_samples(packets: &[Packet]) -> Vec<i32> {
    packets
        .iter()
        .flat_map(|p| p.samples.iter().copied())
        .collect()
}

/// Index (in samples) where `needle` first occurs in `hay`.
pub fn find(hay: &[i32], needle: &[i32]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (0..=hay.len() - needle.len()).find(|&i| hay[i..i + needle.len()] == *needle)
}

/// Writes a small report line to stderr (shown with `--nocapture`).
pub fn note(msg: &str) {
    let _ = writeln!(io::stderr(), "{msg}");
}

/// Node props as a string map.
pub fn props_of(node: &Value) -> BTreeMap<String, String> {
    node["info"]["props"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let s = v
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string());
                    (k.clone(), s)
                })
                .collect()
        })
        .unwrap_or_default()
}
