//! The PulseAudio output: a native playback stream on a PulseAudio server (PulseAudio itself,
//! pipewire-pulse, or Termux's PulseAudio on Android).
//!
//! Timing: the server's own timing information (`pa_stream_update_timing_info`, the asynchronous
//! API; libpulse-simple only gives a latency figure sampled at an unknown instant). A timing
//! reply says: at `timestamp` (CLOCK_REALTIME) the frame at the stream's `read_index` was being
//! handed to the sink, which plays it `sink_usec` later. While the stream plays on, the frame at
//! our write index `W` therefore leaves the DAC at `timestamp + sink_usec + (W - read_index) /
//! rate`. The reply's age is measured on CLOCK_REALTIME and applied to CLOCK_MONOTONIC, so the
//! prediction is on this host's monotonic clock in any time namespace. Each reply gives the
//! instant write index 0 plays (the stream's anchor), and the earliest of the last [`ANCHORS`]
//! is used: a server may stamp its reply later than the read index it reports. pipewire-pulse
//! does: it stamps the reply when it sends it, but its read index and delay are those of its
//! last graph cycle, so a reply is late by its phase in the cycle (0-5 ms at a 256-frame
//! quantum). Requests therefore go out at varied phases ([`UPDATE_EVERY_NS`] apart and up to as
//! much more), not at the server's wake-ups, so the earliest reply is stamped just after its
//! cycle. pipewire-pulse's read index is also the one after the cycle's take: the frame there
//! plays one quantum after the cycle's start. The quantum is the step the read index moves in
//! (the greatest common divisor of its moves), added when the server names itself PipeWire.
//!
//! An underrun moves the timeline (the server stops reading until the stream refills): the
//! underflow callback counts it, [`Output::timing`] reports it once as
//! [`OutputError::Underrun`] and the prediction is unsettled until a reply taken after the
//! stream started again arrives. A server that goes away (restart, crash) fails the context:
//! [`OutputError::Disconnected`], cured by reconnecting once it is back.
//!
//! Threads: none of its own. The standard (non-threaded) libpulse main loop is iterated by the
//! output thread itself, in [`Output::wait`] (blocking, until the server asks for data) and
//! non-blocking elsewhere.

use std::cell::Cell;
use std::rc::Rc;

use libpulse_binding as pa;
use pa::context::{Context, FlagSet as ContextFlags, State as ContextState};
use pa::def::BufferAttr;
use pa::mainloop::standard::{IterateResult, Mainloop};
use pa::proplist::{properties, Proplist};
use pa::sample::{Format, Spec};
use pa::stream::{FlagSet as StreamFlags, SeekMode, State as StreamState, Stream};

use wavesync_common::time::LocalNs;

use super::{ms_to_frames, DacTiming, DeviceFormat, Output, OutputError, OutputInfo, WriteMeta};
use crate::clock_io::monotonic_ns;

/// How long [`Output::open`] waits for the server and the stream.
const CONNECT_TIMEOUT_NS: i64 = 5_000_000_000;
/// The least time between two timing requests (the next one goes out up to as much later).
const UPDATE_EVERY_NS: i64 = 5_000_000;
/// Replies of one epoch needed before the prediction counts as settled (single replies may be
/// late by up to a quantum; the earliest of 32 is late by about 1/33 of one).
const SETTLE_REPLIES: usize = 32;
/// Replies whose earliest anchor is used: about 1 s at 7.5 ms (the earliest of 128 replies at
/// random phases is late by about 1/129 of a quantum: 40 us at 256 frames; a DAC 100 ppm off
/// the host's clock moves the anchor 100 us in that time).
const ANCHORS: usize = 128;
/// Bytes per sample (f32).
const SAMPLE_BYTES: usize = 4;

fn now_ns() -> i64 {
    monotonic_ns().ns()
}

/// What the PulseAudio output is asked to do.
#[derive(Clone, Debug, PartialEq)]
pub struct PulseConfig {
    /// The sink to play to (its name, `pactl list short sinks`); `None`: the server's default.
    pub sink: Option<String>,
    /// The wake-up period (the server's `minreq`), in ms.
    pub period_ms: f64,
    /// Frames kept queued on the server (`tlength`); `None`: four periods.
    pub buffer_frames: Option<u32>,
    /// The stream's name on the server.
    pub name: String,
}

impl Default for PulseConfig {
    fn default() -> Self {
        PulseConfig {
            sink: None,
            period_ms: 5.0,
            buffer_frames: None,
            name: "WaveSync receiver".to_string(),
        }
    }
}

fn pa_error(op: &'static str, why: impl ToString) -> OutputError {
    OutputError::Pulse {
        op,
        why: why.to_string(),
    }
}

/// What the callbacks tell the output thread (all on this thread: the main loop runs here).
#[derive(Default)]
struct Events {
    /// Underflows the server reported.
    underflows: Cell<u64>,
    /// Bumped on every underflow and (re)start: a timing reply asked for before the last bump
    /// describes an old timeline.
    epoch: Cell<u64>,
    /// The epoch at which the timing reply in flight was asked for (`None`: none in flight).
    in_flight: Cell<Option<u64>>,
    /// The epoch of the last timing reply received (`None`: none yet).
    replied: Cell<Option<u64>>,
    /// Timing replies received.
    replies: Cell<u64>,
}

/// The connection, the stream and the main loop they run on.
struct Conn {
    // Drop order: stream, context, then the main loop they are registered with.
    stream: Stream,
    context: Context,
    mainloop: Mainloop,
    events: Rc<Events>,
    rate: u32,
    channels: usize,
    period: usize,
    buffer: usize,
    /// Frames written since open (the stream's write index, in frames).
    written: u64,
    /// When the next timing reply is to be asked for.
    next_ask: i64,
    /// Requests sent (for the phase of the next one).
    asked: u64,
    /// The server is pipewire-pulse (its read index is one graph quantum ahead of its stamp).
    pipewire: bool,
    /// Bytes of the last write (kept to avoid allocating per write).
    bytes: Vec<u8>,
    /// Local instants at which write index 0 plays, from the last replies of this epoch.
    anchors: Anchors,
}

/// The last [`ANCHORS`] anchors of one epoch (the timeline between two underruns), and the
/// step in which the server's read index moves (its graph quantum, on pipewire-pulse).
struct Anchors {
    values: [i64; ANCHORS],
    len: usize,
    next: usize,
    /// The epoch and reply count of the last anchor taken.
    last: Option<(u64, u64)>,
    /// The read index (frames) of the last reply of this epoch.
    last_read: Option<i64>,
    /// The greatest common divisor of the read index's moves in this epoch (0: none seen).
    step: i64,
}

impl Default for Anchors {
    fn default() -> Self {
        Anchors {
            values: [0; ANCHORS],
            len: 0,
            next: 0,
            last: None,
            last_read: None,
            step: 0,
        }
    }
}

/// Greatest common divisor (of non-negative numbers).
fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Anchors {
    /// Takes the anchor and read index (frames) of reply number `reply` in `epoch` (once per
    /// reply); a new epoch starts afresh. Returns the earliest anchor of the window.
    fn take(&mut self, epoch: u64, reply: u64, anchor: i64, read: i64) -> i64 {
        match self.last {
            Some((e, r)) if e == epoch && r == reply => {}
            Some((e, _)) if e == epoch => self.push(anchor, read),
            _ => {
                self.len = 0;
                self.next = 0;
                self.step = 0;
                self.last_read = None;
                self.push(anchor, read);
            }
        }
        self.last = Some((epoch, reply));
        self.values[..self.len]
            .iter()
            .copied()
            .min()
            .unwrap_or(anchor)
    }

    fn push(&mut self, anchor: i64, read: i64) {
        if let Some(last) = self.last_read {
            self.step = gcd(self.step, (read - last).abs());
        }
        self.last_read = Some(read);
        self.values[self.next] = anchor;
        self.next = (self.next + 1) % ANCHORS;
        self.len = (self.len + 1).min(ANCHORS);
    }
}

// SAFETY: libpulse objects are not tied to a thread; they must only not be used from two
// threads at once. `Conn` owns the main loop and everything registered with it (the callbacks'
// `Rc`s never leave it), it has no thread of its own, and it is only used through `&mut`.
unsafe impl Send for Conn {}

impl Conn {
    fn ns_of(&self, frames: i64) -> i64 {
        (frames as i128 * 1_000_000_000 / self.rate.max(1) as i128) as i64
    }

    /// Runs the callbacks of whatever has arrived, without blocking.
    fn pump(&mut self) -> Result<(), OutputError> {
        loop {
            match self.mainloop.iterate(false) {
                IterateResult::Success(0) => return Ok(()),
                IterateResult::Success(_) => {}
                IterateResult::Quit(_) => return Err(OutputError::Disconnected),
                IterateResult::Err(e) => return Err(pa_error("main loop", e)),
            }
        }
    }

    /// Blocks in the main loop for at most `timeout_ns`.
    fn block(&mut self, timeout_ns: i64) -> Result<(), OutputError> {
        let us = pa::time::MicroSeconds((timeout_ns.max(0) / 1000) as u64);
        self.mainloop
            .prepare(Some(us))
            .map_err(|e| pa_error("main loop", e))?;
        self.mainloop.poll().map_err(|e| pa_error("main loop", e))?;
        self.mainloop
            .dispatch()
            .map_err(|e| pa_error("main loop", e))?;
        Ok(())
    }

    /// The server went away or failed the stream.
    fn check_state(&self) -> Result<(), OutputError> {
        let ctx = self.context.get_state();
        let st = self.stream.get_state();
        if matches!(ctx, ContextState::Failed | ContextState::Terminated)
            || matches!(st, StreamState::Failed | StreamState::Terminated)
        {
            log::warn!(
                "PulseAudio stream ended (context {ctx:?}, stream {st:?}): {}",
                self.context.errno()
            );
            return Err(OutputError::Disconnected);
        }
        Ok(())
    }

    /// Asks for a fresh timing reply when it is due and none is in flight, and sends the
    /// request at once. Requests are 5-10 ms apart at varied phases (a golden-ratio sequence),
    /// not at the server's wake-ups: a reply is stamped when the server answers, so only
    /// requests that arrive at every phase of its cycle give replies stamped right after the
    /// cycle they describe.
    fn ask_timing(&mut self, now: i64) -> Result<(), OutputError> {
        let ev = &self.events;
        if ev.in_flight.get().is_some() || now < self.next_ask {
            return Ok(());
        }
        self.asked = self.asked.wrapping_add(1);
        let phase = (self.asked as f64 * 0.618_033_988_749_895).fract();
        self.next_ask = now + UPDATE_EVERY_NS + (phase * UPDATE_EVERY_NS as f64) as i64;
        ev.in_flight.set(Some(ev.epoch.get()));
        let cb_events = self.events.clone();
        let _op = self
            .stream
            .update_timing_info(Some(Box::new(move |ok: bool| {
                let asked = cb_events.in_flight.take();
                if ok {
                    cb_events.replied.set(asked);
                    cb_events.replies.set(cb_events.replies.get() + 1);
                }
            })));
        self.pump()
    }

    /// Frames the server would take now.
    fn writable(&self) -> usize {
        self.stream.writable_size().unwrap_or(0) / (SAMPLE_BYTES * self.channels)
    }
}

/// The PulseAudio output backend.
pub struct PulseOutput {
    cfg: PulseConfig,
    conn: Option<Conn>,
    shape: Option<(u32, u8)>,
    /// Underflows already returned as [`OutputError::Underrun`].
    underruns_reported: u64,
}

impl PulseOutput {
    /// A closed output; [`Output::open`] connects to the server.
    pub fn new(cfg: PulseConfig) -> Self {
        PulseOutput {
            cfg,
            conn: None,
            shape: None,
            underruns_reported: 0,
        }
    }

    /// Underflows the server reported since open.
    pub fn underruns(&self) -> u64 {
        self.conn
            .as_ref()
            .map(|c| c.events.underflows.get())
            .unwrap_or(0)
    }

    fn conn(&mut self) -> Result<&mut Conn, OutputError> {
        self.conn.as_mut().ok_or(OutputError::NotOpen)
    }
}

/// Iterates `ml` until `ready` says yes (`Ok(true)`) or fails (`Err`), at most until `deadline`.
fn iterate_until(
    ml: &mut Mainloop,
    deadline: i64,
    what: &'static str,
    mut ready: impl FnMut() -> Result<bool, String>,
) -> Result<(), OutputError> {
    loop {
        if ready().map_err(|why| pa_error(what, why))? {
            return Ok(());
        }
        let left = deadline - now_ns();
        if left <= 0 {
            return Err(pa_error(
                what,
                "no answer from the PulseAudio server in 5 s",
            ));
        }
        let us = pa::time::MicroSeconds((left.min(100_000_000) / 1000) as u64);
        ml.prepare(Some(us))
            .and_then(|_| ml.poll())
            .and_then(|_| ml.dispatch())
            .map_err(|e| pa_error(what, e))?;
    }
}

fn connect(cfg: &PulseConfig, rate: u32, channels: u8) -> Result<Conn, OutputError> {
    let deadline = now_ns() + CONNECT_TIMEOUT_NS;
    let mut mainloop = Mainloop::new().ok_or_else(|| pa_error("main loop", "cannot create"))?;
    let mut props = Proplist::new().ok_or_else(|| pa_error("proplist", "cannot create"))?;
    let _ = props.set_str(properties::APPLICATION_NAME, "wavesync-receiver");
    let _ = props.set_str(properties::MEDIA_ROLE, "music");
    let mut context = Context::new_with_proplist(&mainloop, "wavesync-receiver", &props)
        .ok_or_else(|| pa_error("context", "cannot create"))?;
    context
        .connect(None, ContextFlags::NOAUTOSPAWN, None)
        .map_err(|e| {
            pa_error(
                "connect",
                format!("cannot connect to the PulseAudio server ({e}); is it running?"),
            )
        })?;
    iterate_until(&mut mainloop, deadline, "connect", || {
        match context.get_state() {
            ContextState::Ready => Ok(true),
            ContextState::Failed | ContextState::Terminated => Err(format!(
                "cannot connect to the PulseAudio server ({}); is it running?",
                context.errno()
            )),
            _ => Ok(false),
        }
    })?;

    // Which server: pipewire-pulse names itself "PulseAudio (on PipeWire ...)".
    let server: Rc<Cell<Option<bool>>> = Rc::new(Cell::new(None));
    let answer = server.clone();
    let _op = context.introspect().get_server_info(move |info| {
        let name = info.server_name.as_deref().unwrap_or_default();
        answer.set(Some(name.contains("PipeWire")));
    });
    iterate_until(&mut mainloop, deadline, "connect", || {
        Ok(server.get().is_some())
    })?;
    let pipewire = server.get().unwrap_or(false);
    if pipewire {
        log::debug!("PulseAudio output: the server is pipewire-pulse");
    }

    let spec = Spec {
        format: Format::F32le,
        rate,
        channels,
    };
    if !spec.is_valid() {
        return Err(pa_error(
            "format",
            format!("{rate} Hz, {channels} channels"),
        ));
    }
    let mut map = pa::channelmap::Map::default();
    map.init_extend(channels, pa::channelmap::MapDef::ALSA);
    let mut stream = Stream::new(&mut context, &cfg.name, &spec, Some(&map))
        .ok_or_else(|| pa_error("stream", context.errno()))?;

    let period = ms_to_frames(cfg.period_ms, rate);
    let buffer = cfg
        .buffer_frames
        .map(|b| b as usize)
        .unwrap_or(4 * period)
        .max(2 * period);
    let frame_bytes = (SAMPLE_BYTES * channels as usize) as u32;
    let attr = BufferAttr {
        maxlength: u32::MAX,
        tlength: buffer as u32 * frame_bytes,
        prebuf: period as u32 * frame_bytes,
        minreq: period as u32 * frame_bytes,
        fragsize: u32::MAX,
    };
    let events = Rc::new(Events::default());
    let ev = events.clone();
    stream.set_underflow_callback(Some(Box::new(move || {
        ev.underflows.set(ev.underflows.get() + 1);
        ev.epoch.set(ev.epoch.get() + 1);
    })));
    let ev = events.clone();
    stream.set_started_callback(Some(Box::new(move || {
        ev.epoch.set(ev.epoch.get() + 1);
    })));
    stream
        .connect_playback(
            cfg.sink.as_deref(),
            Some(&attr),
            StreamFlags::ADJUST_LATENCY,
            None,
            None,
        )
        .map_err(|e| pa_error("stream", e))?;
    iterate_until(&mut mainloop, deadline, "stream", || {
        match stream.get_state() {
            StreamState::Ready => Ok(true),
            StreamState::Failed | StreamState::Terminated => Err(format!(
                "the server refused the stream ({}){}",
                context.errno(),
                cfg.sink
                    .as_deref()
                    .map(|s| format!("; does sink {s:?} exist (pactl list short sinks)?"))
                    .unwrap_or_default()
            )),
            _ => Ok(false),
        }
    })?;
    // What the server granted (it may round the buffer).
    let buffer = stream
        .get_buffer_attr()
        .map(|a| a.tlength as usize / frame_bytes as usize)
        .unwrap_or(buffer);
    Ok(Conn {
        stream,
        context,
        mainloop,
        events,
        rate,
        channels: channels as usize,
        period,
        buffer,
        written: 0,
        next_ask: i64::MIN / 2,
        asked: 0,
        pipewire,
        bytes: Vec::new(),
        anchors: Anchors::default(),
    })
}

impl Output for PulseOutput {
    fn open(&mut self, rate: u32, channels: u8) -> Result<OutputInfo, OutputError> {
        self.close();
        if rate == 0 || channels == 0 {
            return Err(OutputError::BadParameter {
                name: "format",
                why: "rate and channels must be > 0",
            });
        }
        let conn = connect(&self.cfg, rate, channels)?;
        let device = match conn.stream.get_device_name() {
            Some(d) => format!("PulseAudio -> {d}"),
            None => "PulseAudio (default sink)".to_string(),
        };
        let info = OutputInfo {
            rate,
            channels,
            device_channels: channels as u32,
            period_frames: conn.period,
            buffer_frames: conn.buffer,
            device_format: DeviceFormat::FloatLe,
            device,
            // The stream is opened with ALSA's channel map (MapDef::ALSA).
            positions: Some(wavesync_common::channels::ChannelMap::alsa_order(
                channels as usize,
            )),
        };
        self.conn = Some(conn);
        self.shape = Some((rate, channels));
        self.underruns_reported = 0;
        Ok(info)
    }

    fn wait(&mut self, timeout_ms: i32) -> Result<bool, OutputError> {
        let c = self.conn()?;
        let deadline = now_ns() + timeout_ms.max(0) as i64 * 1_000_000;
        loop {
            c.pump()?;
            c.check_state()?;
            let now = now_ns();
            c.ask_timing(now)?;
            if c.writable() >= c.period.min(c.buffer) {
                return Ok(true);
            }
            let left = if timeout_ms < 0 {
                100_000_000
            } else {
                deadline - now
            };
            if left <= 0 {
                return Ok(false);
            }
            // Wake for the next timing request too.
            c.block(left.min(100_000_000).min((c.next_ask - now).max(0)))?;
        }
    }

    fn timing(&mut self) -> Result<DacTiming, OutputError> {
        let reported = self.underruns_reported;
        let c = self.conn()?;
        c.pump()?;
        c.check_state()?;
        let underflows = c.events.underflows.get();
        if underflows > reported {
            if reported == 0 || underflows.is_power_of_two() {
                log::warn!("PulseAudio: {underflows} underflows so far (silence played)");
            }
            self.underruns_reported = underflows;
            return Err(OutputError::Underrun);
        }
        let now = now_ns();
        // Normally asked from wait(); here only when a caller does not wait.
        if now > c.next_ask + 5 * UPDATE_EVERY_NS {
            c.ask_timing(now)?;
        }
        let avail = c.writable();
        let fresh = c.events.replied.get() == Some(c.events.epoch.get());
        let info = c.stream.get_timing_info().copied();
        let frame_bytes = (SAMPLE_BYTES * c.channels) as i64;
        match info {
            Some(i) if fresh && i.playing != 0 && i.read_index_corrupt == 0 => {
                // `age` is measured on the same CLOCK_REALTIME the timestamp is on.
                let at = now - i.timestamp.age().0 as i64 * 1000;
                let read = i.read_index / frame_bytes;
                let anchor = at + i.sink_usec.0 as i64 * 1000 - c.ns_of(read);
                let (epoch, reply) = (c.events.epoch.get(), c.events.replies.get());
                let mut anchor = c.anchors.take(epoch, reply, anchor, read);
                // pipewire-pulse reports the read index after the last cycle's take: the frame
                // at `read_index` plays one quantum (the step it moves in) after the stamp.
                let step_known = !c.pipewire || c.anchors.step > 0;
                if c.pipewire {
                    anchor += c.ns_of(c.anchors.step);
                }
                let next = LocalNs::from_ns(anchor + c.ns_of(c.written as i64));
                Ok(DacTiming {
                    next_frame_local: next,
                    delay_frames: ((next.ns() - now) as i128 * c.rate as i128 / 1_000_000_000)
                        as i64,
                    avail_frames: avail,
                    settled: c.anchors.len >= SETTLE_REPLIES && step_known,
                })
            }
            _ => {
                // Not playing yet (filling up to the start threshold) or no reply since the
                // last start: assume it plays what is queued from now on.
                let queued = c.buffer.saturating_sub(avail) as i64;
                Ok(DacTiming {
                    next_frame_local: LocalNs::from_ns(now + c.ns_of(queued)),
                    delay_frames: queued,
                    avail_frames: avail,
                    settled: false,
                })
            }
        }
    }

    fn write(&mut self, samples: &[f32], _meta: &WriteMeta) -> Result<usize, OutputError> {
        let c = self.conn()?;
        c.check_state()?;
        let frames = (samples.len() / c.channels).min(c.writable());
        if frames == 0 {
            return Ok(0);
        }
        let mut bytes = std::mem::take(&mut c.bytes);
        bytes.clear();
        bytes.extend(
            samples[..frames * c.channels]
                .iter()
                .flat_map(|s| s.to_le_bytes()),
        );
        let r = c.stream.write_copy(&bytes, 0, SeekMode::Relative);
        c.bytes = bytes;
        r.map_err(|e| pa_error("write", e))?;
        c.written += frames as u64;
        Ok(frames)
    }

    fn recover(&mut self, err: &OutputError) -> Result<(), OutputError> {
        // After an underrun the stream restarts by itself once it holds `prebuf` again.
        let (open, shape) = (self.conn.is_some(), self.shape);
        super::recover_stream(self, open, shape, err, "PulseAudio")
    }

    fn close(&mut self) {
        if let Some(mut c) = self.conn.take() {
            let _ = c.stream.disconnect();
            c.context.disconnect();
        }
    }
}

impl Drop for PulseOutput {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_without_a_server_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("wavesync-nopulse-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::env::set_var(
            "PULSE_SERVER",
            format!("unix:{}", dir.join("no-such-socket").display()),
        );
        let mut out = PulseOutput::new(PulseConfig::default());
        let err = out.open(48_000, 2).unwrap_err();
        assert!(
            matches!(err, OutputError::Pulse { op: "connect", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("cannot connect"), "{err}");
        assert!(matches!(out.timing(), Err(OutputError::NotOpen)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_earliest_anchor_of_an_epoch_wins() {
        let mut a = Anchors::default();
        assert_eq!(a.take(0, 1, 500, 0), 500);
        assert_eq!(a.take(0, 1, 100, 0), 500, "one anchor per reply");
        assert_eq!(a.take(0, 2, 300, 512), 300);
        assert_eq!(a.take(0, 3, 900, 1280), 300);
        // The read index moved by 512 and 768: in steps of 256.
        assert_eq!(a.step, 256);
        // A new epoch (an underrun moved the timeline) forgets the old one.
        assert_eq!(a.take(1, 4, 2_000, 5_000), 2_000);
        assert_eq!(a.step, 0);
        // The window slides: the early one falls out after ANCHORS later replies.
        assert_eq!(a.take(1, 5, 1_000, 5_240), 1_000);
        for r in 0..ANCHORS as u64 {
            a.take(1, 6 + r, 1_500 + r as i64, 5_240 + 480 * (r as i64 + 1));
        }
        assert_eq!(a.take(1, 6 + ANCHORS as u64, 9_000, 99_999), 1_501);
        assert_eq!(a.step, 1, "an odd move leaves only 1");
    }

    #[test]
    fn a_bad_shape_is_refused_before_connecting() {
        let mut out = PulseOutput::new(PulseConfig::default());
        assert!(matches!(
            out.open(0, 2),
            Err(OutputError::BadParameter { .. })
        ));
        assert!(matches!(
            out.open(48_000, 0),
            Err(OutputError::BadParameter { .. })
        ));
    }
}
