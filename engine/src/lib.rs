//! The sending engine: the common [`SenderCore`] running on real sockets in its own thread,
//! fed by a real-time safe [`AudioInput`]. `wavesync-sender` and the PipeWire module both run
//! it; it links no command-line, logging-frontend or audio-input crate, and its errors
//! ([`EngineError`]) name no command-line option or module argument: each front end maps them
//! to its own words.
//!
//! ```text
//!  producer (input thread or PipeWire's process callback)
//!     AudioInput::push(capture_time, samples)  -- rtrb rings, no lock, no allocation
//!        |  samples ring + (capture_time, frames) header ring, eventfd wake-up
//!        v
//!  "wavesync-net" thread: SenderCore  --> stream sockets (audio, status) to every destination
//!                                     <-> control socket (NTP requests/replies, NACKs/resends)
//! ```
//!
//! Capture times are pushed as this host's CLOCK_MONOTONIC ([`LocalNs`]); the network thread
//! maps them, its receive stamps and its `now` to the timeline of the configured clock domain
//! ([`EngineClock`], `domain.rs`): CLOCK_MONOTONIC itself in `master` (the default), this
//! host's CLOCK_REALTIME in `system`, an NTP server's clock as estimated by the common time
//! client in `ntp`. The time service answers on that timeline.

mod domain;

pub use domain::{EngineClock, NTP_FIRST_ESTIMATE};

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use rtrb::{Consumer, Producer, RingBuffer};
use wavesync_common::format::StreamFormat;
use wavesync_common::packetizer::{ConfigError, PacketizerConfig};
use wavesync_common::protect::{OpenStats, OVERHEAD};
use wavesync_common::sender::{SenderConfig, SenderCore, SenderStats, Target};
use wavesync_common::time::{frames_to_ns, LocalNs, TimelineNs, NS_PER_SEC};
use wavesync_common::wire::rtp::{DEFAULT_MAX_UDP_PAYLOAD, HEADER_LEN};
use wavesync_common::wire::status::FLAG_AUTHENTICATED;

use wavesync_net::{
    clock, defaults, KeyFileError, NetError, NetOptions, Protection, StampedSocket, StreamSockets,
};

/// What the engine needs.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    /// Rate, channels and wire sample format. Pushed samples are interleaved with this many
    /// channels at this rate.
    pub format: StreamFormat,
    /// Capture-to-DAC latency added to every stamp, ns.
    pub latency_ns: i64,
    /// Frames in a full packet.
    pub frames_per_packet: u16,
    /// Sender name in the status message.
    pub name: String,
    /// The channels' positions, announced in the status message (`None`: the default order
    /// for the channel count).
    pub channel_map: Option<wavesync_common::channels::ChannelMap>,
    /// Where the stream goes: multicast groups and unicast receivers, IPv4 and IPv6 mixed.
    pub destinations: Vec<SocketAddr>,
    /// How the stream sockets send (TTL, interface, loop, broadcast, source address).
    pub net: NetOptions,
    /// The control port (time service, NACKs), announced in the status; 0 takes a free port.
    pub control_port: u16,
    /// Stop sending after this much all-zero input; `None` never stops.
    pub silence_timeout_ns: Option<i64>,
    /// Start a new run when capture times depart from the prediction by more than this, ns.
    pub resync_threshold_ns: i64,
    /// Audio the input ring holds, ns (what the network thread may lag behind the input).
    pub ring_ns: i64,
    /// Log a statistics line this often; `None` never.
    pub stats_interval_ns: Option<i64>,
    /// The household key file: when set, every datagram sent is sealed and only authentic
    /// time requests and NACKs are answered; `None` sends an open stream.
    pub key_file: Option<PathBuf>,
    /// With a key: encrypt the audio payloads (else readable, still authenticated).
    pub encrypt: bool,
    /// The clock the stamps are on (the stream's clock domain).
    pub clock: EngineClock,
}

impl EngineConfig {
    /// Defaults for `format` sent to `destinations`: 150 ms latency, packets filling a
    /// 1472-byte UDP payload, control port 45301, name "WaveSync", 1 s silence timeout,
    /// 20 ms resync threshold, 500 ms ring, no statistics lines.
    pub fn new(format: StreamFormat, destinations: Vec<SocketAddr>) -> Self {
        let p = PacketizerConfig::new(format, 150_000_000, 0);
        EngineConfig {
            format,
            latency_ns: p.latency_ns,
            frames_per_packet: p.frames_per_packet,
            name: String::from("WaveSync"),
            channel_map: None,
            destinations,
            net: NetOptions::default(),
            control_port: defaults::CONTROL_PORT,
            silence_timeout_ns: p.silence_timeout_ns,
            resync_threshold_ns: p.resync_threshold_ns,
            ring_ns: 500_000_000,
            stats_interval_ns: None,
            key_file: None,
            encrypt: true,
            clock: EngineClock::Master,
        }
    }
}

/// Why the engine could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No destination to send to.
    #[error("no destination given")]
    NoDestinations,
    /// The control port is taken by another program (another sender, most likely).
    #[error("control port {port} is already in use (is another sender running?)")]
    ControlPortInUse {
        /// The port.
        port: u16,
    },
    /// A socket could not be set up.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The sender core refused the configuration.
    #[error("stream settings: {0}")]
    Config(#[from] ConfigError),
    /// The wake-up eventfd or the network thread could not be created.
    #[error("cannot start the network thread: {0}")]
    Thread(std::io::Error),
    /// The network thread panicked.
    #[error("the network thread crashed")]
    Panicked,
    /// The key file could not be used.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// Clock domain `ntp`: the NTP server's clock could not be read at start.
    #[error(
        "no estimate of the clock of NTP server {server} after {}: {sent} queries, \
         {answered} answered, {refused} answers refused{}",
        humantime(NTP_FIRST_ESTIMATE),
        if *answered == 0 { " (is an NTP server running there?)" } else { "" }
    )]
    NtpUnavailable {
        /// The server.
        server: SocketAddr,
        /// Queries sent.
        sent: u64,
        /// Answers used.
        answered: u64,
        /// Answers refused (invalid, unsynchronised, outliers).
        refused: u64,
    },
}

fn humantime(d: std::time::Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

impl From<domain::OpenError> for EngineError {
    fn from(e: domain::OpenError) -> Self {
        match e {
            domain::OpenError::Net(e) => EngineError::Net(e),
            domain::OpenError::Ntp(n) => EngineError::NtpUnavailable {
                server: n.server,
                sent: n.sent,
                answered: n.answered,
                refused: n.rejected,
            },
        }
    }
}

/// What a front end calls the settings an [`EngineError`] can blame: its command-line options
/// (`--control-port`) or module arguments (`wavesync.control.port`). The engine names none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SettingNames {
    /// The control port's setting.
    pub control_port: &'static str,
    /// The multicast interface's setting.
    pub interface: &'static str,
    /// The key file's setting.
    pub key_file: &'static str,
}

impl EngineError {
    /// The error in a front end's words: where a setting is at fault, which of `names` changes
    /// it.
    pub fn describe(&self, names: &SettingNames) -> String {
        match self {
            EngineError::ControlPortInUse { .. } => {
                format!("{self} (choose another with {})", names.control_port)
            }
            EngineError::Net(NetError::NoInterface(_)) => {
                format!("{self} (see {})", names.interface)
            }
            EngineError::Key(_) => format!("{self} (see {})", names.key_file),
            e => e.to_string(),
        }
    }
}

/// Counters of a running engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// The sender core's counters (packets, status, time service, NACKs, resends, runs).
    pub core: SenderStats,
    /// Pushes refused because the input ring was full (the network thread fell behind).
    pub input_refused: u64,
    /// Frames in those pushes.
    pub input_refused_frames: u64,
    /// Frames the network thread took from the ring.
    pub frames_in: u64,
    /// Datagram copies sent (one per destination).
    pub datagrams_sent: u64,
    /// Datagram copies dropped because a socket buffer was full.
    pub send_dropped: u64,
    /// Datagram copies that failed (logged once per destination).
    pub send_failed: u64,
    /// Control datagrams received.
    pub control_received: u64,
    /// Of those, stamped by the kernel on arrival.
    pub control_kernel_stamped: u64,
    /// With a key: control datagrams refused as unauthenticated (never answered), by reason.
    pub refused: OpenStats,
}

#[derive(Clone, Copy, Debug)]
struct Header {
    capture_time: LocalNs,
    frames: u32,
}

struct Shared {
    stop: AtomicBool,
    refused: AtomicU64,
    refused_frames: AtomicU64,
    wake: EventFd,
    stats: Mutex<EngineStats>,
}

impl Shared {
    fn wake(&self) {
        // Non-blocking eventfd: a full counter (never, in practice) just means already woken.
        let _ = nix::unistd::write(self.wake.as_fd(), &1u64.to_ne_bytes());
    }
}

/// The producer side: hands audio to the network thread.
///
/// [`AudioInput::push`] is real-time safe: no allocation, no lock, no blocking system call
/// (one non-blocking eventfd write to wake the network thread). It can be called from
/// PipeWire's real-time process callback.
pub struct AudioInput {
    samples: Producer<f32>,
    headers: Producer<Header>,
    channels: usize,
    shared: Arc<Shared>,
}

impl AudioInput {
    /// Queues interleaved samples whose first frame was captured at `capture_time` (this
    /// host's CLOCK_MONOTONIC; the network thread maps it to the timeline). A trailing partial frame is ignored. Returns false, and counts the push in
    /// [`EngineStats::input_refused`], when the ring has no room for all of it (nothing is
    /// queued then).
    pub fn push(&mut self, capture_time: LocalNs, samples: &[f32]) -> bool {
        let frames = samples.len() / self.channels;
        let n = frames * self.channels;
        if n == 0 {
            return true;
        }
        if self.samples.slots() < n || self.headers.slots() == 0 || frames > u32::MAX as usize {
            self.shared.refused.fetch_add(1, Ordering::Relaxed);
            self.shared
                .refused_frames
                .fetch_add(frames as u64, Ordering::Relaxed);
            return false;
        }
        match self.samples.write_chunk_uninit(n) {
            Ok(chunk) => {
                chunk.fill_from_iter(samples[..n].iter().copied());
            }
            Err(_) => return false,
        }
        let _ = self.headers.push(Header {
            capture_time,
            frames: frames as u32,
        });
        self.shared.wake();
        true
    }

    /// Interleaved channels per frame expected by [`AudioInput::push`].
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Frames the ring can take now.
    pub fn free_frames(&self) -> usize {
        if self.headers.slots() == 0 {
            0
        } else {
            self.samples.slots() / self.channels
        }
    }
}

/// The running engine. Dropping it stops it too.
pub struct Engine {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    control_port: u16,
    destinations: Vec<SocketAddr>,
    ssrc: u32,
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: getrandom writes at most the 4 bytes of the buffer we pass.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), libc::GRND_NONBLOCK) };
    if n == 4 {
        u32::from_ne_bytes(b)
    } else {
        // No entropy yet (early boot): time and pid are unique enough for a stream id.
        (clock::realtime_ns() as u32) ^ std::process::id().rotate_left(16)
    }
}

impl Engine {
    /// Opens the sockets and starts the network thread. Socket problems (port in use, bad
    /// interface, ...) are reported here, before anything runs.
    pub fn start(cfg: EngineConfig) -> Result<(Engine, AudioInput), EngineError> {
        if cfg.destinations.is_empty() {
            return Err(EngineError::NoDestinations);
        }
        let protection = match &cfg.key_file {
            Some(path) => {
                let keys = wavesync_net::protection::read_keys(path)?;
                let p = Arc::new(Protection::with_keys(keys, cfg.encrypt)?);
                // A changed key file is a rotation, applied without a restart.
                if let Err(e) = p.watch(path.clone(), wavesync_net::protection::KEY_FILE_CHECK) {
                    log::warn!("cannot watch the key file for rotations: {e}");
                }
                Some(p)
            }
            None => None,
        };
        let mut stream = StreamSockets::open(&cfg.destinations, &cfg.net)?;
        let mut control = StampedSocket::control_port(cfg.control_port).map_err(|e| match e {
            NetError::PortInUse { port } => EngineError::ControlPortInUse { port },
            e => EngineError::Net(e),
        })?;
        let mut frames_per_packet = cfg.frames_per_packet;
        match &protection {
            Some(p) => {
                stream.protect(p.clone());
                control.protect(p.clone());
                // The trailer must not push a full packet past the UDP payload budget.
                let frame = cfg.format.bytes_per_frame().max(1);
                let fit = (DEFAULT_MAX_UDP_PAYLOAD - HEADER_LEN - OVERHEAD) / frame;
                if frames_per_packet as usize > fit {
                    frames_per_packet = fit as u16;
                }
                log::info!(
                    "protected with key {:08x}: every datagram authenticated, audio {}; only \
                     authentic time requests and NACKs are answered",
                    p.key_id(),
                    if cfg.encrypt {
                        "encrypted"
                    } else {
                        "readable (encrypt = false)"
                    }
                );
            }
            None => log::info!(
                "no key: the stream is open (anyone on the network can listen, and send to the \
                 rooms); see docs/security.md"
            ),
        }
        let control_port = control.port()?;
        let ssrc = random_u32();
        let mut scfg = SenderConfig::new(cfg.format, ssrc);
        scfg.latency_ns = cfg.latency_ns;
        scfg.frames_per_packet = frames_per_packet;
        if protection.is_some() {
            scfg.flags |= FLAG_AUTHENTICATED;
        }
        scfg.name = cfg.name.clone();
        scfg.time_port = control_port;
        scfg.clock_domain = cfg.clock.domain();
        scfg.ntp_server = cfg.clock.ntp_server();
        scfg.channel_map = cfg.channel_map;
        scfg.silence_timeout_ns = cfg.silence_timeout_ns;
        scfg.resync_threshold_ns = cfg.resync_threshold_ns;
        let core = SenderCore::new(scfg)?;
        let timeline = domain::Timeline::open(cfg.clock)?;
        match (cfg.clock, timeline.estimate()) {
            (EngineClock::Ntp(server), Some(e)) => log::info!(
                "clock domain ntp: the timeline is NTP server {server}'s clock (UTC), read at \
                 {:+.6} s from ours, uncertainty {} us",
                e.offset_ns() as f64 / 1e9,
                e.uncertainty_ns / 1000
            ),
            (EngineClock::System, _) => log::info!(
                "clock domain system: the timeline is this host's CLOCK_REALTIME; receivers \
                 must keep theirs in step (chrony, PTP)"
            ),
            _ => {}
        }

        let channels = cfg.format.channels.max(1) as usize;
        let ring_frames = (cfg.ring_ns.max(10_000_000) as i128 * cfg.format.rate as i128
            / NS_PER_SEC as i128) as usize;
        let (sp, sc) = RingBuffer::<f32>::new(ring_frames.max(1) * channels);
        let (hp, hc) = RingBuffer::<Header>::new(4096);
        let wake = EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
            .map_err(|e| EngineError::Thread(e.into()))?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            refused: AtomicU64::new(0),
            refused_frames: AtomicU64::new(0),
            wake,
            stats: Mutex::new(EngineStats::default()),
        });
        let net = NetThread {
            core,
            stream,
            control,
            samples: sc,
            headers: hc,
            channels,
            rate: cfg.format.rate,
            shared: shared.clone(),
            stats: EngineStats::default(),
            stats_interval_ns: cfg.stats_interval_ns,
            events: Events::default(),
            protection,
            room_lines: (TimelineNs::MIN, 0, 0),
            timeline,
        };
        let thread = std::thread::Builder::new()
            .name("wavesync-net".into())
            .spawn(move || net.run())
            .map_err(EngineError::Thread)?;
        log::info!(
            "streaming {} Hz, {} ch, {:?}, {} frames/packet, latency {} ms, stream id {ssrc:08x}; \
             time service and NACKs on port {control_port}",
            cfg.format.rate,
            cfg.format.channels,
            cfg.format.sample,
            frames_per_packet,
            cfg.latency_ns as f64 / 1e6
        );
        let input = AudioInput {
            samples: sp,
            headers: hp,
            channels,
            shared: shared.clone(),
        };
        Ok((
            Engine {
                shared,
                thread: Some(thread),
                control_port,
                destinations: cfg.destinations,
                ssrc,
            },
            input,
        ))
    }

    /// The control port actually bound (the configured one, or the one picked for 0).
    pub fn control_port(&self) -> u16 {
        self.control_port
    }

    /// The destinations.
    pub fn destinations(&self) -> &[SocketAddr] {
        &self.destinations
    }

    /// The stream id (SSRC) of this run of the sender.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Counters, as of the network thread's last round (a few ms old at most).
    pub fn stats(&self) -> EngineStats {
        let mut s = match self.shared.stats.lock() {
            Ok(s) => *s,
            Err(p) => *p.into_inner(),
        };
        s.input_refused = self.shared.refused.load(Ordering::Relaxed);
        s.input_refused_frames = self.shared.refused_frames.load(Ordering::Relaxed);
        s
    }

    /// True while the network thread runs.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Sends what is queued (the last partial packet too), stops the network thread and
    /// returns the final counters.
    pub fn stop(mut self) -> Result<EngineStats, EngineError> {
        self.shutdown()?;
        Ok(self.stats())
    }

    fn shutdown(&mut self) -> Result<(), EngineError> {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake();
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| EngineError::Panicked),
            None => Ok(()),
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Rate limiter for event log lines: one per kind per second, the rest counted.
#[derive(Default)]
struct Events {
    /// When each kind was last logged (None: never; a timeline may start near 0).
    last_log: [Option<TimelineNs>; 5],
    suppressed: [u64; 5],
}

const EV_RESYNC: usize = 0;
const EV_SILENCE: usize = 1;
const EV_RUN: usize = 2;
const EV_AUDIO_RANGE: usize = 3;
const EV_NTP_RANGE: usize = 4;

impl Events {
    /// True if an event of `kind` may be logged now; else it is counted.
    fn allow(&mut self, kind: usize, now: TimelineNs) -> Option<u64> {
        if self.last_log[kind].is_some_and(|last| now - last < NS_PER_SEC) {
            self.suppressed[kind] += 1;
            return None;
        }
        self.last_log[kind] = Some(now);
        Some(std::mem::take(&mut self.suppressed[kind]))
    }
}

/// Room event lines logged per second at most.
const ROOM_LINES_PER_SEC: u32 = 8;

fn more(n: u64) -> String {
    if n > 0 {
        format!(" ({n} more in the last second)")
    } else {
        String::new()
    }
}

struct NetThread {
    core: SenderCore,
    stream: StreamSockets,
    control: StampedSocket,
    samples: Consumer<f32>,
    headers: Consumer<Header>,
    channels: usize,
    rate: u32,
    shared: Arc<Shared>,
    stats: EngineStats,
    stats_interval_ns: Option<i64>,
    events: Events,
    protection: Option<Arc<Protection>>,
    /// Room event lines: start of the current second, lines logged in it, lines left out.
    room_lines: (TimelineNs, u32, u64),
    /// The map from CLOCK_MONOTONIC to the timeline (and its NTP reader).
    timeline: domain::Timeline,
}

impl NetThread {
    fn run(mut self) {
        let mut out = vec![0u8; self.core.max_datagram_len()];
        let mut inbuf = vec![0u8; 2048];
        let mut next_stats = clock::monotonic_ns() + self.stats_interval_ns.unwrap_or(0);
        let mut published = clock::monotonic_ns();
        loop {
            let stopping = self.shared.stop.load(Ordering::Acquire);
            let before = self.core.stats();
            self.receive_control(&mut inbuf);
            self.take_audio();
            if stopping {
                self.core.flush();
            }
            let local_now = clock::monotonic_ns();
            self.timeline.poll(local_now);
            let now = self.timeline.to_timeline(local_now);
            self.transmit(now, &mut out);
            self.log_events(&before, now);
            self.log_rooms(now);
            if let Some(iv) = self.stats_interval_ns {
                if local_now >= next_stats {
                    next_stats = local_now + iv;
                    self.log_stats();
                }
            }
            if stopping || local_now - published >= 20_000_000 {
                published = local_now;
                self.publish();
            }
            if stopping {
                return;
            }
            self.wait(now);
        }
    }

    fn receive_control(&mut self, buf: &mut [u8]) {
        loop {
            match self.control.recv(buf) {
                Ok(Some(d)) => {
                    self.stats.control_received += 1;
                    if d.kernel_stamp {
                        self.stats.control_kernel_stamped += 1;
                    }
                    // The receive stamp (monotonic) on the timeline the service answers with.
                    let at = self.timeline.to_timeline(d.at);
                    self.core.handle_control(at, d.from, &buf[..d.len]);
                }
                Ok(None) => return,
                Err(e) => {
                    // E.g. ICMP errors reported on the next read; nothing to do but go on.
                    log::debug!("control socket: {e}");
                    return;
                }
            }
        }
    }

    fn take_audio(&mut self) {
        while let Ok(h) = self.headers.pop() {
            let n = h.frames as usize * self.channels;
            let chunk = match self.samples.read_chunk(n) {
                Ok(c) => c,
                // The producer writes samples before their header: cannot happen.
                Err(_) => break,
            };
            let (a, b) = chunk.as_slices();
            let capture = self.timeline.to_timeline(h.capture_time);
            // A refused block is counted by the core and logged by `log_events`.
            let _ = self.core.push_audio(capture, a);
            if !b.is_empty() {
                let offset = frames_to_ns((a.len() / self.channels) as i64, self.rate);
                let _ = self.core.push_audio(capture + offset, b);
            }
            chunk.commit_all();
            self.stats.frames_in += h.frames as u64;
        }
    }

    fn transmit(&mut self, now: TimelineNs, out: &mut [u8]) {
        while let Some(t) = self.core.poll_transmit(now, out) {
            let bytes = &out[..t.len];
            match t.to {
                Target::Stream => {
                    let r = self.stream.send(bytes);
                    self.stats.datagrams_sent += r.sent as u64;
                    self.stats.send_dropped += r.dropped as u64;
                    self.stats.send_failed += r.failed as u64;
                }
                Target::Peer(to) => match self.control.send_to(bytes, to) {
                    Ok(true) => self.stats.datagrams_sent += 1,
                    Ok(false) => self.stats.send_dropped += 1,
                    Err(e) => {
                        self.stats.send_failed += 1;
                        log::debug!("cannot answer {to}: {e}");
                    }
                },
            }
        }
    }

    fn log_events(&mut self, before: &SenderStats, now: TimelineNs) {
        let after = self.core.stats();
        if after.resyncs > before.resyncs {
            if let Some(n) = self.events.allow(EV_RESYNC, now) {
                log::warn!(
                    "run restarted: input time departed {:.1} ms from the stream's time{}",
                    after.last_capture_departure_ns as f64 / 1e6,
                    more(n)
                );
            }
        } else if after.runs_started > before.runs_started {
            if let Some(n) = self.events.allow(EV_RUN, now) {
                if before.runs_started == 0 {
                    log::info!("sound: stream started");
                } else {
                    log::info!("sound: stream resumed{}", more(n));
                }
            }
        }
        if after.audio_out_of_timeline > before.audio_out_of_timeline {
            if let Some(n) = self.events.allow(EV_AUDIO_RANGE, now) {
                log::error!(
                    "audio dropped: its time {:.3} s is outside the timeline's valid range \
                     (0 to 2^32 s); the input's capture clock is wrong{}",
                    now.ns() as f64 / 1e9,
                    more(n)
                );
            }
        }
        if after.ntp_out_of_timeline > before.ntp_out_of_timeline {
            if let Some(n) = self.events.allow(EV_NTP_RANGE, now) {
                log::error!(
                    "time request unanswered: the timeline's time {:.3} s is outside its valid \
                     range (0 to 2^32 s){}",
                    now.ns() as f64 / 1e9,
                    more(n)
                );
            }
        }
        if after.silence_stops > before.silence_stops {
            if let Some(n) = self.events.allow(EV_SILENCE, now) {
                log::info!("silence: stream paused{}", more(n));
            }
        }
    }

    /// One line per room event (appeared, offline, back, changed), at most
    /// [`ROOM_LINES_PER_SEC`] a second: a flood of invented rooms does not flood the log.
    fn log_rooms(&mut self, now: TimelineNs) {
        use wavesync_common::rooms::RoomEvent;
        while let Some(e) = self.core.poll_room_event(now) {
            if now.ns().saturating_sub(self.room_lines.0.ns()) >= NS_PER_SEC {
                if self.room_lines.2 > 0 {
                    log::info!(
                        "rooms: {} more events in the last second",
                        self.room_lines.2
                    );
                }
                self.room_lines = (now, 0, 0);
            }
            if self.room_lines.1 >= ROOM_LINES_PER_SEC {
                self.room_lines.2 += 1;
                continue;
            }
            self.room_lines.1 += 1;
            match e {
                RoomEvent::Appeared { name, address } => {
                    log::info!("room {:?} reports from {address}", name.as_str())
                }
                RoomEvent::Offline { name } => {
                    log::warn!("room {:?} offline: no report for 3 s", name.as_str())
                }
                RoomEvent::Back { name, address } => {
                    log::info!("room {:?} back, from {address}", name.as_str())
                }
                RoomEvent::Changed { name, settings: s } => log::info!(
                    "room {:?} set: volume {}{}{}, channels {}, trim {:+.3} ms",
                    name.as_str(),
                    s.volume,
                    if s.muted { " (muted)" } else { "" },
                    if s.off { ", off" } else { "" },
                    s.channels.name(),
                    s.trim_us as f64 / 1e3
                ),
            }
        }
    }

    fn publish(&mut self) {
        self.stats.core = self.core.stats();
        if let Some(p) = &self.protection {
            self.stats.refused = p.status().stats;
        }
        let s = self.stats;
        match self.shared.stats.lock() {
            Ok(mut g) => *g = s,
            Err(p) => *p.into_inner() = s,
        }
    }

    fn log_stats(&mut self) {
        let c = self.core.stats();
        log::info!(
            "stats: {} packets ({:.1} MB), {} status, {} runs ({} resyncs), {} time replies, \
             {} NACKs, {} resends, {} refused input pushes, {} send errors",
            c.packets_sent,
            c.bytes_sent as f64 / 1e6,
            c.status_sent,
            c.runs_started,
            c.resyncs,
            c.ntp_replies,
            c.nacks_received,
            c.resends_sent,
            self.shared.refused.load(Ordering::Relaxed),
            self.stats.send_failed + self.stats.send_dropped,
        );
        if self.protection.is_some() {
            let r = self.stats.refused;
            log::info!(
                "key: {} control datagrams refused ({} without a key, {} with another key, \
                 {} forged, {} replayed)",
                r.refused(),
                r.unprotected,
                r.unknown_key,
                r.forged,
                r.replayed
            );
        }
    }

    fn wait(&mut self, now: TimelineNs) {
        let due = self.core.poll_timeout();
        let mut wait_ns = due.ns().saturating_sub(now.ns());
        if let Some(t) = self.timeline.poll_timeout() {
            wait_ns = wait_ns.min(t - clock::monotonic_ns());
        }
        let ms = (wait_ns.max(0).saturating_add(999_999)) / 1_000_000;
        let ms = ms.clamp(0, 100) as u16;
        // The NTP reader's socket, in domain `ntp` (else the eventfd again, not polled).
        let (ntp, n) = match self.timeline.fd() {
            Some(fd) => (fd, 3),
            None => (self.shared.wake.as_fd(), 2),
        };
        let mut fds = [
            PollFd::new(self.shared.wake.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.control.fd(), PollFlags::POLLIN),
            PollFd::new(ntp, PollFlags::POLLIN),
        ];
        let _ = poll(&mut fds[..n], PollTimeout::from(ms));
        let mut b = [0u8; 8];
        let _ = nix::unistd::read(self.shared.wake.as_fd().as_raw_fd(), &mut b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::Duration;
    use wavesync_common::format::SampleFormat;
    use wavesync_common::wire::ntp::NtpPacket;
    use wavesync_common::wire::rtp::AudioPacket;
    use wavesync_common::wire::{classify, Kind};

    const MS: i64 = 1_000_000;

    fn assert_send<T: Send>() {}

    fn listener() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s
    }

    fn config(dest: SocketAddr) -> EngineConfig {
        let mut c = EngineConfig::new(StreamFormat::DEFAULT, vec![dest]);
        c.control_port = 0;
        c.frames_per_packet = 240;
        c
    }

    /// The first audio packet and the status message an engine sends for one pushed block.
    fn first_packet(rx: &UdpSocket) -> (TimelineNs, wavesync_common::wire::status::Status) {
        let mut buf = [0u8; 2048];
        let (mut play, mut status) = (None, None);
        while play.is_none() || status.is_none() {
            let n = rx.recv(&mut buf).unwrap();
            match classify(&buf[..n]) {
                Kind::Audio => play = Some(AudioPacket::decode(&buf[..n]).unwrap().play_time),
                Kind::Status => {
                    status = Some(wavesync_common::wire::status::Status::decode(&buf[..n]).unwrap())
                }
                _ => {}
            }
        }
        (play.unwrap(), status.unwrap())
    }

    #[test]
    fn in_clock_domain_system_the_stamps_are_on_the_realtime_clock() {
        let rx = listener();
        let mut c = config(rx.local_addr().unwrap());
        c.clock = EngineClock::System;
        let (engine, mut input) = Engine::start(c).unwrap();
        let capture = clock::monotonic_ns();
        let real = clock::realtime_ns();
        assert!(input.push(capture, &[0.5f32; 2 * 240]));
        let (play, status) = first_packet(&rx);
        engine.stop().unwrap();
        assert_eq!(
            status.clock_domain,
            wavesync_common::format::ClockDomain::System
        );
        assert_eq!(status.ntp_server, None);
        // CLOCK_REALTIME of the capture plus the latency, to within the reads' spacing.
        let off = play.ns() - (real + 150 * MS);
        assert!(off.abs() < MS, "{off} ns off the realtime clock");
    }

    #[test]
    fn an_ntp_server_that_never_answers_stops_the_start_with_the_reason() {
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx = listener();
        let mut c = config(rx.local_addr().unwrap());
        c.clock = EngineClock::Ntp(silent.local_addr().unwrap());
        let started = std::time::Instant::now();
        let e = match Engine::start(c) {
            Ok(_) => panic!("started without the NTP server's clock"),
            Err(e) => e,
        };
        assert!(started.elapsed() >= NTP_FIRST_ESTIMATE);
        assert!(
            matches!(e, EngineError::NtpUnavailable { sent, answered: 0, .. } if sent > 0),
            "{e:?}"
        );
        let text = e.to_string();
        assert!(text.contains("is an NTP server running there?"), "{text}");
    }

    #[test]
    fn audio_input_can_move_to_the_realtime_thread() {
        assert_send::<AudioInput>();
    }

    #[test]
    fn pushed_audio_comes_out_as_stamped_packets_and_stop_flushes() {
        let rx = listener();
        let (engine, mut input) = Engine::start(config(rx.local_addr().unwrap())).unwrap();
        let t0 = clock::monotonic_ns();
        // 600 frames: two full packets and a partial one, sent at stop.
        let samples: Vec<f32> = (0..1200).map(|i| (i as f32 - 600.0) / 1024.0).collect();
        assert!(input.push(t0, &samples[..800]));
        assert!(input.push(t0 + frames_to_ns(400, 48_000), &samples[800..]));
        let mut buf = [0u8; 2048];
        let mut got = Vec::new();
        let mut status = 0;
        while got.len() < 2 {
            let n = rx.recv(&mut buf).unwrap();
            match classify(&buf[..n]) {
                Kind::Audio => {
                    let p = AudioPacket::decode(&buf[..n]).unwrap();
                    got.push((
                        p.seq,
                        p.timestamp,
                        p.play_time,
                        p.marker,
                        p.payload.to_vec(),
                    ));
                }
                Kind::Status => status += 1,
                k => panic!("unexpected {k:?}"),
            }
        }
        assert!(
            status >= 1,
            "a status message goes out before the first packet"
        );
        let stats = engine.stop().unwrap();
        let n = rx.recv(&mut buf).unwrap();
        let last = AudioPacket::decode(&buf[..n]).unwrap();
        assert_eq!(last.frames(2), 120);
        // Clock domain `master`: the timeline is the capture clock.
        assert_eq!(got[0].2, TimelineNs::from_master_monotonic(t0) + 150 * MS);
        assert!(got[0].3 && !got[1].3);
        assert_eq!(got[1].1 - got[0].1, 240);
        assert_eq!(got[1].2 - got[0].2, frames_to_ns(240, 48_000));
        assert_eq!(last.play_time - got[0].2, frames_to_ns(480, 48_000));
        // The samples survive L16 exactly (they are multiples of 1/1024).
        let mut decoded = vec![0f32; 480];
        wavesync_common::sample::wire_to_f32(SampleFormat::L16, &got[0].4, &mut decoded);
        assert_eq!(&decoded[..], &samples[..480]);
        assert_eq!(stats.core.packets_sent, 3);
        assert_eq!(stats.frames_in, 600);
    }

    #[test]
    fn the_control_port_answers_time_requests() {
        let rx = listener();
        let (engine, _input) = Engine::start(config(rx.local_addr().unwrap())).unwrap();
        let client = listener();
        let t1 = wavesync_common::time::ntp64_from_ns(12_345);
        let before = clock::monotonic_ns();
        client
            .send_to(
                &NtpPacket::client_request(t1).encode(),
                ("127.0.0.1", engine.control_port()),
            )
            .unwrap();
        let mut buf = [0u8; 128];
        let (n, from) = client.recv_from(&mut buf).unwrap();
        let after = clock::monotonic_ns();
        assert_eq!(from.port(), engine.control_port());
        let reply = NtpPacket::decode(&buf[..n]).unwrap();
        assert_eq!(reply.origin_ts, t1);
        let t2 = wavesync_common::time::timeline_from_ntp64(reply.receive_ts);
        let t3 = wavesync_common::time::timeline_from_ntp64(reply.transmit_ts);
        let (before, after) = (
            TimelineNs::from_master_monotonic(before),
            TimelineNs::from_master_monotonic(after),
        );
        assert!(
            before - MS <= t2 && t2 <= t3 && t3 <= after,
            "{before} {t2} {t3} {after}"
        );
        let s = engine.stop().unwrap();
        assert_eq!(s.core.ntp_replies, 1);
        assert_eq!(s.control_received, 1);
    }

    #[test]
    fn a_push_that_does_not_fit_is_refused_and_counted() {
        let rx = listener();
        let mut c = config(rx.local_addr().unwrap());
        c.ring_ns = 10 * MS; // 480 frames
        let (engine, mut input) = Engine::start(c).unwrap();
        assert_eq!(input.free_frames(), 480);
        let big = vec![0.25f32; 2 * 1000];
        let now = clock::monotonic_ns;
        assert!(!input.push(now(), &big));
        assert!(input.push(now(), &big[..2 * 400]));
        let s = engine.stop().unwrap();
        assert_eq!((s.input_refused, s.input_refused_frames), (1, 1000));
        assert_eq!(s.frames_in, 400);
    }

    #[test]
    fn a_busy_control_port_is_named_in_the_front_ends_words() {
        let busy = StampedSocket::control_port(0).unwrap();
        let taken = busy.port().unwrap();
        let mut c = config("127.0.0.1:9".parse().unwrap());
        c.control_port = taken;
        let e = Engine::start(c).err().expect("the control port is taken");
        assert!(
            matches!(e, EngineError::ControlPortInUse { port } if port == taken),
            "{e}"
        );
        assert!(!e.to_string().contains("--"), "{e}");
        let names = SettingNames {
            control_port: "the.port",
            interface: "the.interface",
            key_file: "the.key",
        };
        assert!(
            e.describe(&names)
                .ends_with("(choose another with the.port)"),
            "{}",
            e.describe(&names)
        );
    }

    #[test]
    fn no_destination_is_an_error() {
        let mut c = config("127.0.0.1:9".parse().unwrap());
        c.destinations.clear();
        assert!(matches!(
            Engine::start(c).err(),
            Some(EngineError::NoDestinations)
        ));
    }

    #[test]
    fn a_keyed_engine_seals_everything_flags_its_status_and_answers_only_authentic_requests() {
        use wavesync_common::protect::{Opener, Sealer};
        use wavesync_common::wire::status::Status;
        let path = std::env::temp_dir().join(format!("wavesync-engine-key-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        wavesync_net::protection::write_new_key(&path, false).unwrap();
        let key = wavesync_net::protection::read_key(&path).unwrap();
        let rx = listener();
        let mut c = config(rx.local_addr().unwrap());
        c.key_file = Some(path.clone());
        c.frames_per_packet = 361; // 1472 bytes: no room for the trailer
        let (engine, mut input) = Engine::start(c).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(input.push(clock::monotonic_ns(), &vec![0.5f32; 2 * 400]));
        let mut opener = Opener::new(key.clone());
        let mut buf = [0u8; 2048];
        let (mut status, mut audio) = (None, None);
        while status.is_none() || audio.is_none() {
            let n = rx.recv(&mut buf).unwrap();
            assert!(n <= DEFAULT_MAX_UDP_PAYLOAD, "{n} bytes");
            let m = opener
                .open(wavesync_common::time::LocalNs::from_ns(0), &mut buf[..n])
                .expect("everything is sealed");
            match classify(&buf[..m]) {
                Kind::Status => status = Some(Status::decode(&buf[..m]).unwrap()),
                Kind::Audio => audio = Some(AudioPacket::decode(&buf[..m]).unwrap().frames(2)),
                k => panic!("unexpected {k:?}"),
            }
        }
        let status = status.unwrap();
        assert_eq!(status.flags & FLAG_AUTHENTICATED, FLAG_AUTHENTICATED);
        assert_eq!(status.frames_per_packet, 352); // (1472 - 28 - 36) / 4
        assert_eq!(audio, Some(352));
        // A plain time request is ignored; a sealed one is answered, sealed.
        let client = listener();
        client
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let to = ("127.0.0.1", engine.control_port());
        let req = NtpPacket::client_request(77).encode();
        client.send_to(&req, to).unwrap();
        assert!(
            client.recv_from(&mut buf).is_err(),
            "a plain request is not answered"
        );
        let mut sealer = Sealer::new(key, 5, true);
        let mut sealed = [0u8; 128];
        sealed[..48].copy_from_slice(&req);
        let sealed_len = sealer.seal(&mut sealed, 48).unwrap();
        client.send_to(&sealed[..sealed_len], to).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let (n, _) = client.recv_from(&mut buf).unwrap();
        let m = opener
            .open(wavesync_common::time::LocalNs::from_ns(0), &mut buf[..n])
            .unwrap();
        assert_eq!(NtpPacket::decode(&buf[..m]).unwrap().origin_ts, 77);
        // The same sealed request again is a replay: unanswered.
        client.send_to(&sealed[..sealed_len], to).unwrap();
        client
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert!(
            client.recv_from(&mut buf).is_err(),
            "a replayed request is not answered"
        );
        // A flood of unauthenticated NACKs for the real stream: nothing is resent.
        let mut nack = [0u8; 64];
        let len = wavesync_common::wire::nack::encode(9, engine.ssrc(), &[0, 1, 2], &mut nack)
            .unwrap()
            .len;
        for _ in 0..50 {
            client.send_to(&nack[..len], to).unwrap();
        }
        std::thread::sleep(Duration::from_millis(200));
        let s = engine.stop().unwrap();
        assert_eq!(s.core.ntp_replies, 1);
        assert_eq!((s.core.nacks_received, s.core.resends_sent), (0, 0));
        assert_eq!((s.refused.unprotected, s.refused.replayed), (51, 1));
    }
}
