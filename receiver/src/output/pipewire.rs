//! The PipeWire output: a native `pw_stream` into the user's (or a named) sink.
//!
//! Why not ALSA's `pipewire` PCM: pipewire-alsa reports a delay that is off by whole graph
//! cycles depending on when the stream joined the graph (two receivers through it play
//! 2.7-5.3 ms apart while each believes it is on time; see docs/outputs.md). A native stream
//! knows exactly when its frames play: in each graph cycle the real-time process callback
//! takes the frames the graph asks for from a lock-free ring, and `pw_stream_get_time_n`
//! says when that cycle started (`now`, CLOCK_MONOTONIC) and how far the sink is from the
//! loudspeaker (`delay`, plus what the stream's resampler and queue hold). The first frame of
//! the buffer filled in that callback plays at `now + delay`.
//!
//! Threads: PipeWire's main loop runs in a thread of its own (connection, state changes);
//! the process callback runs on PipeWire's data thread. The receiver's output thread talks to
//! both only through the ring, a few atomics published under a sequence lock, and an eventfd
//! the callback signals each cycle (what [`Output::wait`] sleeps on). The callback does not
//! allocate or lock.
//!
//! Time namespaces: `now` is the PipeWire daemon's CLOCK_MONOTONIC. A receiver in another time
//! namespace than the daemon's (the lab runs each receiver in one; a test suite may run in one
//! with the daemon it starts) adds the difference of the two namespaces' monotonic offsets
//! (`/proc/self/timens_offsets` and the daemon's, found by the credentials of its socket) to
//! the daemon's times. Where the daemon's cannot be read it is taken to be the initial one, as
//! on real systems, and the log says so. Any other difference is detected (more than 1 s
//! apart) and logged.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;
use wavesync_common::channels::{self, ChannelMap};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use pipewire as pw;
use pw::spa;
use pw::spa::pod::serialize::PodSerializer;
use pw::spa::pod::{Object, Pod, Value};
use rtrb::{Consumer, Producer, RingBuffer};

use wavesync_common::time::LocalNs;

use super::{ms_to_frames, DacTiming, DeviceFormat, Output, OutputError, OutputInfo, WriteMeta};
use crate::clock_io::monotonic_ns;

/// Frames the ring between the output thread and the process callback holds (more than the
/// largest PipeWire quantum, 8192, plus a period).
const RING_FRAMES: usize = 16_384;
/// How long [`Output::open`] waits for the connection to the daemon.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A cycle whose first frame plays this far from where the previous one ended is a slip.
const SLIP_NS: i64 = 500_000;
/// A published play time this far in the past means the graph stopped taking audio.
const STALLED_NS: i64 = 200_000_000;
/// Warn when no graph cycle has taken audio this long after open.
const UNLINKED_WARNING_NS: i64 = 3_000_000_000;
/// A graph time this far from ours means the daemon runs in another time namespace.
const FOREIGN_CLOCK_NS: i64 = 1_000_000_000;

/// What the PipeWire output is asked to do.
#[derive(Clone, Debug, PartialEq)]
pub struct PipeWireConfig {
    /// The sink to play to (`target.object`: a node name or serial); `None` lets the session
    /// manager choose (the default sink, and it follows the user's choice).
    pub target: Option<String>,
    /// The wake-up period the receiver asks the graph for (`node.latency`), in ms; `None`:
    /// from the stream's latency ([`PipeWireConfig::quantum_request`]).
    pub period_ms: Option<f64>,
    /// The stream's latency, ns (set when a stream opens the output).
    pub stream_latency_ns: Option<i64>,
    /// The positions of the stream's channels (from its status message), declared to the
    /// graph; `None`: PipeWire's default for the channel count.
    pub positions: Option<ChannelMap>,
    /// Frames kept queued ahead of the graph; `None`: one graph cycle plus two periods.
    pub buffer_frames: Option<u32>,
    /// The node's name in the graph.
    pub node_name: String,
}

impl Default for PipeWireConfig {
    fn default() -> Self {
        PipeWireConfig {
            target: None,
            period_ms: None,
            stream_latency_ns: None,
            positions: None,
            buffer_frames: None,
            node_name: "wavesync-receiver".to_string(),
        }
    }
}

/// PipeWire's default graph quantum (`default.clock.quantum`), frames.
pub const DEFAULT_QUANTUM: usize = 1024;
/// The smallest quantum asked for.
const MIN_QUANTUM: usize = 32;
/// The graph may take this share of the stream's latency (a quantum or two in the graph, the
/// ring ahead of it): the rest is for the network and the packet time.
const LATENCY_SHARE: i64 = 6;

impl PipeWireConfig {
    /// The quantum to ask the graph for (`node.latency`), in frames at `rate`: `--period-ms`
    /// when given; otherwise none (the graph's quantum is the user's, left alone) unless the
    /// stream's latency needs one smaller than PipeWire's default, then the largest power of
    /// two within a sixth of the latency.
    pub fn quantum_request(&self, rate: u32) -> Option<usize> {
        if let Some(ms) = self.period_ms {
            return Some(ms_to_frames(ms, rate));
        }
        let budget =
            (self.stream_latency_ns? / LATENCY_SHARE) as i128 * rate as i128 / 1_000_000_000;
        if budget >= DEFAULT_QUANTUM as i128 {
            return None;
        }
        let budget = (budget.max(MIN_QUANTUM as i128)) as usize;
        Some(1usize << (usize::BITS - 1 - budget.leading_zeros()))
    }
}

/// Stream states as the main loop publishes them.
const STATE_CONNECTING: u8 = 0;
const STATE_PAUSED: u8 = 1;
const STATE_STREAMING: u8 = 2;
const STATE_FAILED: u8 = 3;

/// What the callbacks publish for the output thread.
#[derive(Default)]
struct Shared {
    /// Sequence lock over `consumed` and `next_ring_ns` (odd while the callback writes).
    seq: AtomicU64,
    /// Ring frames the graph has taken.
    consumed: AtomicU64,
    /// Local time at which the next ring frame leaves the sink (0: no cycle yet).
    next_ring_ns: AtomicI64,
    /// Frames the graph asked for in its last cycle.
    quantum: AtomicU32,
    /// Cycles in which the ring ran dry after audio had started (silence was played), or that
    /// did not start where the previous one ended (the graph skipped cycles).
    underruns: AtomicU64,
    /// One of the `STATE_*` values.
    state: AtomicU8,
    /// Why the stream failed (written once, before `state` becomes FAILED).
    failure: std::sync::Mutex<Option<String>>,
    /// Set when the graph's clock is far from ours (another time namespace).
    foreign_clock: AtomicBool,
}

impl Shared {
    fn fail(&self, why: String) {
        if let Ok(mut f) = self.failure.lock() {
            f.get_or_insert(why);
        }
        self.state.store(STATE_FAILED, Ordering::Release);
    }

    /// A consistent (consumed, next_ring_ns) pair.
    fn snapshot(&self) -> (u64, LocalNs) {
        loop {
            let s1 = self.seq.load(Ordering::Acquire);
            let consumed = self.consumed.load(Ordering::Acquire);
            let next = self.next_ring_ns.load(Ordering::Acquire);
            let s2 = self.seq.load(Ordering::Acquire);
            if s1 == s2 && s1 % 2 == 0 {
                return (consumed, LocalNs::from_ns(next));
            }
            std::hint::spin_loop();
        }
    }

    fn publish(&self, consumed: u64, next: LocalNs) {
        self.seq.fetch_add(1, Ordering::AcqRel);
        self.consumed.store(consumed, Ordering::Release);
        self.next_ring_ns.store(next.ns(), Ordering::Release);
        self.seq.fetch_add(1, Ordering::AcqRel);
    }
}

/// The open stream, seen from the output thread.
struct Running {
    thread: Option<JoinHandle<()>>,
    quit: pw::channel::Sender<()>,
    ring: Producer<f32>,
    shared: Arc<Shared>,
    wake: Arc<EventFd>,
    rate: u32,
    channels: usize,
    /// Frames per wake-up: the quantum asked for, or `None` to follow the graph's.
    period: Option<usize>,
    /// Frames written into the ring since open.
    written: u64,
    warned_clock: bool,
    /// When the stream was opened, until the graph first takes audio (then `None`).
    unlinked_since: Option<LocalNs>,
    /// The sink asked for, for messages.
    target: Option<String>,
}

impl Running {
    fn ns_of(&self, frames: i64) -> i64 {
        (frames as i128 * 1_000_000_000 / self.rate.max(1) as i128) as i64
    }

    fn queued(&self, consumed: u64) -> u64 {
        self.written.saturating_sub(consumed)
    }

    /// Frames per wake-up of the output thread: the quantum asked for, else the graph's own
    /// (PipeWire's default until the first cycle shows it).
    fn period(&self) -> usize {
        self.period.unwrap_or_else(
            || match self.shared.quantum.load(Ordering::Acquire) as usize {
                0 => DEFAULT_QUANTUM,
                q => q,
            },
        )
    }

    /// Frames the output thread should keep in the ring: one graph cycle plus two periods
    /// (one when the period is the graph's quantum), so a late wake-up of the output thread
    /// does not starve the next cycle.
    fn target(&self, configured: Option<u32>) -> usize {
        let quantum = self.shared.quantum.load(Ordering::Acquire) as usize;
        let period = self.period();
        // Following the graph's quantum, one cycle of margin is a whole quantum already.
        let margin = if self.period.is_some() { 2 } else { 1 };
        let want = quantum.max(period) + margin * period;
        want.max(configured.unwrap_or(0) as usize)
            .min(RING_FRAMES - 1)
    }

    fn check_state(&mut self) -> Result<(), OutputError> {
        if self.shared.state.load(Ordering::Acquire) == STATE_FAILED {
            let why = self
                .shared
                .failure
                .lock()
                .ok()
                .and_then(|f| f.clone())
                .unwrap_or_default();
            log::warn!("PipeWire stream ended: {why}");
            return Err(OutputError::Disconnected);
        }
        if let Some(since) = self.unlinked_since {
            if self.shared.consumed.load(Ordering::Acquire) > 0 {
                self.unlinked_since = None;
            } else if monotonic_ns() - since > UNLINKED_WARNING_NS {
                self.unlinked_since = None;
                log::warn!(
                    "PipeWire: nothing has taken audio from the stream {} s after it opened \
                     (sink {}): is a session manager such as WirePlumber running, and does \
                     the sink exist (pw-cli ls Node)?",
                    UNLINKED_WARNING_NS / 1_000_000_000,
                    self.target.as_deref().unwrap_or("default")
                );
            }
        }
        if !self.warned_clock && self.shared.foreign_clock.load(Ordering::Relaxed) {
            self.warned_clock = true;
            log::warn!(
                "PipeWire's clock differs from ours by more than 1 s: the daemon runs in another \
                 time namespace, so the timing of this output is off by that difference"
            );
        }
        Ok(())
    }

    fn stop(&mut self) {
        let _ = self.quit.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The PipeWire output backend.
pub struct PipeWireOutput {
    cfg: PipeWireConfig,
    run: Option<Running>,
    shape: Option<(u32, u8)>,
    underruns_seen: u64,
    /// Underruns already returned as [`OutputError::Underrun`].
    underruns_reported: u64,
}

impl PipeWireOutput {
    /// A closed output; [`Output::open`] connects to the daemon.
    pub fn new(cfg: PipeWireConfig) -> Self {
        PipeWireOutput {
            cfg,
            run: None,
            shape: None,
            underruns_seen: 0,
            underruns_reported: 0,
        }
    }

    /// Graph cycles in which the ring ran dry after audio had started, or that did not start
    /// where the previous one ended.
    pub fn underruns(&self) -> u64 {
        self.run
            .as_ref()
            .map(|r| r.shared.underruns.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    fn running(&mut self) -> Result<&mut Running, OutputError> {
        self.run.as_mut().ok_or(OutputError::NotOpen)
    }

    fn note_underruns(&mut self) {
        let n = self.underruns();
        if n > self.underruns_seen {
            if self.underruns_seen == 0 || n.is_power_of_two() {
                log::warn!(
                    "PipeWire: the ring ran dry in {n} graph cycles so far (silence played)"
                );
            }
            self.underruns_seen = n;
        }
    }
}

fn pw_error(op: &'static str, why: impl ToString) -> OutputError {
    OutputError::PipeWire {
        op,
        why: why.to_string(),
    }
}

/// SPA channel ids of `map`, for `channels` (a map of another size gives PipeWire's default).
fn positions(channels: u8, map: Option<&ChannelMap>) -> Vec<u32> {
    let default = ChannelMap::default_for(channels as usize);
    let map = map
        .filter(|m| m.len() == channels as usize)
        .unwrap_or(&default);
    map.codes()
        .iter()
        .map(|&c| channels::spa_id(c).unwrap_or(spa::sys::SPA_AUDIO_CHANNEL_UNKNOWN))
        .collect()
}

/// The EnumFormat pod: interleaved F32 (native endian) at `rate` and `channels`.
fn format_pod(rate: u32, channels: u8, map: Option<&ChannelMap>) -> Result<Vec<u8>, OutputError> {
    let mut info = spa::param::audio::AudioInfoRaw::new();
    info.set_format(spa::param::audio::AudioFormat::F32LE);
    info.set_rate(rate);
    info.set_channels(channels as u32);
    let mut position = [0u32; spa::param::audio::MAX_CHANNELS];
    for (slot, p) in position.iter_mut().zip(positions(channels, map)) {
        *slot = p;
    }
    info.set_position(position);
    let obj = Object {
        type_: spa::sys::SPA_TYPE_OBJECT_Format,
        id: spa::sys::SPA_PARAM_EnumFormat,
        properties: info.into(),
    };
    let (cursor, _) =
        PodSerializer::serialize(std::io::Cursor::new(Vec::new()), &Value::Object(obj))
            .map_err(|e| pw_error("format", format!("{e:?}")))?;
    Ok(cursor.into_inner())
}

/// Where the PipeWire daemon listens, as libpipewire finds it: `PIPEWIRE_REMOTE` (a path, or
/// a name in the runtime directory), else `pipewire-0` in `PIPEWIRE_RUNTIME_DIR`,
/// `XDG_RUNTIME_DIR` or `USERPROFILE`.
fn daemon_socket_path() -> Option<std::path::PathBuf> {
    let name = std::env::var("PIPEWIRE_REMOTE").unwrap_or_else(|_| "pipewire-0".into());
    let name = std::path::PathBuf::from(name);
    if name.is_absolute() {
        return Some(name);
    }
    ["PIPEWIRE_RUNTIME_DIR", "XDG_RUNTIME_DIR", "USERPROFILE"]
        .iter()
        .find_map(std::env::var_os)
        .map(|dir| std::path::PathBuf::from(dir).join(name))
}

/// The process id of the PipeWire daemon, from the credentials of its socket.
fn daemon_pid() -> Result<u32, String> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let path = daemon_socket_path().ok_or("no PipeWire runtime directory is set")?;
    let conn = std::os::unix::net::UnixStream::connect(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let cred = getsockopt(&conn, PeerCredentials).map_err(|e| format!("SO_PEERCRED: {e}"))?;
    u32::try_from(cred.pid()).map_err(|_| format!("pid {}", cred.pid()))
}

/// What to add to the daemon's CLOCK_MONOTONIC readings to put them on ours: our time
/// namespace's offset minus the daemon's. The daemon's is read from `/proc/<pid>/timens_offsets`
/// (its pid from its socket); where that cannot be read, it is taken to be in the initial time
/// namespace, as on real systems, and the log says so.
fn daemon_clock_offset_ns() -> i64 {
    let ours = crate::clock_io::timens_monotonic_offset_ns(None).unwrap_or(0);
    let theirs = daemon_pid().and_then(|pid| {
        crate::clock_io::timens_monotonic_offset_ns(Some(pid))
            .map_err(|e| format!("pid {pid}'s time namespace: {e}"))
    });
    match theirs {
        Ok(theirs) => ours - theirs,
        Err(e) if ours != 0 => {
            log::warn!(
                "PipeWire output: cannot tell the daemon's time namespace ({e}); taking it to \
                 be the initial one"
            );
            ours
        }
        Err(_) => 0,
    }
}

/// What the process callback owns.
struct Rt {
    /// Added to the daemon's times to put them on our CLOCK_MONOTONIC.
    clock_offset_ns: i64,
    ring: Consumer<f32>,
    shared: Arc<Shared>,
    wake: Arc<EventFd>,
    channels: usize,
    rate: u32,
    consumed: u64,
}

impl Rt {
    /// One graph cycle: fill the buffer the graph asks for from the ring (silence where the
    /// ring is short), publish when its first frame plays, wake the output thread.
    fn process(&mut self, stream: &pw::stream::Stream) {
        let Some(mut buffer) = stream.dequeue_buffer() else {
            return;
        };
        let time = stream.time().ok();
        let requested = buffer.requested() as usize;
        let stride = 4 * self.channels;
        let datas = buffer.datas_mut();
        let Some(data) = datas.first_mut() else {
            return;
        };
        let mut frames = 0;
        if let Some(bytes) = data.data() {
            let room = bytes.len() / stride;
            frames = if requested > 0 {
                requested.min(room)
            } else {
                room.min(1024)
            };
            let want = (self.ring.slots() / self.channels).min(frames);
            // What was copied is what counts: the rest of the buffer is silence.
            let take = match self.ring.read_chunk(want * self.channels) {
                Ok(chunk) => {
                    let (a, b) = chunk.as_slices();
                    for (dst, s) in bytes.chunks_exact_mut(4).zip(a.iter().chain(b)) {
                        dst.copy_from_slice(&s.to_ne_bytes());
                    }
                    chunk.commit_all();
                    want
                }
                Err(_) => 0,
            };
            bytes[take * stride..frames * stride].fill(0);
            if take < frames && self.consumed > 0 {
                self.shared.underruns.fetch_add(1, Ordering::Relaxed);
            }
            self.consumed += take as u64;
        }
        let chunk = data.chunk_mut();
        *chunk.offset_mut() = 0;
        *chunk.stride_mut() = stride as i32;
        *chunk.size_mut() = (frames * stride) as u32;

        if let Some(t) = time {
            let r = t.rate();
            let ticks_ns = |ticks: i64| -> i64 {
                if r.denom == 0 {
                    ticks * 1_000_000_000 / self.rate.max(1) as i64
                } else {
                    (ticks as i128 * r.num as i128 * 1_000_000_000 / r.denom as i128) as i64
                }
            };
            // Frames ahead of this buffer: what the resampler holds and what is queued.
            let queued_frames = (t.queued() as usize / stride) as i64;
            let ahead_ns = ticks_ns(t.delay() + t.buffered() as i64)
                + queued_frames * 1_000_000_000 / self.rate.max(1) as i64;
            // The graph's time, in the daemon's time namespace, on our monotonic clock.
            let first = LocalNs::from_ns(t.now() + self.clock_offset_ns + ahead_ns);
            let next = first + frames as i64 * 1_000_000_000 / self.rate.max(1) as i64;
            if t.now() > 0 {
                // The graph skipped cycles (an xrun on a loaded host): what follows plays
                // later than the previous cycle announced. Count it like an underrun.
                let expected = self.shared.next_ring_ns.load(Ordering::Relaxed);
                if expected != 0 && (first.ns() - expected).abs() > SLIP_NS && self.consumed > 0 {
                    self.shared.underruns.fetch_add(1, Ordering::Relaxed);
                }
                self.shared.publish(self.consumed, next);
                if (monotonic_ns().ns() - t.now() - self.clock_offset_ns).abs() > FOREIGN_CLOCK_NS {
                    self.shared.foreign_clock.store(true, Ordering::Relaxed);
                }
            }
        }
        if frames > 0 {
            self.shared.quantum.store(frames as u32, Ordering::Release);
        }
        drop(buffer);
        let _ = self.wake.write(1);
    }
}

/// Everything the main-loop thread needs.
struct LoopArgs {
    cfg: PipeWireConfig,
    rate: u32,
    channels: u8,
    ring: Consumer<f32>,
    shared: Arc<Shared>,
    wake: Arc<EventFd>,
    ready: mpsc::SyncSender<Result<(), String>>,
    quit: pw::channel::Receiver<()>,
}

/// The main-loop thread: connect, create and connect the stream, run until told to quit.
fn main_loop(a: LoopArgs) {
    let ready = a.ready.clone();
    if let Err(e) = run_main_loop(a) {
        let _ = ready.send(Err(e));
    }
}

fn run_main_loop(a: LoopArgs) -> Result<(), String> {
    pw::init();
    let mainloop = pw::main_loop::MainLoopRc::new(None).map_err(|e| format!("main loop: {e}"))?;
    let context =
        pw::context::ContextRc::new(&mainloop, None).map_err(|e| format!("context: {e}"))?;
    let core = context.connect_rc(None).map_err(|e| {
        format!(
            "cannot connect to PipeWire ({e}); is it running for this user \
             (XDG_RUNTIME_DIR={})?",
            std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| "unset".into())
        )
    })?;
    let shared_core = a.shared.clone();
    let weak_loop = mainloop.downgrade();
    let _core_listener = core
        .add_listener_local()
        .error(move |id, _seq, res, msg| {
            if id == pw::core::PW_ID_CORE {
                shared_core.fail(format!("PipeWire connection error {res}: {msg}"));
                if let Some(l) = weak_loop.upgrade() {
                    l.quit();
                }
            }
        })
        .register();

    let quantum = a.cfg.quantum_request(a.rate);
    let mut props = pw::properties::properties! {
        *pw::keys::MEDIA_TYPE => "Audio",
        *pw::keys::MEDIA_CATEGORY => "Playback",
        *pw::keys::MEDIA_ROLE => "Music",
        *pw::keys::NODE_NAME => a.cfg.node_name.as_str(),
        *pw::keys::NODE_DESCRIPTION => "WaveSync receiver",
        *pw::keys::APP_NAME => "wavesync-receiver",
        *pw::keys::AUDIO_CHANNELS => a.channels.to_string(),
        "node.rate" => format!("1/{}", a.rate),
    };
    if let Some(t) = &a.cfg.target {
        props.insert("target.object", t.as_str());
    }
    if let Some(q) = quantum {
        props.insert(*pw::keys::NODE_LATENCY, format!("{q}/{}", a.rate));
    }
    let stream = pw::stream::StreamRc::new(core.clone(), &a.cfg.node_name, props)
        .map_err(|e| format!("cannot create the stream: {e}"))?;

    let shared_state = a.shared.clone();
    let clock_offset_ns = daemon_clock_offset_ns();
    if clock_offset_ns != 0 {
        log::info!(
            "PipeWire output: the daemon's CLOCK_MONOTONIC is {:+.3} s off ours (time \
             namespaces); its times are shifted alike",
            clock_offset_ns as f64 / 1e9
        );
    }
    let rt = Rt {
        clock_offset_ns,
        ring: a.ring,
        shared: a.shared.clone(),
        wake: a.wake.clone(),
        channels: a.channels as usize,
        rate: a.rate,
        consumed: 0,
    };
    let _listener = stream
        .add_local_listener_with_user_data(rt)
        .state_changed(move |_, _, _old, new| {
            use pw::stream::StreamState as S;
            let s = match new {
                S::Streaming => STATE_STREAMING,
                S::Paused => STATE_PAUSED,
                S::Connecting => STATE_CONNECTING,
                S::Error(msg) => {
                    shared_state.fail(format!("stream error: {msg}"));
                    return;
                }
                S::Unconnected => {
                    shared_state.fail("the stream was disconnected".to_string());
                    return;
                }
            };
            if shared_state.state.load(Ordering::Acquire) != STATE_FAILED {
                shared_state.state.store(s, Ordering::Release);
            }
        })
        .process(|stream, rt| rt.process(stream))
        .register()
        .map_err(|e| format!("cannot listen to the stream: {e}"))?;

    let pod =
        format_pod(a.rate, a.channels, a.cfg.positions.as_ref()).map_err(|e| e.to_string())?;
    let pod = Pod::from_bytes(&pod).ok_or("the format pod does not parse")?;
    stream
        .connect(
            spa::utils::Direction::Output,
            None,
            pw::stream::StreamFlags::AUTOCONNECT
                | pw::stream::StreamFlags::MAP_BUFFERS
                | pw::stream::StreamFlags::RT_PROCESS,
            &mut [pod],
        )
        .map_err(|e| format!("cannot connect the stream: {e}"))?;

    let weak_loop = mainloop.downgrade();
    let _quit = a.quit.attach(mainloop.loop_(), move |()| {
        if let Some(l) = weak_loop.upgrade() {
            l.quit();
        }
    });
    let _ = a.ready.send(Ok(()));
    mainloop.run();
    let _ = stream.disconnect();
    Ok(())
}

impl Output for PipeWireOutput {
    fn open(&mut self, rate: u32, channels: u8) -> Result<OutputInfo, OutputError> {
        self.close();
        if rate == 0 || channels == 0 {
            return Err(OutputError::BadParameter {
                name: "format",
                why: "rate and channels must be > 0",
            });
        }
        let (producer, consumer) = RingBuffer::<f32>::new(RING_FRAMES * channels as usize);
        let wake = Arc::new(
            EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
                .map_err(|e| pw_error("eventfd", e))?,
        );
        let shared = Arc::new(Shared::default());
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let (quit_tx, quit_rx) = pw::channel::channel();
        let args = LoopArgs {
            cfg: self.cfg.clone(),
            rate,
            channels,
            ring: consumer,
            shared: shared.clone(),
            wake: wake.clone(),
            ready: ready_tx,
            quit: quit_rx,
        };
        let thread = std::thread::Builder::new()
            .name("pipewire".into())
            .spawn(move || main_loop(args))
            .map_err(|e| pw_error("thread", e))?;
        let period = self.cfg.quantum_request(rate);
        match (period, self.cfg.period_ms) {
            (None, _) => log::info!(
                "PipeWire: leaving the graph's quantum alone (the stream's {:.0} ms latency \
                 does not need a small one)",
                self.cfg.stream_latency_ns.unwrap_or(0) as f64 / 1e6
            ),
            (Some(q), None) => log::info!(
                "PipeWire: asking the graph for a quantum of at most {q} frames ({:.1} ms): \
                 the stream's {:.0} ms latency needs it (PipeWire's default is {DEFAULT_QUANTUM})",
                q as f64 * 1e3 / rate as f64,
                self.cfg.stream_latency_ns.unwrap_or(0) as f64 / 1e6
            ),
            (Some(q), Some(_)) => log::info!(
                "PipeWire: asking the graph for a quantum of at most {q} frames (--period-ms)"
            ),
        }
        let mut run = Running {
            thread: Some(thread),
            quit: quit_tx,
            ring: producer,
            shared,
            wake,
            rate,
            channels: channels as usize,
            period,
            written: 0,
            warned_clock: false,
            unlinked_since: Some(monotonic_ns()),
            target: self.cfg.target.clone(),
        };
        match ready_rx.recv_timeout(CONNECT_TIMEOUT) {
            Ok(Ok(())) => {}
            Ok(Err(why)) => {
                run.stop();
                return Err(pw_error("connect", why));
            }
            Err(_) => {
                run.stop();
                return Err(pw_error(
                    "connect",
                    format!("no answer from PipeWire in {} s", CONNECT_TIMEOUT.as_secs()),
                ));
            }
        }
        let buffer = run.target(self.cfg.buffer_frames);
        let device = match &self.cfg.target {
            Some(t) => format!("PipeWire -> {t}"),
            None => "PipeWire (default sink)".to_string(),
        };
        self.run = Some(run);
        self.shape = Some((rate, channels));
        self.underruns_seen = 0;
        self.underruns_reported = 0;
        Ok(OutputInfo {
            rate,
            channels,
            device_channels: channels as u32,
            period_frames: period.unwrap_or(DEFAULT_QUANTUM),
            buffer_frames: buffer,
            device_format: DeviceFormat::FloatLe,
            device,
            // The stream declares the stream's own positions: PipeWire maps them.
            positions: None,
        })
    }

    fn wait(&mut self, timeout_ms: i32) -> Result<bool, OutputError> {
        let configured = self.cfg.buffer_frames;
        let r = self.running()?;
        let deadline = monotonic_ns() + timeout_ms.max(0) as i64 * 1_000_000;
        loop {
            r.check_state()?;
            let (consumed, _) = r.shared.snapshot();
            let room = r
                .target(configured)
                .saturating_sub(r.queued(consumed) as usize);
            if room >= r.period().min(r.target(configured)) {
                return Ok(true);
            }
            let left_ms = if timeout_ms < 0 {
                100
            } else {
                (deadline - monotonic_ns()).div_euclid(1_000_000)
            };
            if left_ms <= 0 {
                return Ok(false);
            }
            let mut fds = [PollFd::new(r.wake.as_fd(), PollFlags::POLLIN)];
            let t = PollTimeout::try_from(left_ms.min(100) as i32).unwrap_or(PollTimeout::ZERO);
            match poll(&mut fds, t) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(pw_error("poll", e)),
            }
            let _ = r.wake.read();
        }
    }

    fn timing(&mut self) -> Result<DacTiming, OutputError> {
        let configured = self.cfg.buffer_frames;
        self.note_underruns();
        // The ring ran dry: the graph played silence and the audio after it plays later. Say
        // so once, so the playout lands the next frame exactly again instead of slewing.
        let underruns = self.underruns();
        if underruns > self.underruns_reported {
            self.underruns_reported = underruns;
            return Err(OutputError::Underrun);
        }
        let r = self.running()?;
        r.check_state()?;
        let now = monotonic_ns();
        let (consumed, next_ring) = r.shared.snapshot();
        let queued = r.queued(consumed) as i64;
        let target = r.target(configured);
        let avail = target.saturating_sub(queued as usize);
        // Between cycles the ring's next frame still leaves at the published time, even when
        // the callback runs late on a loaded host (the graph's times are its schedule, not our
        // wake-ups). Long past it, the graph has stopped taking audio: assume it starts now.
        if next_ring.ns() == 0 || consumed == 0 || now - next_ring > STALLED_NS {
            return Ok(DacTiming {
                next_frame_local: now + r.ns_of(queued),
                delay_frames: queued,
                avail_frames: avail,
                settled: false,
            });
        }
        let next: LocalNs = next_ring + r.ns_of(queued);
        Ok(DacTiming {
            next_frame_local: next,
            delay_frames: ((next - now) as i128 * r.rate as i128 / 1_000_000_000) as i64,
            avail_frames: avail,
            settled: true,
        })
    }

    fn write(&mut self, samples: &[f32], _meta: &WriteMeta) -> Result<usize, OutputError> {
        let r = self.running()?;
        r.check_state()?;
        let ch = r.channels;
        let frames = (samples.len() / ch).min(r.ring.slots() / ch);
        if frames == 0 {
            return Ok(0);
        }
        let chunk = r
            .ring
            .write_chunk_uninit(frames * ch)
            .map_err(|e| pw_error("ring", e))?;
        chunk.fill_from_iter(samples[..frames * ch].iter().copied());
        r.written += frames as u64;
        Ok(frames)
    }

    fn recover(&mut self, err: &OutputError) -> Result<(), OutputError> {
        let (open, shape) = (self.run.is_some(), self.shape);
        super::recover_stream(self, open, shape, err, "PipeWire")
    }

    fn close(&mut self) {
        if let Some(mut r) = self.run.take() {
            r.stop();
        }
    }
}

impl Drop for PipeWireOutput {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quantum_asked_for_comes_from_the_latency_budget() {
        let at = |latency_ms: i64, period_ms: Option<f64>| {
            PipeWireConfig {
                period_ms,
                stream_latency_ns: Some(latency_ms * 1_000_000),
                ..PipeWireConfig::default()
            }
            .quantum_request(48_000)
        };
        // 150 ms: a sixth is 25 ms, more than the default 1024 frames (21.3 ms): left alone.
        assert_eq!(at(150, None), None);
        assert_eq!(at(1000, None), None);
        // 20 ms: a sixth is 160 frames: 128.
        assert_eq!(at(20, None), Some(128));
        // 100 ms: 800 frames: 512.
        assert_eq!(at(100, None), Some(512));
        // Tiny latencies still ask for a sane quantum.
        assert_eq!(at(1, None), Some(MIN_QUANTUM));
        // --period-ms wins whatever the latency.
        assert_eq!(at(150, Some(5.0)), Some(240));
        // No stream yet (the device check): nothing asked.
        assert_eq!(PipeWireConfig::default().quantum_request(48_000), None);
    }

    #[test]
    fn positions_are_the_streams() {
        use spa::sys::*;
        assert_eq!(positions(1, None), vec![SPA_AUDIO_CHANNEL_MONO]);
        assert_eq!(
            positions(2, None),
            vec![SPA_AUDIO_CHANNEL_FL, SPA_AUDIO_CHANNEL_FR]
        );
        // 5.1 without a map: PipeWire's (and the module's) order, centre and LFE third.
        assert_eq!(
            positions(6, None),
            vec![
                SPA_AUDIO_CHANNEL_FL,
                SPA_AUDIO_CHANNEL_FR,
                SPA_AUDIO_CHANNEL_FC,
                SPA_AUDIO_CHANNEL_LFE,
                SPA_AUDIO_CHANNEL_RL,
                SPA_AUDIO_CHANNEL_RR
            ]
        );
        let swapped = ChannelMap::from_names(&["FR", "FL"]);
        assert_eq!(
            positions(2, swapped.as_ref()),
            vec![SPA_AUDIO_CHANNEL_FR, SPA_AUDIO_CHANNEL_FL]
        );
        // A map of the wrong size is not used.
        assert_eq!(positions(3, swapped.as_ref()).len(), 3);
        assert_eq!(positions(10, None)[9], SPA_AUDIO_CHANNEL_AUX0 + 9);
    }

    #[test]
    fn time_namespace_offsets_are_read() {
        let shifted = "monotonic        1234         5\nboottime            5         0\n";
        assert_eq!(
            crate::clock_io::parse_monotonic_offset_ns(shifted),
            1_234_000_000_005
        );
        assert_eq!(
            crate::clock_io::parse_monotonic_offset_ns("monotonic -3 0\n"),
            -3_000_000_000
        );
        assert_eq!(
            crate::clock_io::parse_monotonic_offset_ns("boottime 1 0\n"),
            0
        );
        assert_eq!(
            crate::clock_io::parse_monotonic_offset_ns("monotonic x y\ngarbage"),
            0
        );
        assert_eq!(crate::clock_io::parse_monotonic_offset_ns(""), 0);
    }

    #[test]
    fn format_pod_parses_back() {
        let bytes = format_pod(44_100, 2, None).unwrap();
        let pod = Pod::from_bytes(&bytes).unwrap();
        let mut info = spa::param::audio::AudioInfoRaw::new();
        info.parse(pod).unwrap();
        assert_eq!(info.rate(), 44_100);
        assert_eq!(info.channels(), 2);
        assert_eq!(info.format(), spa::param::audio::AudioFormat::F32LE);
    }

    #[test]
    fn sequence_lock_gives_consistent_pairs() {
        let s = Arc::new(Shared::default());
        let w = s.clone();
        let writer = std::thread::spawn(move || {
            for i in 1..=100_000u64 {
                w.publish(i, LocalNs::from_ns(i as i64 * 1000));
            }
        });
        let mut last = 0;
        while last < 100_000 {
            let (c, n) = s.snapshot();
            assert_eq!(n, LocalNs::from_ns(c as i64 * 1000), "torn read");
            assert!(c >= last);
            last = c;
        }
        writer.join().unwrap();
    }

    #[test]
    fn open_without_a_daemon_is_a_clear_error() {
        // A runtime directory with no PipeWire socket in it.
        let dir = std::env::temp_dir().join(format!("wavesync-nopw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::env::set_var("PIPEWIRE_RUNTIME_DIR", &dir);
        std::env::set_var("PIPEWIRE_REMOTE", "wavesync-test-no-such-daemon");
        let mut out = PipeWireOutput::new(PipeWireConfig::default());
        let err = out.open(48_000, 2).unwrap_err();
        assert!(
            matches!(err, OutputError::PipeWire { op: "connect", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("cannot connect"), "{err}");
        assert!(matches!(out.timing(), Err(OutputError::NotOpen)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
