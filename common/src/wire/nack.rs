//! A receiver's request for missing audio packets: RTCP transport-layer feedback (RTPFB,
//! PT 205) with FMT 1, the generic NACK of RFC 4585 section 6.2.1. Sent by unicast to the
//! master's control port; the master resends from its ring while the packets can still play.
//!
//! ```text
//! 0 0x81 (V=2, P=0, FMT=1)  1 205  2..4 length (32-bit words - 1)
//! 4..8 SSRC of the receiver (a random id)   8..12 SSRC of the media (the stream id)
//! 12.. FCI entries, 4 bytes each: PID u16, BLP u16 (bit i set => PID+i+1 is lost too)
//! ```
//!
//! At most [`MAX_ENTRIES`] entries per message, so one NACK asks for at most 64 * 17 packets.

use super::{be_u16, be_u32, check_rtcp, need, room, DecodeError, EncodeError};

/// RTCP packet type of transport-layer feedback.
pub const PT_RTPFB: u8 = 205;
/// RTPFB format of the generic NACK.
pub const FMT_GENERIC_NACK: u8 = 1;
/// Most FCI entries in one message.
pub const MAX_ENTRIES: usize = 64;
/// Longest message: header and [`MAX_ENTRIES`] entries.
pub const MAX_LEN: usize = 12 + 4 * MAX_ENTRIES;

/// A decoded NACK, borrowing its FCI entries from the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nack<'a> {
    /// The receiver's id (SSRC of the packet sender).
    pub sender_ssrc: u32,
    /// The stream the lost packets belong to (SSRC of the media source).
    pub media_ssrc: u32,
    fci: &'a [u8],
}

/// One FCI entry: packet `pid` is lost, and `pid + i + 1` for every bit `i` set in `blp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FciEntry {
    /// Packet id: the first lost sequence number.
    pub pid: u16,
    /// Bitmask of following lost packets.
    pub blp: u16,
}

/// What [`encode`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// Bytes written.
    pub len: usize,
    /// How many sequence numbers from the front of the input the message covers; when it is
    /// less than the input's length, [`MAX_ENTRIES`] were full: send the rest in another NACK.
    pub consumed: usize,
}

impl<'a> Nack<'a> {
    /// Decodes a NACK (bytes after its RTCP length are ignored). It must hold 1 to
    /// [`MAX_ENTRIES`] entries.
    pub fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        need(buf, 4)?;
        check_rtcp(buf, PT_RTPFB)?;
        let fmt = buf[0] & 0x1f;
        if fmt != FMT_GENERIC_NACK {
            return Err(DecodeError::Unsupported {
                field: "RTPFB format",
                value: fmt as u32,
            });
        }
        let len = (be_u16(buf, 2) as usize + 1) * 4;
        need(buf, len)?;
        if len < 16 {
            return Err(DecodeError::Malformed("NACK without FCI entries"));
        }
        if len > MAX_LEN {
            return Err(DecodeError::Malformed("NACK with more than 64 FCI entries"));
        }
        Ok(Nack {
            sender_ssrc: be_u32(buf, 4),
            media_ssrc: be_u32(buf, 8),
            fci: &buf[12..len],
        })
    }

    /// Number of FCI entries.
    pub fn entry_count(&self) -> usize {
        self.fci.len() / 4
    }

    /// The FCI entries as sent.
    pub fn entries(&self) -> impl Iterator<Item = FciEntry> + 'a {
        self.fci.chunks_exact(4).map(|c| FciEntry {
            pid: be_u16(c, 0),
            blp: be_u16(c, 2),
        })
    }

    /// Every lost sequence number, entry by entry, in the order sent (a sequence number listed
    /// by two entries comes twice). No allocation.
    pub fn lost(&self) -> LostSeqs<'a> {
        LostSeqs {
            fci: self.fci,
            pid: 0,
            bits: 0,
            next_bit: 17,
        }
    }
}

/// Iterator over the lost sequence numbers of a [`Nack`].
#[derive(Clone, Debug)]
pub struct LostSeqs<'a> {
    fci: &'a [u8],
    pid: u16,
    bits: u16,
    /// 0 = the PID itself is next, 1..=16 = BLP bit `next_bit - 1`, 17 = entry exhausted.
    next_bit: u8,
}

impl Iterator for LostSeqs<'_> {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        loop {
            if self.next_bit == 0 {
                self.next_bit = 1;
                return Some(self.pid);
            }
            if self.next_bit <= 16 {
                let rest = self.bits >> (self.next_bit - 1);
                if rest != 0 {
                    let skip = rest.trailing_zeros() as u8;
                    let bit = self.next_bit + skip; // 1-based offset from PID
                    self.next_bit = bit + 1;
                    return Some(self.pid.wrapping_add(bit as u16));
                }
            }
            if self.fci.len() < 4 {
                return None;
            }
            self.pid = be_u16(self.fci, 0);
            self.bits = be_u16(self.fci, 2);
            self.fci = &self.fci[4..];
            self.next_bit = 0;
        }
    }
}

/// Encodes a NACK for the sequence numbers in `lost` (any order, duplicates allowed),
/// compressing them into PID/BLP entries: a number within 16 after an entry's PID joins that
/// entry, else it opens a new one. Sorted input (in wrapping order) gives the fewest entries.
/// Stops when [`MAX_ENTRIES`] entries are full; [`Encoded::consumed`] says how far it got.
/// `out` needs at most [`MAX_LEN`] bytes.
pub fn encode(
    sender_ssrc: u32,
    media_ssrc: u32,
    lost: &[u16],
    out: &mut [u8],
) -> Result<Encoded, EncodeError> {
    if lost.is_empty() {
        return Err(EncodeError::Empty("no lost sequence numbers"));
    }
    let mut entries = [FciEntry { pid: 0, blp: 0 }; MAX_ENTRIES];
    let mut n = 0;
    let mut consumed = 0;
    'seqs: for &seq in lost {
        for e in entries[..n].iter_mut().rev() {
            let d = seq.wrapping_sub(e.pid);
            if d == 0 {
                consumed += 1;
                continue 'seqs;
            }
            if d <= 16 {
                e.blp |= 1 << (d - 1);
                consumed += 1;
                continue 'seqs;
            }
        }
        if n == MAX_ENTRIES {
            break;
        }
        entries[n] = FciEntry { pid: seq, blp: 0 };
        n += 1;
        consumed += 1;
    }
    let len = 12 + 4 * n;
    room(out, len)?;
    out[0] = 0x80 | FMT_GENERIC_NACK;
    out[1] = PT_RTPFB;
    out[2..4].copy_from_slice(&((len / 4 - 1) as u16).to_be_bytes());
    out[4..8].copy_from_slice(&sender_ssrc.to_be_bytes());
    out[8..12].copy_from_slice(&media_ssrc.to_be_bytes());
    for (e, c) in entries[..n].iter().zip(out[12..len].chunks_exact_mut(4)) {
        c[0..2].copy_from_slice(&e.pid.to_be_bytes());
        c[2..4].copy_from_slice(&e.blp.to_be_bytes());
    }
    Ok(Encoded { len, consumed })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn bytes_are_exactly_the_contract() {
        let mut out = [0u8; MAX_LEN];
        let e = encode(
            0x1111_2222,
            0x3333_4444,
            &[100, 101, 103, 116, 117, 200],
            &mut out,
        )
        .unwrap();
        assert_eq!(
            e,
            Encoded {
                len: 24,
                consumed: 6
            }
        );
        #[rustfmt::skip]
        let expected: [u8; 24] = [
            0x81, 205, 0, 5, 0x11, 0x11, 0x22, 0x22, 0x33, 0x33, 0x44, 0x44,
            0, 100, 0x80, 0x05, // 100 + {101, 103, 116}: BLP bits 0, 2, 15
            0, 117, 0, 0,       // 117 is 17 after 100: a new entry
            0, 200, 0, 0,
        ];
        assert_eq!(out[..24], expected);
        let nack = Nack::decode(&out[..e.len]).unwrap();
        assert_eq!(
            (nack.sender_ssrc, nack.media_ssrc),
            (0x1111_2222, 0x3333_4444)
        );
        assert_eq!(nack.entry_count(), 3);
        assert_eq!(
            nack.lost().collect::<Vec<_>>(),
            [100, 101, 103, 116, 117, 200]
        );
    }

    #[test]
    fn wraps_around_65535() {
        let mut out = [0u8; MAX_LEN];
        let lost = [65534, 65535, 0, 3];
        let e = encode(1, 2, &lost, &mut out).unwrap();
        assert_eq!(e.len, 16); // one entry: PID 65534, bits for +1, +2, +5
        assert_eq!(out[12..16], [0xFF, 0xFE, 0x00, 0b1_0011]);
        let nack = Nack::decode(&out[..e.len]).unwrap();
        assert_eq!(nack.lost().collect::<Vec<_>>(), lost);
    }

    #[test]
    fn stops_at_64_entries() {
        let lost: Vec<u16> = (0..100u16).map(|i| i * 100).collect();
        let mut out = [0u8; MAX_LEN];
        let e = encode(1, 2, &lost, &mut out).unwrap();
        assert_eq!(
            e,
            Encoded {
                len: MAX_LEN,
                consumed: 64
            }
        );
        let rest = encode(1, 2, &lost[e.consumed..], &mut out).unwrap();
        assert_eq!(rest.consumed, 36);
        assert_eq!(
            encode(1, 2, &[], &mut out),
            Err(EncodeError::Empty("no lost sequence numbers"))
        );
        assert!(matches!(
            encode(1, 2, &[1, 50], &mut out[..19]),
            Err(EncodeError::BufferTooSmall {
                needed: 20,
                got: 19
            })
        ));
    }

    #[test]
    fn rejects_bad_messages() {
        let mut out = [0u8; MAX_LEN];
        let e = encode(1, 2, &[7], &mut out).unwrap();
        let good = &out[..e.len];
        assert_eq!(
            Nack::decode(&good[..15]),
            Err(DecodeError::Truncated {
                needed: 16,
                got: 15
            })
        );
        let mut b = good.to_vec();
        b[0] = 0x8F; // FMT 15
        assert!(matches!(
            Nack::decode(&b),
            Err(DecodeError::Unsupported { .. })
        ));
        let mut b = good.to_vec();
        b[3] = 2; // no FCI
        assert_eq!(
            Nack::decode(&b),
            Err(DecodeError::Malformed("NACK without FCI entries"))
        );
        let mut big = vec![0u8; 12 + 4 * 65];
        big[..4].copy_from_slice(&[0x81, 205, 0, 67]);
        assert!(matches!(Nack::decode(&big), Err(DecodeError::Malformed(_))));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(n) = Nack::decode(&bytes) {
                prop_assert!(n.lost().count() <= 17 * MAX_ENTRIES);
            }
        }

        #[test]
        fn mutated_messages_never_panic(
            flips in proptest::collection::vec((0usize..40, any::<u8>()), 0..6),
            cut in 0usize..=40,
        ) {
            let mut b = [0u8; MAX_LEN];
            let e = encode(1, 2, &[1, 2, 30, 31, 60, 200, 201], &mut b).unwrap();
            prop_assert_eq!(e.len, 28);
            for (i, v) in flips { b[i] = v; }
            if let Ok(n) = Nack::decode(&b[..cut]) {
                prop_assert!(n.lost().count() <= 17 * n.entry_count());
            }
        }

        /// Any set of lost sequence numbers (sorted in wrapping order from a random start,
        /// so runs across 65535 -> 0 are common) survives build + decode exactly.
        #[test]
        fn compression_round_trip(
            start in any::<u16>(),
            offsets in proptest::collection::btree_set(0u16..2000, 1..300),
            shuffle in any::<bool>(),
        ) {
            let mut lost: Vec<u16> = offsets.iter().map(|o| start.wrapping_add(*o)).collect();
            if shuffle {
                lost.reverse();
            }
            let mut out = [0u8; MAX_LEN];
            let mut got = BTreeSet::new();
            let mut rest = &lost[..];
            let mut messages = 0;
            while !rest.is_empty() {
                let e = encode(9, 8, rest, &mut out).unwrap();
                prop_assert!(e.consumed > 0);
                let nack = Nack::decode(&out[..e.len]).unwrap();
                prop_assert_eq!(nack.entry_count(), (e.len - 12) / 4);
                got.extend(nack.lost());
                rest = &rest[e.consumed..];
                messages += 1;
            }
            let want: BTreeSet<u16> = lost.iter().copied().collect();
            prop_assert_eq!(got, want);
            if !shuffle {
                // Sorted input: every full message covers at least 64 numbers.
                prop_assert!(messages <= offsets.len().div_ceil(64));
            }
        }
    }
}
