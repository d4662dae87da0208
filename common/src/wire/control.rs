//! The control vocabulary on the master's control port: RTCP APP messages named `WSCM`, the
//! message kind in the RTCP subtype field. One small set used by `wavesync rooms`, `wavesync
//! room`, and later the web page and calibration:
//!
//! | subtype | message | direction |
//! |---|---|---|
//! | 1 | [`Message::List`]: send the room table from entry `start` | client -> master |
//! | 2 | [`Message::Rooms`]: a page of the room table | master -> client |
//! | 3 | [`Message::Set`]: change a room's setting | client -> master |
//! | 4 | [`Message::Command`]: change your setting | master -> receiver |
//! | 5 | [`Message::Ack`]: done (or refused), here are my settings | receiver -> master |
//! | 6 | [`Message::Reply`]: the outcome of a `Set` | master -> client |
//!
//! Every message carries a request id chosen by its first sender and echoed in the answer.
//! Commands carry absolute values (volume 40, trim +5 ms), so repeating one is harmless:
//! clients simply send again when no answer comes. `docs/wire.md` describes every byte.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::report::{read_name, Channels, Report, Settings, MAX_TRIM_US, MAX_VOLUME, PT_APP};
use super::status::StatusName;
use super::{be_u16, be_u32, check_rtcp, need, room, DecodeError, EncodeError};

/// Name of the APP messages.
pub const APP_NAME: [u8; 4] = *b"WSCM";
/// Bytes of the common header: RTCP APP header, name and request id.
pub const HEADER_LEN: usize = 16;
/// Bytes of one [`RoomEntry`] before its report.
pub const ENTRY_FIXED: usize = 24;
/// Largest message the master writes (a page of rooms); fits one Ethernet frame.
pub const MAX_LEN: usize = 1400;
/// Rooms in one [`Message::Rooms`] page at most, whatever their names.
pub const MAX_PAGE: usize = (MAX_LEN - HEADER_LEN - 8) / (ENTRY_FIXED + super::report::MAX_LEN);

/// What a command changes. Values are absolute, so a repeated command changes nothing more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// Volume 0..=100.
    Volume(u8),
    /// Mute (the volume is kept).
    Mute,
    /// Unmute.
    Unmute,
    /// Trim in microseconds (positive plays earlier), within +-[`MAX_TRIM_US`].
    Trim(i32),
    /// Which channels to play.
    Channels(Channels),
    /// Stop playing (silence) without stopping the daemon.
    Off,
    /// Play again.
    On,
    /// A new room name.
    Rename(StatusName),
}

impl std::fmt::Display for Command {
    /// As on the command line: `volume 50`, `trim +1.250 ms`, `channels left`, `rename "x"`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Volume(v) => write!(f, "volume {v}"),
            Command::Mute => f.write_str("mute"),
            Command::Unmute => f.write_str("unmute"),
            Command::Trim(t) => write!(f, "trim {:+.3} ms", *t as f64 / 1e3),
            Command::Channels(c) => write!(f, "channels {}", c.name()),
            Command::Off => f.write_str("off"),
            Command::On => f.write_str("on"),
            Command::Rename(n) => write!(f, "rename {:?}", n.as_str()),
        }
    }
}

/// Why a command is refused (before it reaches a receiver, or by it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum CommandError {
    /// Volume above 100.
    #[error("volume {0} is out of range (0..=100)")]
    Volume(i64),
    /// Trim beyond 5 s either way.
    #[error("trim {0} us is out of range (+-5 s)")]
    Trim(i64),
    /// A channel selection this version does not know.
    #[error("unknown channel selection {0}")]
    Channels(u8),
    /// An empty new name.
    #[error("a room name cannot be empty")]
    EmptyName,
    /// An operation code this version does not know.
    #[error("unknown operation {0}")]
    Op(u8),
}

impl Command {
    fn op(&self) -> u8 {
        match self {
            Command::Volume(_) => 1,
            Command::Mute => 2,
            Command::Unmute => 3,
            Command::Trim(_) => 4,
            Command::Channels(_) => 5,
            Command::Off => 6,
            Command::On => 7,
            Command::Rename(_) => 8,
        }
    }

    fn value(&self) -> i32 {
        match *self {
            Command::Volume(v) => v as i32,
            Command::Trim(t) => t,
            Command::Channels(c) => c.code() as i32,
            _ => 0,
        }
    }

    /// The command of operation `op` with `value` and `name`, checked.
    pub fn from_parts(op: u8, value: i64, name: StatusName) -> Result<Self, CommandError> {
        Ok(match op {
            1 => match u8::try_from(value) {
                Ok(v) if v <= MAX_VOLUME => Command::Volume(v),
                _ => return Err(CommandError::Volume(value)),
            },
            2 => Command::Mute,
            3 => Command::Unmute,
            4 => match i32::try_from(value) {
                Ok(t) if t.unsigned_abs() <= MAX_TRIM_US as u32 => Command::Trim(t),
                _ => return Err(CommandError::Trim(value)),
            },
            5 => match u8::try_from(value).ok().and_then(Channels::from_code) {
                Some(c) => Command::Channels(c),
                None => return Err(CommandError::Channels(value.clamp(0, 255) as u8)),
            },
            6 => Command::Off,
            7 => Command::On,
            8 if name.as_str().trim().is_empty() => return Err(CommandError::EmptyName),
            8 => Command::Rename(name),
            _ => return Err(CommandError::Op(op)),
        })
    }

    /// `settings` with this command applied (a rename leaves them as they are).
    pub fn apply(&self, mut s: Settings) -> Settings {
        match *self {
            Command::Volume(v) => s.volume = v,
            Command::Mute => s.muted = true,
            Command::Unmute => s.muted = false,
            Command::Trim(t) => s.trim_us = t,
            Command::Channels(c) => s.channels = c,
            Command::Off => s.off = true,
            Command::On => s.off = false,
            Command::Rename(_) => {}
        }
        s
    }
}

/// The outcome of a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Applied (or already so).
    Done,
    /// No room of that name is in the table.
    UnknownRoom,
    /// The value is out of range.
    BadValue,
    /// The room is offline (no report for a while).
    Offline,
    /// The receiver did not acknowledge in time.
    NoAnswer,
    /// Two rooms have that name: use the id.
    Ambiguous,
    /// The receiver refused it (it follows another master).
    Refused,
    /// Too many commands waiting for an answer: try again.
    Busy,
}

impl Outcome {
    const ALL: [Outcome; 8] = [
        Outcome::Done,
        Outcome::UnknownRoom,
        Outcome::BadValue,
        Outcome::Offline,
        Outcome::NoAnswer,
        Outcome::Ambiguous,
        Outcome::Refused,
        Outcome::Busy,
    ];

    /// Wire code (its index).
    pub fn code(self) -> u8 {
        Self::ALL.iter().position(|o| *o == self).unwrap_or(0) as u8
    }

    /// From a wire code.
    pub fn from_code(c: u8) -> Option<Self> {
        Self::ALL.get(c as usize).copied()
    }

    /// What a person reads.
    pub fn describe(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::UnknownRoom => "no such room",
            Outcome::BadValue => "value out of range",
            Outcome::Offline => "the room is offline",
            Outcome::NoAnswer => "the room did not answer",
            Outcome::Ambiguous => "several rooms have that name",
            Outcome::Refused => "the receiver refused it",
            Outcome::Busy => "the master is busy; try again",
        }
    }
}

/// The outcome of a command, with the room's settings and name after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    /// What happened.
    pub outcome: Outcome,
    /// The room's settings (as last known, when not done).
    pub settings: Settings,
    /// The room's name (the asked name when it is unknown).
    pub name: StatusName,
}

/// A room in the table as the master lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoomEntry {
    /// Where its reports come from.
    pub address: SocketAddr,
    /// No report for a while.
    pub offline: bool,
    /// Milliseconds since its last report.
    pub age_ms: u32,
    /// Its last report (settings updated by acknowledged commands).
    pub report: Report,
}

impl RoomEntry {
    /// Bytes the entry takes in a page.
    pub fn encoded_len(&self) -> usize {
        ENTRY_FIXED + self.report.encoded_len()
    }

    fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let len = self.encoded_len();
        room(out, len)?;
        out[..ENTRY_FIXED].fill(0);
        let (family, ip) = match self.address.ip() {
            IpAddr::V4(a) => (4, a.to_ipv6_mapped().octets()),
            IpAddr::V6(a) => (6, a.octets()),
        };
        out[0] = family;
        out[1] = self.offline as u8;
        out[2..4].copy_from_slice(&self.address.port().to_be_bytes());
        out[4..20].copy_from_slice(&ip);
        out[20..24].copy_from_slice(&self.age_ms.to_be_bytes());
        self.report.encode(&mut out[ENTRY_FIXED..])?;
        Ok(len)
    }

    fn decode(buf: &[u8]) -> Result<(Self, usize), DecodeError> {
        need(buf, ENTRY_FIXED + super::report::RR_LEN + 4)?;
        let mut ip = [0u8; 16];
        ip.copy_from_slice(&buf[4..20]);
        let v6 = Ipv6Addr::from(ip);
        let ip = match buf[0] {
            4 => IpAddr::V4(v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED)),
            6 => IpAddr::V6(v6),
            f => {
                return Err(DecodeError::Unsupported {
                    field: "address family",
                    value: f as u32,
                })
            }
        };
        let r = &buf[ENTRY_FIXED..];
        let rr_len = (be_u16(r, 2) as usize + 1) * 4;
        need(r, rr_len + 4)?;
        let app_len = (be_u16(r, rr_len + 2) as usize + 1) * 4;
        let len = rr_len + app_len;
        need(r, len)?;
        let report = Report::decode(&r[..len])?;
        Ok((
            RoomEntry {
                address: SocketAddr::new(ip, be_u16(buf, 2)),
                offline: buf[1] & 1 != 0,
                age_ms: be_u32(buf, 20),
                report,
            },
            ENTRY_FIXED + len,
        ))
    }
}

/// A decoded control message (borrowing a page's entries from the datagram).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// Asks for the room table from entry `start`.
    List {
        /// First entry wanted.
        start: u16,
    },
    /// A page of the room table.
    Rooms(Page<'a>),
    /// Asks the master to change room `room`'s setting (the name, or the id in 16 hex digits).
    Set {
        /// The room.
        room: StatusName,
        /// What to change.
        command: Command,
    },
    /// Tells a receiver to change its setting.
    Command(Command),
    /// A receiver's answer to a [`Message::Command`].
    Ack(Answer),
    /// The master's answer to a [`Message::Set`].
    Reply(Answer),
}

/// A page of the room table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page<'a> {
    /// Rooms in the table.
    pub total: u16,
    /// Index of this page's first entry.
    pub start: u16,
    count: u8,
    entries: &'a [u8],
}

impl<'a> Page<'a> {
    /// Entries in this page.
    pub fn count(&self) -> usize {
        self.count as usize
    }

    /// The entries; a malformed one ends the iteration with its error.
    pub fn entries(&self) -> impl Iterator<Item = Result<RoomEntry, DecodeError>> + 'a {
        let mut rest = self.entries;
        let mut left = self.count;
        std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            left -= 1;
            match RoomEntry::decode(rest) {
                Ok((e, n)) => {
                    rest = &rest[n..];
                    Some(Ok(e))
                }
                Err(err) => {
                    left = 0;
                    Some(Err(err))
                }
            }
        })
    }
}

/// A control message with its header fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The sender's id (a client's random id, the stream id, a receiver's SSRC); informative.
    pub ssrc: u32,
    /// The request id, echoed in the answer.
    pub request: u32,
    /// The message.
    pub message: Message<'a>,
}

/// The header of a control message: subtype and request id, so that a message whose body is
/// refused can still be answered.
pub fn header(buf: &[u8]) -> Result<(u8, u32), DecodeError> {
    need(buf, HEADER_LEN)?;
    check_rtcp(buf, PT_APP)?;
    if buf[8..12] != APP_NAME {
        return Err(DecodeError::Malformed("not a WSCM message"));
    }
    let len = (be_u16(buf, 2) as usize + 1) * 4;
    need(buf, len)?;
    Ok((buf[0] & 0x1f, be_u32(buf, 12)))
}

/// Whether `buf` looks like a control message (RTCP APP named `WSCM`); for demultiplexing.
pub fn is_control(buf: &[u8]) -> bool {
    buf.len() >= HEADER_LEN && buf[0] >> 6 == 2 && buf[1] == PT_APP && buf[8..12] == APP_NAME
}

impl<'a> Envelope<'a> {
    /// Decodes a control message (bytes after its RTCP length are ignored).
    pub fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let (subtype, request) = header(buf)?;
        let len = (be_u16(buf, 2) as usize + 1) * 4;
        let b = &buf[..len];
        let message = match subtype {
            1 => {
                need(b, HEADER_LEN + 4)?;
                Message::List {
                    start: be_u16(b, 16),
                }
            }
            2 => {
                need(b, HEADER_LEN + 8)?;
                Message::Rooms(Page {
                    total: be_u16(b, 16),
                    start: be_u16(b, 18),
                    count: b[20],
                    entries: &b[HEADER_LEN + 8..],
                })
            }
            3 | 4 => {
                need(b, HEADER_LEN + 8)?;
                let (room_len, name_len) = (b[17] as usize, b[18] as usize);
                let room = read_name(b, 24, room_len)?;
                let name = read_name(b, 24 + room_len, name_len)?;
                let command = Command::from_parts(b[16], be_u32(b, 20) as i32 as i64, name)
                    .map_err(|_| DecodeError::Malformed("command value"))?;
                if subtype == 3 {
                    Message::Set { room, command }
                } else {
                    Message::Command(command)
                }
            }
            5 | 6 => {
                need(b, HEADER_LEN + 13)?;
                let outcome = Outcome::from_code(b[16]).ok_or(DecodeError::Unsupported {
                    field: "outcome",
                    value: b[16] as u32,
                })?;
                let answer = Answer {
                    outcome,
                    settings: Settings::read(b, 20)?,
                    name: read_name(b, 29, b[28] as usize)?,
                };
                if subtype == 5 {
                    Message::Ack(answer)
                } else {
                    Message::Reply(answer)
                }
            }
            s => {
                return Err(DecodeError::Unsupported {
                    field: "control subtype",
                    value: s as u32,
                })
            }
        };
        Ok(Envelope {
            ssrc: be_u32(buf, 4),
            request,
            message,
        })
    }
}

fn start(out: &mut [u8], len: usize, subtype: u8, ssrc: u32, request: u32) -> usize {
    let len = len.next_multiple_of(4);
    out[..len].fill(0);
    write_header(out, len, subtype, ssrc, request);
    len
}

/// Writes the common header of a message of `len` bytes (a multiple of 4, at least 16).
fn write_header(out: &mut [u8], len: usize, subtype: u8, ssrc: u32, request: u32) {
    out[0] = 0x80 | subtype;
    out[1] = PT_APP;
    out[2..4].copy_from_slice(&((len / 4 - 1) as u16).to_be_bytes());
    out[4..8].copy_from_slice(&ssrc.to_be_bytes());
    out[8..12].copy_from_slice(&APP_NAME);
    out[12..16].copy_from_slice(&request.to_be_bytes());
}

/// Writes a `List` request.
pub fn encode_list(
    ssrc: u32,
    request: u32,
    from: u16,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    room(out, HEADER_LEN + 4)?;
    let len = start(out, HEADER_LEN + 4, 1, ssrc, request);
    out[16..18].copy_from_slice(&from.to_be_bytes());
    Ok(len)
}

/// Writes a `Set` (`room`: `Some`) or a `Command` (`None`).
pub fn encode_command(
    ssrc: u32,
    request: u32,
    room_name: Option<&StatusName>,
    command: &Command,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let r = room_name.map(|n| n.as_str().as_bytes()).unwrap_or_default();
    let n = match command {
        Command::Rename(n) => n.as_str().as_bytes(),
        _ => &[],
    };
    let raw = HEADER_LEN + 8 + r.len() + n.len();
    room(out, raw.next_multiple_of(4))?;
    let subtype = if room_name.is_some() { 3 } else { 4 };
    let len = start(out, raw, subtype, ssrc, request);
    out[16] = command.op();
    out[17] = r.len() as u8;
    out[18] = n.len() as u8;
    out[20..24].copy_from_slice(&command.value().to_be_bytes());
    out[24..24 + r.len()].copy_from_slice(r);
    out[24 + r.len()..24 + r.len() + n.len()].copy_from_slice(n);
    Ok(len)
}

/// Writes an `Ack` (`to_client`: false) or a `Reply` (true).
pub fn encode_answer(
    ssrc: u32,
    request: u32,
    to_client: bool,
    answer: &Answer,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let name = answer.name.as_str().as_bytes();
    let raw = HEADER_LEN + 13 + name.len();
    room(out, raw.next_multiple_of(4))?;
    let len = start(out, raw, if to_client { 6 } else { 5 }, ssrc, request);
    out[16] = answer.outcome.code();
    let mut s = [0u8; super::report::SETTINGS_LEN];
    answer.settings.write(&mut s);
    out[20..28].copy_from_slice(&s);
    out[28] = name.len() as u8;
    out[29..29 + name.len()].copy_from_slice(name);
    Ok(len)
}

/// Writes a page of rooms: as many of `entries` (from index `from` of a table of `total`) as fit
/// in `out` and [`MAX_LEN`]; returns the bytes written and the entries taken.
pub fn encode_rooms<'e>(
    ssrc: u32,
    request: u32,
    total: u16,
    from: u16,
    entries: impl Iterator<Item = &'e RoomEntry>,
    out: &mut [u8],
) -> Result<(usize, usize), EncodeError> {
    let limit = out.len().min(MAX_LEN);
    room(out, HEADER_LEN + 8)?;
    let mut at = HEADER_LEN + 8;
    out[..at].fill(0);
    let mut count = 0usize;
    for e in entries {
        if count == MAX_PAGE || at + e.encoded_len() > limit {
            break;
        }
        at += e.encode(&mut out[at..limit])?;
        count += 1;
    }
    // Entries are multiples of 4 bytes, so the page is too.
    write_header(out, at, 2, ssrc, request);
    let len = at;
    out[16..18].copy_from_slice(&total.to_be_bytes());
    out[18..20].copy_from_slice(&from.to_be_bytes());
    out[20] = count as u8;
    Ok((len, count))
}

#[cfg(test)]
mod tests {
    use super::super::report::RoomState;
    use super::*;
    use proptest::prelude::*;

    fn entry(i: u64) -> RoomEntry {
        RoomEntry {
            address: SocketAddr::from(([192, 168, 1, i as u8], 40_000)),
            offline: i % 2 == 0,
            age_ms: 700,
            report: Report {
                id: i,
                name: StatusName::truncated(&format!("room {i}")),
                state: RoomState::Playing,
                ..Report::default()
            },
        }
    }

    #[test]
    fn every_message_round_trips() {
        let mut b = [0u8; MAX_LEN];
        let n = encode_list(1, 2, 3, &mut b).unwrap();
        assert_eq!(n, 20);
        assert_eq!(&b[..4], &[0x81, 204, 0, 4]);
        let e = Envelope::decode(&b[..n]).unwrap();
        assert_eq!((e.ssrc, e.request), (1, 2));
        assert_eq!(e.message, Message::List { start: 3 });

        let kitchen = StatusName::truncated("kitchen");
        for c in [
            Command::Volume(50),
            Command::Mute,
            Command::Unmute,
            Command::Trim(-1500),
            Command::Channels(Channels::Mono),
            Command::Off,
            Command::On,
            Command::Rename(StatusName::truncated("bath")),
        ] {
            let n = encode_command(7, 9, Some(&kitchen), &c, &mut b).unwrap();
            let e = Envelope::decode(&b[..n]).unwrap();
            assert_eq!(
                e.message,
                Message::Set {
                    room: kitchen,
                    command: c
                }
            );
            let n = encode_command(7, 9, None, &c, &mut b).unwrap();
            assert_eq!(
                Envelope::decode(&b[..n]).unwrap().message,
                Message::Command(c)
            );
        }
        let a = Answer {
            outcome: Outcome::UnknownRoom,
            settings: Settings::default(),
            name: kitchen,
        };
        let n = encode_answer(1, 5, true, &a, &mut b).unwrap();
        assert_eq!(
            Envelope::decode(&b[..n]).unwrap().message,
            Message::Reply(a)
        );
        let n = encode_answer(1, 5, false, &a, &mut b).unwrap();
        assert_eq!(Envelope::decode(&b[..n]).unwrap().message, Message::Ack(a));
    }

    #[test]
    fn pages_hold_what_fits_and_say_so() {
        let rooms: Vec<RoomEntry> = (0..20).map(entry).collect();
        let mut b = [0u8; MAX_LEN];
        let (n, taken) = encode_rooms(1, 2, 20, 0, rooms.iter(), &mut b).unwrap();
        assert!(n <= MAX_LEN && taken > 0 && taken < 20, "{n} {taken}");
        let Message::Rooms(page) = Envelope::decode(&b[..n]).unwrap().message else {
            panic!("not a page")
        };
        assert_eq!((page.total, page.start, page.count()), (20, 0, taken));
        let got: Vec<RoomEntry> = page.entries().map(|e| e.unwrap()).collect();
        assert_eq!(got, rooms[..taken]);
        // An empty table is one empty page.
        let (n, taken) = encode_rooms(1, 2, 0, 0, [].iter(), &mut b).unwrap();
        assert_eq!((n, taken), (24, 0));
    }

    #[test]
    fn absurd_values_are_refused() {
        let none = StatusName::default();
        assert_eq!(
            Command::from_parts(1, 500, none),
            Err(CommandError::Volume(500))
        );
        assert_eq!(
            Command::from_parts(4, 600_000_000, none),
            Err(CommandError::Trim(600_000_000))
        );
        assert_eq!(
            Command::from_parts(8, 0, none),
            Err(CommandError::EmptyName)
        );
        assert_eq!(Command::from_parts(99, 0, none), Err(CommandError::Op(99)));
        // On the wire too: a Set with volume 500 does not decode, but its header does.
        let mut b = [0u8; 64];
        let n = encode_command(1, 77, Some(&none), &Command::Volume(100), &mut b).unwrap();
        b[23] = 244; // value 500 = 0x1f4
        b[22] = 1;
        assert!(Envelope::decode(&b[..n]).is_err());
        assert_eq!(header(&b[..n]), Ok((3, 77)));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(e) = Envelope::decode(&bytes) {
                if let Message::Rooms(p) = e.message {
                    for x in p.entries() { let _ = x; }
                }
            }
        }

        #[test]
        fn mutated_pages_never_panic(
            flips in proptest::collection::vec((0usize..MAX_LEN, any::<u8>()), 0..8),
            cut in 0usize..=MAX_LEN,
        ) {
            let rooms: Vec<RoomEntry> = (0..7).map(entry).collect();
            let mut b = [0u8; MAX_LEN];
            let (n, _) = encode_rooms(1, 2, 7, 0, rooms.iter(), &mut b).unwrap();
            for (i, v) in flips { if i < n { b[i] = v; } }
            if let Ok(Envelope { message: Message::Rooms(p), .. }) = Envelope::decode(&b[..cut]) {
                prop_assert!(p.entries().count() <= p.count());
            }
        }

        #[test]
        fn truncated_messages_are_refused(cut in 0usize..28, which in 0usize..3) {
            let mut b = [0u8; 64];
            let name = StatusName::truncated("living room");
            let n = match which {
                0 => encode_list(1, 2, 0, &mut b).unwrap(),
                1 => encode_command(1, 2, Some(&name), &Command::Volume(3), &mut b).unwrap(),
                _ => encode_answer(1, 2, true, &Answer {
                    outcome: Outcome::Done, settings: Settings::default(), name,
                }, &mut b).unwrap(),
            };
            prop_assume!(cut < n);
            prop_assert!(Envelope::decode(&b[..cut]).is_err());
        }

        #[test]
        fn commands_round_trip(op in 1u8..=8, value in any::<i32>(), name in "\\PC{1,70}") {
            let name = StatusName::truncated(&name);
            if let Ok(c) = Command::from_parts(op, value as i64, name) {
                let mut b = [0u8; 200];
                let n = encode_command(3, 4, Some(&name), &c, &mut b).unwrap();
                prop_assert_eq!(
                    Envelope::decode(&b[..n]).unwrap().message,
                    Message::Set { room: name, command: c }
                );
            }
        }
    }
}
