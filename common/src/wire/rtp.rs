//! The audio packet: RTP (RFC 3550) with an L16/L24 big-endian payload and the play time of its
//! first frame in a header extension (RFC 8285 one-byte form, element id 1, 8 bytes of NTP-64).
//!
//! ```text
//! 0      0x90 (V=2, P=0, X=1, CC=0)
//! 1      M (first packet of a run) | PT (96 = L16, 97 = L24)
//! 2..4   sequence number          4..8   RTP timestamp (stream frame index of the first frame)
//! 8..12  SSRC (stream id)         12..14 0xBEDE   14..16 extension length in words = 3
//! 16     0x17 (id 1, len 8)       17..25 play time (NTP-64 on the timeline)   25..28 zero
//! 28..   payload: interleaved big-endian samples
//! ```
//!
//! The decoder also accepts what other RTP senders may add: CSRCs, padding, other one-byte or
//! two-byte (RFC 8285) extension elements before or after the play time.

use super::{be_u16, be_u32, be_u64, need, room, DecodeError, EncodeError};
use crate::format::SampleFormat;
use crate::time::{ntp64_from_ns, timeline_from_ntp64, TimelineNs};

/// Length of the header this crate writes (fixed RTP header + play-time extension).
pub const HEADER_LEN: usize = 28;
/// The RFC 8285 extension element id carrying the play time.
pub const PLAY_TIME_EXT_ID: u8 = 1;
/// Default budget for a whole UDP payload (a 1500-byte Ethernet MTU minus IPv4 and UDP headers).
pub const DEFAULT_MAX_UDP_PAYLOAD: usize = 1472;

const ONE_BYTE_PROFILE: u16 = 0xBEDE;
const TWO_BYTE_PROFILE_MASK: u16 = 0xFFF0;
const TWO_BYTE_PROFILE: u16 = 0x1000;

/// One audio packet, borrowing its payload from the datagram (decode) or the caller (encode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AudioPacket<'a> {
    /// Set on the first packet of a run (after start, silence or a resync): the play times do
    /// not continue those of the previous packet.
    pub marker: bool,
    /// Sample format of the payload (from the payload type).
    pub format: SampleFormat,
    /// RTP sequence number.
    pub seq: u16,
    /// RTP timestamp: the stream frame index of the first frame (wraps at 2^32).
    pub timestamp: u32,
    /// RTP SSRC: the stream id, random per run of the sender.
    pub ssrc: u32,
    /// The timeline instant the first frame must leave the DAC.
    pub play_time: TimelineNs,
    /// Interleaved big-endian samples (whole samples; frames depend on the stream's channels).
    pub payload: &'a [u8],
}

impl<'a> AudioPacket<'a> {
    /// True for the payload types audio packets use (96 = L16, 97 = L24).
    pub fn is_audio_payload_type(pt: u8) -> bool {
        SampleFormat::from_payload_type(pt).is_some()
    }

    /// The same header with another payload (e.g. a copy the caller keeps beyond the
    /// datagram's lifetime).
    pub fn with_payload<'b>(&self, payload: &'b [u8]) -> AudioPacket<'b> {
        AudioPacket {
            marker: self.marker,
            format: self.format,
            seq: self.seq,
            timestamp: self.timestamp,
            ssrc: self.ssrc,
            play_time: self.play_time,
            payload,
        }
    }

    /// Bytes [`AudioPacket::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// Whole frames in the payload for a stream of `channels` channels (0 channels gives 0).
    pub fn frames(&self, channels: u8) -> usize {
        let frame = self.format.bytes() * channels as usize;
        self.payload.len().checked_div(frame).unwrap_or(0)
    }

    /// Writes the 28-byte header only (the payload is left alone), so a packetizer can fill
    /// `out[HEADER_LEN..]` in place. Negative play times are written as 0.
    pub fn encode_header(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        room(out, HEADER_LEN)?;
        out[0] = 0x90;
        out[1] = (self.marker as u8) << 7 | self.format.payload_type();
        out[2..4].copy_from_slice(&self.seq.to_be_bytes());
        out[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        out[12..14].copy_from_slice(&ONE_BYTE_PROFILE.to_be_bytes());
        out[14..16].copy_from_slice(&3u16.to_be_bytes());
        out[16] = PLAY_TIME_EXT_ID << 4 | (8 - 1);
        out[17..25].copy_from_slice(&ntp64_from_ns(self.play_time.ns()).to_be_bytes());
        out[25..28].fill(0);
        Ok(HEADER_LEN)
    }

    /// Writes header and payload to `out`; returns the bytes written.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let len = self.encoded_len();
        room(out, len)?;
        self.encode_header(out)?;
        out[HEADER_LEN..len].copy_from_slice(self.payload);
        Ok(len)
    }

    /// Decodes a datagram without copying the payload.
    pub fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        need(buf, 12)?;
        let version = buf[0] >> 6;
        if version != 2 {
            return Err(DecodeError::BadVersion(version));
        }
        let padding = buf[0] & 0x20 != 0;
        let extension = buf[0] & 0x10 != 0;
        let csrc_count = (buf[0] & 0x0f) as usize;
        let pt = buf[1] & 0x7f;
        let format = SampleFormat::from_payload_type(pt).ok_or(DecodeError::Unsupported {
            field: "payload type",
            value: pt as u32,
        })?;
        let mut end = buf.len();
        if padding {
            let pad = buf[end - 1] as usize;
            if pad == 0 || pad > end - 12 {
                return Err(DecodeError::Malformed("RTP padding length"));
            }
            end -= pad;
        }
        if !extension {
            return Err(DecodeError::Malformed(
                "no header extension (play time missing)",
            ));
        }
        let ext_at = 12 + 4 * csrc_count;
        need(&buf[..end], ext_at + 4)?;
        let profile = be_u16(buf, ext_at);
        let ext_len = 4 * be_u16(buf, ext_at + 2) as usize;
        let data_at = ext_at + 4;
        let payload_at = data_at + ext_len;
        need(&buf[..end], payload_at)?;
        let play_ntp = find_play_time(profile, &buf[data_at..payload_at])?;
        let payload = &buf[payload_at..end];
        if payload.len() % format.bytes() != 0 {
            return Err(DecodeError::Malformed("payload is not whole samples"));
        }
        Ok(AudioPacket {
            marker: buf[1] & 0x80 != 0,
            format,
            seq: be_u16(buf, 2),
            timestamp: be_u32(buf, 4),
            ssrc: be_u32(buf, 8),
            play_time: timeline_from_ntp64(play_ntp),
            payload,
        })
    }
}

/// Walks the extension elements (one- or two-byte form) and returns the play-time element.
fn find_play_time(profile: u16, ext: &[u8]) -> Result<u64, DecodeError> {
    let two_byte = if profile == ONE_BYTE_PROFILE {
        false
    } else if profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE {
        true
    } else {
        return Err(DecodeError::Unsupported {
            field: "header extension profile",
            value: profile as u32,
        });
    };
    let mut at = 0;
    while at < ext.len() {
        let (id, len, data_at) = if two_byte {
            let id = ext[at];
            if id == 0 {
                at += 1;
                continue;
            }
            if at + 1 >= ext.len() {
                break;
            }
            (id, ext[at + 1] as usize, at + 2)
        } else {
            let b = ext[at];
            let id = b >> 4;
            if id == 0 {
                at += 1;
                continue;
            }
            if id == 15 {
                break;
            }
            (id, (b & 0x0f) as usize + 1, at + 1)
        };
        let next = data_at + len;
        if next > ext.len() {
            return Err(DecodeError::Malformed(
                "extension element overruns the extension",
            ));
        }
        if id == PLAY_TIME_EXT_ID {
            if len != 8 {
                return Err(DecodeError::Malformed("play-time element is not 8 bytes"));
            }
            return Ok(be_u64(ext, data_at));
        }
        at = next;
    }
    Err(DecodeError::Malformed("no play-time extension element"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::NS_PER_SEC;
    use proptest::prelude::*;

    fn sample_packet(payload: &[u8]) -> AudioPacket<'_> {
        AudioPacket {
            marker: true,
            format: SampleFormat::L16,
            seq: 0x1234,
            timestamp: 0xDEAD_BEEF,
            ssrc: 0x0102_0304,
            play_time: TimelineNs::from_ns(5 * NS_PER_SEC + NS_PER_SEC / 2),
            payload,
        }
    }

    #[test]
    fn header_bytes_are_exactly_the_contract() {
        let payload = [0x7f, 0xff, 0x80, 0x00];
        let mut out = [0u8; 64];
        let n = sample_packet(&payload).encode(&mut out).unwrap();
        assert_eq!(n, 32);
        #[rustfmt::skip]
        let expected: [u8; 32] = [
            0x90, 0x80 | 96, 0x12, 0x34, 0xDE, 0xAD, 0xBE, 0xEF, 0x01, 0x02, 0x03, 0x04,
            0xBE, 0xDE, 0x00, 0x03,
            0x17, 0, 0, 0, 5, 0x80, 0, 0, 0, // play time 5.5 s as NTP-64
            0, 0, 0,
            0x7f, 0xff, 0x80, 0x00,
        ];
        assert_eq!(out[..n], expected);
        let back = AudioPacket::decode(&out[..n]).unwrap();
        assert_eq!(back, sample_packet(&payload));
        assert_eq!(back.frames(2), 1);
    }

    #[test]
    fn l24_without_marker() {
        let payload = [1, 2, 3, 4, 5, 6];
        let p = AudioPacket {
            marker: false,
            format: SampleFormat::L24,
            ..sample_packet(&payload)
        };
        let mut out = [0u8; 40];
        let n = p.encode(&mut out).unwrap();
        assert_eq!(out[1], 97);
        assert_eq!(AudioPacket::decode(&out[..n]), Ok(p));
    }

    #[test]
    fn encode_into_small_buffer_fails() {
        let payload = [0u8; 4];
        let mut out = [0u8; 31];
        assert_eq!(
            sample_packet(&payload).encode(&mut out),
            Err(EncodeError::BufferTooSmall {
                needed: 32,
                got: 31
            })
        );
    }

    #[test]
    fn decode_rejects_what_it_must() {
        let payload = [0u8; 4];
        let mut good = [0u8; 32];
        sample_packet(&payload).encode(&mut good).unwrap();
        assert_eq!(
            AudioPacket::decode(&good[..20]),
            Err(DecodeError::Truncated {
                needed: 28,
                got: 20
            })
        );
        let mut b = good;
        b[0] = 0x50;
        assert_eq!(AudioPacket::decode(&b), Err(DecodeError::BadVersion(1)));
        let mut b = good;
        b[0] = 0x80; // no extension
        assert!(matches!(
            AudioPacket::decode(&b),
            Err(DecodeError::Malformed(_))
        ));
        let mut b = good;
        b[1] = 0; // PT 0 (PCMU)
        assert_eq!(
            AudioPacket::decode(&b),
            Err(DecodeError::Unsupported {
                field: "payload type",
                value: 0
            })
        );
        let mut b = good;
        b[16] = 0x27; // element id 2: the play time is missing
        assert!(matches!(
            AudioPacket::decode(&b),
            Err(DecodeError::Malformed(_))
        ));
        // Odd payload length for L16.
        assert!(matches!(
            AudioPacket::decode(&good[..31]),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn decode_skips_csrcs_padding_and_other_elements() {
        // CC=1, P=1, two-byte extension form with an unknown element before the play time.
        #[rustfmt::skip]
        let b: [u8; 42] = [
            0xB1, 97, 0, 7, 0, 0, 0, 9, 0, 0, 0, 5,
            0xAA, 0xBB, 0xCC, 0xDD, // CSRC
            0x10, 0x00, 0x00, 0x04, // two-byte profile, 4 words
            5, 2, 0xEE, 0xEE,       // id 5, 2 bytes
            1, 8, 0, 0, 0, 2, 0x40, 0, 0, 0, // play time 2.25 s
            0, 0,                   // padding elements
            1, 2, 3,                // one L24 sample
            0, 0, 3,                // RTP padding: 3 bytes
        ];
        let p = AudioPacket::decode(&b).unwrap();
        assert_eq!(p.format, SampleFormat::L24);
        assert_eq!((p.seq, p.timestamp, p.ssrc), (7, 9, 5));
        assert_eq!(
            p.play_time,
            TimelineNs::from_ns(2 * NS_PER_SEC + NS_PER_SEC / 4)
        );
        assert_eq!(p.payload, &[1, 2, 3]);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = AudioPacket::decode(&bytes);
        }

        #[test]
        fn mutated_packets_never_panic(
            flips in proptest::collection::vec((0usize..40, any::<u8>()), 0..6),
            cut in 0usize..41,
        ) {
            let payload = [0u8; 12];
            let mut b = [0u8; 40];
            sample_packet(&payload).encode(&mut b).unwrap();
            for (i, v) in flips { b[i] = v; }
            let _ = AudioPacket::decode(&b[..cut]);
        }

        #[test]
        fn encode_decode_round_trip(
            marker in any::<bool>(), l24 in any::<bool>(), seq in any::<u16>(),
            timestamp in any::<u32>(), ssrc in any::<u32>(),
            play_time in 0i64..(1i64 << 31) * NS_PER_SEC,
            samples in 0usize..100,
        ) {
            let format = if l24 { SampleFormat::L24 } else { SampleFormat::L16 };
            let payload: Vec<u8> = (0..samples * format.bytes()).map(|i| i as u8).collect();
            let p = AudioPacket { marker, format, seq, timestamp, ssrc, play_time: TimelineNs::from_ns(play_time), payload: &payload };
            let mut out = vec![0u8; p.encoded_len()];
            prop_assert_eq!(p.encode(&mut out), Ok(out.len()));
            prop_assert_eq!(AudioPacket::decode(&out), Ok(p));
        }
    }
}
