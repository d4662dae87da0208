//! Test bed shared by the receiver's end-to-end tests: a real-time sender built from the
//! common `SenderCore` on loopback multicast (with optional impairments: periodic, random and
//! burst loss of first transmissions, loss of resends, jitter/reordering, a partition, a step of
//! its timeline, NACKs ignored), receiver processes (optionally in their own time namespace),
//! the virtual DAC log reader, and the maths of skew and absolute sync error.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use wavesync_common::format::{ClockDomain, StreamFormat};
use wavesync_common::sender::{SenderConfig, SenderCore, SenderStats, Target};
use wavesync_common::time::{LocalNs, TimelineNs};
use wavesync_common::wire::rtp::AudioPacket;
use wavesync_common::wire::{classify, Kind};
use wavesync_receiver::clock_io::{monotonic_ns, realtime_ns};

/// The receiver binary under test and the sender binary built beside it (`cargo test
/// --workspace` builds both); panics naming the missing one.
pub fn sender_and_receiver() -> (PathBuf, PathBuf) {
    let receiver = PathBuf::from(env!("CARGO_BIN_EXE_wavesync-receiver"));
    let sender = receiver.with_file_name("wavesync-sender");
    assert!(
        sender.exists(),
        "{} is not built: run `cargo build -p wavesync-sender` (cargo test --workspace does)",
        sender.display()
    );
    (sender, receiver)
}

/// A multicast group on loopback, one per purpose (`salt`), on a port the kernel just found
/// free, so parallel tests never share and nothing else on the host is assumed absent.
pub fn group(salt: u16) -> SocketAddr {
    let port = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port");
    let last = 100 + (salt % 100) as u8;
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(239, 255, 77, last), port))
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

/// A small deterministic PRNG (xorshift64*), so impairments repeat with a seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// How a [`TestSender`] streams and what it does to its own traffic.
#[derive(Clone, Debug)]
pub struct SenderOpts {
    /// Capture-to-DAC latency, ms.
    pub latency_ms: i64,
    /// Stream format.
    pub format: StreamFormat,
    /// Stream id.
    pub ssrc: u32,
    /// Control port to bind on 127.0.0.1 (0: any).
    pub control_port: u16,
    /// Drop every Nth fresh audio packet (0: none).
    pub drop_every: u64,
    /// Share of fresh audio packets dropped at random (0..1).
    pub loss: f64,
    /// Losses come in bursts this long (ms of audio); 0: independent losses.
    pub burst_ms: f64,
    /// Share of resends dropped at random.
    pub resend_loss: f64,
    /// Each audio datagram (fresh or resent) is delayed by a uniform 0..jitter_ms (reorders).
    pub jitter_ms: f64,
    /// Seed of the impairments.
    pub seed: u64,
    /// Answer NACKs (false: they are dropped on arrival).
    pub answer_nacks: bool,
    /// Its timeline: this process's CLOCK_MONOTONIC plus this, ns (another master, or one
    /// whose clock restarted; [`real_minus_mono`] for clock domain `system`).
    pub timeline_offset_ns: i64,
    /// The clock domain its status message announces.
    pub clock_domain: ClockDomain,
    /// The channel positions its status message announces (`None`: none, the default order).
    pub channel_map: Option<wavesync_common::channels::ChannelMap>,
    /// Channel `c` of the signal scaled by `(c + 1) / 8`, so each channel is told apart by its
    /// level (else channels alternate in sign only).
    pub distinct_channels: bool,
}

impl Default for SenderOpts {
    fn default() -> Self {
        SenderOpts {
            latency_ms: 150,
            format: StreamFormat::DEFAULT,
            ssrc: 0x7e57_0001,
            control_port: 0,
            drop_every: 0,
            loss: 0.0,
            burst_ms: 0.0,
            resend_loss: 0.0,
            jitter_ms: 0.0,
            seed: 1,
            answer_nacks: true,
            timeline_offset_ns: 0,
            clock_domain: ClockDomain::Master,
            channel_map: None,
            distinct_channels: false,
        }
    }
}

/// A fresh audio packet as sent: its RTP timestamp and when its first frame must play, on
/// this process's CLOCK_MONOTONIC (the sender's timeline offset removed).
#[derive(Clone, Copy, Debug)]
pub struct SentPacket {
    pub ts: u32,
    pub play_mono: i64,
}

/// What a [`TestSender`] did.
#[derive(Clone, Copy, Debug, Default)]
pub struct TestStats {
    /// The core's own counters.
    pub core: SenderStats,
    /// Fresh audio packets the core handed out.
    pub fresh: u64,
    /// Of those, dropped by the impairment (the loss the receivers must repair).
    pub fresh_dropped: u64,
    /// Resends dropped by the impairment.
    pub resends_dropped: u64,
    /// Datagrams (any kind, either way) dropped by a partition.
    pub partition_dropped: u64,
    /// NACKs ignored because `answer_nacks` was off.
    pub nacks_ignored: u64,
}

impl TestStats {
    /// Resends sent per packet lost on first transmission.
    pub fn resend_overhead(&self) -> f64 {
        self.core.resends_sent as f64 / self.fresh_dropped.max(1) as f64
    }
}

struct Shared {
    stop: AtomicBool,
    partitioned: AtomicBool,
    paused: AtomicBool,
    timeline_offset: AtomicI64,
    answer_nacks: AtomicBool,
    sent: Mutex<Vec<SentPacket>>,
}

/// A sender running in a thread: a test signal paced on CLOCK_MONOTONIC through `SenderCore`.
pub struct TestSender {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<TestStats>>,
    pub control: SocketAddr,
    pub format: StreamFormat,
}

/// The test signal: a sum of two tones, never silent, frame `n` at 48 kHz stereo.
pub fn signal(n: u64, out: &mut [f32]) {
    signal_at(n, 48_000, out);
}

/// The test signal at `rate`, frame `n`, any number of channels (`out.len()`), alternating
/// in sign.
pub fn signal_at(n: u64, rate: u32, out: &mut [f32]) {
    let t = n as f64 / rate as f64;
    let v = (0.3 * (t * 2.0 * std::f64::consts::PI * 441.0).sin()
        + 0.2 * (t * 2.0 * std::f64::consts::PI * 1234.5).sin()) as f32;
    for (c, o) in out.iter_mut().enumerate() {
        *o = if c % 2 == 0 { v } else { -v };
    }
}

struct Loss {
    rng: Rng,
    burst_left: u32,
    burst_packets: u32,
    start_p: f64,
    drop_every: u64,
    count: u64,
}

impl Loss {
    fn new(o: &SenderOpts, packet_ms: f64) -> Self {
        let burst_packets = if o.burst_ms > 0.0 {
            (o.burst_ms / packet_ms).round().max(1.0) as u32
        } else {
            1
        };
        let l = burst_packets as f64;
        let s = o.loss.clamp(0.0, 0.99);
        Loss {
            rng: Rng::new(o.seed),
            burst_left: 0,
            burst_packets,
            // Each packet outside a burst starts one with this probability, so the share of
            // packets lost is `s` on average: p = s / (L (1 - s) + s).
            start_p: s / (l * (1.0 - s) + s),
            drop_every: o.drop_every,
            count: 0,
        }
    }

    fn drop_fresh(&mut self) -> bool {
        self.count += 1;
        if self.burst_left > 0 {
            self.burst_left -= 1;
            return true;
        }
        if self.drop_every > 0 && self.count % self.drop_every == 0 {
            return true;
        }
        if self.start_p > 0.0 && self.rng.unit() < self.start_p {
            self.burst_left = self.burst_packets - 1;
            return true;
        }
        false
    }
}

fn stream_socket() -> UdpSocket {
    let stream = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
    stream
        .set_multicast_if_v4(&Ipv4Addr::LOCALHOST)
        .expect("multicast if");
    stream.set_multicast_loop_v4(true).expect("loop");
    stream
        .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
        .expect("bind");
    stream.into()
}

fn control_socket(port: u16) -> UdpSocket {
    // A restarted master rebinds the port its predecessor just closed.
    let mut last = None;
    for _ in 0..50 {
        match UdpSocket::bind((Ipv4Addr::LOCALHOST, port)) {
            Ok(s) => {
                s.set_nonblocking(true).expect("nonblocking");
                return s;
            }
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("control socket on port {port}: {last:?}");
}

impl TestSender {
    /// Starts streaming to `dest` (multicast pinned to 127.0.0.1) with `latency_ms`; `drop_every`
    /// > 0 drops every Nth audio packet on first transmission (resends still go out).
    pub fn start(dest: SocketAddr, latency_ms: i64, drop_every: u64) -> TestSender {
        Self::with(
            dest,
            SenderOpts {
                latency_ms,
                drop_every,
                ..SenderOpts::default()
            },
        )
    }

    /// Starts streaming to `dest` as `opts` say.
    pub fn with(dest: SocketAddr, opts: SenderOpts) -> TestSender {
        let stream = stream_socket();
        let control = control_socket(opts.control_port);
        let control_addr = control.local_addr().expect("addr");
        let fmt = opts.format;
        let mut cfg = SenderConfig::new(fmt, opts.ssrc);
        cfg.latency_ns = opts.latency_ms * 1_000_000;
        cfg.time_port = control_addr.port();
        cfg.name = "test".into();
        cfg.clock_domain = opts.clock_domain;
        cfg.channel_map = opts.channel_map;
        let packet_ms = cfg.frames_per_packet as f64 * 1e3 / fmt.rate as f64;
        let mut core = SenderCore::new(cfg).expect("sender config");
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            partitioned: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            timeline_offset: AtomicI64::new(opts.timeline_offset_ns),
            answer_nacks: AtomicBool::new(opts.answer_nacks),
            sent: Mutex::new(Vec::new()),
        });
        let sh = shared.clone();
        let thread = std::thread::spawn(move || {
            let rate = fmt.rate as u64;
            let ch = fmt.channels as usize;
            let start = monotonic_ns();
            let mut sent_frames: u64 = 0;
            let chunk = (rate / 10) as usize;
            let mut block = vec![0.0f32; ch * chunk];
            let mut buf = vec![0u8; core.max_datagram_len().max(2048)];
            let mut rx = [0u8; 2048];
            let mut loss = Loss::new(&opts, packet_ms);
            let mut jitter_rng = Rng::new(opts.seed ^ 0x5eed);
            let mut resend_rng = Rng::new(opts.seed ^ 0xbeef);
            let mut delayed: VecDeque<(LocalNs, SocketAddr, Vec<u8>)> = VecDeque::new();
            let mut st = TestStats::default();
            while !sh.stop.load(Ordering::Relaxed) {
                let off = sh.timeline_offset.load(Ordering::Relaxed);
                // This test master's timeline: our monotonic clock shifted by `off`.
                let timeline = |l: LocalNs| TimelineNs::from_ns(l.ns() + off);
                let cut = sh.partitioned.load(Ordering::Relaxed);
                let mono = monotonic_ns();
                let due = ((mono - start) as u128 * rate as u128 / 1_000_000_000) as u64;
                if sh.paused.load(Ordering::Relaxed) {
                    // Nothing captured: the audio of the pause never exists.
                    sent_frames = sent_frames.max(due);
                } else if due > sent_frames {
                    let n = ((due - sent_frames) as usize).min(chunk);
                    for i in 0..n {
                        let frame = &mut block[ch * i..ch * i + ch];
                        signal_at(sent_frames + i as u64, fmt.rate, frame);
                        if opts.distinct_channels {
                            for (c, v) in frame.iter_mut().enumerate() {
                                *v *= (c + 1) as f32 / 8.0;
                            }
                        }
                    }
                    let capture = start + (sent_frames as i64 * 1_000_000_000) / rate as i64;
                    if let Err(e) = core.push_audio(timeline(capture), &block[..ch * n]) {
                        panic!("test sender: {e}");
                    }
                    sent_frames += n as u64;
                }
                while let Ok((len, from)) = control.recv_from(&mut rx) {
                    if cut {
                        st.partition_dropped += 1;
                        continue;
                    }
                    if classify(&rx[..len]) == Kind::Nack
                        && !sh.answer_nacks.load(Ordering::Relaxed)
                    {
                        st.nacks_ignored += 1;
                        continue;
                    }
                    core.handle_control(timeline(monotonic_ns()), from, &rx[..len]);
                }
                loop {
                    let before = core.stats().resends_sent;
                    let Some(t) = core.poll_transmit(timeline(monotonic_ns()), &mut buf) else {
                        break;
                    };
                    let bytes = &buf[..t.len];
                    let resend = core.stats().resends_sent > before;
                    let audio = classify(bytes) == Kind::Audio;
                    if audio && !resend {
                        st.fresh += 1;
                        if let Ok(p) = AudioPacket::decode(bytes) {
                            if let Ok(mut s) = sh.sent.lock() {
                                s.push(SentPacket {
                                    ts: p.timestamp,
                                    play_mono: p.play_time.ns() - off,
                                });
                            }
                        }
                    }
                    if cut {
                        st.partition_dropped += 1;
                        continue;
                    }
                    if audio && !resend && loss.drop_fresh() {
                        st.fresh_dropped += 1;
                        continue;
                    }
                    if resend && opts.resend_loss > 0.0 && resend_rng.unit() < opts.resend_loss {
                        st.resends_dropped += 1;
                        continue;
                    }
                    let to = match t.to {
                        Target::Stream => dest,
                        Target::Peer(p) => p,
                    };
                    let sock = match t.to {
                        Target::Stream => &stream,
                        Target::Peer(_) => &control,
                    };
                    if audio && opts.jitter_ms > 0.0 {
                        let delay = (jitter_rng.unit() * opts.jitter_ms * 1e6) as i64;
                        let at = monotonic_ns() + delay;
                        // Kept in send order; the queue is short.
                        let i = delayed.partition_point(|d| d.0 <= at);
                        // The socket is picked again by destination when it goes out.
                        delayed.insert(i, (at, to, bytes.to_vec()));
                        continue;
                    }
                    let _ = sock.send_to(bytes, to);
                }
                let now = monotonic_ns();
                while delayed.front().is_some_and(|d| d.0 <= now) {
                    if let Some((_, to, bytes)) = delayed.pop_front() {
                        let sock = if to == dest { &stream } else { &control };
                        let _ = sock.send_to(&bytes, to);
                    }
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            st.core = core.stats();
            st
        });
        TestSender {
            shared,
            thread: Some(thread),
            control: control_addr,
            format: fmt,
        }
    }

    /// Cuts (true) or restores (false) all its traffic, both ways, as a network partition
    /// would; the stream keeps running meanwhile.
    pub fn set_partitioned(&self, cut: bool) {
        self.shared.partitioned.store(cut, Ordering::Relaxed);
    }

    /// Stops (true) or resumes (false) feeding audio to the core, as a master whose source
    /// stopped: nothing is sent meanwhile but status messages and answers.
    pub fn set_paused(&self, paused: bool) {
        self.shared.paused.store(paused, Ordering::Relaxed);
    }

    /// Moves its timeline (stamps and time-service answers) by `ns` from now on.
    pub fn step_timeline(&self, ns: i64) {
        self.shared.timeline_offset.fetch_add(ns, Ordering::Relaxed);
    }

    /// Starts or stops answering NACKs.
    pub fn set_answer_nacks(&self, on: bool) {
        self.shared.answer_nacks.store(on, Ordering::Relaxed);
    }

    /// The fresh audio packets sent so far.
    pub fn sent(&self) -> Vec<SentPacket> {
        self.shared
            .sent
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Stops and returns what it did.
    pub fn stop(mut self) -> TestStats {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .expect("sender thread")
    }
}

impl Drop for TestSender {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
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

/// A home directory in `scratch` whose `.asoundrc` defines `pcm.NAME`: a `type file` tee into
/// `slave` keeping a raw copy of everything written; returns (home, the raw file).
pub fn file_pcm_home(scratch: &Scratch, name: &str, slave: &str) -> (PathBuf, PathBuf) {
    let home = scratch.path("home");
    std::fs::create_dir_all(&home).expect("home");
    let raw = scratch.path("out.raw");
    std::fs::write(
        home.join(".asoundrc"),
        format!(
            "pcm.{name} {{\n  type file\n  slave.pcm \"{slave}\"\n  file \"{}\"\n  format \"raw\"\n}}\n",
            raw.display()
        ),
    )
    .expect("asoundrc");
    (home, raw)
}

/// The device sample format a receiver's log names (`output open: ... (S32_LE)`).
pub fn logged_device_format(log: &str) -> Option<String> {
    log.lines()
        .find_map(|l| l.split("output open: ").nth(1))
        .and_then(|l| {
            l.rsplit_once('(')
                .map(|(_, f)| f.trim_end_matches(')').to_string())
        })
}

impl RxProcess {
    /// Waits up to `timeout` for it to end.
    pub fn wait_for(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(s)) = self.0.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Stops it with SIGTERM (a clean stop: it logs its final counters) and waits.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM);
        }
        self.wait_for(Duration::from_secs(5))
    }
}

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
    // Its own state file (room id and settings) beside its log: never the user's.
    let state = log.with_extension("state");
    std::fs::create_dir_all(&state).expect("state directory");
    let child = cmd
        .args(args)
        .env("RUST_LOG", "info")
        .env("STATE_DIRECTORY", &state)
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .expect("spawn wavesync-receiver");
    RxProcess(child)
}

/// A receiver's command line: virtual DAC at `ppm` logging to `<name>.log`, status socket
/// `<name>.sock`, `duration_s`, plus `extra` arguments.
pub fn rx_args(
    g: SocketAddr,
    scratch: &Scratch,
    name: &str,
    ppm: i32,
    duration_s: f64,
    extra: &[&str],
) -> Vec<String> {
    let log = scratch.path(&format!("{name}.log"));
    let sock = scratch.path(&format!("{name}.sock"));
    let mut v: Vec<String> = [
        "--listen",
        &g.to_string(),
        "--interface",
        "127.0.0.1",
        "--output",
        "virtual",
        "--virtual-ppm",
        &ppm.to_string(),
        "--virtual-log",
        log.to_str().expect("utf-8 path"),
        "--status-socket",
        sock.to_str().expect("utf-8 path"),
        "--status-interval",
        "1",
        "--duration",
        &duration_s.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// The receiver's counters from its last log line ("stopped: ... lost N recovered N late N
/// concealed N frames, resyncs N underruns N").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub packets: u64,
    pub lost: u64,
    pub recovered: u64,
    pub late: u64,
    pub concealed: u64,
    pub resyncs: u64,
    pub underruns: u64,
}

/// Parses the counters of the last status line of a receiver's log.
pub fn final_counts(log_text: &str) -> Option<Counts> {
    let line = log_text.lines().rev().find(|l| l.contains("stopped:"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let after = |key: &str| -> Option<u64> {
        let i = words.iter().position(|w| *w == key)?;
        words.get(i + 1)?.trim_end_matches(',').parse().ok()
    };
    Some(Counts {
        packets: after("packets")?,
        lost: after("lost")?,
        recovered: after("recovered")?,
        late: after("late")?,
        concealed: after("concealed")?,
        resyncs: after("resyncs")?,
        underruns: after("underruns")?,
    })
}

/// One JSON snapshot from a receiver's status socket.
pub fn read_status(sock: &Path) -> Option<wavesync_receiver::status::StatusReport> {
    use std::io::Read;
    let mut s = std::os::unix::net::UnixStream::connect(sock).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

/// Waits for a receiver to end by itself (its `--duration`), then returns its log; panics
/// with the log when it did not end cleanly.
pub fn finish(rx: &mut RxProcess, err_log: &Path, timeout: Duration) -> String {
    let status = rx.wait_for(timeout);
    let text = std::fs::read_to_string(err_log).unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()),
        "receiver did not finish cleanly: {status:?}\n{text}"
    );
    text
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

/// Frames of audio (not silence) in a log.
pub fn played_frames(log: &[Played]) -> u64 {
    log.iter()
        .filter(|w| w.pos.is_some())
        .map(|w| w.frames)
        .sum()
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

/// CLOCK_REALTIME minus CLOCK_MONOTONIC in this process (the tightest of a few readings).
pub fn real_minus_mono() -> i64 {
    (0..5)
        .map(|_| {
            let a = monotonic_ns();
            let r = realtime_ns();
            let b = monotonic_ns();
            (b - a, r - (a.ns() + b.ns()) / 2)
        })
        .min_by_key(|x| x.0)
        .map(|x| x.1)
        .unwrap_or(0)
}

/// When stream position `pos` was due to leave the DAC (CLOCK_REALTIME, ns), by the sender's
/// record of the packets it sent; None when the position is not in it.
pub fn due_real(sent: &[SentPacket], pos: f64, rate: f64, real_minus_mono: i64) -> Option<f64> {
    let i = sent.partition_point(|s| (s.ts as f64) <= pos);
    let s = sent.get(i.checked_sub(1)?)?;
    let next = sent.get(i).map_or(s.ts as f64 + rate, |n| n.ts as f64);
    if pos >= next {
        return None;
    }
    Some(s.play_mono as f64 + (pos - s.ts as f64) / rate * 1e9 + real_minus_mono as f64)
}

/// The absolute sync error (played minus due, us) of every audio write of `log` that played
/// between `from_real` and `to_real`, against one sender's record: (realtime ns, error us).
pub fn sync_errors(
    log: &[Played],
    sent: &[SentPacket],
    rate: f64,
    real_minus_mono: i64,
    from_real: i64,
    to_real: i64,
) -> Vec<(i64, f64)> {
    log.iter()
        .filter(|w| w.real_ns >= from_real && w.real_ns < to_real)
        .filter_map(|w| {
            let pos = w.pos?;
            let due = due_real(sent, pos, rate, real_minus_mono)?;
            Some((w.real_ns, (w.real_ns as f64 - due) / 1e3))
        })
        .collect()
}

/// The first instant (realtime ns) from which every error stays within `bound_us` (at least
/// one such write, and none out of bounds after it), or None.
pub fn settled_at(errors: &[(i64, f64)], bound_us: f64) -> Option<i64> {
    let last_bad = errors.iter().rposition(|e| e.1.abs() > bound_us);
    let first_good = last_bad.map_or(0, |i| i + 1);
    errors.get(first_good).map(|e| e.0)
}
