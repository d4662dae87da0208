//! The output thread: owns the device and the common [`Playout`]; each cycle asks the device
//! when the next frame will leave it, lets the playout decide what to write, and writes it.
//!
//! It never blocks on the network (packets and clock updates arrive through the feed ring),
//! never allocates in steady state, and logs events, not packets. A device that fails
//! (underrun, suspend, unplug) is reopened with backoff and the failure is logged once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use log::{info, warn};
use wavesync_common::channels;
use wavesync_common::clock::ClockEstimate;
use wavesync_common::playout::{Playout, PlayoutConfig, PlayoutState, PlayoutStats};
use wavesync_common::receiver::StreamInfo;
use wavesync_common::time::{frames_to_ns, LocalNs};

use crate::clock_io;
use crate::config::Config;
use crate::device_delay::DeviceDelay;
use crate::feed::Feed;
use crate::output::{self, Backoff, Output, OutputError, WriteMeta};
use crate::settings::{Mixer, SettingsCell};
use crate::status::Shared;
use wavesync_common::wire::report::Settings;

/// Release the device after this long without a stream.
const IDLE_RELEASE_NS: i64 = 30_000_000_000;

/// The output side, ready to run.
pub struct Playback {
    cfg: Config,
    feed: rtrb::Consumer<Feed>,
    status: Shared,
    output: Option<Box<dyn Output>>,
    playout: Option<Playout>,
    stream: Option<StreamInfo>,
    clock: Option<ClockEstimate>,
    buf: Vec<f32>,
    period_frames: usize,
    lost_since: Option<LocalNs>,
    /// Failed opens (and device failures) since the device last worked: spaces the attempts.
    backoff: Backoff,
    /// When to try opening the device again.
    retry_at: LocalNs,
    underruns: u64,
    last_error_ns: Option<i64>,
    /// The device's measured delay, for the network thread.
    device_delay: DeviceDelay,
    /// The open device has been seen consuming (its timing is measured, not guessed).
    device_settled: bool,
    /// Frames filled that the device has not taken yet.
    unwritten: Unwritten,
    /// Frames filled that never reached the device (it lost its place or failed first).
    lost_frames: u64,
    /// The room's settings, from the network thread (one atomic word).
    settings: SettingsCell,
    /// The settings applied now.
    applied: Settings,
    /// Channel map and gain.
    mixer: Mixer,
    /// Resyncs already logged (of the current playout's count).
    logged_resyncs: u64,
    /// Where each stream channel goes in the device's order, when they differ.
    reorder: Option<[usize; channels::MAX]>,
}

/// Frames of the last fill that the device did not take (its buffer was full: ALSA returns 0
/// on EAGAIN, the PipeWire output takes what fits). They are written first at the next
/// cycle: queued right after what the device took, they still leave it at their due time.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Unwritten {
    /// Frame range of the fill buffer still to write.
    start: usize,
    end: usize,
    /// What the first of them carries.
    meta: WriteMeta,
}

impl Unwritten {
    fn frames(&self) -> usize {
        self.end - self.start
    }

    /// Notes that a write of `frames` frames (from frame `start` of the fill buffer) described
    /// by `meta` took `taken`; `ratio` is the fill's input frames per output frame. Keeps the
    /// rest, with the stream position its first frame carries.
    fn after_write(
        &mut self,
        start: usize,
        frames: usize,
        taken: usize,
        meta: &WriteMeta,
        ratio: f64,
    ) {
        let taken = taken.min(frames);
        let meta = match (meta.stream_position, meta.audio_start) {
            (Some(p), _) => {
                let p = p + taken as f64 * ratio;
                WriteMeta {
                    stream_position: Some(p),
                    audio_start: Some((0, p)),
                }
            }
            (None, Some((j, p))) if taken < j => WriteMeta {
                stream_position: None,
                audio_start: Some((j - taken, p)),
            },
            (None, Some((j, p))) => {
                let p = p + (taken - j) as f64 * ratio;
                WriteMeta {
                    stream_position: Some(p),
                    audio_start: Some((0, p)),
                }
            }
            (None, None) => WriteMeta::default(),
        };
        *self = Unwritten {
            start: start + taken,
            end: start + frames,
            meta,
        };
    }

    /// Writes what is left of `buf` (interleaved, `channels` per frame); returns whether all
    /// of it is written now.
    fn write(
        &mut self,
        o: &mut dyn Output,
        buf: &[f32],
        channels: usize,
        ratio: f64,
    ) -> Result<bool, OutputError> {
        let frames = self.frames();
        if frames == 0 {
            return Ok(true);
        }
        let meta = self.meta;
        let taken = o.write(&buf[self.start * channels..self.end * channels], &meta)?;
        self.after_write(self.start, frames, taken, &meta, ratio);
        Ok(self.frames() == 0)
    }

    /// Forgets what is left (the device lost its place); returns how many frames that was.
    fn discard(&mut self) -> usize {
        let n = self.frames();
        *self = Unwritten::default();
        n
    }
}

fn pc_sink_latency(s: &Settings) -> i64 {
    s.trim_us as i64 * 1000
}

fn state_name(s: PlayoutState) -> &'static str {
    match s {
        PlayoutState::NoClock => "waiting for the clock",
        PlayoutState::Waiting => "waiting for audio",
        PlayoutState::Starting => "starting",
        PlayoutState::Playing => "playing",
    }
}

/// Replaces the state's name, allocating only when it changed.
fn set_state(state: &mut String, name: &str) {
    if state != name {
        state.clear();
        state.push_str(name);
    }
}

impl Playback {
    /// Prepares the output thread; nothing is opened yet.
    pub fn new(
        cfg: &Config,
        feed: rtrb::Consumer<Feed>,
        status: Shared,
        device_delay: DeviceDelay,
        settings: SettingsCell,
    ) -> Self {
        let applied = settings.load();
        Playback {
            mixer: Mixer::new(&applied, 48_000),
            applied,
            settings,
            cfg: cfg.clone(),
            feed,
            status,
            output: None,
            playout: None,
            stream: None,
            clock: None,
            buf: Vec::new(),
            period_frames: 0,
            lost_since: None,
            backoff: Backoff::default(),
            retry_at: LocalNs::from_ns(0),
            underruns: 0,
            last_error_ns: None,
            device_delay,
            device_settled: false,
            unwritten: Unwritten::default(),
            lost_frames: 0,
            logged_resyncs: 0,
            reorder: None,
        }
    }

    /// Counts the frames not yet written as lost (the device they were for lost its place).
    fn discard_unwritten(&mut self) {
        self.lost_frames += self.unwritten.discard() as u64;
    }

    /// Opens and closes the device once at the default format, so a missing or busy device is
    /// reported at start-up rather than when the first stream arrives.
    pub fn check_device(&self) -> Result<(), String> {
        let mut o = output::from_config(&self.cfg.output);
        o.open(48_000, 2).map_err(|e| e.to_string())?;
        o.close();
        Ok(())
    }

    fn open_for(&mut self, info: &StreamInfo) -> Result<(), OutputError> {
        let f = info.format();
        self.discard_unwritten();
        if let Some(o) = self.output.as_mut() {
            o.close();
        }
        let mut o = output::for_stream(&self.cfg.output, &info.status);
        let oi = o.open(f.rate, f.channels)?;
        // The device's channel order, when it differs from the stream's.
        let stream_map = info.status.positions();
        self.reorder = oi
            .positions
            .filter(|d| *d != stream_map)
            .and_then(|d| stream_map.permutation_to(&d));
        if let (Some(_), Some(d)) = (self.reorder, oi.positions) {
            info!("channels reordered for the device: stream {stream_map}, device {d}");
        }
        self.period_frames = oi.period_frames.max(16);
        self.buf = vec![0.0; self.period_frames * 4 * f.channels as usize];
        self.output = Some(o);
        self.device_settled = false;
        let packet_ns =
            info.status.frames_per_packet.max(1) as i64 * 1_000_000_000 / f.rate.max(1) as i64;
        // Room for the sender's latency plus a second of slack, in packets.
        let capacity = ((info.status.latency_ns + 1_000_000_000) / packet_ns.max(1)) as usize + 64;
        let mut pc = PlayoutConfig::new(f.rate, f.channels);
        // The room's trim is the sink latency (the configuration gives its first value).
        self.applied = self.settings.load();
        self.mixer = Mixer::new(&self.applied, f.rate);
        pc.sink_latency_ns = self.applied.trim_us as i64 * 1000;
        pc.tolerance_ns = self.cfg.tolerance_ns;
        pc.drift_correction = self.cfg.drift_correction;
        pc.capacity_packets = capacity.clamp(64, 4096);
        pc.max_frames_per_packet =
            (1500 / f.bytes_per_frame().max(1)).max(info.status.frames_per_packet as usize);
        let mut playout = Playout::new(pc);
        playout.set_clock(self.clock);
        self.playout = Some(playout);
        info!(
            "output open: {} Hz, {} ch, period {} frames, buffer {} frames ({})",
            f.rate, f.channels, oi.period_frames, oi.buffer_frames, oi.device_format
        );
        // A packet leaves the master a packet-time after its first frame was captured and must
        // be in this device's buffer a buffer-time before it plays: a shorter latency loses it.
        let needed_ns = packet_ns
            + (oi.buffer_frames as i64 * 1_000_000_000 / f.rate.max(1) as i64)
            + pc_sink_latency(&self.applied).max(0);
        if info.status.latency_ns < needed_ns + 2_000_000 {
            warn!(
                "the master's latency ({:.1} ms) is too short for this receiver: a packet ({:.1} ms) \
                 plus this device's buffer ({:.1} ms) plus sink latency need {:.1} ms and more for the \
                 network; audio will be lost. Raise the master's latency, or lower --buffer-size / \
                 --period-ms here",
                info.status.latency_ns as f64 / 1e6,
                packet_ns as f64 / 1e6,
                oi.buffer_frames as f64 * 1e3 / f.rate.max(1) as f64,
                needed_ns as f64 / 1e6
            );
        }
        Ok(())
    }

    fn close(&mut self) {
        self.discard_unwritten();
        if let Some(mut o) = self.output.take() {
            o.close();
        }
        self.playout = None;
    }

    fn drain_feed(&mut self) {
        while let Ok(msg) = self.feed.pop() {
            match msg {
                Feed::Packet(pkt) => {
                    let (Some(p), Some(info)) = (self.playout.as_mut(), self.stream) else {
                        continue;
                    };
                    p.push(pkt.at, &pkt.audio(), info.format().channels);
                }
                Feed::Stream(info) => {
                    let same_format = self.stream.is_some_and(|s| {
                        s.format() == info.format()
                            && s.status.positions() == info.status.positions()
                    });
                    self.stream = Some(info);
                    self.lost_since = None;
                    if same_format && self.output.is_some() {
                        if let Some(p) = self.playout.as_mut() {
                            p.reset();
                        }
                    } else {
                        self.reopen();
                    }
                }
                Feed::StreamLost => self.lost_since = Some(clock_io::monotonic_ns()),
                Feed::StreamResumed(info) => {
                    self.lost_since = None;
                    // The device may have been released while the stream was away.
                    if self.stream.is_none() {
                        self.stream = Some(info);
                        self.reopen();
                    }
                }
                Feed::Clock(est) => {
                    self.clock = est;
                    if let Some(p) = self.playout.as_mut() {
                        p.set_clock(est);
                    }
                }
            }
        }
    }

    fn reopen(&mut self) {
        let Some(info) = self.stream else { return };
        match self.open_for(&info) {
            Ok(()) => {
                if self.backoff.failures() > 0 {
                    info!(
                        "output recovered after {} attempts",
                        self.backoff.failures()
                    );
                }
                self.backoff.reset();
            }
            Err(e) => {
                if self.backoff.failures() == 0 {
                    warn!("output failed: {e}; retrying with backoff");
                }
                let delay_ms = self.backoff.next_delay_ms() as i64;
                self.retry_at = clock_io::monotonic_ns() + delay_ms * 1_000_000;
                self.output = None;
                self.playout = None;
            }
        }
    }

    fn on_device_error(&mut self, e: OutputError) {
        self.underruns += 1;
        if self.backoff.failures() == 0 {
            warn!("output: {e}; reopening");
        }
        self.close();
        // The first attempt comes at once; the delay applies if it fails.
        let _ = self.backoff.next_delay_ms();
        self.retry_at = clock_io::monotonic_ns();
    }

    /// Updates the shared status. Called from the audio thread: it never waits for the lock
    /// (a busy snapshot is skipped, the next comes 100 ms later) and allocates only when the
    /// state's name changes.
    fn publish(&mut self) {
        let Some(p) = self.playout.as_ref() else {
            let name = if self.stream.is_some() {
                "device unavailable"
            } else {
                "waiting for a stream"
            };
            if let Ok(mut s) = self.status.try_lock() {
                set_state(&mut s.state, name);
            }
            return;
        };
        let st = p.stats();
        let buffered_ns = p.buffered_ns();
        let state = p.state();
        let ratio_ppm = p.ratio_ppm();
        self.log_resyncs(&st);
        if let Ok(mut s) = self.status.try_lock() {
            set_state(&mut s.state, state_name(state));
            s.sync_error_us = self.last_error_ns.map(|e| e as f64 / 1e3);
            s.correction_ppm = ratio_ppm;
            s.buffer_ms = buffered_ns as f64 / 1e6;
            s.late = st.late;
            s.concealed_frames = st.concealed_frames;
            s.resyncs = st.resyncs;
            s.underruns = self.underruns;
            s.lost_output_frames = self.lost_frames;
        }
    }

    /// Says in the log when the output had to jump to stay on time (at most once per
    /// publication, never from the fill itself).
    fn log_resyncs(&mut self, st: &PlayoutStats) {
        if st.resyncs < self.logged_resyncs {
            // A new playout: its count starts again.
            self.logged_resyncs = 0;
        }
        if st.resyncs == self.logged_resyncs {
            return;
        }
        let new = st.resyncs - self.logged_resyncs;
        self.logged_resyncs = st.resyncs;
        let err_ms = st.last_resync_error_ns as f64 / 1e6;
        let what = if err_ms < 0.0 {
            "late: audio skipped"
        } else {
            "early: silence inserted"
        };
        warn!(
            "output {:.2} ms {what} to land on time again ({new} resync(s), {} in all; \
             the tolerance is {:.1} ms; a device or sound server that stalls causes this)",
            err_ms.abs(),
            st.resyncs,
            self.cfg.tolerance_ns as f64 / 1e6,
        );
    }

    /// One device cycle: wait for room, measure, fill, write.
    fn cycle(&mut self) -> Result<(), OutputError> {
        let (Some(o), Some(p)) = (self.output.as_mut(), self.playout.as_mut()) else {
            return Ok(());
        };
        if !o.wait(100)? {
            return Ok(());
        }
        let channels = p.config().channels as usize;
        let ratio = 1.0 + p.ratio_ppm() * 1e-6;
        if !self
            .unwritten
            .write(o.as_mut(), &self.buf, channels, ratio)?
        {
            // Still full: the rest of the last fill goes first, next time.
            return Ok(());
        }
        let t = o.timing()?;
        self.device_delay
            .set_ns(frames_to_ns(t.delay_frames, p.config().rate));
        if t.settled && !self.device_settled {
            // Until the device was seen consuming, its timing was a guess (PipeWire starts
            // 5-13 ms after the first write): land the next frame again on the real timing.
            self.device_settled = true;
            p.reanchor();
        }
        let frames = t.avail_frames.min(self.buf.len() / channels.max(1));
        if frames == 0 {
            return Ok(());
        }
        let s = self.settings.load();
        if s != self.applied {
            if s.trim_us != self.applied.trim_us {
                // Lands on the new due time at the next fill: one resync, not a slew.
                p.set_sink_latency_ns(pc_sink_latency(&s));
            }
            self.mixer.set(&s);
            self.applied = s;
        }
        let out = &mut self.buf[..frames * channels];
        let report = p.fill(t.next_frame_local, out);
        self.mixer.process(out, channels);
        if let Some(perm) = &self.reorder {
            channels::reorder(out, channels, perm);
        }
        if report.error_ns.is_some() {
            self.last_error_ns = report.error_ns;
        }
        let meta = WriteMeta {
            stream_position: report.first_position,
            audio_start: report.audio_start,
        };
        let taken = o.write(out, &meta)?;
        let ratio = 1.0 + report.ratio_ppm * 1e-6;
        self.unwritten.after_write(0, frames, taken, &meta, ratio);
        Ok(())
    }

    /// Runs until `stop` is set; returns an error only when the device can never be used.
    pub fn run(mut self, stop: Arc<AtomicBool>) -> Result<(), String> {
        match crate::rt::make_realtime(crate::rt::OUTPUT_PRIORITY) {
            Ok(()) => info!(
                "output thread: realtime priority {}",
                crate::rt::OUTPUT_PRIORITY
            ),
            Err(e) => info!("output thread: normal priority ({e})"),
        }
        let mut next_publish = LocalNs::from_ns(0);
        while !stop.load(Ordering::Relaxed) {
            self.drain_feed();
            let now = clock_io::monotonic_ns();
            if now >= next_publish {
                self.publish();
                next_publish = now + 100_000_000;
            }
            if self.lost_since.is_some_and(|t| now - t > IDLE_RELEASE_NS) && self.output.is_some() {
                info!(
                    "no stream for {} s: releasing the device",
                    IDLE_RELEASE_NS / 1_000_000_000
                );
                self.close();
                self.stream = None;
                self.lost_since = None;
            }
            if self.output.is_none() {
                if self.stream.is_some() && now >= self.retry_at {
                    self.reopen();
                }
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            if let Err(e) = self.cycle() {
                let cured = e.is_recoverable()
                    && self.output.as_mut().is_some_and(|o| o.recover(&e).is_ok());
                if cured {
                    self.underruns += 1;
                    self.discard_unwritten();
                    // The device lost its place: land the next frame exactly again instead
                    // of slewing the jump away.
                    if let Some(p) = self.playout.as_mut() {
                        p.reanchor();
                    }
                } else {
                    self.on_device_error(e);
                }
            } else if self.backoff.failures() > 0 && self.playout.is_some() {
                info!("output recovered");
                self.backoff.reset();
            }
        }
        self.close();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{DacTiming, OutputInfo};

    /// A device that takes at most `room` frames per write and records what it took.
    struct Narrow {
        room: usize,
        took: Vec<f32>,
        metas: Vec<WriteMeta>,
    }

    impl Output for Narrow {
        fn open(&mut self, _: u32, _: u8) -> Result<OutputInfo, OutputError> {
            Err(OutputError::NotOpen)
        }
        fn wait(&mut self, _: i32) -> Result<bool, OutputError> {
            Ok(true)
        }
        fn timing(&mut self) -> Result<DacTiming, OutputError> {
            Err(OutputError::NotOpen)
        }
        fn write(&mut self, samples: &[f32], meta: &WriteMeta) -> Result<usize, OutputError> {
            let n = (samples.len() / 2).min(self.room);
            self.took.extend_from_slice(&samples[..n * 2]);
            self.metas.push(*meta);
            Ok(n)
        }
        fn recover(&mut self, _: &OutputError) -> Result<(), OutputError> {
            Ok(())
        }
        fn close(&mut self) {}
    }

    #[test]
    fn frames_the_device_did_not_take_are_written_later_in_order() {
        let buf: Vec<f32> = (0..2 * 250).map(|i| i as f32).collect();
        let mut dev = Narrow {
            room: 100,
            took: Vec::new(),
            metas: Vec::new(),
        };
        let mut rest = Unwritten::default();
        // 50 frames of silence, then audio from stream position 1000 at ratio 1.001.
        let meta = WriteMeta {
            stream_position: None,
            audio_start: Some((50, 1000.0)),
        };
        let taken = dev.write(&buf, &meta).unwrap();
        rest.after_write(0, 250, taken, &meta, 1.001);
        assert_eq!(rest.frames(), 150);
        assert!(!rest.write(&mut dev, &buf, 2, 1.001).unwrap());
        assert!(rest.write(&mut dev, &buf, 2, 1.001).unwrap());
        assert!(
            rest.write(&mut dev, &buf, 2, 1.001).unwrap(),
            "nothing left"
        );
        assert_eq!(dev.took, buf, "every frame, once, in order");
        let p = 1000.0 + 50.0 * 1.001;
        assert_eq!(
            dev.metas[1],
            WriteMeta {
                stream_position: Some(p),
                audio_start: Some((0, p)),
            }
        );
        assert_eq!(dev.metas[2].stream_position, Some(p + 100.0 * 1.001));
        assert_eq!(dev.metas.len(), 3);
    }

    #[test]
    fn a_device_that_takes_nothing_keeps_everything_and_drops_are_counted() {
        let buf = vec![0.5f32; 2 * 64];
        let mut dev = Narrow {
            room: 0,
            took: Vec::new(),
            metas: Vec::new(),
        };
        let mut rest = Unwritten::default();
        rest.after_write(0, 64, 0, &WriteMeta::default(), 1.0);
        assert!(!rest.write(&mut dev, &buf, 2, 1.0).unwrap());
        // A silence that ends before the device takes anything stays silence.
        let meta = WriteMeta {
            stream_position: None,
            audio_start: Some((10, 5.0)),
        };
        rest.after_write(0, 64, 4, &meta, 1.0);
        assert_eq!(rest.meta.audio_start, Some((6, 5.0)));
        assert_eq!(rest.discard(), 60);
        assert_eq!(rest.frames(), 0);
    }
}
