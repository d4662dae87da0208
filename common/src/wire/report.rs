//! A receiver's report to the master, about once a second on the master's control port: an
//! RTCP compound packet of an empty receiver report (RR, PT 201, RFC 3550 6.4.2) and an APP
//! block (PT 204) named `WSRP` with the receiver's id, room name, state, sync figures, loss
//! counts and current [`Settings`]. `docs/wire.md` describes every byte.
//!
//! The same [`Settings`] block (8 bytes) is used by the control messages ([`super::control`]).

use super::status::StatusName;
use super::{be_u16, be_u32, be_u64, check_rtcp, need, room, DecodeError, EncodeError};

/// RTCP packet type of a receiver report.
pub const PT_RR: u8 = 201;
/// RTCP packet type of an application-defined message.
pub const PT_APP: u8 = 204;
/// Name of the report's APP block.
pub const APP_NAME: [u8; 4] = *b"WSRP";
/// Layout version of the APP block.
pub const VERSION: u8 = 1;
/// Bytes of the RR in front of the APP block.
pub const RR_LEN: usize = 8;
/// Bytes of the APP block before the name.
const APP_FIXED: usize = 89;
/// Longest report: RR, APP block and a 64-byte name, padded.
pub const MAX_LEN: usize = RR_LEN + (APP_FIXED + StatusName::MAX).next_multiple_of(4);
/// Bytes of an encoded [`Settings`] block.
pub const SETTINGS_LEN: usize = 8;
/// Largest accepted trim, either way, in microseconds (5 s, the receiver's `--sink-latency`
/// range: more is a typo, not a loudspeaker's distance or a soundbar's delay).
pub const MAX_TRIM_US: i32 = 5_000_000;
/// Largest volume.
pub const MAX_VOLUME: u8 = 100;

/// Which of the stream's channels a room plays.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Channels {
    /// Every channel as sent.
    #[default]
    All,
    /// The left channel on every output channel.
    Left,
    /// The right channel on every output channel.
    Right,
    /// The mean of left and right on every output channel.
    Mono,
}

impl Channels {
    /// Wire code.
    pub fn code(self) -> u8 {
        match self {
            Channels::All => 0,
            Channels::Left => 1,
            Channels::Right => 2,
            Channels::Mono => 3,
        }
    }

    /// From a wire code.
    pub fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            0 => Channels::All,
            1 => Channels::Left,
            2 => Channels::Right,
            3 => Channels::Mono,
            _ => return None,
        })
    }

    /// The name used on command lines, in JSON and in state files.
    pub fn name(self) -> &'static str {
        match self {
            Channels::All => "all",
            Channels::Left => "left",
            Channels::Right => "right",
            Channels::Mono => "mono",
        }
    }

    /// From [`Channels::name`] (case-insensitive).
    pub fn from_name(s: &str) -> Option<Self> {
        [
            Channels::All,
            Channels::Left,
            Channels::Right,
            Channels::Mono,
        ]
        .into_iter()
        .find(|c| c.name().eq_ignore_ascii_case(s))
    }
}

/// A room's settings, as the receiver applies them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Settings {
    /// Volume 0..=100: a gain of `(volume / 100)^2` (50 is -12 dB, 100 is unity, 0 silent).
    pub volume: u8,
    /// Muted: silent, with the volume kept for unmute.
    pub muted: bool,
    /// Off: the room plays silence while its daemon keeps following the stream.
    pub off: bool,
    /// Which channels it plays.
    pub channels: Channels,
    /// Play this much earlier (positive) or later (negative), microseconds.
    pub trim_us: i32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            volume: MAX_VOLUME,
            muted: false,
            off: false,
            channels: Channels::All,
            trim_us: 0,
        }
    }
}

impl Settings {
    /// Writes the 8-byte block: volume, flags (bit 0 muted, bit 1 off), channels, 0, trim
    /// (i32 us).
    pub fn write(&self, out: &mut [u8; SETTINGS_LEN]) {
        out[0] = self.volume;
        out[1] = self.muted as u8 | (self.off as u8) << 1;
        out[2] = self.channels.code();
        out[3] = 0;
        out[4..8].copy_from_slice(&self.trim_us.to_be_bytes());
    }

    /// Reads the block at `buf[at..at + 8]` (the caller checked the length); refuses values out
    /// of range.
    pub(crate) fn read(buf: &[u8], at: usize) -> Result<Self, DecodeError> {
        let volume = buf[at];
        if volume > MAX_VOLUME {
            return Err(DecodeError::Unsupported {
                field: "volume",
                value: volume as u32,
            });
        }
        let flags = buf[at + 1];
        if flags & !3 != 0 {
            return Err(DecodeError::Unsupported {
                field: "settings flags",
                value: flags as u32,
            });
        }
        let channels = Channels::from_code(buf[at + 2]).ok_or(DecodeError::Unsupported {
            field: "channels",
            value: buf[at + 2] as u32,
        })?;
        let trim_us = be_u32(buf, at + 4) as i32;
        if trim_us.unsigned_abs() > MAX_TRIM_US as u32 {
            return Err(DecodeError::Malformed("trim beyond 5 s"));
        }
        Ok(Settings {
            volume,
            muted: flags & 1 != 0,
            off: flags & 2 != 0,
            channels,
            trim_us,
        })
    }
}

/// What a receiver is doing, as reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RoomState {
    /// No stream heard.
    #[default]
    WaitingForStream,
    /// A stream, but no clock of the master yet.
    NoClock,
    /// Clock, waiting for audio.
    WaitingForAudio,
    /// Landing the first frame.
    Starting,
    /// Playing in sync.
    Playing,
    /// The output device cannot be used.
    DeviceUnavailable,
}

impl RoomState {
    const ALL: [RoomState; 6] = [
        RoomState::WaitingForStream,
        RoomState::NoClock,
        RoomState::WaitingForAudio,
        RoomState::Starting,
        RoomState::Playing,
        RoomState::DeviceUnavailable,
    ];

    /// Wire code (its index).
    pub fn code(self) -> u8 {
        Self::ALL.iter().position(|s| *s == self).unwrap_or(0) as u8
    }

    /// From a wire code.
    pub fn from_code(c: u8) -> Option<Self> {
        Self::ALL.get(c as usize).copied()
    }

    /// A short name for lists and JSON.
    pub fn name(self) -> &'static str {
        match self {
            RoomState::WaitingForStream => "no-stream",
            RoomState::NoClock => "no-clock",
            RoomState::WaitingForAudio => "waiting",
            RoomState::Starting => "starting",
            RoomState::Playing => "playing",
            RoomState::DeviceUnavailable => "no-device",
        }
    }
}

/// A receiver's report (both RTCP parts decoded into one value; no allocation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The receiver's stable id (persisted by the receiver); its low 32 bits xor high 32 bits
    /// are the RTCP SSRC of both parts.
    pub id: u64,
    /// Room name.
    pub name: StatusName,
    /// The receiver's version (major, minor, patch).
    pub version: (u8, u8, u16),
    /// What it is doing.
    pub state: RoomState,
    /// The stream it follows (0: none).
    pub stream_ssrc: u32,
    /// Its clock of the master is locked.
    pub clock_locked: bool,
    /// Timeline minus local clock, ns.
    pub clock_offset_ns: i64,
    /// The clock model's uncertainty, ns (saturated at u32::MAX).
    pub clock_uncertainty_ns: u32,
    /// Latest measured playout error, ns (positive: early), if measured (saturated at i32).
    pub sync_error_ns: Option<i32>,
    /// Audio buffered ahead of the DAC, us.
    pub buffer_us: u32,
    /// The device's delay, us.
    pub device_delay_us: u32,
    /// Packets found missing.
    pub lost: u64,
    /// Missing packets that arrived after all.
    pub recovered: u64,
    /// Frames concealed.
    pub concealed_frames: u64,
    /// Current settings.
    pub settings: Settings,
}

/// The RTCP SSRC of a receiver id.
pub fn ssrc_of(id: u64) -> u32 {
    (id ^ (id >> 32)) as u32
}

/// Reads a name of `len` bytes at `buf[at..]` (the caller checked the length): UTF-8, at most
/// [`StatusName::MAX`] bytes.
pub(crate) fn read_name(buf: &[u8], at: usize, len: usize) -> Result<StatusName, DecodeError> {
    if len > StatusName::MAX {
        return Err(DecodeError::Malformed("name length"));
    }
    need(buf, at + len)?;
    let s = std::str::from_utf8(&buf[at..at + len])
        .map_err(|_| DecodeError::Malformed("name not UTF-8"))?;
    Ok(StatusName::truncated(s))
}

impl Report {
    /// Bytes [`Report::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        RR_LEN + (APP_FIXED + self.name.as_str().len()).next_multiple_of(4)
    }

    /// Writes the compound packet; returns its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let len = self.encoded_len();
        room(out, len)?;
        let out = &mut out[..len];
        out.fill(0);
        let ssrc = ssrc_of(self.id).to_be_bytes();
        out[0] = 0x80;
        out[1] = PT_RR;
        out[2..4].copy_from_slice(&1u16.to_be_bytes());
        out[4..8].copy_from_slice(&ssrc);
        let a = &mut out[RR_LEN..];
        a[0] = 0x80;
        a[1] = PT_APP;
        let words = (a.len() / 4 - 1) as u16;
        a[2..4].copy_from_slice(&words.to_be_bytes());
        a[4..8].copy_from_slice(&ssrc);
        a[8..12].copy_from_slice(&APP_NAME);
        a[12] = VERSION;
        a[13] = self.state.code();
        a[14] = self.clock_locked as u8 | (self.sync_error_ns.is_some() as u8) << 1;
        a[16..24].copy_from_slice(&self.id.to_be_bytes());
        a[24..28].copy_from_slice(&self.stream_ssrc.to_be_bytes());
        a[28] = self.version.0;
        a[29] = self.version.1;
        a[30..32].copy_from_slice(&self.version.2.to_be_bytes());
        a[32..40].copy_from_slice(&self.clock_offset_ns.to_be_bytes());
        a[40..44].copy_from_slice(&self.clock_uncertainty_ns.to_be_bytes());
        a[44..48].copy_from_slice(&self.sync_error_ns.unwrap_or(0).to_be_bytes());
        a[48..52].copy_from_slice(&self.buffer_us.to_be_bytes());
        a[52..56].copy_from_slice(&self.device_delay_us.to_be_bytes());
        a[56..64].copy_from_slice(&self.lost.to_be_bytes());
        a[64..72].copy_from_slice(&self.recovered.to_be_bytes());
        a[72..80].copy_from_slice(&self.concealed_frames.to_be_bytes());
        let mut s = [0u8; SETTINGS_LEN];
        self.settings.write(&mut s);
        a[80..88].copy_from_slice(&s);
        let name = self.name.as_str().as_bytes();
        a[88] = name.len() as u8;
        a[89..89 + name.len()].copy_from_slice(name);
        Ok(len)
    }

    /// Decodes a report: an RR without report blocks (or with some, which are skipped) followed
    /// by the `WSRP` APP block. Bytes after the APP block are ignored.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        need(buf, RR_LEN)?;
        check_rtcp(buf, PT_RR)?;
        let rr_len = (be_u16(buf, 2) as usize + 1) * 4;
        if rr_len < RR_LEN + 24 * (buf[0] & 0x1f) as usize {
            return Err(DecodeError::Malformed("RR length"));
        }
        need(buf, rr_len + 4)?;
        let a = &buf[rr_len..];
        check_rtcp(a, PT_APP)?;
        let app_len = (be_u16(a, 2) as usize + 1) * 4;
        need(a, app_len.max(12))?;
        if a[8..12] != APP_NAME {
            return Err(DecodeError::Malformed("APP block is not WSRP"));
        }
        if app_len < APP_FIXED {
            return Err(DecodeError::Truncated {
                needed: rr_len + APP_FIXED,
                got: rr_len + app_len,
            });
        }
        if a[12] != VERSION {
            return Err(DecodeError::Unsupported {
                field: "report version",
                value: a[12] as u32,
            });
        }
        let state = RoomState::from_code(a[13]).ok_or(DecodeError::Unsupported {
            field: "room state",
            value: a[13] as u32,
        })?;
        let flags = a[14];
        let name_len = a[88] as usize;
        if APP_FIXED + name_len > app_len {
            return Err(DecodeError::Malformed("name length"));
        }
        let name = read_name(a, 89, name_len)?;
        let id = be_u64(a, 16);
        if be_u32(buf, 4) != ssrc_of(id) || be_u32(a, 4) != ssrc_of(id) {
            return Err(DecodeError::Malformed(
                "SSRC does not match the receiver id",
            ));
        }
        Ok(Report {
            id,
            name,
            version: (a[28], a[29], be_u16(a, 30)),
            state,
            stream_ssrc: be_u32(a, 24),
            clock_locked: flags & 1 != 0,
            clock_offset_ns: be_u64(a, 32) as i64,
            clock_uncertainty_ns: be_u32(a, 40),
            sync_error_ns: (flags & 2 != 0).then_some(be_u32(a, 44) as i32),
            buffer_us: be_u32(a, 48),
            device_delay_us: be_u32(a, 52),
            lost: be_u64(a, 56),
            recovered: be_u64(a, 64),
            concealed_frames: be_u64(a, 72),
            settings: Settings::read(a, 80)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn example() -> Report {
        Report {
            id: 0x0123_4567_89ab_cdef,
            name: StatusName::truncated("kitchen"),
            version: (0, 1, 0),
            state: RoomState::Playing,
            stream_ssrc: 0xabcd,
            clock_locked: true,
            clock_offset_ns: -5_000_000_000,
            clock_uncertainty_ns: 12_000,
            sync_error_ns: Some(-3_000),
            buffer_us: 140_000,
            device_delay_us: 10_000,
            lost: 3,
            recovered: 2,
            concealed_frames: 361,
            settings: Settings {
                volume: 50,
                muted: false,
                off: false,
                channels: Channels::Left,
                trim_us: -2_500,
            },
        }
    }

    #[test]
    fn layout_is_as_documented() {
        let mut b = [0u8; MAX_LEN];
        let r = example();
        let n = r.encode(&mut b).unwrap();
        assert_eq!(n, 8 + 96, "89 + 7 name bytes = 96");
        assert_eq!(&b[..4], &[0x80, 201, 0, 1]);
        assert_eq!(&b[8..12], &[0x80, 204, 0, 23]);
        assert_eq!(&b[16..20], b"WSRP");
        assert_eq!(&b[88..96], &[50, 0, 1, 0, 0xff, 0xff, 0xf6, 0x3c]);
        assert_eq!(b[96], 7);
        assert_eq!(&b[97..104], b"kitchen");
        assert_eq!(Report::decode(&b[..n]), Ok(r));
        assert_eq!(MAX_LEN, 8 + 156);
    }

    #[test]
    fn truncated_and_foreign_reports_are_refused() {
        let mut b = [0u8; MAX_LEN];
        let n = example().encode(&mut b).unwrap();
        for cut in 0..n {
            assert!(Report::decode(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = b;
        bad[16..20].copy_from_slice(b"WSYN");
        assert!(Report::decode(&bad[..n]).is_err());
        let mut bad = b;
        bad[88] = 101;
        assert!(matches!(
            Report::decode(&bad[..n]),
            Err(DecodeError::Unsupported {
                field: "volume",
                ..
            })
        ));
        let mut bad = b;
        bad[5] ^= 1;
        assert!(Report::decode(&bad[..n]).is_err(), "SSRC mismatch");
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Report::decode(&bytes);
        }

        #[test]
        fn mutated_reports_never_panic(
            flips in proptest::collection::vec((0usize..MAX_LEN, any::<u8>()), 0..6),
            cut in 0usize..=MAX_LEN,
        ) {
            let mut b = [0u8; MAX_LEN];
            let mut r = example();
            r.name = StatusName::truncated(&"n".repeat(64));
            r.encode(&mut b).unwrap();
            for (i, v) in flips { b[i] = v; }
            if let Ok(d) = Report::decode(&b[..cut]) {
                prop_assert!(d.name.as_str().len() <= StatusName::MAX);
                prop_assert!(d.settings.volume <= MAX_VOLUME);
            }
        }

        #[test]
        fn round_trip(
            id in any::<u64>(), name in "\\PC{0,70}", state in 0u8..6, ssrc in any::<u32>(),
            locked in any::<bool>(), offset in any::<i64>(), unc in any::<u32>(),
            err in proptest::option::of(any::<i32>()), buffer in any::<u32>(),
            delay in any::<u32>(), lost in any::<u64>(), rec in any::<u64>(),
            conc in any::<u64>(), volume in 0u8..=100, muted in any::<bool>(),
            off in any::<bool>(), ch in 0u8..4, trim in -MAX_TRIM_US..=MAX_TRIM_US,
            version in any::<(u8, u8, u16)>(),
        ) {
            let r = Report {
                id,
                name: StatusName::truncated(&name),
                version,
                state: RoomState::from_code(state).unwrap(),
                stream_ssrc: ssrc,
                clock_locked: locked,
                clock_offset_ns: offset,
                clock_uncertainty_ns: unc,
                sync_error_ns: err,
                buffer_us: buffer,
                device_delay_us: delay,
                lost,
                recovered: rec,
                concealed_frames: conc,
                settings: Settings {
                    volume, muted, off, channels: Channels::from_code(ch).unwrap(), trim_us: trim,
                },
            };
            let mut b = [0u8; MAX_LEN];
            let n = r.encode(&mut b).unwrap();
            prop_assert_eq!(n, r.encoded_len());
            prop_assert_eq!(n % 4, 0);
            prop_assert_eq!(Report::decode(&b[..n]), Ok(r));
        }
    }
}
