//! The wire format: one file per message.
//!
//! - [`rtp`]: the audio packet (RTP, L16/L24 big-endian, play time in a header extension);
//! - [`status`]: the stream's status/config message (RTCP APP "WSYN");
//! - [`nack`]: a receiver's request for missing packets (RTCP RTPFB generic NACK, RFC 4585);
//! - [`ntp`]: time request and response of the time service (NTPv4 on-wire format, RFC 5905);
//! - [`report`]: a receiver's report to the master (RTCP RR + APP "WSRP");
//! - [`control`]: the room control vocabulary on the control port (RTCP APP "WSCM").
//!
//! Decoders take any bytes and return [`DecodeError`] for anything malformed: they never panic
//! and never allocate more than the datagram. `docs/wire.md` describes every byte.

pub mod control;
pub mod nack;
pub mod ntp;
pub mod report;
pub mod rtp;
pub mod status;

/// Why a datagram could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the message needs.
    #[error("truncated: needed {needed} bytes, got {got}")]
    Truncated {
        /// Bytes the message needs.
        needed: usize,
        /// Bytes there were.
        got: usize,
    },
    /// The RTP/RTCP version field is not 2.
    #[error("bad version {0}")]
    BadVersion(u8),
    /// A field holds a value this version does not know.
    #[error("unsupported {field} {value}")]
    Unsupported {
        /// Which field.
        field: &'static str,
        /// Its value.
        value: u32,
    },
    /// The bytes contradict themselves (a length that does not fit, an invalid combination).
    #[error("malformed {0}")]
    Malformed(&'static str),
}

/// Returns `Err(Truncated)` unless `buf` has at least `needed` bytes.
pub(crate) fn need(buf: &[u8], needed: usize) -> Result<(), DecodeError> {
    if buf.len() < needed {
        Err(DecodeError::Truncated {
            needed,
            got: buf.len(),
        })
    } else {
        Ok(())
    }
}

pub(crate) fn be_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

pub(crate) fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn be_u64(b: &[u8], at: usize) -> u64 {
    ((be_u32(b, at) as u64) << 32) | be_u32(b, at + 4) as u64
}

/// Checks the first two bytes of an RTCP packet: version 2, no padding, packet type `pt`
/// (the caller checked that `buf` has at least 2 bytes).
pub(crate) fn check_rtcp(buf: &[u8], pt: u8) -> Result<(), DecodeError> {
    let version = buf[0] >> 6;
    if version != 2 {
        return Err(DecodeError::BadVersion(version));
    }
    if buf[1] != pt {
        return Err(DecodeError::Unsupported {
            field: "RTCP packet type",
            value: buf[1] as u32,
        });
    }
    if buf[0] & 0x20 != 0 {
        return Err(DecodeError::Unsupported {
            field: "RTCP padding",
            value: 1,
        });
    }
    Ok(())
}

/// Why a message could not be encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The output buffer is smaller than the message.
    #[error("buffer too small: needed {needed} bytes, got {got}")]
    BufferTooSmall {
        /// Bytes the message needs.
        needed: usize,
        /// Bytes the buffer has.
        got: usize,
    },
    /// A field's value cannot be represented on the wire.
    #[error("{field} out of range: {value}")]
    OutOfRange {
        /// Which field.
        field: &'static str,
        /// The value that does not fit.
        value: i64,
    },
    /// The message would carry nothing (e.g. a NACK without lost sequence numbers).
    #[error("nothing to encode: {0}")]
    Empty(&'static str),
}

/// Returns `Err(BufferTooSmall)` unless `out` has room for `needed` bytes.
pub(crate) fn room(out: &[u8], needed: usize) -> Result<(), EncodeError> {
    if out.len() < needed {
        Err(EncodeError::BufferTooSmall {
            needed,
            got: out.len(),
        })
    } else {
        Ok(())
    }
}

/// What a datagram is, judged from its first bytes only (for demultiplexing; the message's own
/// decoder still validates everything).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// An audio packet ([`rtp::AudioPacket`]): RTP version 2 with payload type 96 or 97.
    Audio,
    /// A status message ([`status::Status`]): RTCP APP (PT 204).
    Status,
    /// A NACK ([`nack::Nack`]): RTCP RTPFB (PT 205).
    Nack,
    /// A receiver report ([`report::Report`]): RTCP RR (PT 201), an APP block following.
    Report,
    /// A control message ([`control::Envelope`]): RTCP APP (PT 204) named `WSCM`.
    Control,
    /// An NTP packet ([`ntp::NtpPacket`]): at least 48 bytes, NTP version 3 or 4.
    Ntp,
    /// Anything else.
    Unknown,
}

/// Classifies a datagram by its first bytes (RTP/RTCP multiplexing as in RFC 5761: a second
/// byte in 192..=223 is RTCP). Never panics; any input gives some [`Kind`].
pub fn classify(buf: &[u8]) -> Kind {
    if buf.len() >= 12 && buf[0] >> 6 == 2 {
        match buf[1] {
            204 if control::is_control(buf) => return Kind::Control,
            204 => return Kind::Status,
            report::PT_RR => return Kind::Report,
            205 => return Kind::Nack,
            192..=223 => return Kind::Unknown,
            b if rtp::AudioPacket::is_audio_payload_type(b & 0x7f) => return Kind::Audio,
            _ => {}
        }
    }
    if buf.len() >= ntp::NtpPacket::LEN && (3..=4).contains(&((buf[0] >> 3) & 7)) {
        return Kind::Ntp;
    }
    Kind::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{ClockDomain, SampleFormat, StreamFormat};
    use crate::time::TimelineNs;
    use proptest::prelude::*;

    #[test]
    fn classify_every_message() {
        let mut buf = [0u8; 512];
        let audio = rtp::AudioPacket {
            marker: true,
            format: SampleFormat::L24,
            seq: 1,
            timestamp: 2,
            ssrc: 3,
            play_time: TimelineNs::from_ns(4),
            payload: &[0; 6],
        };
        let n = audio.encode(&mut buf).unwrap();
        assert_eq!(classify(&buf[..n]), Kind::Audio);
        let status = status::Status {
            ssrc: 1,
            format: StreamFormat::DEFAULT,
            clock_domain: ClockDomain::Master,
            frames_per_packet: 361,
            time_port: 45301,
            latency_ns: 0,
            packets_sent: 0,
            flags: 0,
            name: status::StatusName::truncated("x"),
            ntp_server: None,
            channel_map: None,
        };
        let n = status.encode(&mut buf).unwrap();
        assert_eq!(classify(&buf[..n]), Kind::Status);
        let n = nack::encode(1, 2, &[3], &mut buf).unwrap().len;
        assert_eq!(classify(&buf[..n]), Kind::Nack);
        let req = ntp::NtpPacket::client_request(5).encode();
        assert_eq!(classify(&req), Kind::Ntp);
        // SNTP clients often send LI=3 (unsynchronised): 0xE3.
        let mut unsync = req;
        unsync[0] = 0xE3;
        assert_eq!(classify(&unsync), Kind::Ntp);
        assert_eq!(classify(&[]), Kind::Unknown);
        assert_eq!(classify(&req[..47]), Kind::Unknown);
        let mut rtcp_sr = [0u8; 28];
        rtcp_sr[..2].copy_from_slice(&[0x80, 200]);
        assert_eq!(classify(&rtcp_sr), Kind::Unknown);
    }

    proptest! {
        #[test]
        fn classify_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = classify(&bytes);
        }
    }
}
