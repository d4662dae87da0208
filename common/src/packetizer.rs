//! Frames in, audio packets out: the sender's side of the timing model.
//!
//! Audio arrives as interleaved `f32` with the capture time of its first frame on the timeline.
//! Frames are grouped into *runs*: stretches of contiguous audio whose frame `n` has the capture
//! time `t0 + n / rate` exactly, `t0` being the capture time of the run's first frame. A packet
//! is stamped with the play time of its first frame, `t0 + n / rate + latency`, computed from
//! the frame count in integer nanoseconds so it never drifts. A new run (marker bit set on its
//! first packet) starts
//! - at the first frame, and after silence: after `silence_timeout` of all-zero frames no more
//!   packets are sent; the next non-zero frame starts a run anchored at its own capture time,
//!   never at the old run's extrapolated timeline;
//! - when a pushed capture time departs from the run's prediction by more than the resync
//!   threshold (an input stall, or frames arriving faster than time): the new run is anchored at
//!   the pushed capture time.
//!
//! The RTP timestamp counts frames sent (wrapping at 2^32), the sequence number counts packets.
//! Within a run every packet is full; the last packet of a run may be short. Buffers are sized
//! once at construction; pushing never allocates.

use crate::format::StreamFormat;
use crate::sample::f32_to_wire;
use crate::time::{frames_to_ns, TimelineNs, NS_PER_SEC};
use crate::wire::rtp::{AudioPacket, DEFAULT_MAX_UDP_PAYLOAD, HEADER_LEN};

/// Largest UDP payload over IPv4; no packet may exceed it.
pub const MAX_DATAGRAM: usize = 65_507;

/// A configuration that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Rate or channels is zero.
    #[error("stream format has zero rate or channels")]
    EmptyFormat,
    /// Zero frames per packet.
    #[error("frames per packet is zero")]
    ZeroFramesPerPacket,
    /// Packets would not fit a UDP datagram.
    #[error("packet of {len} bytes exceeds the {max}-byte datagram limit")]
    PacketTooLarge {
        /// Bytes of a full packet.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The latency is negative or does not fit the status message (u32 microseconds).
    #[error("latency {0} ns out of range")]
    LatencyOutOfRange(i64),
    /// Another setting is out of range.
    #[error("invalid setting: {0}")]
    Invalid(&'static str),
}

/// How the packetizer cuts and stamps packets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PacketizerConfig {
    /// Rate, channels and wire sample format.
    pub format: StreamFormat,
    /// Added to each capture time to get the play time, ns.
    pub latency_ns: i64,
    /// Frames in a full packet.
    pub frames_per_packet: u16,
    /// Stream id written to every packet.
    pub ssrc: u32,
    /// After this much all-zero input, stop sending until sound resumes; `None` never stops.
    pub silence_timeout_ns: Option<i64>,
    /// Start a new run when a pushed capture time is this far from the run's prediction.
    pub resync_threshold_ns: i64,
    /// Sequence number of the first packet.
    pub first_seq: u16,
    /// RTP timestamp of the first frame.
    pub first_timestamp: u32,
}

impl PacketizerConfig {
    /// Default silence timeout: 1 s.
    pub const DEFAULT_SILENCE_TIMEOUT_NS: i64 = NS_PER_SEC;
    /// Default resync threshold: 20 ms.
    pub const DEFAULT_RESYNC_THRESHOLD_NS: i64 = 20_000_000;

    /// Defaults: the largest packets that fit a 1472-byte UDP payload, 1 s silence timeout,
    /// 20 ms resync threshold, sequence and timestamp starting at 0.
    pub fn new(format: StreamFormat, latency_ns: i64, ssrc: u32) -> Self {
        PacketizerConfig {
            format,
            latency_ns,
            frames_per_packet: Self::max_frames_for_payload(format, DEFAULT_MAX_UDP_PAYLOAD),
            ssrc,
            silence_timeout_ns: Some(Self::DEFAULT_SILENCE_TIMEOUT_NS),
            resync_threshold_ns: Self::DEFAULT_RESYNC_THRESHOLD_NS,
            first_seq: 0,
            first_timestamp: 0,
        }
    }

    /// The most frames whose packet (28-byte header included) fits `max_udp_payload` bytes;
    /// at least 1, at most `u16::MAX`.
    pub fn max_frames_for_payload(format: StreamFormat, max_udp_payload: usize) -> u16 {
        let frame = format.bytes_per_frame().max(1);
        let frames = max_udp_payload.saturating_sub(HEADER_LEN) / frame;
        frames.clamp(1, u16::MAX as usize) as u16
    }

    /// Frames in a packet lasting `duration_ns` (rounded to nearest; at least 1).
    pub fn frames_for_duration(format: StreamFormat, duration_ns: i64) -> u16 {
        let frames = (duration_ns.max(0) as i128 * format.rate as i128 + NS_PER_SEC as i128 / 2)
            / NS_PER_SEC as i128;
        frames.clamp(1, u16::MAX as i128) as u16
    }

    /// Bytes of a full packet.
    pub fn packet_len(&self) -> usize {
        HEADER_LEN + self.frames_per_packet as usize * self.format.bytes_per_frame()
    }

    /// Checks that the configuration can work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.format.rate == 0 || self.format.channels == 0 {
            return Err(ConfigError::EmptyFormat);
        }
        if self.frames_per_packet == 0 {
            return Err(ConfigError::ZeroFramesPerPacket);
        }
        if self.packet_len() > MAX_DATAGRAM {
            return Err(ConfigError::PacketTooLarge {
                len: self.packet_len(),
                max: MAX_DATAGRAM,
            });
        }
        if !(0..=u32::MAX as i64 * 1000).contains(&self.latency_ns) {
            return Err(ConfigError::LatencyOutOfRange(self.latency_ns));
        }
        if matches!(self.silence_timeout_ns, Some(t) if t < 0) {
            return Err(ConfigError::Invalid("negative silence timeout"));
        }
        if self.resync_threshold_ns <= 0 {
            return Err(ConfigError::Invalid("resync threshold must be positive"));
        }
        Ok(())
    }
}

/// One finished packet, lent to the caller of [`Packetizer::push`] for the time of the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketOut<'a> {
    /// Sequence number.
    pub seq: u16,
    /// RTP timestamp (frame index of the first frame).
    pub timestamp: u32,
    /// Play time of the first frame.
    pub play_time: TimelineNs,
    /// First packet of a run.
    pub marker: bool,
    /// Frames in the packet.
    pub frames: usize,
    /// The encoded packet (header and payload).
    pub bytes: &'a [u8],
}

/// Counters of what the packetizer did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketizerStats {
    /// Packets produced.
    pub packets: u64,
    /// Frames put into packets.
    pub frames: u64,
    /// Runs started (first frame, after silence, after a resync).
    pub runs_started: u64,
    /// Runs ended because the capture time departed from the prediction (stall or flood).
    pub resyncs: u64,
    /// Runs ended by silence.
    pub silence_stops: u64,
    /// Frames dropped while silent (not sent).
    pub silent_frames_skipped: u64,
    /// Samples ignored because a push did not hold whole frames.
    pub partial_frame_samples: u64,
    /// Pushed capture time minus the run's prediction at the last push within a run, ns. A
    /// value that keeps growing means the capture clock drifts against the timeline (it will
    /// end in a resync at the threshold).
    pub last_departure_ns: i64,
}

#[derive(Clone, Copy, Debug)]
struct Run {
    /// Capture time of the run's first frame.
    start: TimelineNs,
    /// Frames of the run so far (sent or buffered).
    frames: u64,
    /// Packets of the run started so far.
    packets: u64,
}

/// Cuts frames into stamped audio packets. See the module documentation for the rules.
#[derive(Debug)]
pub struct Packetizer {
    cfg: PacketizerConfig,
    bytes_per_frame: usize,
    silence_limit_frames: Option<u64>,
    /// Packet under construction: header space, then payload.
    buf: Vec<u8>,
    /// Frames in `buf`.
    fill: usize,
    pkt_play_time: TimelineNs,
    pkt_timestamp: u32,
    pkt_marker: bool,
    next_seq: u16,
    next_timestamp: u32,
    run: Option<Run>,
    silent_frames: u64,
    stats: PacketizerStats,
}

impl Packetizer {
    /// A packetizer for `cfg`; allocates its one packet buffer here.
    pub fn new(cfg: PacketizerConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let silence_limit_frames = cfg.silence_timeout_ns.map(|t| {
            let frames = t as i128 * cfg.format.rate as i128 / NS_PER_SEC as i128;
            (frames as u64).max(1)
        });
        Ok(Packetizer {
            cfg,
            bytes_per_frame: cfg.format.bytes_per_frame(),
            silence_limit_frames,
            buf: vec![0; cfg.packet_len()],
            fill: 0,
            pkt_play_time: TimelineNs::from_ns(0),
            pkt_timestamp: 0,
            pkt_marker: false,
            next_seq: cfg.first_seq,
            next_timestamp: cfg.first_timestamp,
            run: None,
            silent_frames: 0,
            stats: PacketizerStats::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PacketizerConfig {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> PacketizerStats {
        self.stats
    }

    /// True while a run is going on (audio is being sent).
    pub fn in_run(&self) -> bool {
        self.run.is_some()
    }

    /// Sequence number the next packet will get.
    pub fn next_seq(&self) -> u16 {
        self.next_seq
    }

    /// Frames waiting in the partially filled packet.
    pub fn buffered_frames(&self) -> usize {
        self.fill
    }

    /// Feeds interleaved frames whose first frame was captured at `capture_time`; calls `emit`
    /// for every packet completed. A trailing partial frame is ignored (and counted).
    pub fn push(
        &mut self,
        capture_time: TimelineNs,
        samples: &[f32],
        mut emit: impl FnMut(PacketOut<'_>),
    ) {
        let channels = self.cfg.format.channels as usize;
        self.stats.partial_frame_samples += (samples.len() % channels) as u64;
        if let Some(run) = self.run {
            let predicted = run
                .start
                .saturating_add(frames_to_ns(run.frames as i64, self.cfg.format.rate));
            let departure = capture_time.ns().saturating_sub(predicted.ns());
            self.stats.last_departure_ns = departure;
            if departure.unsigned_abs() > self.cfg.resync_threshold_ns as u64 {
                self.stats.resyncs += 1;
                self.end_run(&mut emit);
            }
        }
        for (i, frame) in samples.chunks_exact(channels).enumerate() {
            let silent = frame.iter().all(|s| *s == 0.0);
            self.silent_frames = if silent { self.silent_frames + 1 } else { 0 };
            if self.run.is_none() {
                if silent && self.silence_limit_frames.is_some() {
                    self.stats.silent_frames_skipped += 1;
                    continue;
                }
                let start =
                    capture_time.saturating_add(frames_to_ns(i as i64, self.cfg.format.rate));
                self.run = Some(Run {
                    start,
                    frames: 0,
                    packets: 0,
                });
                self.stats.runs_started += 1;
            }
            self.append(frame);
            if self.fill == self.cfg.frames_per_packet as usize {
                self.emit_packet(&mut emit);
            }
            if matches!(self.silence_limit_frames, Some(l) if self.silent_frames >= l) {
                self.stats.silence_stops += 1;
                self.end_run(&mut emit);
            }
        }
    }

    /// Changes the latency. The current run ends (its partial packet is sent through `emit`)
    /// so the next frames start a new run, marked, stamped with the new latency.
    pub fn set_latency_ns(
        &mut self,
        latency_ns: i64,
        emit: impl FnMut(PacketOut<'_>),
    ) -> Result<(), ConfigError> {
        let cfg = PacketizerConfig {
            latency_ns,
            ..self.cfg
        };
        cfg.validate()?;
        self.flush(emit);
        self.cfg = cfg;
        Ok(())
    }

    /// Sends the partially filled packet now (e.g. when the stream stops) and ends the run.
    pub fn flush(&mut self, mut emit: impl FnMut(PacketOut<'_>)) {
        self.end_run(&mut emit);
    }

    fn end_run(&mut self, emit: &mut impl FnMut(PacketOut<'_>)) {
        if self.fill > 0 {
            self.emit_packet(emit);
        }
        self.run = None;
    }

    fn append(&mut self, frame: &[f32]) {
        let Some(run) = self.run.as_mut() else {
            return;
        };
        if self.fill == 0 {
            self.pkt_play_time = run
                .start
                .saturating_add(frames_to_ns(run.frames as i64, self.cfg.format.rate))
                .saturating_add(self.cfg.latency_ns);
            self.pkt_timestamp = self.next_timestamp;
            self.pkt_marker = run.packets == 0;
            run.packets += 1;
        }
        let at = HEADER_LEN + self.fill * self.bytes_per_frame;
        f32_to_wire(
            self.cfg.format.sample,
            frame,
            &mut self.buf[at..at + self.bytes_per_frame],
        );
        self.fill += 1;
        run.frames += 1;
        self.next_timestamp = self.next_timestamp.wrapping_add(1);
    }

    fn emit_packet(&mut self, emit: &mut impl FnMut(PacketOut<'_>)) {
        let header = AudioPacket {
            marker: self.pkt_marker,
            format: self.cfg.format.sample,
            seq: self.next_seq,
            timestamp: self.pkt_timestamp,
            ssrc: self.cfg.ssrc,
            play_time: self.pkt_play_time,
            payload: &[],
        };
        // `buf` always has room for the header: it is sized from `packet_len()`.
        if header.encode_header(&mut self.buf).is_err() {
            return;
        }
        let len = HEADER_LEN + self.fill * self.bytes_per_frame;
        emit(PacketOut {
            seq: self.next_seq,
            timestamp: self.pkt_timestamp,
            play_time: self.pkt_play_time,
            marker: self.pkt_marker,
            frames: self.fill,
            bytes: &self.buf[..len],
        });
        self.stats.packets += 1;
        self.stats.frames += self.fill as u64;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.fill = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::SampleFormat;

    const MS: i64 = 1_000_000;
    const LATENCY: i64 = 150 * MS;

    #[derive(Debug, Clone, PartialEq)]
    struct Got {
        seq: u16,
        ts: u32,
        play: i64,
        marker: bool,
        frames: usize,
    }

    fn collect(p: &mut Packetizer, t: i64, samples: &[f32], out: &mut Vec<Got>) {
        p.push(TimelineNs::from_ns(t), samples, |pk| {
            // Every packet must decode to what the packetizer says it is.
            let d = AudioPacket::decode(pk.bytes).unwrap();
            assert_eq!(
                (d.seq, d.timestamp, d.play_time, d.marker),
                (pk.seq, pk.timestamp, pk.play_time, pk.marker)
            );
            assert_eq!(d.frames(2), pk.frames);
            out.push(Got {
                seq: pk.seq,
                ts: pk.timestamp,
                play: pk.play_time.ns(),
                marker: pk.marker,
                frames: pk.frames,
            })
        });
    }

    fn tone(frames: usize) -> Vec<f32> {
        (0..frames * 2)
            .map(|i| ((i % 50) as f32 - 25.0) / 100.0)
            .collect()
    }

    fn cfg() -> PacketizerConfig {
        PacketizerConfig::new(StreamFormat::DEFAULT, LATENCY, 7)
    }

    #[test]
    fn default_packets_fit_1472_bytes() {
        assert_eq!(cfg().frames_per_packet, 361); // (1472 - 28) / 4
        assert_eq!(cfg().packet_len(), 1472);
        let l24 = StreamFormat {
            sample: SampleFormat::L24,
            ..StreamFormat::DEFAULT
        };
        assert_eq!(PacketizerConfig::new(l24, 0, 0).frames_per_packet, 240);
        assert_eq!(
            PacketizerConfig::frames_for_duration(StreamFormat::DEFAULT, 2 * MS),
            96
        );
        assert_eq!(
            PacketizerConfig::frames_for_duration(StreamFormat::DEFAULT, 0),
            1
        );
        let mut bad = cfg();
        bad.frames_per_packet = 20_000;
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::PacketTooLarge { .. })
        ));
        bad = cfg();
        bad.latency_ns = -1;
        assert_eq!(
            Packetizer::new(bad).err(),
            Some(ConfigError::LatencyOutOfRange(-1))
        );
    }

    /// 20 000 packets (2.5 min) pushed in uneven chunks with jittery capture times: every
    /// stamp is exactly t0 + n * 361 / 48000 s + latency, to the nanosecond.
    #[test]
    fn stamps_are_exact_frame_counts_and_never_drift() {
        let mut p = Packetizer::new(cfg()).unwrap();
        let t0 = 1_000 * NS_PER_SEC + 123;
        let mut out = Vec::new();
        let audio = tone(1024);
        let mut frames = 0i64;
        let chunks = [1024usize, 7, 480, 361, 1];
        let mut i = 0;
        while out.len() < 20_000 {
            let n = chunks[i % chunks.len()];
            let jitter = if i == 0 {
                0
            } else {
                ((i * 7919) % 2001) as i64 * 1000 - MS
            }; // +-1 ms
            collect(
                &mut p,
                t0 + frames_to_ns(frames, 48_000) + jitter,
                &audio[..n * 2],
                &mut out,
            );
            frames += n as i64;
            i += 1;
        }
        for (n, g) in out.iter().enumerate() {
            let first = n as i64 * 361;
            assert_eq!(
                g.play,
                t0 + frames_to_ns(first, 48_000) + LATENCY,
                "packet {n}"
            );
            assert_eq!(g.ts, first as u32);
            assert_eq!(g.seq, n as u16);
            assert_eq!(g.frames, 361);
            assert_eq!(g.marker, n == 0);
        }
        assert_eq!(p.stats().runs_started, 1);
        assert_eq!(p.stats().resyncs, 0);
    }

    #[test]
    fn partial_packet_stays_buffered_until_full() {
        let mut p = Packetizer::new(cfg()).unwrap();
        let mut out = Vec::new();
        collect(&mut p, 0, &tone(360), &mut out);
        assert!(out.is_empty());
        assert_eq!(p.buffered_frames(), 360);
        collect(&mut p, frames_to_ns(360, 48_000), &tone(2), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(p.buffered_frames(), 1);
        p.flush(|pk| assert_eq!((pk.frames, pk.seq), (1, 1)));
        assert!(!p.in_run());
    }

    #[test]
    fn sequence_and_timestamp_wrap() {
        let mut c = cfg();
        c.first_seq = 65_535;
        c.first_timestamp = u32::MAX - 100;
        let mut p = Packetizer::new(c).unwrap();
        let mut out = Vec::new();
        collect(&mut p, 0, &tone(722), &mut out);
        assert_eq!(out[0].seq, 65_535);
        assert_eq!(out[1].seq, 0);
        assert_eq!(out[1].ts, (u32::MAX - 100).wrapping_add(361));
        assert_eq!(out[1].play, frames_to_ns(361, 48_000) + LATENCY);
    }

    /// A capture time 50 ms late (input stall) or 50 ms early (flood) starts a new run
    /// anchored at the pushed capture time; 10 ms of jitter does not.
    #[test]
    fn capture_time_departure_starts_a_new_run() {
        for step in [50 * MS, -50 * MS] {
            let mut p = Packetizer::new(cfg()).unwrap();
            let mut out = Vec::new();
            collect(&mut p, 0, &tone(361 * 3 + 100), &mut out);
            let predicted = frames_to_ns(361 * 3 + 100, 48_000);
            collect(&mut p, predicted + 10 * MS, &tone(200), &mut out);
            assert_eq!(p.stats().resyncs, 0);
            assert_eq!(p.stats().last_departure_ns, 10 * MS);
            let resume = predicted + frames_to_ns(200, 48_000) + step;
            collect(&mut p, resume, &tone(361), &mut out);
            assert_eq!(p.stats().resyncs, 1);
            // Measured against the run's own timeline (the 10 ms did not move it); 1 ns of
            // rounding between frames_to_ns(a) + frames_to_ns(b) and frames_to_ns(a + b).
            assert!((p.stats().last_departure_ns - step).abs() <= 1);
            assert_eq!(p.stats().runs_started, 2);
            // The old run's 300 buffered frames went out as a short packet; then the new run.
            assert_eq!(out[3].frames, 300);
            assert!(!out[3].marker);
            assert!(out[4].marker);
            assert_eq!(out[4].play, resume + LATENCY);
            assert_eq!(out[4].ts, 361 * 3 + 300);
        }
    }

    #[test]
    fn silence_stops_sending_and_resumes_at_the_new_capture_time() {
        let mut p = Packetizer::new(cfg()).unwrap();
        let mut out = Vec::new();
        collect(&mut p, 0, &tone(4800), &mut out); // 100 ms of sound
        let silence = vec![0.0f32; 2 * 48_000 * 3];
        collect(&mut p, frames_to_ns(4800, 48_000), &silence, &mut out);
        assert!(!p.in_run());
        assert_eq!(p.stats().silence_stops, 1);
        // Exactly the sound and 1 s of silence went out.
        let sent: usize = out.iter().map(|g| g.frames).sum();
        assert_eq!(sent, 4800 + 48_000);
        let before = out.len();
        // More silence: nothing.
        collect(&mut p, 10 * NS_PER_SEC, &silence[..9600], &mut out);
        assert_eq!(out.len(), before);
        // Sound resumes 37 frames into a buffer captured at 20 s: the new run is anchored there,
        // not at the old timeline's 3.1 s + n/rate.
        let mut buf = vec![0.0f32; 2 * 37];
        buf.extend(tone(400));
        let resume = 20 * NS_PER_SEC;
        collect(&mut p, resume, &buf, &mut out);
        assert_eq!(out.len(), before + 1);
        let g = &out[before];
        assert!(g.marker);
        assert_eq!(g.play, resume + frames_to_ns(37, 48_000) + LATENCY);
        assert_eq!(p.stats().runs_started, 2);
        assert_eq!(p.stats().resyncs, 0);
    }

    proptest::proptest! {
        /// How the input is cut into pushes (and jitter below the threshold) changes nothing:
        /// the packets are byte for byte the same.
        #[test]
        fn packets_do_not_depend_on_push_sizes(
            cuts in proptest::collection::vec(1usize..800, 1..40),
            jitter_us in proptest::collection::vec(-15_000i64..15_000, 40),
        ) {
            let total: usize = cuts.iter().sum();
            let audio = tone(total);
            let mut whole = Packetizer::new(cfg()).unwrap();
            let mut expected = Vec::new();
            whole.push(TimelineNs::from_ns(0), &audio, |pk| expected.push(pk.bytes.to_vec()));
            whole.flush(|pk| expected.push(pk.bytes.to_vec()));
            let mut cut = Packetizer::new(cfg()).unwrap();
            let mut got = Vec::new();
            let mut at = 0;
            for (i, n) in cuts.iter().enumerate() {
                let t = frames_to_ns(at as i64, 48_000) + if i == 0 { 0 } else { jitter_us[i] * 1000 };
                cut.push(TimelineNs::from_ns(t), &audio[at * 2..(at + n) * 2], |pk| got.push(pk.bytes.to_vec()));
                at += n;
            }
            cut.flush(|pk| got.push(pk.bytes.to_vec()));
            proptest::prop_assert_eq!(got, expected);
        }
    }

    /// Capture times at the ends of the i64 range (a broken clock) never overflow.
    #[test]
    fn extreme_capture_times_do_not_panic() {
        let mut p = Packetizer::new(cfg()).unwrap();
        let mut n = 0;
        for t in [i64::MAX, i64::MIN, i64::MAX - 1, 0] {
            p.push(TimelineNs::from_ns(t), &tone(500), |_| n += 1);
        }
        assert_eq!(p.stats().resyncs, 3);
        assert!(n >= 4);
    }

    #[test]
    fn silence_detection_can_be_disabled() {
        let mut c = cfg();
        c.silence_timeout_ns = None;
        let mut p = Packetizer::new(c).unwrap();
        let mut out = Vec::new();
        collect(&mut p, 0, &vec![0.0; 2 * 48_000 * 3], &mut out);
        assert_eq!(out.len(), 48_000 * 3 / 361);
        assert!(out[0].marker && !out[1].marker);
    }
}
