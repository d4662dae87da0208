//! Helpers for the binary tests: run `wavesync-sender`, capture what it sends on loopback,
//! decode it with `wavesync_common::wire`, and check its stamps.

#![allow(dead_code)]

use std::io::Read;
use std::net::UdpSocket;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;
use wavesync_common::time::LocalNs;

#[path = "../../../test-support/skip.rs"]
mod skip;
#[allow(unused_imports)] // Not every test binary that includes util skips.
pub use skip::skip_or_fail;

use wavesync_common::time::frames_to_ns;
use wavesync_common::wire::rtp::AudioPacket;
use wavesync_common::wire::status::Status;
use wavesync_common::wire::{classify, Kind};
use wavesync_net::clock::monotonic_ns;

/// One datagram and when it arrived (CLOCK_MONOTONIC, the sender's timeline on this host).
pub struct Captured {
    pub at: i64,
    pub bytes: Vec<u8>,
}

/// A decoded audio packet.
#[derive(Clone, Debug)]
pub struct Audio {
    pub at: i64,
    pub marker: bool,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
    pub play: i64,
    pub payload: Vec<u8>,
}

/// The sender binary with logs on.
pub fn sender() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wavesync-sender"));
    c.env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// Sends to `dest`, with a free control port and no statistics lines.
pub fn base(cmd: &mut Command, dest: &UdpSocket) {
    cmd.args(["--dest", &dest.local_addr().unwrap().to_string()])
        .args(["--control-port", &free_port().to_string()])
        .args(["--stats-interval", "0"]);
}

/// The sender reading the named pipe `path` for `duration` seconds, sending to `dest`.
pub fn fifo_sender(path: &std::path::Path, duration: &str, dest: &UdpSocket) -> Command {
    let mut cmd = sender();
    cmd.args([
        "--input",
        &format!("fifo:{}", path.display()),
        "--duration",
        duration,
    ]);
    base(&mut cmd, dest);
    cmd
}

/// Makes a named pipe at `path`.
pub fn mkfifo(path: &std::path::Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// A socket receiving on loopback.
pub fn listener() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind a loopback socket");
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    s
}

/// A UDP port free on every address right now (for the sender's control port).
pub fn free_port() -> u16 {
    let s = UdpSocket::bind("[::]:0")
        .or_else(|_| UdpSocket::bind("0.0.0.0:0"))
        .unwrap();
    s.local_addr().unwrap().port()
}

/// A running sender whose stderr is being collected.
pub struct Running {
    pub child: Child,
    stderr: Option<JoinHandle<String>>,
}

impl Running {
    pub fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd.spawn().expect("start wavesync-sender");
        let mut err = child.stderr.take().unwrap();
        let stderr = Some(std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        }));
        Running { child, stderr }
    }

    /// Receives on `socks` until the sender exits (then 300 ms more), or `max` passes (then
    /// the sender is killed and the test fails). Returns what each socket got, the exit
    /// status and the sender's stderr.
    pub fn collect(
        mut self,
        socks: &[&UdpSocket],
        max: Duration,
    ) -> (Vec<Vec<Captured>>, ExitStatus, String) {
        let deadline = monotonic_ns() + max.as_nanos() as i64;
        let mut out: Vec<Vec<Captured>> = socks.iter().map(|_| Vec::new()).collect();
        let mut exited: Option<(ExitStatus, LocalNs)> = None;
        let mut buf = [0u8; 2048];
        for s in socks {
            s.set_nonblocking(true).unwrap();
        }
        loop {
            let mut idle = true;
            for (i, s) in socks.iter().enumerate() {
                while let Ok(n) = s.recv(&mut buf) {
                    idle = false;
                    out[i].push(Captured {
                        at: monotonic_ns().ns(),
                        bytes: buf[..n].to_vec(),
                    });
                }
            }
            if idle {
                std::thread::sleep(Duration::from_micros(300));
            }
            let now = monotonic_ns();
            if exited.is_none() {
                if let Some(st) = self.child.try_wait().unwrap() {
                    exited = Some((st, now));
                }
            }
            match exited {
                Some((_, t)) if now - t > 300_000_000 => break,
                None if now > deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!("the sender did not stop within {max:?}: {}", self.stderr());
                }
                _ => {}
            }
        }
        let status = exited.unwrap().0;
        let err = self.stderr();
        (out, status, err)
    }

    /// Waits for the sender to exit (killing it after `max`), returns status and stderr.
    pub fn wait(mut self, max: Duration) -> (ExitStatus, String) {
        let deadline = monotonic_ns() + max.as_nanos() as i64;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st, self.stderr());
            }
            if monotonic_ns() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("the sender did not exit within {max:?}: {}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stderr(&mut self) -> String {
        self.stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The audio packets in arrival order.
pub fn audio(c: &[Captured]) -> Vec<Audio> {
    c.iter()
        .filter(|d| classify(&d.bytes) == Kind::Audio)
        .map(|d| {
            let p = AudioPacket::decode(&d.bytes).expect("a valid audio packet");
            Audio {
                at: d.at,
                marker: p.marker,
                seq: p.seq,
                ts: p.timestamp,
                ssrc: p.ssrc,
                play: p.play_time.ns(),
                payload: p.payload.to_vec(),
            }
        })
        .collect()
}

/// The status messages in arrival order.
pub fn statuses(c: &[Captured]) -> Vec<Status> {
    c.iter()
        .filter(|d| classify(&d.bytes) == Kind::Status)
        .map(|d| Status::decode(&d.bytes).expect("a valid status message"))
        .collect()
}

/// Checks every run: packets follow each other (sequence, RTP timestamp = frames so far) and
/// are stamped exactly `frames / rate` after the run's first packet. Returns the runs' sizes
/// in packets.
pub fn check_runs(a: &[Audio], rate: u32, bytes_per_frame: usize) -> Vec<usize> {
    assert!(!a.is_empty(), "no audio packets");
    assert!(a[0].marker, "the first packet starts a run");
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 0..a.len() {
        if i > 0 {
            let (p, q) = (&a[i - 1], &a[i]);
            assert_eq!(q.ssrc, p.ssrc);
            assert_eq!(
                q.seq,
                p.seq.wrapping_add(1),
                "sequence numbers follow each other"
            );
            let frames = (p.payload.len() / bytes_per_frame) as u32;
            assert_eq!(q.ts, p.ts.wrapping_add(frames), "timestamps count frames");
            if q.marker {
                runs.push(i - start);
                start = i;
            }
        }
        let s = &a[start];
        let n = a[i].ts.wrapping_sub(s.ts) as i64;
        assert_eq!(
            a[i].play - s.play,
            frames_to_ns(n, rate),
            "packet {i}: stamped exactly frames/rate after its run's start"
        );
    }
    runs.push(a.len() - start);
    runs
}

/// Play time minus arrival, ms, per packet.
pub fn leads_ms(a: &[Audio]) -> Vec<f64> {
    a.iter().map(|p| (p.play - p.at) as f64 / 1e6).collect()
}

/// 16-bit samples of every packet, concatenated.
pub fn l16(a: &[Audio]) -> Vec<i16> {
    a.iter()
        .flat_map(|p| {
            p.payload
                .chunks_exact(2)
                .map(|b| i16::from_be_bytes([b[0], b[1]]))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Deterministic test samples (a full-range pseudo-random walk, never long runs of zeros).
pub fn test_samples(n: usize, seed: u32) -> Vec<i16> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let v = (x >> 16) as u16 as i16;
            if v == 0 {
                1
            } else {
                v
            }
        })
        .collect()
}

/// A fresh temporary path.
pub fn tmp(name: &str) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let k = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("wss-test-{}-{k}-{name}", std::process::id()))
}

/// Min and max of a series.
pub fn range(v: &[f64]) -> (f64, f64) {
    let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}
