//! The time service's request and response: the NTPv4 on-wire format (RFC 5905, 48 bytes).
//!
//! A receiver sends a client-mode packet whose transmit timestamp is its own send time (T1, on
//! its local clock); the master answers in server mode with origin = T1, receive = T2 and
//! transmit = T3 on its timeline; the receiver notes the arrival T4. Any SNTP client can read
//! the master's answers, and the receiver can query any NTP server the same way (`--ntp`).

use super::{be_u32, be_u64, need, DecodeError};

/// Client mode (a request).
pub const MODE_CLIENT: u8 = 3;
/// Server mode (a response).
pub const MODE_SERVER: u8 = 4;

/// One NTP packet (no extension fields, no MAC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NtpPacket {
    /// Leap indicator (0..=3); 3 means "clock not synchronised".
    pub leap: u8,
    /// Version number (3 or 4 accepted).
    pub version: u8,
    /// Association mode ([`MODE_CLIENT`], [`MODE_SERVER`], ...).
    pub mode: u8,
    /// Stratum; 0 in a server answer is a "kiss-o'-death".
    pub stratum: u8,
    /// Poll interval, log2 seconds.
    pub poll: i8,
    /// Precision, log2 seconds.
    pub precision: i8,
    /// Root delay, NTP short format.
    pub root_delay: u32,
    /// Root dispersion, NTP short format.
    pub root_dispersion: u32,
    /// Reference id (four ASCII bytes for stratum 1).
    pub reference_id: [u8; 4],
    /// Reference timestamp.
    pub reference_ts: u64,
    /// Origin timestamp (T1 echoed by a server).
    pub origin_ts: u64,
    /// Receive timestamp (T2).
    pub receive_ts: u64,
    /// Transmit timestamp (T1 in a request, T3 in a response).
    pub transmit_ts: u64,
}

impl NtpPacket {
    /// Size of the packet on the wire.
    pub const LEN: usize = 48;

    /// A version-4 client request stamped with `transmit_ts` (the sender's T1).
    pub fn client_request(transmit_ts: u64) -> Self {
        NtpPacket {
            leap: 0,
            version: 4,
            mode: MODE_CLIENT,
            stratum: 0,
            poll: 0,
            precision: 0,
            root_delay: 0,
            root_dispersion: 0,
            reference_id: [0; 4],
            reference_ts: 0,
            origin_ts: 0,
            receive_ts: 0,
            transmit_ts,
        }
    }

    /// The time service's answer to `request`, received at `receive_ts` (T2) and sent at
    /// `transmit_ts` (T3), both on the master's timeline. Stratum 1, reference id "WSYN".
    pub fn server_reply(request: &NtpPacket, receive_ts: u64, transmit_ts: u64) -> Self {
        NtpPacket {
            leap: 0,
            version: request.version,
            mode: MODE_SERVER,
            stratum: 1,
            poll: request.poll,
            precision: -29,
            root_delay: 0,
            root_dispersion: 0,
            reference_id: *b"WSYN",
            reference_ts: receive_ts,
            origin_ts: request.transmit_ts,
            receive_ts,
            transmit_ts,
        }
    }

    /// Encodes the packet.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = (self.leap & 3) << 6 | (self.version & 7) << 3 | (self.mode & 7);
        b[1] = self.stratum;
        b[2] = self.poll as u8;
        b[3] = self.precision as u8;
        b[4..8].copy_from_slice(&self.root_delay.to_be_bytes());
        b[8..12].copy_from_slice(&self.root_dispersion.to_be_bytes());
        b[12..16].copy_from_slice(&self.reference_id);
        b[16..24].copy_from_slice(&self.reference_ts.to_be_bytes());
        b[24..32].copy_from_slice(&self.origin_ts.to_be_bytes());
        b[32..40].copy_from_slice(&self.receive_ts.to_be_bytes());
        b[40..48].copy_from_slice(&self.transmit_ts.to_be_bytes());
        b
    }

    /// Decodes a packet; extension fields and MACs after the first 48 bytes are ignored.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        need(buf, Self::LEN)?;
        let version = (buf[0] >> 3) & 7;
        if !(3..=4).contains(&version) {
            return Err(DecodeError::BadVersion(version));
        }
        Ok(NtpPacket {
            leap: buf[0] >> 6,
            version,
            mode: buf[0] & 7,
            stratum: buf[1],
            poll: buf[2] as i8,
            precision: buf[3] as i8,
            root_delay: be_u32(buf, 4),
            root_dispersion: be_u32(buf, 8),
            reference_id: [buf[12], buf[13], buf[14], buf[15]],
            reference_ts: be_u64(buf, 16),
            origin_ts: be_u64(buf, 24),
            receive_ts: be_u64(buf, 32),
            transmit_ts: be_u64(buf, 40),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn request_and_reply_round_trip() {
        let req = NtpPacket::client_request(0x0102_0304_0506_0708);
        let bytes = req.encode();
        assert_eq!(bytes[0], 0x23); // LI 0, VN 4, mode 3: what every SNTP client sends
        assert_eq!(NtpPacket::decode(&bytes), Ok(req));
        let reply = NtpPacket::server_reply(&req, 10, 20);
        let back = NtpPacket::decode(&reply.encode()).unwrap();
        assert_eq!(back.mode, MODE_SERVER);
        assert_eq!(back.origin_ts, 0x0102_0304_0506_0708);
        assert_eq!((back.receive_ts, back.transmit_ts), (10, 20));
    }

    #[test]
    fn rejects_short_and_wrong_version() {
        assert_eq!(
            NtpPacket::decode(&[0x23; 47]),
            Err(DecodeError::Truncated {
                needed: 48,
                got: 47
            })
        );
        let mut b = NtpPacket::client_request(1).encode();
        b[0] = 0x3b; // version 7
        assert_eq!(NtpPacket::decode(&b), Err(DecodeError::BadVersion(7)));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = NtpPacket::decode(&bytes);
        }

        #[test]
        fn encode_decode_round_trip(t1 in any::<u64>(), t2 in any::<u64>(), t3 in any::<u64>()) {
            let reply = NtpPacket::server_reply(&NtpPacket::client_request(t1), t2, t3);
            prop_assert_eq!(NtpPacket::decode(&reply.encode()), Ok(reply));
        }
    }
}
