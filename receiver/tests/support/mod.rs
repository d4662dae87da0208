//! Test bed shared by the receiver's end-to-end tests: a real-time sender built from the
//! common `SenderCore` on loopback multicast, receiver processes (optionally in their own time
//! namespace), and the virtual DAC log reader.

#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use wavesync_common::format::StreamFormat;
use wavesync_common::sender::{SenderConfig, SenderCore, SenderStats, Target};
use wavesync_receiver::clock_io::monotonic_ns;

/// A multicast group on loopback, per test process and purpose, so parallel tests never share.
pub fn group(salt: u16) -> SocketAddr {
    let port = 46_000 + (std::process::id() % 500) as u16 * 8 + salt;
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(239, 255, 77, 99), port))
}

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("ws-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("scratch dir");
        Scratch(p)
    }

    pub fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A sender running in a thread: a test signal paced on CLOCK_MONOTONIC through `SenderCore`.
pub struct TestSender {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<SenderStats>>,
    pub control: SocketAddr,
}

/// The test signal: a sum of two tones, never silent, frame `n` at 48 kHz stereo.
pub fn signal(n: u64, out: &mut [f32]) {
    let t = n as f64 / 48_000.0;
    let v = (0.3 * (t * 2.0 * std::f64::consts::PI * 441.0).sin()
        + 0.2 * (t * 2.0 * std::f64::consts::PI * 1234.5).sin()) as f32;
    out[0] = v;
    out[1] = -v;
}

impl TestSender {
    /// Starts streaming to `dest` (multicast pinned to 127.0.0.1) with `latency_ms`; `drop_every`
    /// > 0 drops every Nth audio packet on first transmission (resends still go out).
    pub fn start(dest: SocketAddr, latency_ms: i64, drop_every: u64) -> TestSender {
        let stream = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
        stream
            .set_multicast_if_v4(&Ipv4Addr::LOCALHOST)
            .expect("multicast if");
        stream.set_multicast_loop_v4(true).expect("loop");
        stream
            .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
            .expect("bind");
        let stream: UdpSocket = stream.into();
        let control = UdpSocket::bind("127.0.0.1:0").expect("control socket");
        control.set_nonblocking(true).expect("nonblocking");
        let control_addr = control.local_addr().expect("addr");
        let mut cfg = SenderConfig::new(StreamFormat::DEFAULT, 0x7e57_0001);
        cfg.latency_ns = latency_ms * 1_000_000;
        cfg.time_port = control_addr.port();
        cfg.name = "test".into();
        let mut core = SenderCore::new(cfg).expect("sender config");
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let start = monotonic_ns();
            let mut sent_frames: u64 = 0;
            let mut block = vec![0.0f32; 2 * 4800];
            let mut buf = vec![0u8; 2048];
            let mut rx = [0u8; 2048];
            let mut audio_count = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                let now = monotonic_ns();
                let due = ((now - start) as u128 * 48_000 / 1_000_000_000) as u64;
                if due > sent_frames {
                    let n = ((due - sent_frames) as usize).min(4800);
                    for i in 0..n {
                        signal(sent_frames + i as u64, &mut block[2 * i..2 * i + 2]);
                    }
                    let capture = start + (sent_frames as i64 * 1_000_000_000) / 48_000;
                    core.push_audio(capture, &block[..2 * n]);
                    sent_frames += n as u64;
                }
                while let Ok((len, from)) = control.recv_from(&mut rx) {
                    core.handle_control(monotonic_ns(), from, &rx[..len]);
                }
                while let Some(t) = core.poll_transmit(monotonic_ns(), &mut buf) {
                    match t.to {
                        Target::Stream => {
                            let is_audio = buf[1] & 0x7f == 96;
                            if is_audio {
                                audio_count += 1;
                                if drop_every > 0 && audio_count % drop_every == 0 {
                                    continue;
                                }
                            }
                            let _ = stream.send_to(&buf[..t.len], dest);
                        }
                        Target::Peer(p) => {
                            let _ = control.send_to(&buf[..t.len], p);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            core.stats()
        });
        TestSender {
            stop,
            thread: Some(thread),
            control: control_addr,
        }
    }

    /// Stops and returns the sender's counters.
    pub fn stop(mut self) -> SenderStats {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .expect("sender thread")
    }
}

impl Drop for TestSender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether this process may create time namespaces (root, or CAP_SYS_ADMIN).
pub fn can_unshare_time() -> bool {
    Command::new("unshare")
        .args(["--time", "--monotonic", "1000", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A receiver process, killed on drop.
pub struct RxProcess(pub Child);

impl Drop for RxProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `wavesync-receiver` with `args`, in a time namespace shifted by `shift_s` seconds
/// when given. Its log goes to `log`.
pub fn spawn_receiver(shift_s: Option<u64>, args: &[String], log: &Path) -> RxProcess {
    let bin = env!("CARGO_BIN_EXE_wavesync-receiver");
    let mut cmd = match shift_s {
        Some(s) => {
            let mut c = Command::new("unshare");
            c.args([
                "--time",
                "--monotonic",
                &s.to_string(),
                "--boottime",
                &s.to_string(),
                bin,
            ]);
            c
        }
        None => Command::new(bin),
    };
    let out = std::fs::File::create(log).expect("log file");
    let child = cmd
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .expect("spawn wavesync-receiver");
    RxProcess(child)
}

/// One line of a virtual DAC log: stream position of its first frame (None: silence), frames,
/// CLOCK_REALTIME when that frame played.
#[derive(Clone, Copy, Debug)]
pub struct Played {
    pub pos: Option<f64>,
    pub frames: u64,
    pub real_ns: i64,
}

pub fn read_log(path: &Path) -> Vec<Played> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let pos: f64 = f.next()?.parse().ok()?;
            let frames: u64 = f.next()?.parse().ok()?;
            let real_ns: i64 = f.next()?.parse().ok()?;
            Some(Played {
                pos: (pos >= 0.0).then_some(pos),
                frames,
                real_ns,
            })
        })
        .collect()
}

/// When stream position `p` played according to `log` (interpolated inside the write that
/// holds it at the nominal rate), if it did.
pub fn when_played(log: &[Played], p: f64, rate: f64) -> Option<f64> {
    let i = log.partition_point(|w| w.pos.is_none_or(|x| x <= p));
    let w = log[..i].iter().rev().find(|w| w.pos.is_some())?;
    let start = w.pos?;
    if p - start > w.frames as f64 {
        return None;
    }
    Some(w.real_ns as f64 + (p - start) / rate * 1e9)
}

/// Skew |tA - tB| in us at every `step` positions after `skip_s` seconds of audio.
pub fn skews_us(a: &[Played], b: &[Played], skip_s: f64, step: f64) -> Vec<f64> {
    let first = |l: &[Played]| l.iter().find_map(|w| w.pos);
    let last = |l: &[Played]| l.iter().rev().find_map(|w| w.pos);
    let (Some(fa), Some(fb), Some(la), Some(lb)) = (first(a), first(b), last(a), last(b)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut p = fa.max(fb) + skip_s * 48_000.0;
    while p < la.min(lb) {
        if let (Some(ta), Some(tb)) = (when_played(a, p, 48_000.0), when_played(b, p, 48_000.0)) {
            out.push((ta - tb).abs() / 1e3);
        }
        p += step;
    }
    out
}

/// (p50, p99, max) of `v` (sorted in place).
pub fn percentiles(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99), v[v.len() - 1])
}
