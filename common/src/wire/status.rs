//! The stream's status/config message: RTCP APP (RFC 3550 section 6.7), PT 204, subtype 0,
//! name "WSYN". Sent by the master about once a second and on every change, on the stream's
//! port, so a receiver learns everything it needs (format, latency, time service) from it.
//!
//! ```text
//! 0 0x80  1 204  2..4 length (32-bit words - 1)  4..8 SSRC  8..12 "WSYN"
//! 12 version (1)  13 sample format code  14 channels  15 clock domain code
//! 16..20 rate  20..22 frames per packet  22..24 time service port
//! 24..28 latency in us  28..36 packets sent  36..40 flags (bit 0: authenticated)
//! 40 name length  41.. name (UTF-8, <= 64 bytes)
//! then, only in clock domain `ntp` when the master names its NTP server:
//!   family (4 or 6)  port (2 bytes)  address (4 or 16 bytes)
//! (or, when a channel map follows and no server is named, one zero byte)
//! then, when the master names its channels' positions:
//!   'M' (0x4d)  count (= channels)  one position code per channel (crate::channels)
//! zero padding to a 4-byte boundary
//! ```
//!
//! The server block sits where older decoders see padding or trailing bytes, which they
//! ignore; a zero byte there means "no server". The channel map follows it; decoders that
//! predate it stop at the zero byte or the server. Without a map, a stream's channels are in
//! [`ChannelMap::default_for`] order.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{be_u16, be_u32, be_u64, need, room, DecodeError, EncodeError};
use crate::channels::{self, ChannelMap};
use crate::format::{ClockDomain, SampleFormat, StreamFormat};

/// RTCP packet type of an APP message.
pub const PT_APP: u8 = 204;
/// The APP name of WaveSync's status message.
pub const APP_NAME: [u8; 4] = *b"WSYN";
/// Version of the status message layout this crate writes and reads.
pub const VERSION: u8 = 1;
/// Flags bit: every packet of the stream is authenticated with the pre-shared key.
pub const FLAG_AUTHENTICATED: u32 = 1;
/// Longest encoded status message (a 64-byte name, an IPv6 server, a 64-channel map).
pub const MAX_LEN: usize =
    (41 + StatusName::MAX + SERVER_V6_LEN + MAP_HEADER_LEN + channels::MAX).next_multiple_of(4);

/// Tag of the channel-map block.
const MAP_TAG: u8 = b'M';
const MAP_HEADER_LEN: usize = 2;

const SERVER_V4_LEN: usize = 1 + 2 + 4;
const SERVER_V6_LEN: usize = 1 + 2 + 16;

const FIXED_LEN: usize = 41;

/// A sender name of at most 64 bytes of UTF-8, stored inline (no allocation).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusName {
    bytes: [u8; StatusName::MAX],
    len: u8,
}

impl StatusName {
    /// Longest name in bytes.
    pub const MAX: usize = 64;

    /// The name `s`, cut at the last character boundary that fits in [`StatusName::MAX`] bytes.
    pub fn truncated(s: &str) -> Self {
        let mut len = s.len().min(Self::MAX);
        while !s.is_char_boundary(len) {
            len -= 1;
        }
        let mut bytes = [0u8; Self::MAX];
        bytes[..len].copy_from_slice(&s.as_bytes()[..len]);
        StatusName {
            bytes,
            len: len as u8,
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        // Only ever built from a `&str` cut at a char boundary or from validated UTF-8.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }
}

impl Default for StatusName {
    fn default() -> Self {
        StatusName::truncated("")
    }
}

impl std::fmt::Debug for StatusName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// The status/config of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// Stream id (the SSRC of its audio packets).
    pub ssrc: u32,
    /// Rate, channels and sample format.
    pub format: StreamFormat,
    /// Which clock the play times are measured on.
    pub clock_domain: ClockDomain,
    /// Frames in a full audio packet.
    pub frames_per_packet: u16,
    /// UDP port of the master's time service (and NACK destination).
    pub time_port: u16,
    /// Configured latency (capture to DAC), ns; travels in whole microseconds.
    pub latency_ns: i64,
    /// Audio packets sent so far in this stream (resends not counted).
    pub packets_sent: u64,
    /// Flags, see [`FLAG_AUTHENTICATED`].
    pub flags: u32,
    /// The sender's human-readable name.
    pub name: StatusName,
    /// Clock domain `ntp`: the NTP server whose clock is the timeline, as the master reaches
    /// it (receivers may be told to use another with their own setting).
    pub ntp_server: Option<SocketAddr>,
    /// The positions of the channels, when the master names them (its count is the stream's
    /// channels); `None`: [`ChannelMap::default_for`] the channels.
    pub channel_map: Option<ChannelMap>,
}

impl Status {
    /// Bytes [`Status::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        let map = self.map_on_wire().map_or(0, |m| MAP_HEADER_LEN + m.len());
        let server = match self.ntp_server {
            None if map > 0 => 1,
            None => 0,
            Some(SocketAddr::V4(_)) => SERVER_V4_LEN,
            Some(SocketAddr::V6(_)) => SERVER_V6_LEN,
        };
        (FIXED_LEN + self.name.len as usize + server + map).next_multiple_of(4)
    }

    /// The map written: one that fits the stream's channels.
    fn map_on_wire(&self) -> Option<&ChannelMap> {
        self.channel_map
            .as_ref()
            .filter(|m| m.len() == self.format.channels as usize)
    }

    /// The positions of the stream's channels: as the master named them, or the default.
    pub fn positions(&self) -> ChannelMap {
        self.map_on_wire()
            .copied()
            .unwrap_or_else(|| ChannelMap::default_for(self.format.channels as usize))
    }

    /// Writes the message to `out`; returns the bytes written. The latency is rounded down to
    /// whole microseconds; it must be in 0..=u32::MAX us.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let len = self.encoded_len();
        room(out, len)?;
        let latency_us = self.latency_ns / 1000;
        let latency_us = u32::try_from(latency_us).map_err(|_| EncodeError::OutOfRange {
            field: "latency",
            value: self.latency_ns,
        })?;
        let out = &mut out[..len];
        out[0] = 0x80;
        out[1] = PT_APP;
        out[2..4].copy_from_slice(&((len / 4 - 1) as u16).to_be_bytes());
        out[4..8].copy_from_slice(&self.ssrc.to_be_bytes());
        out[8..12].copy_from_slice(&APP_NAME);
        out[12] = VERSION;
        out[13] = self.format.sample.code();
        out[14] = self.format.channels;
        out[15] = self.clock_domain.code();
        out[16..20].copy_from_slice(&self.format.rate.to_be_bytes());
        out[20..22].copy_from_slice(&self.frames_per_packet.to_be_bytes());
        out[22..24].copy_from_slice(&self.time_port.to_be_bytes());
        out[24..28].copy_from_slice(&latency_us.to_be_bytes());
        out[28..36].copy_from_slice(&self.packets_sent.to_be_bytes());
        out[36..40].copy_from_slice(&self.flags.to_be_bytes());
        let name = self.name.as_str().as_bytes();
        out[40] = name.len() as u8;
        out[41..41 + name.len()].copy_from_slice(name);
        let mut at = 41 + name.len();
        out[at..].fill(0);
        if let Some(server) = self.ntp_server {
            out[at + 1..at + 3].copy_from_slice(&server.port().to_be_bytes());
            match server.ip() {
                IpAddr::V4(a) => {
                    out[at] = 4;
                    at += 3;
                    out[at..at + 4].copy_from_slice(&a.octets());
                    at += 4;
                }
                IpAddr::V6(a) => {
                    out[at] = 6;
                    at += 3;
                    out[at..at + 16].copy_from_slice(&a.octets());
                    at += 16;
                }
            }
        }
        if let Some(m) = self.map_on_wire() {
            if self.ntp_server.is_none() {
                at += 1; // the zero byte: no server
            }
            out[at] = MAP_TAG;
            out[at + 1] = m.len() as u8;
            out[at + 2..at + 2 + m.len()].copy_from_slice(m.codes());
        }
        Ok(len)
    }

    /// Decodes a status message (bytes after its RTCP length, e.g. a compound packet's next
    /// part, are ignored).
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        need(buf, 4)?;
        let version = buf[0] >> 6;
        if version != 2 {
            return Err(DecodeError::BadVersion(version));
        }
        if buf[1] != PT_APP {
            return Err(DecodeError::Unsupported {
                field: "RTCP packet type",
                value: buf[1] as u32,
            });
        }
        if buf[0] & 0x3f != 0 {
            return Err(DecodeError::Unsupported {
                field: "APP subtype/padding",
                value: (buf[0] & 0x3f) as u32,
            });
        }
        let len = (be_u16(buf, 2) as usize + 1) * 4;
        need(buf, len)?;
        if len < FIXED_LEN {
            return Err(DecodeError::Malformed("status shorter than its fixed part"));
        }
        let buf = &buf[..len];
        if buf[8..12] != APP_NAME {
            return Err(DecodeError::Malformed("APP name is not WSYN"));
        }
        if buf[12] != VERSION {
            return Err(DecodeError::Unsupported {
                field: "status version",
                value: buf[12] as u32,
            });
        }
        let sample = SampleFormat::from_code(buf[13]).ok_or(DecodeError::Unsupported {
            field: "sample format",
            value: buf[13] as u32,
        })?;
        let clock_domain = ClockDomain::from_code(buf[15]).ok_or(DecodeError::Unsupported {
            field: "clock domain",
            value: buf[15] as u32,
        })?;
        let channels = buf[14];
        let rate = be_u32(buf, 16);
        if channels == 0 || rate == 0 {
            return Err(DecodeError::Malformed("zero channels or rate"));
        }
        let name_len = buf[40] as usize;
        if name_len > StatusName::MAX || FIXED_LEN + name_len > len {
            return Err(DecodeError::Malformed("name length"));
        }
        let name = std::str::from_utf8(&buf[FIXED_LEN..FIXED_LEN + name_len])
            .map_err(|_| DecodeError::Malformed("name is not UTF-8"))?;
        let rest = &buf[FIXED_LEN + name_len..];
        let ntp_server = decode_server(rest)?;
        let after_server = match ntp_server {
            Some(SocketAddr::V4(_)) => SERVER_V4_LEN,
            Some(SocketAddr::V6(_)) => SERVER_V6_LEN,
            None => 1,
        };
        let channel_map = decode_map(rest.get(after_server..).unwrap_or(&[]), channels)?;
        Ok(Status {
            ssrc: be_u32(buf, 4),
            format: StreamFormat {
                rate,
                channels,
                sample,
            },
            clock_domain,
            frames_per_packet: be_u16(buf, 20),
            time_port: be_u16(buf, 22),
            latency_ns: be_u32(buf, 24) as i64 * 1000,
            packets_sent: be_u64(buf, 28),
            flags: be_u32(buf, 36),
            name: StatusName::truncated(name),
            ntp_server,
            channel_map,
        })
    }
}

/// The optional channel-map block (see the module documentation): absent or padding is `None`.
fn decode_map(rest: &[u8], channels: u8) -> Result<Option<ChannelMap>, DecodeError> {
    if rest.first() != Some(&MAP_TAG) {
        return Ok(None);
    }
    need(rest, MAP_HEADER_LEN)?;
    let n = rest[1] as usize;
    if n != channels as usize {
        return Err(DecodeError::Malformed(
            "channel map count differs from channels",
        ));
    }
    need(rest, MAP_HEADER_LEN + n)?;
    ChannelMap::from_codes(&rest[MAP_HEADER_LEN..MAP_HEADER_LEN + n])
        .map(Some)
        .ok_or(DecodeError::Malformed(
            "channel map: unknown or repeated position",
        ))
}

/// The optional server block after the name (see the module documentation).
fn decode_server(rest: &[u8]) -> Result<Option<SocketAddr>, DecodeError> {
    let Some(&family) = rest.first() else {
        return Ok(None);
    };
    let len = match family {
        0 => return Ok(None),
        4 => SERVER_V4_LEN,
        6 => SERVER_V6_LEN,
        _ => {
            return Err(DecodeError::Unsupported {
                field: "NTP server address family",
                value: family as u32,
            })
        }
    };
    need(rest, len)?;
    let port = be_u16(rest, 1);
    let ip = if family == 4 {
        let mut o = [0u8; 4];
        o.copy_from_slice(&rest[3..7]);
        IpAddr::V4(Ipv4Addr::from(o))
    } else {
        let mut o = [0u8; 16];
        o.copy_from_slice(&rest[3..19]);
        IpAddr::V6(Ipv6Addr::from(o))
    };
    Ok(Some(SocketAddr::new(ip, port)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn example() -> Status {
        Status {
            ssrc: 0xCAFE_F00D,
            format: StreamFormat::DEFAULT,
            clock_domain: ClockDomain::Master,
            frames_per_packet: 361,
            time_port: 45301,
            latency_ns: 150_000_000,
            packets_sent: 0x0102_0304_0506_0708,
            flags: FLAG_AUTHENTICATED,
            name: StatusName::truncated("kitchen"),
            ntp_server: None,
            channel_map: None,
        }
    }

    #[test]
    fn a_channel_map_travels_after_the_name_with_or_without_a_server() {
        for server in [
            None,
            Some("192.0.2.7:123".parse().unwrap()),
            Some("[2001:db8::1]:11123".parse().unwrap()),
        ] {
            let mut s = example();
            s.format.channels = 6;
            s.ntp_server = server;
            s.channel_map = Some(ChannelMap::default_for(6));
            let mut out = [0u8; MAX_LEN];
            let n = s.encode(&mut out).unwrap();
            assert_eq!(n % 4, 0);
            let d = Status::decode(&out[..n]).unwrap();
            assert_eq!(d, s, "{server:?}");
            assert_eq!(d.positions().to_string(), "FL,FR,FC,LFE,RL,RR");
        }
        // Without a map: the default order; a map of the wrong size is not written.
        let mut s = example();
        assert_eq!(s.positions(), ChannelMap::default_for(2));
        s.channel_map = Some(ChannelMap::default_for(6));
        let mut out = [0u8; MAX_LEN];
        let n = s.encode(&mut out).unwrap();
        assert_eq!(Status::decode(&out[..n]).unwrap().channel_map, None);
        // A stereo map in another order (e.g. a swapped cable).
        s.channel_map = ChannelMap::from_names(&["FR", "FL"]);
        let n = s.encode(&mut out).unwrap();
        assert_eq!(
            Status::decode(&out[..n]).unwrap().positions().to_string(),
            "FR,FL"
        );
    }

    #[test]
    fn bad_channel_maps_are_refused() {
        let mut s = example();
        s.channel_map = Some(ChannelMap::default_for(2));
        let mut out = [0u8; MAX_LEN];
        let n = s.encode(&mut out).unwrap();
        let at = FIXED_LEN + 7 + 1; // after "kitchen" and the no-server byte
        assert_eq!(out[at], MAP_TAG);
        let mut bad = out;
        bad[at + 1] = 3; // count != channels
        assert!(Status::decode(&bad[..n]).is_err());
        let mut bad = out;
        bad[at + 3] = bad[at + 2]; // FL twice
        assert!(Status::decode(&bad[..n]).is_err());
        let mut bad = out;
        bad[at + 2] = 99; // unknown position
        assert!(Status::decode(&bad[..n]).is_err());
    }

    #[test]
    fn an_ntp_server_travels_after_the_name() {
        let mut s = example();
        s.clock_domain = ClockDomain::Ntp;
        s.ntp_server = Some("192.0.2.7:123".parse().unwrap());
        let mut out = [0u8; MAX_LEN];
        let n = s.encode(&mut out).unwrap();
        // 41 + 7 + 7 = 55, padded to 56.
        assert_eq!(n, 56);
        assert_eq!(out[48..56], [4, 0, 123, 192, 0, 2, 7, 0]);
        assert_eq!(Status::decode(&out[..n]), Ok(s));
        s.ntp_server = Some("[2001:db8::1]:11123".parse().unwrap());
        s.name = StatusName::truncated(&"n".repeat(64));
        let n = s.encode(&mut out).unwrap();
        assert_eq!(n, (41 + 64 + SERVER_V6_LEN).next_multiple_of(4));
        assert_eq!(Status::decode(&out[..n]), Ok(s));
        // The longest: with a 64-channel map too.
        s.format.channels = 64;
        s.channel_map = Some(ChannelMap::default_for(64));
        let mut long = [0u8; MAX_LEN];
        assert_eq!(s.encode(&mut long).unwrap(), MAX_LEN);
        assert_eq!(Status::decode(&long), Ok(s));
        // An unknown family is refused; one cut short too.
        let mut b = out;
        b[41 + 64] = 5;
        assert!(matches!(
            Status::decode(&b[..n]),
            Err(DecodeError::Unsupported { .. })
        ));
    }

    #[test]
    fn bytes_are_exactly_the_contract() {
        let mut out = [0u8; MAX_LEN];
        let n = example().encode(&mut out).unwrap();
        assert_eq!(n, 48); // 41 + 7 = 48, already a multiple of 4
        #[rustfmt::skip]
        let expected: [u8; 48] = [
            0x80, 204, 0, 11, 0xCA, 0xFE, 0xF0, 0x0D, b'W', b'S', b'Y', b'N',
            1, 1, 2, 0,
            0, 0, 0xBB, 0x80,       // 48000
            0x01, 0x69, 0xB0, 0xF5,  // 361, 45301
            0, 0x02, 0x49, 0xF0,    // 150000 us
            1, 2, 3, 4, 5, 6, 7, 8, // packets sent
            0, 0, 0, 1,             // flags
            7, b'k', b'i', b't', b'c', b'h', b'e', b'n',
        ];
        assert_eq!(out[..n], expected);
        assert_eq!(Status::decode(&out[..n]), Ok(example()));
    }

    #[test]
    fn name_padding_and_truncation() {
        let mut s = example();
        s.name = StatusName::truncated("ab");
        assert_eq!(s.encoded_len(), 44);
        let long = "é".repeat(40); // 80 bytes: cut to 64 at a char boundary
        s.name = StatusName::truncated(&long);
        assert_eq!(s.name.as_str().len(), 64);
        let mut out = [0xFFu8; MAX_LEN];
        let n = s.encode(&mut out).unwrap();
        assert_eq!(n, 108);
        assert_eq!(out[105..108], [0, 0, 0]);
        assert_eq!(Status::decode(&out[..n]).unwrap().name, s.name);
        s.name = StatusName::truncated(&"x".repeat(65));
        assert_eq!(s.name.as_str().len(), 64);
    }

    #[test]
    fn rejects_bad_messages() {
        let mut good = [0u8; MAX_LEN];
        let n = example().encode(&mut good).unwrap();
        let good = &good[..n];
        assert_eq!(
            Status::decode(&good[..40]),
            Err(DecodeError::Truncated {
                needed: 48,
                got: 40
            })
        );
        let mut b = good.to_vec();
        b[8] = b'X';
        assert_eq!(
            Status::decode(&b),
            Err(DecodeError::Malformed("APP name is not WSYN"))
        );
        let mut b = good.to_vec();
        b[13] = 9;
        assert!(matches!(
            Status::decode(&b),
            Err(DecodeError::Unsupported { .. })
        ));
        let mut b = good.to_vec();
        b[40] = 8; // name longer than the message
        assert_eq!(
            Status::decode(&b),
            Err(DecodeError::Malformed("name length"))
        );
        let mut b = good.to_vec();
        b[41] = 0xFF;
        assert_eq!(
            Status::decode(&b),
            Err(DecodeError::Malformed("name is not UTF-8"))
        );
        let mut s = example();
        s.latency_ns = -1000;
        assert!(matches!(
            s.encode(&mut [0u8; MAX_LEN]),
            Err(EncodeError::OutOfRange { .. })
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..150)) {
            let _ = Status::decode(&bytes);
        }

        #[test]
        fn mutated_messages_never_panic(
            flips in proptest::collection::vec((0usize..MAX_LEN, any::<u8>()), 0..6),
            cut in 0usize..=MAX_LEN,
        ) {
            let mut b = [0u8; MAX_LEN];
            let mut s = example();
            s.name = StatusName::truncated(&"n".repeat(64));
            s.encode(&mut b).unwrap();
            for (i, v) in flips { b[i] = v; }
            if let Ok(d) = Status::decode(&b[..cut]) {
                prop_assert!(d.name.as_str().len() <= StatusName::MAX);
            }
        }

        #[test]
        fn encode_decode_round_trip(
            ssrc in any::<u32>(), rate in 1u32.., channels in 1u8.., l24 in any::<bool>(),
            domain in 0u8..3, fpp in any::<u16>(), port in any::<u16>(),
            latency_us in any::<u32>(), sent in any::<u64>(), flags in any::<u32>(),
            name in "\\PC{0,70}", server in proptest::option::of((any::<IpAddr>(), any::<u16>())),
            with_map in any::<bool>(),
        ) {
            let s = Status {
                ssrc,
                format: StreamFormat {
                    rate,
                    channels,
                    sample: if l24 { SampleFormat::L24 } else { SampleFormat::L16 },
                },
                clock_domain: ClockDomain::from_code(domain).unwrap(),
                frames_per_packet: fpp,
                time_port: port,
                latency_ns: latency_us as i64 * 1000,
                packets_sent: sent,
                flags,
                name: StatusName::truncated(&name),
                ntp_server: server.map(|(ip, port)| SocketAddr::new(ip, port)),
                channel_map: (with_map && channels as usize <= channels::MAX)
                    .then(|| ChannelMap::default_for(channels as usize)),
            };
            let mut out = [0u8; MAX_LEN];
            let n = s.encode(&mut out).unwrap();
            prop_assert_eq!(n % 4, 0);
            prop_assert_eq!(Status::decode(&out[..n]), Ok(s));
        }
    }
}
