//! The master's ring of recently sent audio packets, for resends after a NACK.
//!
//! Fixed memory, allocated once: `capacity` slots of `max_packet_len` bytes. A packet lives in
//! slot `seq % capacity`; the capacity is a power of two (which divides 65536), so consecutive
//! sequence numbers never collide across the 65535 -> 0 wrap and the ring always holds the last
//! `capacity` packets. Inserting copies the bytes; nothing allocates after construction.

use crate::format::StreamFormat;
use crate::time::{TimelineNs, NS_PER_SEC};

/// Largest ring: half the sequence space, so a lookup is never ambiguous.
pub const MAX_CAPACITY: usize = 32_768;

/// A packet the ring refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResendError {
    /// The packet is longer than a slot.
    #[error("packet of {len} bytes does not fit a {max}-byte slot")]
    TooLong {
        /// Bytes of the packet.
        len: usize,
        /// Bytes of a slot.
        max: usize,
    },
}

/// A packet found in the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredPacket<'a> {
    /// Its sequence number.
    pub seq: u16,
    /// Play time of its first frame (a resend is useless after it).
    pub play_time: TimelineNs,
    /// The encoded packet, exactly as first sent.
    pub bytes: &'a [u8],
}

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    seq: u16,
    len: usize,
    play_time: TimelineNs,
    used: bool,
}

/// Ring of the last [`ResendRing::capacity`] packets, looked up by sequence number.
#[derive(Debug)]
pub struct ResendRing {
    slot_len: usize,
    data: Vec<u8>,
    slots: Vec<Slot>,
}

impl ResendRing {
    /// A ring holding at least `min_packets` packets (rounded up to a power of two, 1 to
    /// [`MAX_CAPACITY`]) of up to `max_packet_len` bytes each.
    pub fn new(min_packets: usize, max_packet_len: usize) -> Self {
        let capacity = min_packets.clamp(1, MAX_CAPACITY).next_power_of_two();
        ResendRing {
            slot_len: max_packet_len,
            data: vec![0; capacity * max_packet_len],
            slots: vec![Slot::default(); capacity],
        }
    }

    /// Packets of `frames_per_packet` frames covering `duration_ns` of audio (rounded up).
    pub fn packets_for_duration(
        format: StreamFormat,
        frames_per_packet: u16,
        duration_ns: i64,
    ) -> usize {
        let frames = duration_ns.max(0) as i128 * format.rate as i128;
        let per_packet = frames_per_packet.max(1) as i128 * NS_PER_SEC as i128;
        ((frames + per_packet - 1) / per_packet).clamp(1, MAX_CAPACITY as i128) as usize
    }

    /// Packets the ring holds.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Longest packet a slot takes.
    pub fn max_packet_len(&self) -> usize {
        self.slot_len
    }

    fn index(&self, seq: u16) -> usize {
        seq as usize & (self.slots.len() - 1)
    }

    /// Stores a copy of a sent packet, replacing the one `capacity` sequence numbers older.
    pub fn insert(
        &mut self,
        seq: u16,
        play_time: TimelineNs,
        bytes: &[u8],
    ) -> Result<(), ResendError> {
        if bytes.len() > self.slot_len {
            return Err(ResendError::TooLong {
                len: bytes.len(),
                max: self.slot_len,
            });
        }
        let i = self.index(seq);
        let at = i * self.slot_len;
        self.data[at..at + bytes.len()].copy_from_slice(bytes);
        self.slots[i] = Slot {
            seq,
            len: bytes.len(),
            play_time,
            used: true,
        };
        Ok(())
    }

    /// The packet `seq`, if it is still in the ring.
    pub fn get(&self, seq: u16) -> Option<StoredPacket<'_>> {
        let i = self.index(seq);
        let s = self.slots[i];
        if !s.used || s.seq != seq {
            return None;
        }
        let at = i * self.slot_len;
        Some(StoredPacket {
            seq,
            play_time: s.play_time,
            bytes: &self.data[at..at + s.len],
        })
    }

    /// Forgets every packet (e.g. when the stream id changes).
    pub fn clear(&mut self) {
        self.slots.fill(Slot::default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_from_duration() {
        // 1 s of 361-frame packets at 48 kHz = 133 packets -> 256 slots.
        let n = ResendRing::packets_for_duration(StreamFormat::DEFAULT, 361, NS_PER_SEC);
        assert_eq!(n, 133);
        assert_eq!(ResendRing::new(n, 1472).capacity(), 256);
        assert_eq!(ResendRing::new(0, 10).capacity(), 1);
        assert_eq!(ResendRing::new(1 << 20, 10).capacity(), MAX_CAPACITY);
    }

    #[test]
    fn keeps_the_last_capacity_packets_across_the_wrap() {
        let mut r = ResendRing::new(8, 4);
        for i in 0..20u32 {
            let seq = 65_530u16.wrapping_add(i as u16);
            r.insert(seq, TimelineNs::from_ns(i as i64), &i.to_be_bytes())
                .unwrap();
        }
        // Inserted 65530..=65535, 0..=13: the last 8 are 6..=13.
        for i in 0..20u32 {
            let seq = 65_530u16.wrapping_add(i as u16);
            let got = r.get(seq);
            if i >= 12 {
                let p = got.unwrap();
                assert_eq!(
                    (p.seq, p.play_time, p.bytes),
                    (seq, TimelineNs::from_ns(i as i64), &i.to_be_bytes()[..])
                );
            } else {
                assert_eq!(got, None, "seq {seq}");
            }
        }
        assert_eq!(
            r.insert(1, TimelineNs::from_ns(0), &[0; 5]),
            Err(ResendError::TooLong { len: 5, max: 4 })
        );
        r.clear();
        assert_eq!(r.get(13), None);
    }

    #[test]
    fn short_packets_return_their_own_length() {
        let mut r = ResendRing::new(4, 100);
        r.insert(1, TimelineNs::from_ns(5), &[1, 2, 3]).unwrap();
        r.insert(5, TimelineNs::from_ns(6), &[9]).unwrap(); // same slot, replaces seq 1
        assert_eq!(r.get(1), None);
        assert_eq!(r.get(5).unwrap().bytes, &[9]);
    }
}
