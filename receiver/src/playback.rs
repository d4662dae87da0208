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
use wavesync_common::clock::ClockEstimate;
use wavesync_common::playout::{Playout, PlayoutConfig, PlayoutState};
use wavesync_common::receiver::StreamInfo;
use wavesync_common::time::{frames_to_ns, LocalNs};

use crate::clock_io;
use crate::config::Config;
use crate::device_delay::DeviceDelay;
use crate::feed::Feed;
use crate::output::{self, Backoff, Output, OutputError, WriteMeta};
use crate::status::Shared;

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
    ) -> Self {
        Playback {
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
            retry_at: 0,
            underruns: 0,
            last_error_ns: None,
            device_delay,
            device_settled: false,
        }
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
        if let Some(o) = self.output.as_mut() {
            o.close();
        }
        let mut o = output::from_config(&self.cfg.output);
        let oi = o.open(f.rate, f.channels)?;
        self.period_frames = oi.period_frames.max(16);
        self.buf = vec![0.0; self.period_frames * 4 * f.channels as usize];
        self.output = Some(o);
        self.device_settled = false;
        let packet_ns =
            info.status.frames_per_packet.max(1) as i64 * 1_000_000_000 / f.rate.max(1) as i64;
        // Room for the sender's latency plus a second of slack, in packets.
        let capacity = ((info.status.latency_ns + 1_000_000_000) / packet_ns.max(1)) as usize + 64;
        let mut pc = PlayoutConfig::new(f.rate, f.channels);
        pc.sink_latency_ns = self.cfg.sink_latency_ns;
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
            + self.cfg.sink_latency_ns.max(0);
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
                    let same_format = self.stream.is_some_and(|s| s.format() == info.format());
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
        if let Ok(mut s) = self.status.try_lock() {
            set_state(&mut s.state, state_name(p.state()));
            s.sync_error_us = self.last_error_ns.map(|e| e as f64 / 1e3);
            s.correction_ppm = p.ratio_ppm();
            s.buffer_ms = buffered_ns as f64 / 1e6;
            s.late = st.late;
            s.concealed_frames = st.concealed_frames;
            s.resyncs = st.resyncs;
            s.underruns = self.underruns;
        }
    }

    /// One device cycle: wait for room, measure, fill, write.
    fn cycle(&mut self) -> Result<(), OutputError> {
        let (Some(o), Some(p)) = (self.output.as_mut(), self.playout.as_mut()) else {
            return Ok(());
        };
        if !o.wait(100)? {
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
        let channels = p.config().channels as usize;
        let frames = t.avail_frames.min(self.buf.len() / channels.max(1));
        if frames == 0 {
            return Ok(());
        }
        let out = &mut self.buf[..frames * channels];
        let report = p.fill(t.next_frame_local, out);
        if report.error_ns.is_some() {
            self.last_error_ns = report.error_ns;
        }
        o.write(
            out,
            &WriteMeta {
                stream_position: report.first_position,
                audio_start: report.audio_start,
            },
        )?;
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
        let mut next_publish = 0;
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
