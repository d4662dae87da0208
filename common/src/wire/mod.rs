//! The wire format: one file per message.
//!
//! - [`rtp`]: the audio packet (RTP, L16/L24 big-endian, play time in a header extension);
//! - [`status`]: the stream's status/config message (RTCP APP "WSYN");
//! - [`nack`]: a receiver's request for missing packets (RTCP RTPFB generic NACK, RFC 4585);
//! - [`ntp`]: time request and response of the time service (NTPv4 on-wire format, RFC 5905).
//!
//! Decoders take any bytes and return [`DecodeError`] for anything malformed: they never panic
//! and never allocate more than the datagram. `docs/wire.md` describes every byte.

pub mod nack;
pub mod ntp;
pub mod rtp;
pub mod status;

/// Why a datagram could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the message needs.
    #[error("truncated: needed {needed} bytes, got {got}")]
    Truncated { needed: usize, got: usize },
    /// The RTP/RTCP version field is not 2.
    #[error("bad version {0}")]
    BadVersion(u8),
    /// A field holds a value this version does not know.
    #[error("unsupported {field} {value}")]
    Unsupported { field: &'static str, value: u32 },
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
