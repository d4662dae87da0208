//! The master's room table, sans-I/O: receivers' reports in, the table and relayed commands
//! out. Lives beside the NACK peers in [`crate::sender::SenderCore`], which hands it every
//! report and control message from the control port and sends what it returns.
//!
//! - A room appears with its first report and goes `offline` after [`OFFLINE_AFTER_NS`] without
//!   one (three missed reports); a master restart rebuilds the table from the next reports.
//! - Memory is bounded whatever arrives: at most [`RoomPolicy::max_rooms`] rooms and
//!   [`RoomPolicy::max_per_ip`] per source address (a flood of fake ids from one host only
//!   replaces that host's own oldest entries); when the table is full the oldest offline room
//!   makes way, and a new room is refused while every room is online. Commands waiting for
//!   an acknowledgement and answers waiting to go out are bounded too.
//! - `Set` from a client: checked, then sent to the room's receiver every
//!   [`RESEND_NS`] until it acknowledges or [`ANSWER_TIMEOUT_NS`] passes; the client gets one
//!   `Reply` (done with the new settings, or why not).

use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::time::TimelineNs;
use crate::wire::control::{
    self, Answer, Command, Envelope, Message, Outcome, RoomEntry, MAX_PAGE,
};
use crate::wire::report::{Report, Settings};
use crate::wire::status::StatusName;

/// A room with no report for this long is offline (reports come about once a second).
pub const OFFLINE_AFTER_NS: i64 = 3_500_000_000;
/// A command is sent again this often until acknowledged.
pub const RESEND_NS: i64 = 250_000_000;
/// A command not acknowledged within this is answered `no answer`.
pub const ANSWER_TIMEOUT_NS: i64 = 1_000_000_000;

/// Something a person wants to read in the master's log, one line each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoomEvent {
    /// A room reported for the first time (or again, after it was dropped).
    Appeared {
        /// Its name.
        name: StatusName,
        /// Where its reports come from.
        address: SocketAddr,
    },
    /// A room missed three reports.
    Offline {
        /// Its name.
        name: StatusName,
    },
    /// An offline room reports again.
    Back {
        /// Its name.
        name: StatusName,
        /// Where its reports come from now.
        address: SocketAddr,
    },
    /// A room acknowledged a command.
    Changed {
        /// Its name (after a rename).
        name: StatusName,
        /// Its settings now.
        settings: Settings,
    },
}

/// Events waiting to be read at most (more are dropped: a flood must not grow anything).
const MAX_EVENTS: usize = 16;
/// How often the table looks for rooms that went offline.
const OFFLINE_SCAN_NS: i64 = 500_000_000;

/// Limits of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoomPolicy {
    /// Rooms kept at most.
    pub max_rooms: usize,
    /// Rooms from one IP address at most.
    pub max_per_ip: usize,
    /// Commands waiting for an acknowledgement at most.
    pub max_pending: usize,
    /// Answers waiting to be sent at most.
    pub max_queued: usize,
}

impl Default for RoomPolicy {
    fn default() -> Self {
        RoomPolicy {
            max_rooms: 256,
            max_per_ip: 8,
            max_pending: 32,
            max_queued: 64,
        }
    }
}

/// Counters of the table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoomStats {
    /// Reports taken.
    pub reports: u64,
    /// Reports and control messages that did not decode.
    pub malformed: u64,
    /// New rooms refused: the table was full of online rooms.
    pub rooms_refused: u64,
    /// Rooms dropped to make way (oldest offline, or the oldest of a crowded address).
    pub rooms_evicted: u64,
    /// List requests answered.
    pub lists: u64,
    /// Set requests taken.
    pub sets: u64,
    /// Set requests answered with an error before reaching a receiver.
    pub sets_refused: u64,
    /// Commands sent to receivers (repeats included).
    pub commands_sent: u64,
    /// Commands acknowledged.
    pub acks: u64,
    /// Commands never acknowledged.
    pub no_answer: u64,
    /// Answers dropped because the queue was full.
    pub dropped: u64,
    /// Events dropped because nobody read them.
    pub events_dropped: u64,
}

#[derive(Clone, Copy, Debug)]
struct Room {
    address: SocketAddr,
    last_seen: TimelineNs,
    report: Report,
    /// Said to be offline in an event.
    offline: bool,
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    client: SocketAddr,
    request: u32,
    id: u64,
    command: Command,
    cmd_id: u32,
    next_send: TimelineNs,
    deadline: TimelineNs,
}

#[derive(Clone, Copy, Debug)]
enum Out {
    Page {
        to: SocketAddr,
        request: u32,
        start: u16,
    },
    Reply {
        to: SocketAddr,
        request: u32,
        answer: Answer,
    },
}

/// The room table. See the module documentation.
#[derive(Debug)]
pub struct RoomTable {
    policy: RoomPolicy,
    ssrc: u32,
    rooms: Vec<Room>,
    pending: Vec<Pending>,
    out: VecDeque<Out>,
    next_cmd: u32,
    events: VecDeque<RoomEvent>,
    next_scan: TimelineNs,
    stats: RoomStats,
}

/// Where a datagram from [`RoomTable::poll_transmit`] goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoomTransmit {
    /// Destination (a client or a receiver).
    pub to: SocketAddr,
    /// Bytes at the start of the buffer.
    pub len: usize,
}

impl RoomTable {
    /// An empty table; `ssrc` identifies the master in its messages. Allocates all it will
    /// ever use here.
    pub fn new(policy: RoomPolicy, ssrc: u32) -> Self {
        RoomTable {
            rooms: Vec::with_capacity(policy.max_rooms),
            pending: Vec::with_capacity(policy.max_pending),
            out: VecDeque::with_capacity(policy.max_queued),
            policy,
            ssrc,
            next_cmd: 1,
            events: VecDeque::with_capacity(MAX_EVENTS),
            next_scan: TimelineNs::MIN,
            stats: RoomStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> RoomStats {
        self.stats
    }

    /// Rooms in the table.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// Bytes the table holds, allocated once (for the benchmark and the docs).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.rooms.capacity() * std::mem::size_of::<Room>()
            + self.pending.capacity() * std::mem::size_of::<Pending>()
            + self.out.capacity() * std::mem::size_of::<Out>()
            + self.events.capacity() * std::mem::size_of::<RoomEvent>()
    }

    /// The table as listed at `now`, in the order rooms appeared.
    pub fn entries(&self, now: TimelineNs) -> impl Iterator<Item = RoomEntry> + '_ {
        self.rooms.iter().map(move |r| entry(r, now))
    }

    /// Handles a receiver report that arrived from `from` at `now` (bytes as received).
    pub fn handle_report(&mut self, now: TimelineNs, from: SocketAddr, bytes: &[u8]) {
        match Report::decode(bytes) {
            Ok(r) => self.take_report(now, from, r),
            Err(_) => self.stats.malformed += 1,
        }
    }

    /// Takes a decoded report.
    pub fn take_report(&mut self, now: TimelineNs, from: SocketAddr, report: Report) {
        self.stats.reports += 1;
        if let Some(r) = self.rooms.iter_mut().find(|r| r.report.id == report.id) {
            let back = r.offline;
            *r = Room {
                address: from,
                last_seen: now,
                report,
                offline: false,
            };
            if back {
                self.event(RoomEvent::Back {
                    name: report.name,
                    address: from,
                });
            }
            return;
        }
        let room = Room {
            address: from,
            last_seen: now,
            report,
            offline: false,
        };
        let same_ip = self
            .rooms
            .iter()
            .filter(|r| r.address.ip() == from.ip())
            .count();
        let victim = if same_ip >= self.policy.max_per_ip {
            self.oldest(|r| r.address.ip() == from.ip())
        } else if self.rooms.len() >= self.policy.max_rooms {
            self.oldest(|r| age(now, r.last_seen) > OFFLINE_AFTER_NS)
        } else {
            None
        };
        match victim {
            Some(i) => {
                self.stats.rooms_evicted += 1;
                // Keeps the order of appearance for the rest.
                self.rooms.remove(i);
                self.rooms.push(room);
            }
            None if self.rooms.len() < self.policy.max_rooms => self.rooms.push(room),
            None => {
                self.stats.rooms_refused += 1;
                return;
            }
        }
        self.event(RoomEvent::Appeared {
            name: report.name,
            address: from,
        });
    }

    fn event(&mut self, e: RoomEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.stats.events_dropped += 1;
        } else {
            self.events.push_back(e);
        }
    }

    /// The next event for the log, if any. Rooms that went offline are noticed here, at most
    /// every half second.
    pub fn poll_event(&mut self, now: TimelineNs) -> Option<RoomEvent> {
        if now >= self.next_scan {
            self.next_scan = now.saturating_add(OFFLINE_SCAN_NS);
            for i in 0..self.rooms.len() {
                let r = &mut self.rooms[i];
                if !r.offline && age(now, r.last_seen) > OFFLINE_AFTER_NS {
                    r.offline = true;
                    let name = r.report.name;
                    self.event(RoomEvent::Offline { name });
                }
            }
        }
        self.events.pop_front()
    }

    fn oldest(&self, pred: impl Fn(&Room) -> bool) -> Option<usize> {
        self.rooms
            .iter()
            .enumerate()
            .filter(|(_, r)| pred(r))
            .min_by_key(|(_, r)| r.last_seen)
            .map(|(i, _)| i)
    }

    /// Handles a control message (`WSCM`) from `from` at `now`.
    pub fn handle_control(&mut self, now: TimelineNs, from: SocketAddr, bytes: &[u8]) {
        let env = match Envelope::decode(bytes) {
            Ok(e) => e,
            Err(_) => {
                self.stats.malformed += 1;
                // A Set whose value is refused still gets its answer.
                if let Ok((3, request)) = control::header(bytes) {
                    self.stats.sets_refused += 1;
                    self.queue(Out::Reply {
                        to: from,
                        request,
                        answer: Answer {
                            outcome: Outcome::BadValue,
                            settings: Settings::default(),
                            name: StatusName::default(),
                        },
                    });
                }
                return;
            }
        };
        match env.message {
            Message::List { start } => {
                self.stats.lists += 1;
                self.queue(Out::Page {
                    to: from,
                    request: env.request,
                    start,
                });
            }
            Message::Set { room, command } => self.set(now, from, env.request, room, command),
            Message::Ack(answer) => self.ack(from, env.request, answer),
            // Answers and commands are not for the master.
            _ => self.stats.malformed += 1,
        }
    }

    fn queue(&mut self, o: Out) {
        if self.out.len() >= self.policy.max_queued {
            self.stats.dropped += 1;
        } else {
            self.out.push_back(o);
        }
    }

    fn refuse(&mut self, to: SocketAddr, request: u32, outcome: Outcome, name: StatusName) {
        self.stats.sets_refused += 1;
        let settings = self
            .rooms
            .iter()
            .find(|r| r.report.name == name)
            .map(|r| r.report.settings)
            .unwrap_or_default();
        self.queue(Out::Reply {
            to,
            request,
            answer: Answer {
                outcome,
                settings,
                name,
            },
        });
    }

    /// Finds a room by name (exact, else case-insensitive and unique) or by its id in hex.
    fn find(&self, name: &StatusName) -> Result<usize, Outcome> {
        let exact: Vec<usize> = self.matching(|r| r.report.name == *name);
        if exact.len() == 1 {
            return Ok(exact[0]);
        }
        if exact.len() > 1 {
            return Err(Outcome::Ambiguous);
        }
        let s = name.as_str();
        let folded = self.matching(|r| r.report.name.as_str().eq_ignore_ascii_case(s));
        match folded.len() {
            1 => return Ok(folded[0]),
            n if n > 1 => return Err(Outcome::Ambiguous),
            _ => {}
        }
        if let Ok(id) = u64::from_str_radix(s, 16) {
            if let Some(i) = self.rooms.iter().position(|r| r.report.id == id) {
                return Ok(i);
            }
        }
        Err(Outcome::UnknownRoom)
    }

    fn matching(&self, pred: impl Fn(&Room) -> bool) -> Vec<usize> {
        // At most two are needed to tell unique from ambiguous: no allocation beyond that.
        self.rooms
            .iter()
            .enumerate()
            .filter(|(_, r)| pred(r))
            .map(|(i, _)| i)
            .take(2)
            .collect()
    }

    fn set(
        &mut self,
        now: TimelineNs,
        client: SocketAddr,
        request: u32,
        name: StatusName,
        command: Command,
    ) {
        self.stats.sets += 1;
        let i = match self.find(&name) {
            Ok(i) => i,
            Err(o) => return self.refuse(client, request, o, name),
        };
        let room = self.rooms[i];
        if age(now, room.last_seen) > OFFLINE_AFTER_NS {
            return self.refuse(client, request, Outcome::Offline, room.report.name);
        }
        // A client repeating its request: the command is already on its way.
        if self
            .pending
            .iter()
            .any(|p| p.client == client && p.request == request)
        {
            return;
        }
        if self.pending.len() >= self.policy.max_pending {
            return self.refuse(client, request, Outcome::Busy, room.report.name);
        }
        let cmd_id = self.next_cmd;
        self.next_cmd = self.next_cmd.wrapping_add(1).max(1);
        self.pending.push(Pending {
            client,
            request,
            id: room.report.id,
            command,
            cmd_id,
            next_send: now,
            deadline: now.saturating_add(ANSWER_TIMEOUT_NS),
        });
    }

    fn ack(&mut self, from: SocketAddr, cmd_id: u32, answer: Answer) {
        let Some(k) = self.pending.iter().position(|p| p.cmd_id == cmd_id) else {
            return;
        };
        let p = self.pending[k];
        let Some(room) = self.rooms.iter_mut().find(|r| r.report.id == p.id) else {
            self.pending.swap_remove(k);
            return;
        };
        if room.address != from {
            // Only the room's own receiver acknowledges its command.
            self.stats.malformed += 1;
            return;
        }
        self.pending.swap_remove(k);
        self.stats.acks += 1;
        if answer.outcome == Outcome::Done {
            room.report.settings = answer.settings;
            room.report.name = answer.name;
            self.event(RoomEvent::Changed {
                name: answer.name,
                settings: answer.settings,
            });
        }
        self.queue(Out::Reply {
            to: p.client,
            request: p.request,
            answer,
        });
    }

    /// When [`RoomTable::poll_transmit`] has something to send next (`None`: nothing waits).
    pub fn poll_timeout(&self) -> Option<TimelineNs> {
        if !self.out.is_empty() {
            return Some(TimelineNs::MIN);
        }
        self.pending
            .iter()
            .map(|p| p.next_send.min(p.deadline))
            .min()
    }

    /// The next datagram due at `now`, written to `buf` (give it [`control::MAX_LEN`] bytes).
    pub fn poll_transmit(&mut self, now: TimelineNs, buf: &mut [u8]) -> Option<RoomTransmit> {
        // Commands that ran out of time are answered first, then commands due again.
        if let Some(k) = self.pending.iter().position(|p| now >= p.deadline) {
            let p = self.pending.swap_remove(k);
            self.stats.no_answer += 1;
            let (settings, name) = self
                .rooms
                .iter()
                .find(|r| r.report.id == p.id)
                .map(|r| (r.report.settings, r.report.name))
                .unwrap_or_default();
            self.queue(Out::Reply {
                to: p.client,
                request: p.request,
                answer: Answer {
                    outcome: Outcome::NoAnswer,
                    settings,
                    name,
                },
            });
        }
        if let Some(o) = self.out.pop_front() {
            let t = self.write(now, o, buf);
            if t.is_some() {
                return t;
            }
        }
        for k in 0..self.pending.len() {
            let p = self.pending[k];
            if now < p.next_send {
                continue;
            }
            self.pending[k].next_send = now.saturating_add(RESEND_NS);
            let Some(room) = self.rooms.iter().find(|r| r.report.id == p.id) else {
                continue;
            };
            if let Ok(len) = control::encode_command(self.ssrc, p.cmd_id, None, &p.command, buf) {
                self.stats.commands_sent += 1;
                return Some(RoomTransmit {
                    to: room.address,
                    len,
                });
            }
        }
        None
    }

    fn write(&self, now: TimelineNs, o: Out, buf: &mut [u8]) -> Option<RoomTransmit> {
        match o {
            Out::Page { to, request, start } => {
                let total = self.rooms.len().min(u16::MAX as usize) as u16;
                let mut page = [RoomEntry {
                    address: to,
                    offline: false,
                    age_ms: 0,
                    report: Report::default(),
                }; MAX_PAGE];
                let mut n = 0;
                for (slot, r) in page.iter_mut().zip(self.rooms.iter().skip(start as usize)) {
                    *slot = entry(r, now);
                    n += 1;
                }
                let (len, _) =
                    control::encode_rooms(self.ssrc, request, total, start, page[..n].iter(), buf)
                        .ok()?;
                Some(RoomTransmit { to, len })
            }
            Out::Reply {
                to,
                request,
                answer,
            } => {
                let len = control::encode_answer(self.ssrc, request, true, &answer, buf).ok()?;
                Some(RoomTransmit { to, len })
            }
        }
    }
}

/// Nanoseconds from `then` to `now` (saturating: `then` may be `TimelineNs::MIN`).
fn age(now: TimelineNs, then: TimelineNs) -> i64 {
    now.ns().saturating_sub(then.ns())
}

fn entry(r: &Room, now: TimelineNs) -> RoomEntry {
    let age = age(now, r.last_seen).max(0);
    RoomEntry {
        address: r.address,
        offline: age > OFFLINE_AFTER_NS,
        age_ms: (age / 1_000_000).min(u32::MAX as i64) as u32,
        report: r.report,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::control::{encode_answer, encode_command, encode_list, Page};
    use crate::wire::report::{Channels, RoomState, MAX_LEN as REPORT_MAX};

    const S: i64 = 1_000_000_000;

    fn addr(ip: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, ip], port))
    }

    fn report(id: u64, name: &str) -> Vec<u8> {
        let r = Report {
            id,
            name: StatusName::truncated(name),
            state: RoomState::Playing,
            ..Report::default()
        };
        let mut b = vec![0u8; REPORT_MAX];
        let n = r.encode(&mut b).unwrap();
        b.truncate(n);
        b
    }

    fn drain(t: &mut RoomTable, now: i64) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut out = Vec::new();
        let mut buf = [0u8; control::MAX_LEN];
        while let Some(x) = t.poll_transmit(TimelineNs::from_ns(now), &mut buf) {
            out.push((x.to, buf[..x.len].to_vec()));
        }
        out
    }

    fn list(t: &mut RoomTable, now: i64) -> Vec<RoomEntry> {
        let client = addr(99, 1);
        let mut all = Vec::new();
        loop {
            let mut b = [0u8; 32];
            let n = encode_list(5, 1, all.len() as u16, &mut b).unwrap();
            t.handle_control(TimelineNs::from_ns(now), client, &b[..n]);
            let out = drain(t, now);
            assert_eq!(out.len(), 1);
            let e = Envelope::decode(&out[0].1).unwrap();
            let Message::Rooms(p): Message<'_> = e.message else {
                panic!("not a page")
            };
            let p: Page<'_> = p;
            let before = all.len();
            all.extend(p.entries().map(|e| e.unwrap()));
            if all.len() >= p.total as usize || all.len() == before {
                return all;
            }
        }
    }

    fn set(t: &mut RoomTable, now: i64, request: u32, room: &str, c: Command) {
        let mut b = [0u8; 200];
        let n = encode_command(5, request, Some(&StatusName::truncated(room)), &c, &mut b).unwrap();
        t.handle_control(TimelineNs::from_ns(now), addr(99, 1), &b[..n]);
    }

    fn reply_of(msgs: &[(SocketAddr, Vec<u8>)]) -> Answer {
        let (to, bytes) = msgs.last().expect("an answer");
        assert_eq!(*to, addr(99, 1));
        match Envelope::decode(bytes).unwrap().message {
            Message::Reply(a) => a,
            m => panic!("not a reply: {m:?}"),
        }
    }

    #[test]
    fn rooms_appear_go_offline_and_come_back() {
        let mut t = RoomTable::new(RoomPolicy::default(), 1);
        t.handle_report(TimelineNs::from_ns(0), addr(1, 5000), &report(1, "kitchen"));
        t.handle_report(TimelineNs::from_ns(0), addr(2, 5000), &report(2, "bath"));
        let l = list(&mut t, S);
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].report.name.as_str(), "kitchen");
        assert_eq!(l[1].address, addr(2, 5000));
        assert!(!l[0].offline);
        assert_eq!(l[0].age_ms, 1000);
        // Three missed reports: offline; a report brings it back, from a new port (restart).
        t.handle_report(
            TimelineNs::from_ns(4 * S),
            addr(2, 5000),
            &report(2, "bath"),
        );
        let l = list(&mut t, 4 * S);
        assert!(l[0].offline && !l[1].offline);
        t.handle_report(
            TimelineNs::from_ns(5 * S),
            addr(1, 6000),
            &report(1, "kitchen"),
        );
        let l = list(&mut t, 5 * S);
        assert!(!l[0].offline);
        assert_eq!(l[0].address, addr(1, 6000));
        assert_eq!(t.len(), 2);
        let events: Vec<RoomEvent> =
            std::iter::from_fn(|| t.poll_event(TimelineNs::from_ns(5 * S))).collect();
        let kitchen = StatusName::truncated("kitchen");
        assert_eq!(
            events,
            [
                RoomEvent::Appeared {
                    name: kitchen,
                    address: addr(1, 5000)
                },
                RoomEvent::Appeared {
                    name: StatusName::truncated("bath"),
                    address: addr(2, 5000)
                },
            ]
        );
        // Offline is noticed at the next scan; the report after it brings the room back.
        assert_eq!(
            t.poll_event(TimelineNs::from_ns(9 * S)),
            Some(RoomEvent::Offline { name: kitchen })
        );
        assert_eq!(
            t.poll_event(TimelineNs::from_ns(9 * S)),
            Some(RoomEvent::Offline {
                name: StatusName::truncated("bath")
            })
        );
        assert_eq!(t.poll_event(TimelineNs::from_ns(9 * S)), None);
        t.handle_report(
            TimelineNs::from_ns(9 * S),
            addr(1, 6000),
            &report(1, "kitchen"),
        );
        assert_eq!(
            t.poll_event(TimelineNs::from_ns(9 * S)),
            Some(RoomEvent::Back {
                name: kitchen,
                address: addr(1, 6000)
            })
        );
    }

    #[test]
    fn a_command_is_relayed_repeated_acknowledged_and_answered() {
        let mut t = RoomTable::new(RoomPolicy::default(), 1);
        t.handle_report(TimelineNs::from_ns(0), addr(1, 5000), &report(1, "kitchen"));
        set(&mut t, S, 7, "Kitchen", Command::Volume(50));
        let out = drain(&mut t, S);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, addr(1, 5000));
        let e = Envelope::decode(&out[0].1).unwrap();
        assert_eq!(e.message, Message::Command(Command::Volume(50)));
        // The client repeats itself: still one command in flight. Not due again yet.
        set(&mut t, S + 1, 7, "kitchen", Command::Volume(50));
        assert!(drain(&mut t, S + 100).is_empty());
        // Due again after 250 ms.
        let again = drain(&mut t, S + RESEND_NS);
        assert_eq!(again.len(), 1);
        assert_eq!(Envelope::decode(&again[0].1).unwrap().request, e.request);
        // An ack from elsewhere is ignored; the receiver's own is relayed.
        let settings = Command::Volume(50).apply(Settings::default());
        let ack = Answer {
            outcome: Outcome::Done,
            settings,
            name: StatusName::truncated("kitchen"),
        };
        let mut b = [0u8; 100];
        let n = encode_answer(9, e.request, false, &ack, &mut b).unwrap();
        t.handle_control(TimelineNs::from_ns(S + RESEND_NS), addr(3, 5000), &b[..n]);
        assert!(drain(&mut t, S + RESEND_NS).is_empty());
        t.handle_control(TimelineNs::from_ns(S + RESEND_NS), addr(1, 5000), &b[..n]);
        let a = reply_of(&drain(&mut t, S + RESEND_NS));
        assert_eq!(a, ack);
        assert_eq!(list(&mut t, 2 * S)[0].report.settings.volume, 50);
        assert_eq!(t.stats().acks, 1);
    }

    #[test]
    fn errors_name_the_room_and_come_back_at_once() {
        let mut t = RoomTable::new(RoomPolicy::default(), 1);
        t.handle_report(TimelineNs::from_ns(0), addr(1, 5000), &report(1, "kitchen"));
        t.handle_report(TimelineNs::from_ns(0), addr(2, 5000), &report(2, "twin"));
        t.handle_report(TimelineNs::from_ns(0), addr(3, 5000), &report(3, "twin"));
        set(&mut t, S, 1, "garage", Command::Mute);
        let a = reply_of(&drain(&mut t, S));
        assert_eq!(a.outcome, Outcome::UnknownRoom);
        assert_eq!(a.name.as_str(), "garage");
        set(&mut t, S, 2, "twin", Command::Mute);
        assert_eq!(reply_of(&drain(&mut t, S)).outcome, Outcome::Ambiguous);
        // By id instead.
        set(&mut t, S, 3, "0000000000000003", Command::Off);
        assert_eq!(drain(&mut t, S)[0].0, addr(3, 5000));
        // Volume 500 never decodes as a command: the master answers `bad value`.
        let mut b = [0u8; 64];
        let n = encode_command(
            5,
            4,
            Some(&StatusName::truncated("kitchen")),
            &Command::Volume(1),
            &mut b,
        )
        .unwrap();
        b[20..24].copy_from_slice(&500i32.to_be_bytes());
        t.handle_control(TimelineNs::from_ns(S), addr(99, 1), &b[..n]);
        assert_eq!(reply_of(&drain(&mut t, S)).outcome, Outcome::BadValue);
        // Offline rooms are said to be so; silent receivers time out.
        let late = drain(&mut t, 3 * S);
        assert_eq!(
            reply_of(&late).outcome,
            Outcome::NoAnswer,
            "room 3 never answered"
        );
        set(&mut t, 10 * S, 5, "kitchen", Command::Unmute);
        assert_eq!(reply_of(&drain(&mut t, 10 * S)).outcome, Outcome::Offline);
        t.handle_report(
            TimelineNs::from_ns(10 * S),
            addr(1, 5000),
            &report(1, "kitchen"),
        );
        set(
            &mut t,
            10 * S,
            6,
            "kitchen",
            Command::Channels(Channels::Left),
        );
        drain(&mut t, 10 * S);
        let a = reply_of(&drain(&mut t, 10 * S + ANSWER_TIMEOUT_NS));
        assert_eq!(a.outcome, Outcome::NoAnswer);
        assert_eq!(a.name.as_str(), "kitchen");
        assert_eq!(t.stats().no_answer, 2);
    }

    #[test]
    fn a_flood_of_fake_ids_stays_bounded() {
        let policy = RoomPolicy::default();
        let mut t = RoomTable::new(policy, 1);
        for i in 0..100 {
            t.handle_report(
                TimelineNs::from_ns(0),
                addr(i as u8, 5000),
                &report(i, &format!("room {i}")),
            );
        }
        let memory = t.memory_bytes();
        // One host inventing 100 000 ids keeps at most its own 8 entries.
        for i in 0..100_000u64 {
            t.handle_report(
                TimelineNs::from_ns(S),
                addr(200, (i as u16).wrapping_add(1)),
                &report(1_000_000 + i, "fake"),
            );
        }
        assert_eq!(t.len(), 100 + policy.max_per_ip);
        // Many hosts: the table stops at its cap, the oldest offline rooms make way first.
        for i in 0..1000u64 {
            let ip = std::net::Ipv4Addr::from(0x0b00_0000 + i as u32);
            t.handle_report(
                TimelineNs::from_ns(10 * S),
                SocketAddr::from((ip, 5000)),
                &report(2_000_000 + i, "x"),
            );
        }
        assert_eq!(t.len(), policy.max_rooms);
        assert!(t.stats().rooms_evicted > 0 && t.stats().rooms_refused > 0);
        assert_eq!(t.memory_bytes(), memory, "nothing grew");
        // Garbage is counted, never stored.
        t.handle_report(
            TimelineNs::from_ns(S),
            addr(1, 1),
            &[0x80, 201, 0, 1, 1, 2, 3],
        );
        t.handle_control(
            TimelineNs::from_ns(S),
            addr(1, 1),
            &[0x80, 204, 0, 3, 0, 0, 0, 0, b'W', b'S'],
        );
        assert_eq!(t.stats().malformed, 2);
    }
}
