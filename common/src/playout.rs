//! The playout controller: what to write to the DAC so that every frame leaves it at its
//! stamped time.
//!
//! The receiver's output thread owns one [`Playout`]. It pushes decoded packets
//! ([`Playout::push`]), hands over clock estimates ([`Playout::set_clock`]) and, each time the
//! device can take a period, asks [`Playout::fill`] to fill it, telling it when the first frame
//! written will leave the DAC on the local clock (`next_frame_local`, measured from the device).
//!
//! The model (see `docs/playout.md`):
//! - The due time of stream frame `p` of a run anchored at packet `A` is, on the timeline,
//!   `A.play_time + (p - A.ts) / rate - sink_latency`, mapped to the local clock by the clock
//!   estimate ([`TimelineToLocal`]).
//! - **Start**: write exactly as much silence as makes the first frame land on its due time.
//!   The remaining fraction of a frame goes into the resampler's phase, so the start is exact
//!   to well under a microsecond (with drift correction off the silence is rounded instead,
//!   within half a frame, so that samples pass through untouched).
//! - **Running**: at each fill, `error = due(next input position) - next_frame_local`. Beyond
//!   `tolerance_ns`: hard resync at once (drop input if late, silence if early). Within it: a PI
//!   controller (1 Hz bandwidth while acquiring, then 0.3 Hz) steers the resampling ratio,
//!   clamped to `max_correction_ppm`, and converges to well under a microsecond.
//! - **Gaps** that no retransmission filled by the time they are needed are concealed (a short
//!   time-reversed fade-out of the last audio, silence, a fade-in on return) without moving the
//!   timeline. A stream that stops drains to silence.
//! - A **new run** (marker bit, or play times that do not continue the run's) re-anchors like a
//!   start. No clock: silence.
//!
//! Nothing allocates after [`Playout::new`].

use crate::clock::ClockEstimate;
use crate::jitter::{JitterBuffer, JitterConfig, JitterStats, PacketIn, PacketInfo, PushOutcome};
use crate::resample::{Quality, Resampler};
use crate::time::{LocalNs, TimelineNs, NS_PER_SEC};
use crate::wire::rtp::AudioPacket;

/// Packets whose due time is further ahead than this are absurd and dropped.
pub const MAX_AHEAD_NS: i64 = 30 * NS_PER_SEC;
/// A packet whose play time misses the run's prediction by more than this starts a new run.
pub const RUN_BREAK_NS: i64 = 100_000;
/// Length of the concealment fade-out and fade-in.
pub const FADE_NS: i64 = 3_000_000;
/// How long a drained buffer keeps the run's timeline before going back to waiting.
pub const DRAIN_HOLD_NS: i64 = 50_000_000;
/// Bandwidth of the drift controller (rad/s) in steady state; critically damped PI.
const LOOP_OMEGA: f64 = 2.0 * std::f64::consts::PI * 0.3;
/// Wider bandwidth while acquiring the DAC's rate error (the first `ACQUIRE_S` of playing
/// after construction or reset): the lock transient is then a third as large.
const ACQUIRE_OMEGA: f64 = 2.0 * std::f64::consts::PI * 1.0;
const ACQUIRE_S: f64 = 1.5;
/// Time constant of the low-pass on the measured error.
const ERROR_SMOOTH_S: f64 = 0.03;
/// Frames generated at once for concealment and fades.
const SCRATCH_FRAMES: usize = 256;

/// Maps timeline instants to the local clock: what the playout needs from the clock model.
pub trait TimelineToLocal {
    /// The local instant corresponding to timeline instant `t`.
    fn to_local(&self, t: TimelineNs) -> LocalNs;
}

impl TimelineToLocal for ClockEstimate {
    fn to_local(&self, t: TimelineNs) -> LocalNs {
        ClockEstimate::to_local(self, t)
    }
}

/// Settings of a [`Playout`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlayoutConfig {
    /// Stream (and DAC) frames per second.
    pub rate: u32,
    /// Interleaved channels.
    pub channels: u8,
    /// Per-room trim: frames are played this much earlier than stamped (may be negative).
    pub sink_latency_ns: i64,
    /// Errors beyond this are corrected at once by dropping or inserting frames.
    pub tolerance_ns: i64,
    /// Largest deviation of the resampling ratio from 1, in ppm.
    pub max_correction_ppm: f64,
    /// Steer the resampling ratio; off: ratio fixed at 1 (samples pass through untouched).
    pub drift_correction: bool,
    /// Jitter buffer slots (packets held at most).
    pub capacity_packets: usize,
    /// Largest packet accepted, in frames.
    pub max_frames_per_packet: usize,
    /// Interpolator of the fine resampler (see `docs/playout.md` for CPU and distortion).
    pub resampler: Quality,
}

impl PlayoutConfig {
    /// Defaults for a stream of `rate` Hz and `channels` channels: no trim, 2 ms tolerance,
    /// 500 ppm correction at most, drift correction on, 256 slots of 512 frames, 16-tap sinc
    /// resampler.
    pub fn new(rate: u32, channels: u8) -> Self {
        PlayoutConfig {
            rate,
            channels,
            sink_latency_ns: 0,
            tolerance_ns: 2_000_000,
            max_correction_ppm: 500.0,
            drift_correction: true,
            capacity_packets: 256,
            max_frames_per_packet: 512,
            resampler: Quality::default(),
        }
    }
}

impl Default for PlayoutConfig {
    /// 48 kHz stereo, see [`PlayoutConfig::new`].
    fn default() -> Self {
        PlayoutConfig::new(48_000, 2)
    }
}

/// What the playout is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlayoutState {
    /// No clock estimate: writing silence.
    NoClock,
    /// Nothing to play: writing silence.
    Waiting,
    /// A run is anchored; writing silence until its first frame is due.
    Starting,
    /// Playing a run (audio, or concealment of a gap).
    Playing,
}

/// What one [`Playout::fill`] wrote.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FillReport {
    /// Output frames written (the whole buffer).
    pub frames: usize,
    /// Frames of plain silence (waiting, start, drained, resync insertion).
    pub silence_frames: usize,
    /// Input frames concealed (missing packets) during this fill.
    pub concealed_frames: usize,
    /// Error measured at the start of the fill, ns: due time of the next frame minus the time
    /// it will leave the DAC (positive: early). `None` unless playing.
    pub error_ns: Option<i64>,
    /// Resampling ratio used, as ppm away from 1 (positive: input consumed faster).
    pub ratio_ppm: f64,
    /// Extended RTP timestamp (fractional stream frame index) carried by the first output
    /// frame; `None` if it is silence.
    pub first_position: Option<f64>,
    /// The first output frame that carries the stream, and its position, when the fill
    /// starts with silence and then plays (`(0, p)` when `first_position` is `Some(p)`).
    pub audio_start: Option<(usize, f64)>,
    /// State at the end of the fill.
    pub state: PlayoutState,
}

/// Counters since construction or [`Playout::reset`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlayoutStats {
    /// Packets offered to [`Playout::push`].
    pub packets: u64,
    /// Packets dropped because their turn or their due time had passed.
    pub late: u64,
    /// Duplicate packets dropped.
    pub duplicate: u64,
    /// Packets dropped for being too far ahead (sequence window) or absurdly stamped.
    pub out_of_window: u64,
    /// Malformed packets dropped (wrong channel count, partial frames, too long).
    pub malformed: u64,
    /// Sequence numbers given up as lost.
    pub lost: u64,
    /// Input frames concealed.
    pub concealed_frames: u64,
    /// Gaps concealed.
    pub concealments: u64,
    /// Hard resyncs (error beyond the tolerance).
    pub resyncs: u64,
    /// The error that caused the latest resync, ns (positive: the output was early).
    pub last_resync_error_ns: i64,
    /// Input frames dropped by resyncs and late starts.
    pub dropped_frames: u64,
    /// Silence frames inserted by resyncs.
    pub inserted_frames: u64,
    /// Runs started (first start, new runs, restarts after a drain or a clock loss).
    pub starts: u64,
    /// Times the buffer ran dry while playing.
    pub drains: u64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Anchor {
    seq: i64,
    ts: i64,
    play: TimelineNs,
}

impl Anchor {
    fn of(p: &PacketInfo) -> Self {
        Anchor {
            seq: p.seq,
            ts: p.ts,
            play: p.play_time,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    Waiting,
    /// Anchored; the next audio is input frame `pos` (for [`Start::Early`], the resampler's
    /// current position).
    Starting {
        anchor: Anchor,
        pos: i64,
        why: Start,
    },
    Playing,
}

/// Why a run is being (re)anchored: the ways into [`State::Starting`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    /// From waiting, at the first packet buffered; may still move to an earlier packet that
    /// arrives out of order. Counted in [`PlayoutStats::starts`].
    Fresh,
    /// The next packet starts a new run (marker, or play times that do not continue the
    /// run's). Counted in [`PlayoutStats::starts`].
    NewRun,
    /// Late beyond the tolerance: restart at the position due now, dropping input. Silence
    /// written counts as inserted.
    Late,
    /// Early beyond the tolerance: silence until the current position is due, then resume
    /// with the resampler as it is (nothing lost). Silence written counts as inserted.
    Early,
}

impl Start {
    /// A hard resync of a playing run (rather than a start).
    fn is_resync(self) -> bool {
        matches!(self, Start::Late | Start::Early)
    }
}

/// Where the next input frame comes from.
#[derive(Clone, Copy, Debug)]
enum Input {
    /// `frames` frames of packet `seq` from frame `offset`.
    Audio {
        seq: i64,
        offset: usize,
        frames: usize,
    },
    /// Missing frames before the next packet of the run.
    Gap(i64),
    /// The next packet starts a new run.
    RunEnd(PacketInfo),
    /// Nothing buffered.
    Drain,
}

/// PI controller of the resampling ratio.
#[derive(Clone, Copy, Debug, Default)]
struct Pi {
    /// Seconds of steering so far (selects the acquisition or the steady-state gains).
    elapsed: f64,
    /// Low-passed error, s.
    smoothed: Option<f64>,
    integral: f64,
    last: Option<LocalNs>,
    corr: f64,
}

/// The playout controller. See the module documentation.
#[derive(Clone, Debug)]
pub struct Playout<M: TimelineToLocal = ClockEstimate> {
    cfg: PlayoutConfig,
    ch: usize,
    buffer: JitterBuffer,
    resampler: Resampler,
    clock: Option<M>,
    state: State,
    anchor: Anchor,
    /// Extended stream position of the next input frame to be pushed into the resampler.
    in_pos: i64,
    pi: Pi,
    /// Last real input frames (interleaved), for concealment.
    hist: Vec<f32>,
    hist_len: usize,
    fade_frames: usize,
    /// Frames generated since the current concealment began (`None`: not concealing).
    conceal_index: Option<usize>,
    /// Whether the current concealment is a drain (nothing buffered) rather than a gap.
    draining: bool,
    /// Frames of silence written while draining in the current run: audio that should have
    /// played if the packets had come in time. Late packets that prove it turn into concealment.
    drained_frames: u64,
    /// Frames of fade-in left to apply to returning audio.
    fade_in_left: usize,
    scratch: Vec<f32>,
    stats: PlayoutStats,
    last_jitter: JitterStats,
}

impl<M: TimelineToLocal> Playout<M> {
    /// Builds a playout and allocates everything it will use.
    ///
    /// Sizes of 0 (`rate`, `channels`, `capacity_packets`, `max_frames_per_packet`, which may
    /// come from a stream's status message) are raised to 1 rather than panicking; such a
    /// playout only ever outputs silence for a real stream.
    pub fn new(cfg: PlayoutConfig) -> Self {
        let mut cfg = cfg;
        cfg.rate = cfg.rate.max(1);
        cfg.channels = cfg.channels.max(1);
        cfg.capacity_packets = cfg.capacity_packets.max(1);
        cfg.max_frames_per_packet = cfg.max_frames_per_packet.max(1);
        let ch = cfg.channels as usize;
        let buffer = JitterBuffer::new(JitterConfig {
            capacity_packets: cfg.capacity_packets,
            max_frames_per_packet: cfg.max_frames_per_packet,
            channels: cfg.channels,
            max_span_ns: MAX_AHEAD_NS,
        });
        let fade_frames = ((FADE_NS as i128 * cfg.rate as i128 / NS_PER_SEC as i128) as usize)
            .clamp(1, SCRATCH_FRAMES);
        Playout {
            cfg,
            ch,
            buffer,
            resampler: Resampler::with_quality(ch, cfg.resampler),
            clock: None,
            state: State::Waiting,
            anchor: Anchor {
                seq: 0,
                ts: 0,
                play: TimelineNs::from_ns(0),
            },
            in_pos: 0,
            pi: Pi::default(),
            hist: vec![0.0; fade_frames * ch],
            hist_len: 0,
            fade_frames,
            conceal_index: None,
            draining: false,
            drained_frames: 0,
            fade_in_left: 0,
            scratch: vec![0.0; SCRATCH_FRAMES * ch],
            stats: PlayoutStats::default(),
            last_jitter: JitterStats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PlayoutConfig {
        &self.cfg
    }

    /// The jitter buffer (read-only: for status and NACK decisions).
    pub fn buffer(&self) -> &JitterBuffer {
        &self.buffer
    }

    /// Counters (including the jitter buffer's).
    pub fn stats(&self) -> PlayoutStats {
        let mut s = self.stats;
        let j = self.buffer.stats();
        s.late += j.late;
        s.duplicate += j.duplicate;
        s.out_of_window += j.out_of_window + j.implausible;
        s.malformed += j.malformed;
        s.lost += j.skipped;
        s
    }

    /// What the playout is doing now.
    pub fn state(&self) -> PlayoutState {
        if self.clock.is_none() {
            return PlayoutState::NoClock;
        }
        match self.state {
            State::Waiting => PlayoutState::Waiting,
            State::Starting { .. } => PlayoutState::Starting,
            State::Playing => PlayoutState::Playing,
        }
    }

    /// Audio buffered ahead (frames held in the jitter buffer), in ns at the stream rate.
    pub fn buffered_ns(&self) -> i64 {
        self.frames_ns(self.buffer.frames_held() as f64)
    }

    /// Current resampling ratio, as ppm away from 1.
    pub fn ratio_ppm(&self) -> f64 {
        self.pi.corr * 1e6
    }

    /// Forgets packets, run, controller and counters (a new stream).
    pub fn reset(&mut self) {
        self.buffer.reset();
        self.state = State::Waiting;
        self.pi = Pi::default();
        self.hist_len = 0;
        self.conceal_index = None;
        self.draining = false;
        self.drained_frames = 0;
        self.fade_in_left = 0;
        self.stats = PlayoutStats::default();
        self.last_jitter = JitterStats::default();
    }

    /// Replaces the clock estimate. `None` (no lock, or a step detected): silence until a new
    /// estimate arrives, then a fresh start from the buffer.
    pub fn set_clock(&mut self, clock: Option<M>) {
        if clock.is_none() {
            self.reanchor();
        }
        self.clock = clock;
    }

    /// Changes the sink latency (a room's trim): the next frame lands on the new due time
    /// (one resync, as after [`Playout::reanchor`]), keeping the clock and the buffer.
    pub fn set_sink_latency_ns(&mut self, ns: i64) {
        if ns != self.cfg.sink_latency_ns {
            self.cfg.sink_latency_ns = ns;
            self.reanchor();
        }
    }

    /// Lands the next frame exactly on its due time again, as at a start, instead of slewing
    /// towards it: for when the device's timing moved under the playout (it was first seen
    /// consuming, or it recovered from an underrun). Keeps the clock and the buffer.
    pub fn reanchor(&mut self) {
        if self.clock.is_some() {
            self.state = State::Waiting;
            self.pi.last = None;
            self.pi.smoothed = None;
        }
    }

    /// Offers a decoded audio packet received at local time `now`, for a stream of `channels`
    /// channels (a mismatch with the configuration counts as malformed).
    pub fn push(&mut self, now: LocalNs, pkt: &AudioPacket<'_>, channels: u8) -> PushOutcome {
        if channels != self.cfg.channels {
            self.stats.packets += 1;
            self.stats.malformed += 1;
            return PushOutcome::Malformed;
        }
        self.push_parts(
            now,
            &PacketIn {
                seq: pkt.seq,
                timestamp: pkt.timestamp,
                play_time: pkt.play_time,
                marker: pkt.marker,
                format: pkt.format,
                payload: pkt.payload,
            },
        )
    }

    /// [`Playout::push`] from the packet's fields.
    pub fn push_parts(&mut self, now: LocalNs, p: &PacketIn<'_>) -> PushOutcome {
        self.stats.packets += 1;
        if let Some(clock) = &self.clock {
            let frames = p.payload.len() / (p.format.bytes() * self.ch);
            let due = clock.to_local(p.play_time.saturating_sub(self.cfg.sink_latency_ns));
            let end = due.saturating_add(self.frames_ns(frames as f64));
            if end < now {
                self.stats.late += 1;
                return PushOutcome::Late;
            }
            if due.ns().saturating_sub(now.ns()) > MAX_AHEAD_NS {
                self.stats.out_of_window += 1;
                return PushOutcome::Implausible;
            }
        }
        self.buffer.push(p)
    }

    fn frames_ns(&self, frames: f64) -> i64 {
        (frames * NS_PER_SEC as f64 / self.cfg.rate as f64).round() as i64
    }

    /// Local due time of input position `anchor.ts + rel` (fractional frames).
    fn due_local(&self, clock: &M, anchor: &Anchor, rel: f64) -> LocalNs {
        let t = anchor
            .play
            .saturating_add(self.frames_ns(rel))
            .saturating_sub(self.cfg.sink_latency_ns);
        clock.to_local(t)
    }

    /// Whether packet `p` continues the current run.
    fn continues_run(&self, p: &PacketInfo) -> bool {
        if p.seq == self.anchor.seq {
            return true;
        }
        if p.marker {
            return false;
        }
        let predicted = self
            .anchor
            .play
            .saturating_add(self.frames_ns((p.ts - self.anchor.ts) as f64));
        (p.play_time.ns() as i128 - predicted.ns() as i128).abs() <= RUN_BREAK_NS as i128
    }

    /// Fills `out` (interleaved, whole frames) with what must leave the DAC from
    /// `next_frame_local` on. Always writes the whole buffer.
    pub fn fill(&mut self, next_frame_local: LocalNs, out: &mut [f32]) -> FillReport {
        let ch = self.ch;
        let total = out.len() / ch;
        // A trailing partial frame is never played: keep it silent.
        out[total * ch..].fill(0.0);
        let out = &mut out[..total * ch];
        let mut rep = FillReport {
            frames: total,
            silence_frames: 0,
            concealed_frames: 0,
            error_ns: None,
            ratio_ppm: 0.0,
            first_position: None,
            audio_start: None,
            state: PlayoutState::NoClock,
        };
        let Some(clock) = self.clock.take() else {
            out.fill(0.0);
            rep.silence_frames = total;
            return rep;
        };

        if self.state == State::Playing {
            self.measure_and_steer(&clock, next_frame_local, &mut rep);
        }
        rep.ratio_ppm = self.pi.corr * 1e6;
        let ratio = 1.0 + self.pi.corr;

        let mut j = 0;
        // Each pass writes output or consumes a packet; the guard only protects against a
        // logic error turning into a hung audio thread.
        let mut guard = 4 * self.cfg.capacity_packets + 64;
        while j < total {
            guard -= 1;
            if guard == 0 {
                out[j * ch..].fill(0.0);
                rep.silence_frames += total - j;
                break;
            }
            let step = match self.state {
                State::Waiting => self.step_waiting(out, j, &mut rep),
                State::Starting { anchor, pos, why } => {
                    self.step_starting(&clock, next_frame_local, out, j, &mut rep, anchor, pos, why)
                }
                State::Playing => Some(self.step_playing(out, j, ratio, &mut rep)),
            };
            match step {
                Some(n) => j += n,
                None => break,
            }
        }
        self.clock = Some(clock);
        rep.state = self.state();
        rep
    }

    /// Nothing anchored: anchors a fresh start at the first packet buffered (writing nothing),
    /// or fills the rest of `out` (from frame `j`) with silence and returns `None`.
    fn step_waiting(&mut self, out: &mut [f32], j: usize, rep: &mut FillReport) -> Option<usize> {
        let Some(p) = self.buffer.first_present() else {
            let total = out.len() / self.ch;
            out[j * self.ch..].fill(0.0);
            rep.silence_frames += total - j;
            return None;
        };
        self.state = State::Starting {
            anchor: Anchor::of(&p),
            pos: p.ts,
            why: Start::Fresh,
        };
        Some(0)
    }

    /// A run is anchored at input frame `pos`: writes silence from frame `j` of `out` until
    /// that frame is due, then begins playing it (dropping input if it is already late).
    /// Returns the frames written, or `None` when the silence fills the rest of `out`.
    #[allow(clippy::too_many_arguments)]
    fn step_starting(
        &mut self,
        clock: &M,
        next_frame_local: LocalNs,
        out: &mut [f32],
        j: usize,
        rep: &mut FillReport,
        mut anchor: Anchor,
        mut pos: i64,
        why: Start,
    ) -> Option<usize> {
        let ch = self.ch;
        let total = out.len() / ch;
        if why == Start::Fresh {
            // A packet that arrived out of order ahead of the anchor starts the stream.
            if let Some(p) = self.buffer.first_present() {
                if p.seq < anchor.seq {
                    anchor = Anchor::of(&p);
                    pos = p.ts;
                }
            }
        }
        // The DAC's frame period, as far as the controller knows it.
        let out_rate = self.cfg.rate as f64 / (1.0 + self.pi.corr);
        let t_j = next_frame_local + self.frames_ns(j as f64 * (1.0 + self.pi.corr));
        let rel = if why == Start::Early {
            self.position() - anchor.ts as f64
        } else {
            (pos - anchor.ts) as f64
        };
        let due = self.due_local(clock, &anchor, rel);
        if due.ns().saturating_sub(t_j.ns()) > MAX_AHEAD_NS {
            // Absurd stamp that slipped in before we had a clock: drop it.
            self.buffer.skip_to(anchor.seq);
            self.buffer.advance();
            self.stats.out_of_window += 1;
            self.state = State::Waiting;
            return Some(0);
        }
        // Output frames until the anchored frame is due (negative: it is late).
        let x = (due - t_j) as f64 * out_rate / NS_PER_SEC as f64;
        let left = total - j;
        if x >= left as f64 {
            out[j * ch..].fill(0.0);
            rep.silence_frames += left;
            if why.is_resync() {
                self.stats.inserted_frames += left as u64;
            }
            self.state = State::Starting { anchor, pos, why };
            return None;
        }
        let n = if why == Start::Early {
            if x < 0.0 {
                // Time ran past the resume point: restart from the input instead.
                self.state = State::Starting {
                    anchor,
                    pos: self.in_pos,
                    why: Start::Late,
                };
                return Some(0);
            }
            self.resume_after_silence(x, &mut out[j * ch..], rep)
        } else {
            self.begin_run_after_silence(x, &mut out[j * ch..], rep, anchor, pos, why)
        };
        if j + n < total && self.state == State::Playing && rep.audio_start.is_none() {
            rep.audio_start = Some((j + n, self.position()));
        }
        Some(n)
    }

    /// An early resync whose resume point is `x >= 0` output frames away (less than `out`
    /// holds): silence, then the resampler carries on where it is. Returns the silence frames
    /// written.
    fn resume_after_silence(&mut self, x: f64, out: &mut [f32], rep: &mut FillReport) -> usize {
        let (n, extra) = if self.cfg.drift_correction {
            (x.ceil(), x.ceil() - x)
        } else {
            (x.round(), 0.0)
        };
        let n = (n as usize).min(out.len() / self.ch);
        out[..n * self.ch].fill(0.0);
        rep.silence_frames += n;
        self.stats.inserted_frames += n as u64;
        self.resampler.skip(extra);
        self.state = State::Playing;
        n
    }

    /// Starts the run anchored at `anchor` from input frame `pos`, whose due time is `x`
    /// output frames away (less than `out` holds): silence until then, or when it is late
    /// (`x < 0`), the input due now. Returns the silence frames written.
    fn begin_run_after_silence(
        &mut self,
        x: f64,
        out: &mut [f32],
        rep: &mut FillReport,
        anchor: Anchor,
        pos: i64,
        why: Start,
    ) -> usize {
        let (silence, start, frac) = if x >= 0.0 {
            if self.cfg.drift_correction {
                let n = x.ceil();
                (n as usize, pos, n - x)
            } else {
                (x.round() as usize, pos, 0.0)
            }
        } else {
            let p0 = pos as f64 - x;
            if self.cfg.drift_correction {
                (0, p0.floor() as i64, p0 - p0.floor())
            } else {
                (0, p0.round() as i64, 0.0)
            }
        };
        let silence = silence.min(out.len() / self.ch);
        out[..silence * self.ch].fill(0.0);
        rep.silence_frames += silence;
        if why.is_resync() {
            self.stats.inserted_frames += silence as u64;
        } else {
            self.stats.starts += 1;
        }
        self.stats.dropped_frames += (start - pos).max(0) as u64;
        self.begin_run(anchor, start, frac);
        silence
    }

    /// Plays the current run from frame `j` of `out`; returns the frames written.
    fn step_playing(
        &mut self,
        out: &mut [f32],
        j: usize,
        ratio: f64,
        rep: &mut FillReport,
    ) -> usize {
        if j == 0 {
            rep.first_position = Some(self.position());
            rep.audio_start = Some((0, self.position()));
        } else if rep.audio_start.is_none() {
            rep.audio_start = Some((j, self.position()));
        }
        self.play(&mut out[j * self.ch..], ratio, rep)
    }

    /// Fractional stream position of the next output frame.
    fn position(&self) -> f64 {
        self.in_pos as f64 + self.resampler.offset()
    }

    fn measure_and_steer(&mut self, clock: &M, next_frame_local: LocalNs, rep: &mut FillReport) {
        let rel = (self.in_pos - self.anchor.ts) as f64 + self.resampler.offset();
        let err = self.due_local(clock, &self.anchor, rel) - next_frame_local;
        rep.error_ns = Some(err);
        if err.abs() > self.cfg.tolerance_ns {
            self.stats.resyncs += 1;
            self.stats.last_resync_error_ns = err;
            self.pi.last = None;
            self.pi.smoothed = None;
            self.end_concealment();
            if err > 0 {
                // Early: silence until the current position is due, nothing lost.
                self.state = State::Starting {
                    anchor: self.anchor,
                    pos: self.in_pos,
                    why: Start::Early,
                };
                return;
            }
            // Late: restart at the position due now (never before what the resampler
            // already consumed).
            let target =
                rel + self.anchor.ts as f64 - err as f64 * self.cfg.rate as f64 / NS_PER_SEC as f64;
            let pos = (target.round() as i64).max(self.in_pos);
            // Frames between the current position and the restart point are dropped.
            self.stats.dropped_frames += (pos as f64 - (rel + self.anchor.ts as f64))
                .round()
                .max(0.0) as u64;
            self.state = State::Starting {
                anchor: self.anchor,
                pos,
                why: Start::Late,
            };
            return;
        }
        if !self.cfg.drift_correction {
            self.pi.corr = 0.0;
            return;
        }
        let dt = match self.pi.last {
            Some(prev) => ((next_frame_local - prev) as f64 / NS_PER_SEC as f64).clamp(0.0, 0.1),
            None => 0.0,
        };
        self.pi.last = Some(next_frame_local);
        // Light low-pass on the measurement (time constant `ERROR_SMOOTH_S`): DAC timestamps
        // can be noisy, and noise that saturates the output would bias the loop.
        let raw = err as f64 / NS_PER_SEC as f64;
        let e = match self.pi.smoothed {
            Some(prev) if dt > 0.0 => prev + (raw - prev) * (dt / (ERROR_SMOOTH_S + dt)),
            _ => raw,
        };
        self.pi.smoothed = Some(e);
        let max = self.cfg.max_correction_ppm.max(0.0) * 1e-6;
        self.pi.elapsed += dt;
        let w = if self.pi.elapsed < ACQUIRE_S {
            ACQUIRE_OMEGA
        } else {
            LOOP_OMEGA
        };
        let (kp, ki) = (2.0 * w, w * w);
        let integral = self.pi.integral + ki * e * dt;
        let u = -(kp * e + integral);
        // Anti-windup (conditional integration): skip only the steps that would push the
        // output further past the limit it is already beyond. (Symmetric in the integral's
        // sign: a rule like "only let |integral| shrink while saturated" biases the integral
        // towards zero when noise saturates the output, and leaves a standing error.)
        let pushes_further =
            (u > max && integral < self.pi.integral) || (u < -max && integral > self.pi.integral);
        if !pushes_further {
            self.pi.integral = integral;
        }
        self.pi.corr = u.clamp(-max, max);
    }

    fn begin_run(&mut self, anchor: Anchor, start: i64, frac: f64) {
        self.anchor = anchor;
        self.in_pos = start;
        self.resampler.reset(frac);
        self.buffer.skip_to(anchor.seq);
        self.hist_len = 0;
        self.end_concealment();
        self.fade_in_left = 0;
        self.state = State::Playing;
    }

    fn end_concealment(&mut self) {
        self.conceal_index = None;
        self.draining = false;
    }

    /// Which input comes next at `in_pos`; releases packets that are entirely behind it.
    fn next_input(&mut self) -> Input {
        loop {
            let Some(p) = self.buffer.first_present() else {
                return Input::Drain;
            };
            if !self.continues_run(&p) {
                return Input::RunEnd(p);
            }
            if p.ts + p.frames as i64 <= self.in_pos {
                // Arrived, but its frames were concealed or skipped already. If silence was
                // written in their place while the buffer ran dry, they were lost to a gap:
                // count them as concealed (a known gap counted its frames when it concealed).
                self.buffer.skip_to(p.seq);
                self.buffer.advance();
                self.stats.late += 1;
                let lost = (p.frames as u64).min(self.drained_frames);
                self.drained_frames -= lost;
                self.stats.concealed_frames += lost;
                continue;
            }
            if p.ts > self.in_pos {
                return Input::Gap(p.ts - self.in_pos);
            }
            self.buffer.skip_to(p.seq);
            self.drained_frames = 0;
            let offset = (self.in_pos - p.ts) as usize;
            return Input::Audio {
                seq: p.seq,
                offset,
                frames: p.frames - offset,
            };
        }
    }

    /// Plays the current run into `out` until it is full or the run ends; returns frames
    /// written.
    fn play(&mut self, out: &mut [f32], ratio: f64, rep: &mut FillReport) -> usize {
        let ch = self.ch;
        let total = out.len() / ch;
        let mut j = 0;
        while j < total && self.state == State::Playing {
            match self.next_input() {
                Input::Audio {
                    seq,
                    offset,
                    frames,
                } => {
                    if self.conceal_index.is_some() {
                        self.end_concealment();
                        self.fade_in_left = self.fade_frames;
                    }
                    let src_all = self.buffer.samples(seq);
                    let src = &src_all[offset * ch..(offset + frames) * ch];
                    let done = if self.fade_in_left > 0 {
                        let n = frames.min(self.fade_in_left).min(SCRATCH_FRAMES);
                        let base = self.fade_frames - self.fade_in_left;
                        for f in 0..n {
                            let g = (base + f + 1) as f32 / (self.fade_frames + 1) as f32;
                            for c in 0..ch {
                                self.scratch[f * ch + c] = src[f * ch + c] * g;
                            }
                        }
                        let r = self.resampler.process(
                            &self.scratch[..n * ch],
                            &mut out[j * ch..],
                            ratio,
                        );
                        self.fade_in_left -= r.consumed;
                        r
                    } else {
                        self.resampler.process(src, &mut out[j * ch..], ratio)
                    };
                    // Remember the tail of the real audio for concealment.
                    let src_all = self.buffer.samples(seq);
                    let used = &src_all[offset * ch..(offset + done.consumed) * ch];
                    remember(&mut self.hist, &mut self.hist_len, used, ch);
                    self.in_pos += done.consumed as i64;
                    j += done.produced;
                    if done.consumed == frames {
                        self.buffer.advance();
                    }
                }
                Input::Gap(missing) => {
                    if self.conceal_index.is_none() || self.draining {
                        if self.conceal_index.is_none() {
                            self.conceal_index = Some(0);
                        }
                        self.draining = false;
                        self.stats.concealments += 1;
                    }
                    let n = (missing.min(SCRATCH_FRAMES as i64)) as usize;
                    let done = self.conceal(n, &mut out[j * ch..], ratio);
                    self.stats.concealed_frames += done.0 as u64;
                    rep.concealed_frames += done.0;
                    j += done.1;
                }
                Input::Drain => {
                    if self.conceal_index.is_none() {
                        self.conceal_index = Some(0);
                        self.stats.drains += 1;
                        self.draining = true;
                    }
                    let hold = (DRAIN_HOLD_NS as i128 * self.cfg.rate as i128 / NS_PER_SEC as i128)
                        as usize;
                    let idx = self.conceal_index.unwrap_or(0);
                    if self.draining && idx >= hold {
                        self.end_concealment();
                        self.state = State::Waiting;
                        break;
                    }
                    let n = SCRATCH_FRAMES.min(hold.saturating_sub(idx).max(1));
                    let done = self.conceal(n, &mut out[j * ch..], ratio);
                    rep.silence_frames += done.1;
                    self.drained_frames += done.0 as u64;
                    j += done.1;
                }
                Input::RunEnd(p) => {
                    // The old run's last frames inside the resampler's look-ahead (2 for the
                    // cubic, 8 for the 16-tap sinc: under 0.2 ms, at a break in the stream
                    // anyway) are not played.
                    self.end_concealment();
                    self.state = State::Starting {
                        anchor: Anchor::of(&p),
                        pos: p.ts,
                        why: Start::NewRun,
                    };
                }
            }
        }
        j
    }

    /// Generates up to `n` concealment frames (time-reversed fade-out of the last audio, then
    /// silence) and resamples them into `out`; returns (input consumed, output produced).
    fn conceal(&mut self, n: usize, out: &mut [f32], ratio: f64) -> (usize, usize) {
        let ch = self.ch;
        let n = n.clamp(1, SCRATCH_FRAMES);
        let idx0 = self.conceal_index.unwrap_or(0);
        for f in 0..n {
            let i = idx0 + f;
            let dst = &mut self.scratch[f * ch..(f + 1) * ch];
            if i < self.fade_frames && self.hist_len > 0 {
                let g = (self.fade_frames - i) as f32 / (self.fade_frames + 1) as f32;
                let k = self.hist_len - 1 - (i % self.hist_len);
                for (d, h) in dst.iter_mut().zip(&self.hist[k * ch..(k + 1) * ch]) {
                    *d = h * g;
                }
            } else {
                dst.fill(0.0);
            }
        }
        let r = self.resampler.process(&self.scratch[..n * ch], out, ratio);
        self.conceal_index = Some(idx0 + r.consumed);
        self.in_pos += r.consumed as i64;
        (r.consumed, r.produced)
    }
}

/// Appends `frames` (interleaved) to the history, keeping its last `hist.len() / ch` frames.
fn remember(hist: &mut [f32], hist_len: &mut usize, frames: &[f32], ch: usize) {
    let cap = hist.len() / ch;
    let n = frames.len() / ch;
    if n >= cap {
        hist.copy_from_slice(&frames[(n - cap) * ch..]);
        *hist_len = cap;
        return;
    }
    let keep = (*hist_len).min(cap - n);
    hist.copy_within((*hist_len - keep) * ch..*hist_len * ch, 0);
    hist[keep * ch..(keep + n) * ch].copy_from_slice(frames);
    *hist_len = keep + n;
}
