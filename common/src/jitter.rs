//! The receiver's jitter buffer: audio packets put back in sequence order, in fixed memory.
//!
//! Packets are kept in a ring of `capacity` slots indexed by *extended* sequence number (the
//! 16-bit RTP sequence number unwrapped to an `i64` around the newest one seen). Each slot is
//! preallocated for `max_frames_per_packet * channels` samples, decoded to `f32` on arrival, so
//! nothing allocates after [`JitterBuffer::new`] and memory is bounded whatever arrives.
//!
//! The window of sequence numbers the buffer accepts is `[head, head + capacity)`, where `head`
//! is the next packet the reader (the playout) will take. Outside it:
//! - below `head`: the packet's turn has passed: counted as *late* and dropped;
//! - at or beyond `head + capacity`: counted as *out of window* and dropped, so a flood of
//!   packets from the far future can never evict the near-future packets the playout needs;
//! - a packet whose play time is further than `max_span_ns` from the newest buffered packet's is
//!   *implausible* and dropped (absurd stamps, hours ahead or behind).
//!
//! When the buffer is empty (the stream stopped, or an outage longer than the window), the next
//! packet far ahead becomes the new base ("rebase") so a stream that resumes with a big jump in
//! sequence numbers is picked up again. Before the reader has taken anything, a packet that
//! arrives out of order ahead of the first one lowers `head` to it, so reordering at the very
//! start is not mistaken for lateness.
//!
//! The buffer knows nothing about time: whether a packet is still worth playing given its play
//! time and the clock is the playout's question (`crate::playout`).

use crate::format::SampleFormat;
use crate::sample::wire_to_f32;
use crate::time::TimelineNs;

/// After this many consecutive packets far *behind* the window while the buffer is empty, the
/// buffer rebases to them (a stream whose sequence numbers went backwards for good).
const REBASE_BEHIND_AFTER: u32 = 8;

/// Sizes and limits of a [`JitterBuffer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JitterConfig {
    /// Slots in the ring: the most packets held at once, and the width of the sequence window.
    pub capacity_packets: usize,
    /// Largest packet accepted, in frames; larger ones are counted as malformed.
    pub max_frames_per_packet: usize,
    /// Interleaved channels of the stream.
    pub channels: u8,
    /// Largest distance between a packet's play time and the newest buffered packet's play
    /// time; packets further away are implausible.
    pub max_span_ns: i64,
}

/// One audio packet as the buffer takes it (the fields of `wire::rtp::AudioPacket` it needs).
#[derive(Clone, Copy, Debug)]
pub struct PacketIn<'a> {
    /// RTP sequence number.
    pub seq: u16,
    /// RTP timestamp: stream frame index of the first frame.
    pub timestamp: u32,
    /// Timeline instant the first frame must leave the DAC.
    pub play_time: TimelineNs,
    /// RTP marker: first packet of a run.
    pub marker: bool,
    /// Sample format of the payload.
    pub format: SampleFormat,
    /// Interleaved big-endian samples.
    pub payload: &'a [u8],
}

/// What [`JitterBuffer::push`] did with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// Stored in its slot.
    Stored,
    /// Stored after the buffer, being empty, moved its window to this packet.
    Rebased,
    /// Same sequence number as a buffered packet: dropped.
    Duplicate,
    /// Its turn has passed (sequence before the reader's head): dropped.
    Late,
    /// Too far ahead of the reader's head: dropped.
    OutOfWindow,
    /// Play time absurdly far from the buffered packets': dropped.
    Implausible,
    /// Empty payload, partial frames, or more frames than a slot holds: dropped.
    Malformed,
}

/// Where a packet sits in the stream: what the reader needs to schedule it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketInfo {
    /// Extended sequence number.
    pub seq: i64,
    /// Extended RTP timestamp (stream frame index of the first frame).
    pub ts: i64,
    /// Timeline instant the first frame must leave the DAC.
    pub play_time: TimelineNs,
    /// Frames in the packet.
    pub frames: usize,
    /// RTP marker (first packet of a run).
    pub marker: bool,
}

/// Counters of everything the buffer saw (monotonic since construction or [`JitterBuffer::reset`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets stored (including rebases).
    pub stored: u64,
    /// Duplicates dropped.
    pub duplicate: u64,
    /// Late packets dropped.
    pub late: u64,
    /// Packets too far ahead dropped.
    pub out_of_window: u64,
    /// Packets with absurd play times dropped.
    pub implausible: u64,
    /// Malformed packets dropped.
    pub malformed: u64,
    /// Times the window moved to a packet far from the old one.
    pub rebases: u64,
    /// Sequence numbers the reader passed without their packet (lost for good).
    pub skipped: u64,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    present: bool,
    info: PacketInfo,
}

const EMPTY_SLOT: Slot = Slot {
    present: false,
    info: PacketInfo {
        seq: 0,
        ts: 0,
        play_time: TimelineNs::from_ns(0),
        frames: 0,
        marker: false,
    },
};

/// Fixed-capacity reordering buffer of decoded audio packets. See the module documentation.
#[derive(Clone, Debug)]
pub struct JitterBuffer {
    cfg: JitterConfig,
    stride: usize,
    slots: Vec<Slot>,
    samples: Vec<f32>,
    /// Next sequence number the reader takes; `None` before the first packet.
    head: Option<i64>,
    /// Extended seq, extended ts and play time of the highest sequence number seen.
    newest: Option<(i64, i64, TimelineNs)>,
    /// Whether the reader took or skipped anything since the last (re)base.
    reading_started: bool,
    present: usize,
    /// Frames in the stored packets.
    frames_held: usize,
    far_behind_run: u32,
    stats: JitterStats,
}

impl JitterBuffer {
    /// Allocates the ring (all memory the buffer will ever use).
    ///
    /// Sizes of 0 are raised to 1 (never a panic, whatever a status message announced).
    pub fn new(cfg: JitterConfig) -> Self {
        let mut cfg = cfg;
        cfg.capacity_packets = cfg.capacity_packets.max(1);
        cfg.max_frames_per_packet = cfg.max_frames_per_packet.max(1);
        cfg.channels = cfg.channels.max(1);
        let stride = cfg.max_frames_per_packet * cfg.channels as usize;
        JitterBuffer {
            cfg,
            stride,
            slots: vec![EMPTY_SLOT; cfg.capacity_packets],
            samples: vec![0.0; stride * cfg.capacity_packets],
            head: None,
            newest: None,
            reading_started: false,
            present: 0,
            frames_held: 0,
            far_behind_run: 0,
            stats: JitterStats::default(),
        }
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &JitterConfig {
        &self.cfg
    }

    /// Forgets every packet and the window (counters are kept).
    pub fn clear(&mut self) {
        for s in &mut self.slots {
            s.present = false;
        }
        self.head = None;
        self.newest = None;
        self.reading_started = false;
        self.present = 0;
        self.frames_held = 0;
        self.far_behind_run = 0;
    }

    /// Forgets every packet, the window and the counters.
    pub fn reset(&mut self) {
        self.clear();
        self.stats = JitterStats::default();
    }

    /// Counters.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Packets held.
    pub fn len(&self) -> usize {
        self.present
    }

    /// Frames held in all stored packets (including any not yet due).
    pub fn frames_held(&self) -> usize {
        self.frames_held
    }

    /// Whether no packet is held.
    pub fn is_empty(&self) -> bool {
        self.present == 0
    }

    /// Unwraps a 16-bit sequence number to the extended one nearest the newest seen.
    pub fn extend_seq(&self, seq: u16) -> i64 {
        match self.newest {
            Some((n, _, _)) => n + seq.wrapping_sub(n as u16) as i16 as i64,
            None => seq as i64,
        }
    }

    /// Unwraps a 32-bit RTP timestamp to the extended one nearest the newest packet's.
    pub fn extend_ts(&self, ts: u32) -> i64 {
        match self.newest {
            Some((_, t, _)) => t + ts.wrapping_sub(t as u32) as i32 as i64,
            None => ts as i64,
        }
    }

    fn slot_index(&self, seq: i64) -> usize {
        seq.rem_euclid(self.slots.len() as i64) as usize
    }

    /// Offers a packet; decodes and stores it unless it is malformed, duplicate, late, out of
    /// the window or implausible (each counted). Never allocates, never evicts a stored packet.
    pub fn push(&mut self, p: &PacketIn<'_>) -> PushOutcome {
        let ch = self.cfg.channels as usize;
        let frame_bytes = p.format.bytes() * ch;
        if p.payload.is_empty()
            || p.payload.len() % frame_bytes != 0
            || p.payload.len() / frame_bytes > self.cfg.max_frames_per_packet
        {
            self.stats.malformed += 1;
            return PushOutcome::Malformed;
        }
        let cap = self.slots.len() as i64;
        let seq = self.extend_seq(p.seq);
        let mut outcome = PushOutcome::Stored;
        if let Some(head) = self.head {
            let newest = self.newest.map_or(seq, |n| n.0);
            if seq < head {
                if !self.reading_started && newest - seq < cap {
                    // Reordered at the very start: the reader has not begun, widen backwards.
                    self.head = Some(seq);
                } else if self.present == 0 && head - seq > cap {
                    self.far_behind_run += 1;
                    if self.far_behind_run < REBASE_BEHIND_AFTER {
                        self.stats.late += 1;
                        return PushOutcome::Late;
                    }
                    self.rebase(seq);
                    outcome = PushOutcome::Rebased;
                } else {
                    self.stats.late += 1;
                    return PushOutcome::Late;
                }
            } else if seq >= head + cap {
                if self.present == 0 {
                    self.rebase(seq);
                    outcome = PushOutcome::Rebased;
                } else {
                    self.stats.out_of_window += 1;
                    return PushOutcome::OutOfWindow;
                }
            }
            if outcome == PushOutcome::Stored && self.present > 0 {
                if let Some((_, _, newest_play)) = self.newest {
                    if (p.play_time.ns() as i128 - newest_play.ns() as i128).abs()
                        > self.cfg.max_span_ns as i128
                    {
                        self.stats.implausible += 1;
                        return PushOutcome::Implausible;
                    }
                }
            }
        } else {
            self.head = Some(seq);
        }
        self.far_behind_run = 0;
        let idx = self.slot_index(seq);
        if self.slots[idx].present {
            // Inside the window a slot can only hold this very sequence number.
            self.stats.duplicate += 1;
            return PushOutcome::Duplicate;
        }
        let ts = self.extend_ts(p.timestamp);
        let n = wire_to_f32(
            p.format,
            p.payload,
            &mut self.samples[idx * self.stride..(idx + 1) * self.stride],
        );
        self.slots[idx] = Slot {
            present: true,
            info: PacketInfo {
                seq,
                ts,
                play_time: p.play_time,
                frames: n / ch,
                marker: p.marker,
            },
        };
        self.present += 1;
        self.frames_held += n / ch;
        if self.newest.is_none_or(|(s, _, _)| seq > s) {
            self.newest = Some((seq, ts, p.play_time));
        }
        self.stats.stored += 1;
        outcome
    }

    fn rebase(&mut self, seq: i64) {
        for s in &mut self.slots {
            s.present = false;
        }
        self.present = 0;
        self.frames_held = 0;
        self.head = Some(seq);
        self.newest = None;
        self.reading_started = false;
        self.far_behind_run = 0;
        self.stats.rebases += 1;
    }

    /// The next sequence number the reader takes (`None` before any packet).
    pub fn head(&self) -> Option<i64> {
        self.head
    }

    /// The highest extended sequence number stored since the last (re)base.
    pub fn newest_seq(&self) -> Option<i64> {
        self.newest.map(|n| n.0)
    }

    /// The packet at the head, if it has arrived.
    pub fn peek(&self) -> Option<PacketInfo> {
        let head = self.head?;
        let s = &self.slots[self.slot_index(head)];
        (s.present && s.info.seq == head).then_some(s.info)
    }

    /// The first packet present at or after the head.
    pub fn first_present(&self) -> Option<PacketInfo> {
        let head = self.head?;
        if self.present == 0 {
            return None;
        }
        let newest = self.newest.map_or(head, |n| n.0);
        (head..=newest).find_map(|seq| {
            let s = &self.slots[self.slot_index(seq)];
            (s.present && s.info.seq == seq).then_some(s.info)
        })
    }

    /// Interleaved samples of the stored packet `seq` (empty if it is not stored).
    pub fn samples(&self, seq: i64) -> &[f32] {
        let idx = self.slot_index(seq);
        let s = &self.slots[idx];
        if s.present && s.info.seq == seq {
            let start = idx * self.stride;
            &self.samples[start..start + s.info.frames * self.cfg.channels as usize]
        } else {
            &[]
        }
    }

    /// Releases the head slot (played, or given up if missing) and moves the head on by one.
    pub fn advance(&mut self) {
        let Some(head) = self.head else { return };
        let idx = self.slot_index(head);
        if self.slots[idx].present && self.slots[idx].info.seq == head {
            self.slots[idx].present = false;
            self.present -= 1;
            self.frames_held -= self.slots[idx].info.frames;
        } else {
            self.stats.skipped += 1;
        }
        self.head = Some(head + 1);
        self.reading_started = true;
    }

    /// Advances the head up to `seq` (exclusive), releasing or giving up everything before it.
    pub fn skip_to(&mut self, seq: i64) {
        while let Some(head) = self.head {
            if head >= seq {
                break;
            }
            if self.present == 0 {
                // Nothing left to release: jump straight there.
                self.stats.skipped += (seq - head) as u64;
                self.head = Some(seq);
                self.reading_started = true;
                break;
            }
            self.advance();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CH: u8 = 2;

    fn cfg(cap: usize) -> JitterConfig {
        JitterConfig {
            capacity_packets: cap,
            max_frames_per_packet: 4,
            channels: CH,
            max_span_ns: 10_000_000_000,
        }
    }

    /// A 4-frame L16 stereo packet whose samples all carry `seq`.
    fn payload(seq: u16) -> [u8; 16] {
        let v = (seq as i16).to_be_bytes();
        let mut p = [0u8; 16];
        for c in p.chunks_exact_mut(2) {
            c.copy_from_slice(&v);
        }
        p
    }

    fn push(b: &mut JitterBuffer, seq: u16, play: i64) -> PushOutcome {
        let pl = payload(seq);
        b.push(&PacketIn {
            seq,
            timestamp: (seq as u32).wrapping_mul(4),
            play_time: TimelineNs::from_ns(play),
            marker: false,
            format: SampleFormat::L16,
            payload: &pl,
        })
    }

    fn read_all(b: &mut JitterBuffer) -> Vec<i64> {
        let mut out = vec![];
        while let Some(p) = b.first_present() {
            b.skip_to(p.seq);
            assert_eq!(b.peek(), Some(p));
            assert_eq!(b.samples(p.seq).len(), 8);
            out.push(p.seq);
            b.advance();
        }
        out
    }

    #[test]
    fn reorders_and_reports_gaps() {
        let mut b = JitterBuffer::new(cfg(16));
        for s in [10u16, 12, 11, 15, 13] {
            assert_eq!(push(&mut b, s, s as i64 * 1000), PushOutcome::Stored);
        }
        assert_eq!(b.frames_held(), 5 * 4);
        assert_eq!(read_all(&mut b), vec![10, 11, 12, 13, 15]);
        assert_eq!(b.frames_held(), 0);
        assert_eq!(b.stats().skipped, 1);
        assert!(b.is_empty());
    }

    #[test]
    fn early_reorder_before_reading_lowers_the_head() {
        let mut b = JitterBuffer::new(cfg(16));
        push(&mut b, 5, 0);
        assert_eq!(push(&mut b, 4, 0), PushOutcome::Stored);
        assert_eq!(b.head(), Some(4));
        b.advance();
        // Once reading started, older packets are late.
        assert_eq!(push(&mut b, 3, 0), PushOutcome::Late);
        assert_eq!(push(&mut b, 4, 0), PushOutcome::Late);
        assert_eq!(b.stats().late, 2);
    }

    #[test]
    fn duplicates_are_counted_and_keep_the_first_copy() {
        let mut b = JitterBuffer::new(cfg(8));
        push(&mut b, 1, 0);
        assert_eq!(push(&mut b, 1, 0), PushOutcome::Duplicate);
        assert_eq!(b.stats().duplicate, 1);
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn sequence_wraparound_is_continuous() {
        let mut b = JitterBuffer::new(cfg(8));
        for s in [65_534u16, 65_535, 0, 1] {
            assert_eq!(push(&mut b, s, 0), PushOutcome::Stored);
        }
        let got = read_all(&mut b);
        assert_eq!(got, vec![65_534, 65_535, 65_536, 65_537]);
        // Timestamps unwrap too: 65_536 * 4 wraps the u32 only far later, but check continuity.
        let mut b = JitterBuffer::new(cfg(8));
        let pl = payload(0);
        for (i, ts) in [u32::MAX - 3, 0u32].into_iter().enumerate() {
            b.push(&PacketIn {
                seq: i as u16,
                timestamp: ts,
                play_time: TimelineNs::from_ns(0),
                marker: false,
                format: SampleFormat::L16,
                payload: &pl,
            });
        }
        b.advance();
        assert_eq!(b.peek().map(|p| p.ts), Some(u32::MAX as i64 + 1));
    }

    #[test]
    fn flood_from_the_future_neither_grows_nor_evicts() {
        let mut b = JitterBuffer::new(cfg(8));
        for s in 100u16..104 {
            push(&mut b, s, 0);
        }
        // Far-future sequence numbers: out of window.
        for s in 0..1000u16 {
            let seq = 200u16.wrapping_add(s.wrapping_mul(37));
            if !(100..108).contains(&seq) {
                let o = push(&mut b, seq, 0);
                assert!(
                    matches!(o, PushOutcome::OutOfWindow | PushOutcome::Late),
                    "{seq}: {o:?}"
                );
            }
        }
        // In-window sequence numbers with absurd play times: implausible.
        for s in 104u16..108 {
            assert_eq!(
                push(&mut b, s, 3 * 3_600_000_000_000),
                PushOutcome::Implausible
            );
        }
        assert_eq!(b.len(), 4);
        assert_eq!(read_all(&mut b), vec![100, 101, 102, 103]);
        let st = b.stats();
        assert_eq!(st.implausible, 4);
        assert!(st.out_of_window > 500, "{st:?}");
        // The real continuation still gets in.
        assert_eq!(push(&mut b, 104, 0), PushOutcome::Stored);
    }

    #[test]
    fn empty_buffer_rebases_to_a_far_jump() {
        let mut b = JitterBuffer::new(cfg(8));
        push(&mut b, 1, 0);
        read_all(&mut b);
        assert_eq!(push(&mut b, 5000, 0), PushOutcome::Rebased);
        assert_eq!(push(&mut b, 5001, 0), PushOutcome::Stored);
        assert_eq!(read_all(&mut b), vec![5000, 5001]);
        // Far behind: late at first, rebased after a sustained run.
        let mut outcomes = vec![];
        for s in 0..REBASE_BEHIND_AFTER as u16 {
            outcomes.push(push(&mut b, 1000 + s, 0));
        }
        assert!(outcomes[..outcomes.len() - 1]
            .iter()
            .all(|o| *o == PushOutcome::Late));
        assert_eq!(*outcomes.last().unwrap(), PushOutcome::Rebased);
    }

    #[test]
    fn malformed_payloads_are_rejected() {
        let mut b = JitterBuffer::new(cfg(8));
        let mk = |payload: &'static [u8]| PacketIn {
            seq: 1,
            timestamp: 0,
            play_time: TimelineNs::from_ns(0),
            marker: false,
            format: SampleFormat::L16,
            payload,
        };
        assert_eq!(b.push(&mk(&[])), PushOutcome::Malformed);
        assert_eq!(b.push(&mk(&[0; 6])), PushOutcome::Malformed);
        assert_eq!(b.push(&mk(&[0; 20])), PushOutcome::Malformed);
        assert_eq!(b.stats().malformed, 3);
        assert!(b.is_empty());
    }

    proptest::proptest! {
        /// Whatever arrives and however the reader moves: no panic, never more than the
        /// capacity held, the frame count consistent, and what is read comes out in order.
        #[test]
        fn arbitrary_traffic_keeps_the_invariants(
            ops in proptest::collection::vec(
                (0u8..6, proptest::prelude::any::<u16>(), -3i64..3, 0usize..24),
                1..400,
            )
        ) {
            let mut b = JitterBuffer::new(cfg(16));
            let bytes = [0u8; 24];
            let mut last_read: Option<i64> = None;
            for (op, seq, play, len) in ops {
                match op {
                    0..=2 => {
                        // Mostly near the head, sometimes anywhere.
                        let seq = if op == 2 {
                            seq
                        } else {
                            (b.head().unwrap_or(0) + (seq % 40) as i64 - 8) as u16
                        };
                        b.push(&PacketIn {
                            seq,
                            timestamp: seq as u32 * 4,
                            play_time: TimelineNs::from_ns(play * 20_000_000_000),
                            marker: false,
                            format: SampleFormat::L16,
                            payload: &bytes[..len],
                        });
                    }
                    3 => {
                        if let Some(p) = b.peek() {
                            if let Some(l) = last_read {
                                proptest::prop_assert!(p.seq > l);
                            }
                            last_read = Some(p.seq);
                        }
                        b.advance();
                    }
                    4 => {
                        if let Some(p) = b.first_present() {
                            b.skip_to(p.seq);
                            proptest::prop_assert_eq!(b.peek(), Some(p));
                        }
                    }
                    _ => {
                        if let (Some(p), Some(head)) = (b.first_present(), b.head()) {
                            proptest::prop_assert!(p.seq >= head);
                        }
                    }
                }
                proptest::prop_assert!(b.len() <= 16);
                let held: usize = (0..16)
                    .filter(|i| b.slots[*i].present)
                    .map(|i| b.slots[i].info.frames)
                    .sum();
                proptest::prop_assert_eq!(held, b.frames_held());
                proptest::prop_assert_eq!(
                    b.slots.iter().filter(|s| s.present).count(),
                    b.len()
                );
            }
        }
    }
}
