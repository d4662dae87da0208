//! The receiver's network-side state machine: which stream to follow, what it is, the clock
//! client, and which packets to ask for again.
//!
//! Sans-I/O like the rest of this crate: the network thread feeds every datagram with
//! [`Receiver::handle_datagram`] (its arrival time and source), sends what
//! [`Receiver::poll_transmit`] returns, sleeps until [`Receiver::poll_timeout`], and drains
//! [`Receiver::poll_event`] for things worth a log line or a reconfiguration. Audio packets of
//! the followed stream come back from `handle_datagram` for the output thread; everything else
//! is counted and dropped.
//!
//! Clock: the stream's status message names its clock domain, and the configured
//! [`ClockSource`] decides how that clock is read ([`ClockSource::Auto`], the default, follows
//! the domain: the master's time service, the NTP server the status names, or this host's
//! system clock). A source that cannot read the stream's domain (an NTP server against a
//! `master` stream, say) reads nothing: no clock, so nothing plays, no time queries, no NACKs,
//! and one [`Event::ClockMismatch`] saying why.
//!
//! Stream choice: the first stream heard (from the configured master, if one is set) is
//! followed. A stream with a new id from the same host replaces it at once (the master
//! restarted or changed format); a stream from another host is ignored while the followed one
//! is alive, and taken over once it has been silent for `stream_timeout_ns`.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use crate::clock::{ClockEstimate, ClockEvent};
use crate::format::{ClockDomain, StreamFormat};
use crate::loss::{packet_duration_ns, LossConfig, LossStats, LossTracker};
use crate::time::{LocalNs, TimelineNs};
use crate::time_client::{ServerClock, TimeClient, TimeClientConfig, TimeClientError};
use crate::wire::rtp::AudioPacket;
use crate::wire::status::Status;
use crate::wire::{classify, nack, Kind};

/// Where the clock comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockSource {
    /// Whatever the stream's clock domain asks for: the master's time service (`master`), the
    /// NTP server its status message names (`ntp`), this host's system clock (`system`).
    Auto,
    /// The master's time service, at the port announced in its status message: streams in
    /// clock domain `master` only.
    Master,
    /// This NTP server, or the one the stream's status names (`None`): streams in clock
    /// domain `ntp` only.
    Ntp(Option<SocketAddr>),
    /// This host's CLOCK_REALTIME as-is, the estimate supplied by the shell (see
    /// [`Receiver::wants_system_clock`], [`Receiver::set_external_clock`]): streams in clock
    /// domain `system` only.
    System,
}

impl std::fmt::Display for ClockSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClockSource::Auto => write!(f, "the clock the stream names (clock auto)"),
            ClockSource::Master => write!(f, "the master's time service (clock master)"),
            ClockSource::Ntp(Some(a)) => write!(f, "NTP server {a} (clock ntp)"),
            ClockSource::Ntp(None) => write!(f, "the NTP server the stream names (clock ntp)"),
            ClockSource::System => write!(f, "this host's system clock (clock system)"),
        }
    }
}

/// A stream whose clock domain the configured [`ClockSource`] cannot read: nothing of it is
/// played.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockMismatch {
    /// The stream's clock domain.
    pub stream: ClockDomain,
    /// This receiver's clock source.
    pub source: ClockSource,
}

impl std::fmt::Display for ClockMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.stream {
            ClockDomain::Master => "its master's own clock, read from the master's time service",
            ClockDomain::Ntp => "UTC of an NTP server",
            ClockDomain::System => "the hosts' system clocks (CLOCK_REALTIME)",
        };
        if matches!(self.source, ClockSource::Auto | ClockSource::Ntp(None)) {
            // Only an `ntp` stream that names no server can leave these without a clock.
            return write!(
                f,
                "the stream is stamped in clock domain {} ({what}) but names no NTP server, and \
                 this receiver has none configured: nothing plays",
                self.stream.name()
            );
        }
        write!(
            f,
            "the stream is stamped in clock domain {} ({what}), but this receiver reads {}: \
             that clock cannot place its stamps in time, so nothing plays",
            self.stream.name(),
            self.source
        )
    }
}

/// The clock read for the followed stream, as its domain and the [`ClockSource`] decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ActiveClock {
    /// No stream status yet: nothing to read.
    Unknown,
    /// Time queries to this server, whose timestamps count as said.
    Query(SocketAddr, ServerClock),
    /// This host's system clock, supplied by the shell.
    System,
    /// The stream's domain and the clock source do not match.
    Mismatch(ClockMismatch),
}

/// Settings of a [`Receiver`].
#[derive(Clone, Debug)]
pub struct ReceiverConfig {
    /// Follow only streams from this host.
    pub master: Option<IpAddr>,
    /// Clock source.
    pub clock: ClockSource,
    /// Ask for lost packets.
    pub resend: bool,
    /// A followed stream silent this long may be replaced by another host's.
    pub stream_timeout_ns: i64,
    /// This receiver's id in NACKs.
    pub receiver_ssrc: u32,
    /// NACK schedule.
    pub loss: LossConfig,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            master: None,
            clock: ClockSource::Auto,
            resend: true,
            stream_timeout_ns: 2_000_000_000,
            receiver_ssrc: 0x5753_5958,
            loss: LossConfig::default(),
        }
    }
}

/// What the receiver knows of the stream it follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    /// Where its packets come from.
    pub source: SocketAddr,
    /// Its status message.
    pub status: Status,
}

impl StreamInfo {
    /// The stream's audio format.
    pub fn format(&self) -> StreamFormat {
        self.status.format
    }

    /// Where the master's time service and NACKs are.
    pub fn control_addr(&self) -> SocketAddr {
        SocketAddr::new(self.source.ip(), self.status.time_port)
    }

    /// The NTP server the stream's status names (clock domain `ntp`). A server on the master's
    /// own host, which the master names by its loopback address, is reached at the master's
    /// address.
    pub fn ntp_server(&self) -> Option<SocketAddr> {
        let s = self.status.ntp_server?;
        if s.ip().is_loopback() || s.ip().is_unspecified() {
            Some(SocketAddr::new(self.source.ip(), s.port()))
        } else {
            Some(s)
        }
    }
}

/// What `source` reads for a stream described by `info`.
fn resolve_clock(source: ClockSource, info: &StreamInfo) -> ActiveClock {
    let domain = info.status.clock_domain;
    match (source, domain) {
        (ClockSource::Auto | ClockSource::Master, ClockDomain::Master) => {
            ActiveClock::Query(info.control_addr(), ServerClock::Timeline)
        }
        (ClockSource::Ntp(Some(a)), ClockDomain::Ntp) => ActiveClock::Query(a, ServerClock::NtpUtc),
        (ClockSource::Auto | ClockSource::Ntp(None), ClockDomain::Ntp) => match info.ntp_server() {
            Some(a) => ActiveClock::Query(a, ServerClock::NtpUtc),
            None => ActiveClock::Mismatch(ClockMismatch {
                stream: domain,
                source,
            }),
        },
        (ClockSource::Auto | ClockSource::System, ClockDomain::System) => ActiveClock::System,
        _ => ActiveClock::Mismatch(ClockMismatch {
            stream: domain,
            source,
        }),
    }
}

/// Things that happened, for the log and for reconfiguring the output.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Event {
    /// A stream is now followed (the first, a replacement, or a changed format): the output
    /// must be (re)configured for it and its buffer emptied.
    StreamStarted(StreamInfo),
    /// The followed stream has been silent for `stream_timeout_ns`.
    StreamLost {
        /// Its id.
        ssrc: u32,
    },
    /// The followed stream is heard again after [`Event::StreamLost`] (same id and format: a
    /// partition ended). The output must be ready for it again (it may have released the
    /// device meanwhile).
    StreamResumed(StreamInfo),
    /// The clock model locked.
    ClockLocked(ClockEstimate),
    /// The master's clock (or ours) jumped: the playout must resynchronise.
    ClockStep {
        /// The jump, ns.
        step_ns: i64,
    },
    /// A new stream's stamps are far from where the clock model puts them (its master
    /// restarted on another timeline): the model was reset and is being re-read.
    ClockStale {
        /// How far from the expected play time its first packet was, ns.
        off_ns: i64,
    },
    /// A stream has been followed for [`NO_CLOCK_REPORT_NS`] without any estimate of its
    /// clock, so nothing can play: what the time exchange did meanwhile. Reported once per
    /// stream (again after the clock was had and lost).
    NoClock(ClockDiagnosis),
    /// The followed stream's clock domain cannot be read by the configured clock source:
    /// nothing of it plays. Reported at its status message, once (again only after the
    /// clock changed).
    ClockMismatch(ClockMismatch),
}

/// A stream followed this long with no clock estimate is reported ([`Event::NoClock`]).
pub const NO_CLOCK_REPORT_NS: i64 = 5_000_000_000;

/// Why an answer to a time query was not used, the last one kept for [`ClockDiagnosis`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeRefusal {
    /// It came from another address than the one queried.
    WrongSource(SocketAddr),
    /// It answers no outstanding query (late, duplicated, or forged).
    Unmatched,
    /// Not a valid server answer (undecodable, wrong mode, no timestamps).
    Invalid,
    /// The server said go away (kiss-o'-death) or that it is unsynchronised.
    ServerRefused,
    /// The clock model set it aside as an outlier or a step suspect.
    Outlier,
    /// No clock is being queried here (the system clock, a mismatched domain, or no stream).
    NotQuerying,
}

/// What the time exchange with the time server has done so far: for logs and status when the
/// clock will not lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockDiagnosis {
    /// Where the queries go (the stream's time service, or the NTP server).
    pub server: Option<SocketAddr>,
    /// Queries sent.
    pub sent: u64,
    /// Answers matched to a query and given to the clock model.
    pub answered: u64,
    /// Answers refused for coming from another address than [`Self::server`].
    pub wrong_source: u64,
    /// Answers refused for any other reason.
    pub refused: u64,
    /// Queries that expired unanswered.
    pub timeouts: u64,
    /// The last refusal, if any.
    pub last_refusal: Option<TimeRefusal>,
}

impl std::fmt::Display for ClockDiagnosis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.server {
            Some(s) => write!(f, "{} time queries to {s}", self.sent)?,
            None => write!(f, "no time server known yet")?,
        }
        write!(
            f,
            ", {} answered, {} answers from other addresses, {} refused, {} unanswered",
            self.answered, self.wrong_source, self.refused, self.timeouts
        )?;
        match self.last_refusal {
            Some(TimeRefusal::WrongSource(a)) => {
                write!(
                    f,
                    "; the last answer came from {a}, not from where we asked"
                )
            }
            Some(TimeRefusal::Unmatched) => {
                write!(f, "; the last refused answer matched no query of ours")
            }
            Some(TimeRefusal::Invalid) => write!(f, "; the last refused answer was not valid"),
            Some(TimeRefusal::ServerRefused) => {
                write!(f, "; the server refuses (kiss-o'-death or unsynchronised)")
            }
            Some(TimeRefusal::Outlier) => {
                write!(f, "; the last answer was set aside as an outlier")
            }
            Some(TimeRefusal::NotQuerying) => write!(f, "; this receiver asks no time server"),
            None if self.sent > 0 && self.answered == 0 => {
                write!(
                    f,
                    "; nothing comes back (a firewall, or no time service there?)"
                )
            }
            None => Ok(()),
        }
    }
}

/// Counters, all monotonic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    /// Audio packets of the followed stream passed on.
    pub audio: u64,
    /// Status messages of the followed stream.
    pub status: u64,
    /// Datagrams that were not WaveSync messages, or did not decode.
    pub malformed: u64,
    /// Packets of other streams (another master, or an old run) dropped.
    pub foreign: u64,
    /// Audio packets that came before their stream's status (dropped: format unknown).
    pub before_status: u64,
    /// Time responses that were rejected (every reason, [`Self::time_wrong_source`] included).
    pub time_rejected: u64,
    /// Of those, answers from another address than the time server queried.
    pub time_wrong_source: u64,
    /// NACK messages sent.
    pub nacks_sent: u64,
    /// Loss tracking.
    pub loss: LossStats,
}

/// What to send, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub to: SocketAddr,
    /// Bytes at the start of the caller's buffer.
    pub len: usize,
}

struct Followed {
    info: Option<StreamInfo>,
    source: SocketAddr,
    ssrc: u32,
    last_heard: LocalNs,
    lost_reported: bool,
    /// Whether this stream's stamps were compared with the clock yet.
    clock_checked: bool,
    /// A packet that was far off the clock, waiting for the next one to confirm it: ns off.
    clock_suspect: Option<i64>,
}

/// The receiver's network-side state machine.
pub struct Receiver {
    cfg: ReceiverConfig,
    stream: Option<Followed>,
    time: TimeClient,
    active: ActiveClock,
    external_clock: Option<ClockEstimate>,
    loss: LossTracker,
    events: VecDeque<Event>,
    stats: ReceiverStats,
    nack_seqs: [u16; nack::MAX_ENTRIES * 17],
    clock_generation: u64,
    last_refusal: Option<TimeRefusal>,
    /// Since when the followed stream has had no clock estimate (None: it has one, or there
    /// is no stream); and whether that was reported.
    no_clock_since: Option<LocalNs>,
    no_clock_reported: bool,
    /// The mismatch last reported ([`Event::ClockMismatch`]), so a restarted master with the
    /// same domain is not reported again.
    mismatch_reported: Option<ClockMismatch>,
}

const MAX_EVENTS: usize = 32;
/// A new stream's first packet due further than this from where its latency puts it means
/// the clock model of the master is stale.
const STALE_SLACK_NS: i64 = 500_000_000;
/// Two packets confirm a stale clock when they are off by this close an amount.
const STALE_AGREE_NS: i64 = 100_000_000;
/// Slack on top of the output's lead: the output thread's wake-up and fill time.
const OUTPUT_MARGIN_NS: i64 = 2_000_000;

impl Receiver {
    /// A receiver that follows no stream yet.
    pub fn new(cfg: ReceiverConfig) -> Self {
        Receiver {
            loss: LossTracker::new(cfg.loss),
            cfg,
            stream: None,
            time: TimeClient::new(TimeClientConfig::default()),
            active: ActiveClock::Unknown,
            external_clock: None,
            events: VecDeque::with_capacity(MAX_EVENTS),
            stats: ReceiverStats::default(),
            nack_seqs: [0; nack::MAX_ENTRIES * 17],
            clock_generation: 0,
            last_refusal: None,
            no_clock_since: None,
            no_clock_reported: false,
            mismatch_reported: None,
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> ReceiverStats {
        ReceiverStats {
            loss: self.loss.stats(),
            ..self.stats
        }
    }

    /// The followed stream, once its status is known.
    pub fn stream(&self) -> Option<&StreamInfo> {
        self.stream.as_ref().and_then(|s| s.info.as_ref())
    }

    /// The current estimate of the timeline from the local clock (none while the stream's
    /// clock domain does not match the clock source).
    pub fn clock(&self) -> Option<ClockEstimate> {
        match self.active {
            ActiveClock::Query(..) => self.time.estimate(),
            ActiveClock::System => self.external_clock,
            ActiveClock::Unknown | ActiveClock::Mismatch(_) => None,
        }
    }

    /// Whether the clock model is locked (always, for a system clock that was supplied).
    pub fn clock_locked(&self) -> bool {
        match self.active {
            ActiveClock::Query(..) => self.time.model().is_locked(),
            ActiveClock::System => self.external_clock.is_some(),
            ActiveClock::Unknown | ActiveClock::Mismatch(_) => false,
        }
    }

    /// The time client, when the clock is queried over the network.
    pub fn time_client(&self) -> Option<&TimeClient> {
        matches!(self.active, ActiveClock::Query(..)).then_some(&self.time)
    }

    /// Whether the followed stream's clock is this host's system clock: the shell then
    /// supplies its estimate with [`Receiver::set_external_clock`] (and runs no time queries).
    pub fn wants_system_clock(&self) -> bool {
        self.active == ActiveClock::System
    }

    /// The followed stream's clock domain, when the clock source cannot read it.
    pub fn clock_mismatch(&self) -> Option<ClockMismatch> {
        match self.active {
            ActiveClock::Mismatch(m) => Some(m),
            _ => None,
        }
    }

    /// Where time queries go, if anywhere.
    fn time_server(&self) -> Option<SocketAddr> {
        match self.active {
            ActiveClock::Query(server, _) => Some(server),
            _ => None,
        }
    }

    /// What the time exchange has done so far (for status, and logs when it will not lock).
    pub fn clock_diagnosis(&self) -> ClockDiagnosis {
        let t = self.time.stats();
        ClockDiagnosis {
            server: self.time_server(),
            sent: t.sent,
            answered: t.answered,
            wrong_source: self.stats.time_wrong_source,
            refused: (self.stats.time_rejected - self.stats.time_wrong_source),
            timeouts: t.timeouts,
            last_refusal: match self.active {
                ActiveClock::Query(..) => self.last_refusal,
                _ => Some(TimeRefusal::NotQuerying),
            },
        }
    }

    /// Increases whenever the clock estimate changed; the shell forwards the estimate to the
    /// output thread when it sees a new value.
    pub fn clock_generation(&self) -> u64 {
        self.clock_generation
    }

    /// Tells how far ahead of the DAC the output consumes audio (its measured delay plus the
    /// sink latency trim), ns: a packet asked for must arrive that much before its play time,
    /// so the NACK schedule gives up sooner and wastes no requests on packets that would come
    /// too late.
    pub fn set_output_lead(&mut self, lead_ns: i64) {
        self.loss
            .set_deadline_margin(lead_ns.saturating_add(OUTPUT_MARGIN_NS));
    }

    /// The NACK schedule (for status and tests).
    pub fn loss(&self) -> &LossTracker {
        &self.loss
    }

    /// Supplies the clock estimate while [`Receiver::wants_system_clock`] (ignored otherwise).
    pub fn set_external_clock(&mut self, est: ClockEstimate) {
        if self.active != ActiveClock::System {
            return;
        }
        self.external_clock = Some(est);
        self.clock_generation += 1;
    }

    /// Next thing that happened, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn push_event(&mut self, e: Event) {
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    fn accepts(&self, from: SocketAddr) -> bool {
        self.cfg.master.is_none_or(|m| m == from.ip())
    }

    /// Decides whether a message with `ssrc` from `from` belongs to the followed stream,
    /// switching streams where the rules say so. While the followed stream is alive only a
    /// status message (what a restarted master sends first) from its host can replace it, so
    /// late packets of an old run never switch back.
    fn follow(&mut self, now: LocalNs, from: SocketAddr, ssrc: u32, is_status: bool) -> bool {
        if !self.accepts(from) {
            return false;
        }
        if let Some(s) = &self.stream {
            let same_host = s.source.ip() == from.ip();
            if s.ssrc == ssrc && same_host {
                return true;
            }
            let alive = now - s.last_heard < self.cfg.stream_timeout_ns;
            if alive && !(same_host && is_status) {
                return false;
            }
        }
        // New stream: the first, a restarted master, or a takeover after silence.
        self.stream = Some(Followed {
            info: None,
            source: from,
            ssrc,
            last_heard: now,
            lost_reported: false,
            clock_checked: false,
            clock_suspect: None,
        });
        self.loss.reset();
        true
    }

    /// Handles one datagram that arrived at `now` from `from`. Returns the audio packet when
    /// it belongs to the followed stream and its format is known.
    pub fn handle_datagram<'a>(
        &mut self,
        now: LocalNs,
        from: SocketAddr,
        bytes: &'a [u8],
    ) -> Option<AudioPacket<'a>> {
        let from = attributed_source(from);
        match classify(bytes) {
            Kind::Audio => self.on_audio(now, from, bytes),
            Kind::Status => {
                self.on_status(now, from, bytes);
                None
            }
            Kind::Ntp => {
                self.on_time(now, from, bytes);
                None
            }
            Kind::Nack | Kind::Report | Kind::Control | Kind::Unknown => {
                self.stats.malformed += 1;
                None
            }
        }
    }

    fn on_audio<'a>(
        &mut self,
        now: LocalNs,
        from: SocketAddr,
        bytes: &'a [u8],
    ) -> Option<AudioPacket<'a>> {
        let Ok(p) = AudioPacket::decode(bytes) else {
            self.stats.malformed += 1;
            return None;
        };
        if !self.follow(now, from, p.ssrc, false) {
            self.stats.foreign += 1;
            return None;
        }
        let s = self.stream.as_mut()?;
        s.last_heard = now;
        let resumed = std::mem::take(&mut s.lost_reported);
        let Some(info) = s.info else {
            self.stats.before_status += 1;
            return None;
        };
        if resumed {
            self.push_event(Event::StreamResumed(info));
        }
        let s = self.stream.as_mut()?;
        if p.format != info.status.format.sample {
            self.stats.malformed += 1;
            return None;
        }
        // The first packet of a stream, and of each run in it (a run restarts when the
        // master's capture clock departs from its timeline, e.g. when the timeline steps).
        if !s.clock_checked || p.marker || s.clock_suspect.is_some() {
            s.clock_checked = true;
            let suspect = s.clock_suspect.take();
            let off = self.check_clock(now, &p, info.status.latency_ns, suspect);
            if let Some(s) = self.stream.as_mut() {
                s.clock_suspect = off;
            }
        }
        let frames = p.payload.len() / info.status.format.bytes_per_frame().max(1);
        self.loss.on_packet(
            now,
            p.seq,
            p.play_time,
            packet_duration_ns(frames, info.status.format.rate),
        );
        self.stats.audio += 1;
        Some(p)
    }

    /// Compares the first packet of a new stream or run with the clock: a fresh packet is due
    /// about the stream's latency after it arrives. Far off, and the next packet agreeing (one
    /// odd packet proves nothing), the master's clock is not the one the model knows (it
    /// restarted on another timeline, or its host rebooted): the model is reset and re-read at
    /// once with a burst, rather than at the next poll (up to a second away) plus the step
    /// confirmation. Returns how far off the packet was when that still needs confirming.
    fn check_clock(
        &mut self,
        now: LocalNs,
        p: &AudioPacket<'_>,
        latency_ns: i64,
        suspect: Option<i64>,
    ) -> Option<i64> {
        // Only a master's own clock restarts with it.
        if !matches!(self.active, ActiveClock::Query(_, ServerClock::Timeline)) {
            return None;
        }
        let t = &mut self.time;
        let est = t.estimate()?;
        let ahead = est.to_local(p.play_time).ns().saturating_sub(now.ns());
        if ahead <= latency_ns.saturating_add(STALE_SLACK_NS) && ahead >= -STALE_SLACK_NS {
            return None;
        }
        let off = ahead.saturating_sub(latency_ns);
        match suspect {
            Some(prev) if (off - prev).abs() < STALE_AGREE_NS => {
                t.reset(now);
                self.clock_generation += 1;
                self.push_event(Event::ClockStale { off_ns: off });
                None
            }
            _ => Some(off),
        }
    }

    fn on_status(&mut self, now: LocalNs, from: SocketAddr, bytes: &[u8]) {
        let Ok(status) = Status::decode(bytes) else {
            self.stats.malformed += 1;
            return;
        };
        if !self.follow(now, from, status.ssrc, true) {
            self.stats.foreign += 1;
            return;
        }
        self.stats.status += 1;
        let Some(s) = self.stream.as_mut() else {
            return;
        };
        s.last_heard = now;
        let resumed = std::mem::take(&mut s.lost_reported);
        let info = StreamInfo {
            source: from,
            status,
        };
        let changed = match s.info {
            None => true,
            Some(old) => {
                old.status.format != status.format
                    || old.status.time_port != status.time_port
                    || old.status.clock_domain != status.clock_domain
                    || old.status.ntp_server != status.ntp_server
                    || old.status.positions() != status.positions()
                    || old.status.frames_per_packet != status.frames_per_packet
            }
        };
        s.info = Some(info);
        if changed {
            self.loss.reset();
            self.set_active(now, resolve_clock(self.cfg.clock, &info));
            self.push_event(Event::StreamStarted(info));
            if let ActiveClock::Mismatch(m) = self.active {
                if self.mismatch_reported != Some(m) {
                    self.mismatch_reported = Some(m);
                    self.push_event(Event::ClockMismatch(m));
                }
            }
        } else if resumed {
            self.push_event(Event::StreamResumed(info));
        }
    }

    /// Switches to the clock `next` (the followed stream's status changed).
    fn set_active(&mut self, now: LocalNs, next: ActiveClock) {
        if next == self.active {
            return;
        }
        match (self.active, next) {
            // Another port of the same host: the same clock.
            (ActiveClock::Query(old, old_kind), ActiveClock::Query(new, new_kind))
                if old.ip() == new.ip() && old_kind == new_kind => {}
            // Another server, or one that counts differently: another clock, read afresh.
            (_, ActiveClock::Query(_, kind)) => {
                self.time.set_server_clock(kind);
                self.time.reset(now);
                self.last_refusal = None;
            }
            _ => {}
        }
        if !matches!(next, ActiveClock::Mismatch(_)) {
            self.mismatch_reported = None;
        }
        self.external_clock = None;
        self.active = next;
        self.clock_generation += 1;
    }

    fn on_time(&mut self, now: LocalNs, from: SocketAddr, bytes: &[u8]) {
        let Some(server) = self.time_server() else {
            self.stats.time_rejected += 1;
            self.last_refusal = Some(TimeRefusal::NotQuerying);
            return;
        };
        let t = &mut self.time;
        if server != from {
            self.stats.time_rejected += 1;
            self.stats.time_wrong_source += 1;
            self.last_refusal = Some(TimeRefusal::WrongSource(from));
            return;
        }
        let event = t.handle_response(now, bytes);
        if let Some(rtt) = t.model().min_rtt_ns() {
            self.loss.set_rtt_floor(rtt);
        }
        match event {
            Ok(ClockEvent::Rejected) => {
                self.stats.time_rejected += 1;
                self.last_refusal = Some(TimeRefusal::Outlier);
            }
            Err(e) => {
                self.stats.time_rejected += 1;
                self.last_refusal = Some(match e {
                    TimeClientError::UnknownOrigin { .. } => TimeRefusal::Unmatched,
                    TimeClientError::KissOfDeath { .. } | TimeClientError::Unsynchronized => {
                        TimeRefusal::ServerRefused
                    }
                    TimeClientError::Decode(_)
                    | TimeClientError::NotServerMode(_)
                    | TimeClientError::ZeroTimestamp => TimeRefusal::Invalid,
                });
            }
            Ok(ClockEvent::Updated) => self.clock_generation += 1,
            Ok(ClockEvent::Locked) => {
                self.clock_generation += 1;
                if let Some(e) = t.estimate() {
                    self.push_event(Event::ClockLocked(e));
                }
            }
            Ok(ClockEvent::StepDetected { step_ns }) => {
                self.clock_generation += 1;
                self.push_event(Event::ClockStep { step_ns });
            }
        }
    }

    /// The next datagram to send (time query or NACK), written into `buf` (at least 1500
    /// bytes). Call until it returns `None`.
    pub fn poll_transmit(&mut self, now: LocalNs, buf: &mut [u8]) -> Option<Transmit> {
        self.check_stream(now);
        if let Some(server) = self.time_server() {
            if let Some(req) = self.time.poll_transmit(now) {
                if buf.len() >= req.len() {
                    buf[..req.len()].copy_from_slice(&req);
                    return Some(Transmit {
                        to: server,
                        len: req.len(),
                    });
                }
            }
        }
        // Nothing of a stream whose clock cannot be read plays: no use asking for it.
        if !self.cfg.resend || self.clock_mismatch().is_some() {
            return None;
        }
        let info = *self.stream()?;
        let clock = self.clock();
        let map = clock.map(|c| move |t| c.to_local(t));
        let map_ref: Option<&dyn Fn(TimelineNs) -> LocalNs> = map.as_ref().map(|f| f as _);
        let n = self.loss.poll_nack(now, map_ref, &mut self.nack_seqs);
        if n == 0 {
            return None;
        }
        // Wrapping order around the first (all lie within the tracker's window of it), so
        // neighbours share PID/BLP entries.
        let origin = self.nack_seqs[0].wrapping_sub(0x8000);
        self.nack_seqs[..n].sort_unstable_by_key(|&s| s.wrapping_sub(origin));
        match nack::encode(
            self.cfg.receiver_ssrc,
            info.status.ssrc,
            &self.nack_seqs[..n],
            buf,
        ) {
            Ok(enc) => {
                // What did not fit this message goes in the next one.
                if enc.consumed < n {
                    self.loss.retract(&self.nack_seqs[enc.consumed..n]);
                }
                self.stats.nacks_sent += 1;
                Some(Transmit {
                    to: info.control_addr(),
                    len: enc.len,
                })
            }
            Err(_) => None,
        }
    }

    fn check_stream(&mut self, now: LocalNs) {
        let timeout = self.cfg.stream_timeout_ns;
        if let Some(s) = self.stream.as_mut() {
            if !s.lost_reported && now - s.last_heard >= timeout {
                s.lost_reported = true;
                let ssrc = s.ssrc;
                self.push_event(Event::StreamLost { ssrc });
            }
        }
        self.check_no_clock(now);
    }

    /// Reports once when a stream has been known for [`NO_CLOCK_REPORT_NS`] and still has no
    /// clock estimate: nothing can play, and the log must say why.
    fn check_no_clock(&mut self, now: LocalNs) {
        // Only a clock read over the network can fail to come; a silent stream waits anyway.
        let heard = self.stream.as_ref().is_some_and(|s| !s.lost_reported);
        let querying = matches!(self.active, ActiveClock::Query(..));
        let waiting = querying && heard && self.stream().is_some() && self.clock().is_none();
        if !waiting {
            self.no_clock_since = None;
            self.no_clock_reported = false;
            return;
        }
        let since = *self.no_clock_since.get_or_insert(now);
        if !self.no_clock_reported && now.ns().saturating_sub(since.ns()) >= NO_CLOCK_REPORT_NS {
            self.no_clock_reported = true;
            let d = self.clock_diagnosis();
            self.push_event(Event::NoClock(d));
        }
    }

    /// When to call [`Receiver::poll_transmit`] again at the latest.
    pub fn poll_timeout(&self) -> LocalNs {
        let mut t = LocalNs::MAX;
        if self.time_server().is_some() {
            t = t.min(self.time.poll_timeout());
        }
        if self.cfg.resend && self.clock_mismatch().is_none() {
            if let Some(l) = self.loss.poll_timeout() {
                t = t.min(l);
            }
        }
        if let Some(s) = &self.stream {
            if !s.lost_reported {
                t = t.min(s.last_heard + self.cfg.stream_timeout_ns);
            }
        }
        if let (Some(since), false) = (self.no_clock_since, self.no_clock_reported) {
            t = t.min(since.saturating_add(NO_CLOCK_REPORT_NS));
        }
        t
    }
}

/// The address a datagram is taken to come from. Linux sends multicast from 0.0.0.0 when the
/// outgoing interface has no address of link scope, as on a host whose only interface is
/// loopback (127.0.0.1 has host scope); such a datagram came from this host, and this host's
/// time service answers from its loopback address. Without this, the time queries would go to
/// 0.0.0.0 and every answer, coming from 127.0.0.1, would be refused as from a stranger.
pub fn attributed_source(from: SocketAddr) -> SocketAddr {
    match from.ip() {
        IpAddr::V4(a) if a.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), from.port())
        }
        IpAddr::V6(a) if a.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), from.port())
        }
        _ => from,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{ClockDomain, SampleFormat};
    use crate::time::{ns_from_ntp64, ntp64_from_ns};
    use crate::wire::ntp::NtpPacket;
    use crate::wire::status::StatusName;
    use proptest::prelude::*;

    const MS: i64 = 1_000_000;
    const FPP: usize = 240;

    fn master() -> SocketAddr {
        "10.0.0.1:40000".parse().unwrap()
    }

    fn other() -> SocketAddr {
        "10.0.0.2:40000".parse().unwrap()
    }

    fn status(ssrc: u32) -> Vec<u8> {
        status_in(ssrc, ClockDomain::Master, None)
    }

    /// A stream in clock domain `system`: read from this host's clock, no time queries.
    fn sys_status(ssrc: u32) -> Vec<u8> {
        status_in(ssrc, ClockDomain::System, None)
    }

    fn status_in(ssrc: u32, clock_domain: ClockDomain, ntp_server: Option<SocketAddr>) -> Vec<u8> {
        let s = Status {
            ssrc,
            format: StreamFormat::DEFAULT,
            clock_domain,
            frames_per_packet: FPP as u16,
            time_port: 45301,
            latency_ns: 100 * MS,
            packets_sent: 0,
            flags: 0,
            name: StatusName::truncated("test"),
            ntp_server,
            channel_map: None,
        };
        let mut b = vec![0u8; 200];
        let n = s.encode(&mut b).unwrap();
        b.truncate(n);
        b
    }

    fn audio(ssrc: u32, seq: u16, play_time: i64) -> Vec<u8> {
        let payload = vec![0u8; FPP * 4];
        let p = AudioPacket {
            marker: false,
            format: SampleFormat::L16,
            seq,
            timestamp: seq as u32 * FPP as u32,
            ssrc,
            play_time: TimelineNs::from_ns(play_time),
            payload: &payload,
        };
        let mut b = vec![0u8; 1500];
        let n = p.encode(&mut b).unwrap();
        b.truncate(n);
        b
    }

    fn events(r: &mut Receiver) -> Vec<Event> {
        std::iter::from_fn(|| r.poll_event()).collect()
    }

    #[test]
    fn audio_waits_for_the_status_then_flows() {
        let mut r = Receiver::new(ReceiverConfig::default());
        assert!(r
            .handle_datagram(LocalNs::from_ns(0), master(), &audio(7, 1, 0))
            .is_none());
        assert_eq!(r.stats().before_status, 1);
        assert!(r
            .handle_datagram(LocalNs::from_ns(MS), master(), &status(7))
            .is_none());
        match events(&mut r).as_slice() {
            [Event::StreamStarted(info)] => {
                assert_eq!(info.status.ssrc, 7);
                assert_eq!(info.control_addr(), "10.0.0.1:45301".parse().unwrap());
            }
            other => panic!("expected one StreamStarted, got {other:?}"),
        }
        let bytes = audio(7, 2, 5 * MS);
        let p = r.handle_datagram(LocalNs::from_ns(2 * MS), master(), &bytes);
        assert_eq!(p.map(|p| p.seq), Some(2));
        // A repeated, unchanged status is not a new stream.
        r.handle_datagram(LocalNs::from_ns(3 * MS), master(), &status(7));
        assert!(events(&mut r).is_empty());
    }

    #[test]
    fn a_second_master_is_ignored_until_the_first_falls_silent() {
        let mut r = Receiver::new(ReceiverConfig::default());
        r.handle_datagram(LocalNs::from_ns(0), master(), &status(7));
        r.handle_datagram(LocalNs::from_ns(0), other(), &status(9));
        assert!(r
            .handle_datagram(LocalNs::from_ns(MS), other(), &audio(9, 1, 0))
            .is_none());
        assert_eq!(r.stats().foreign, 2);
        assert_eq!(r.stream().map(|s| s.status.ssrc), Some(7));
        // The followed master goes quiet: reported once, then the other one takes over.
        let mut buf = [0u8; 1500];
        r.poll_transmit(LocalNs::from_ns(2_100 * MS), &mut buf);
        r.poll_transmit(LocalNs::from_ns(2_200 * MS), &mut buf);
        let ev = events(&mut r);
        assert_eq!(
            ev.iter()
                .filter(|e| matches!(e, Event::StreamLost { ssrc: 7 }))
                .count(),
            1
        );
        r.handle_datagram(LocalNs::from_ns(2_300 * MS), other(), &status(9));
        assert_eq!(r.stream().map(|s| s.status.ssrc), Some(9));
    }

    #[test]
    fn a_stream_heard_again_after_it_was_lost_is_resumed() {
        let mut r = Receiver::new(ReceiverConfig {
            clock: ClockSource::System,
            ..ReceiverConfig::default()
        });
        r.handle_datagram(LocalNs::from_ns(0), master(), &sys_status(7));
        r.handle_datagram(LocalNs::from_ns(0), master(), &audio(7, 1, 0));
        events(&mut r);
        let mut buf = [0u8; 1500];
        r.poll_transmit(LocalNs::from_ns(3_000 * MS), &mut buf);
        assert_eq!(events(&mut r), vec![Event::StreamLost { ssrc: 7 }]);
        // Back after the partition: one event, on the first message (audio or status).
        r.handle_datagram(LocalNs::from_ns(12_000 * MS), master(), &audio(7, 1300, 0));
        r.handle_datagram(LocalNs::from_ns(12_001 * MS), master(), &audio(7, 1301, 0));
        r.handle_datagram(LocalNs::from_ns(12_002 * MS), master(), &sys_status(7));
        assert!(
            matches!(events(&mut r).as_slice(), [Event::StreamResumed(i)] if i.status.ssrc == 7)
        );
        r.poll_transmit(LocalNs::from_ns(15_000 * MS), &mut buf);
        assert_eq!(events(&mut r), vec![Event::StreamLost { ssrc: 7 }]);
        r.handle_datagram(LocalNs::from_ns(16_000 * MS), master(), &sys_status(7));
        assert!(matches!(
            events(&mut r).as_slice(),
            [Event::StreamResumed(_)]
        ));
    }

    #[test]
    fn a_restarted_master_is_followed_at_once() {
        let mut r = Receiver::new(ReceiverConfig::default());
        r.handle_datagram(LocalNs::from_ns(0), master(), &status(7));
        events(&mut r);
        r.handle_datagram(LocalNs::from_ns(MS), master(), &status(8));
        assert!(
            matches!(events(&mut r).as_slice(), [Event::StreamStarted(i)] if i.status.ssrc == 8)
        );
        assert!(
            r.handle_datagram(LocalNs::from_ns(MS), master(), &audio(7, 3, 0))
                .is_none(),
            "old run"
        );
        assert!(r
            .handle_datagram(LocalNs::from_ns(MS), master(), &audio(8, 3, 0))
            .is_some());
        // Late audio of the old run never switches back.
        assert!(r
            .handle_datagram(LocalNs::from_ns(2 * MS), master(), &audio(7, 4, 0))
            .is_none());
        assert_eq!(r.stream().map(|s| s.status.ssrc), Some(8));
        assert!(events(&mut r).is_empty());
    }

    #[test]
    fn a_configured_master_excludes_everyone_else() {
        let mut r = Receiver::new(ReceiverConfig {
            master: Some(other().ip()),
            ..ReceiverConfig::default()
        });
        r.handle_datagram(LocalNs::from_ns(0), master(), &status(7));
        assert!(r.stream().is_none());
        r.handle_datagram(LocalNs::from_ns(0), other(), &status(9));
        assert_eq!(r.stream().map(|s| s.status.ssrc), Some(9));
    }

    #[test]
    fn the_clock_is_read_from_the_masters_time_service() {
        let mut r = Receiver::new(ReceiverConfig::default());
        let mut buf = [0u8; 1500];
        assert!(
            r.poll_transmit(LocalNs::from_ns(0), &mut buf).is_none(),
            "no master known yet"
        );
        r.handle_datagram(LocalNs::from_ns(0), master(), &status(7));
        let server: SocketAddr = "10.0.0.1:45301".parse().unwrap();
        // The master's timeline runs 5 s ahead of ours; 200 us each way.
        let offset = 5_000 * MS;
        let mut now = MS;
        let mut locked = false;
        for _ in 0..40 {
            while let Some(t) = r.poll_transmit(LocalNs::from_ns(now), &mut buf) {
                assert_eq!(t.to, server);
                let req = NtpPacket::decode(&buf[..t.len]).unwrap();
                let t2 = ns_from_ntp64(req.transmit_ts) + 200_000 + offset;
                let reply = NtpPacket::server_reply(&req, ntp64_from_ns(t2), ntp64_from_ns(t2));
                // A forged answer from elsewhere is refused.
                r.handle_datagram(LocalNs::from_ns(now + 400_000), other(), &reply.encode());
                r.handle_datagram(LocalNs::from_ns(now + 400_000), server, &reply.encode());
            }
            locked |= events(&mut r)
                .iter()
                .any(|e| matches!(e, Event::ClockLocked(_)));
            now = (r.poll_timeout().max(LocalNs::from_ns(now + MS))).ns();
        }
        assert!(locked && r.clock_locked());
        assert!(r.stats().time_rejected > 0);
        let est = r.clock().unwrap();
        assert!(
            (est.to_timeline(LocalNs::from_ns(now)) - TimelineNs::from_ns(now + offset)).abs()
                < 1_000,
            "{est:?}"
        );
    }

    /// Keeps stream 7 from `stream_from` alive and answers every query `r` sends (to
    /// `expect_to`) from `answer_from`, the master's timeline at `offset` from ours, until
    /// `until`; returns the events seen.
    #[allow(clippy::too_many_arguments)]
    fn serve_time(
        r: &mut Receiver,
        stream_from: SocketAddr,
        expect_to: SocketAddr,
        answer_from: SocketAddr,
        offset: i64,
        mut now: LocalNs,
        until: LocalNs,
    ) -> Vec<Event> {
        let mut buf = [0u8; 1500];
        let mut seen = Vec::new();
        while now < until {
            r.handle_datagram(now, stream_from, &status(7));
            while let Some(t) = r.poll_transmit(now, &mut buf) {
                assert_eq!(t.to, expect_to);
                let req = NtpPacket::decode(&buf[..t.len]).unwrap();
                let t2 = ns_from_ntp64(req.transmit_ts) + 200_000 + offset;
                let reply = NtpPacket::server_reply(&req, ntp64_from_ns(t2), ntp64_from_ns(t2));
                r.handle_datagram(now + 400_000, answer_from, &reply.encode());
            }
            seen.extend(events(r));
            now = r.poll_timeout().clamp(now + MS, now + 100 * MS);
        }
        seen
    }

    #[test]
    fn a_stream_from_the_unspecified_address_is_this_hosts_and_its_clock_is_read() {
        // Multicast sent on a loopback-only host arrives from 0.0.0.0; the time service
        // answers from 127.0.0.1.
        let mut r = Receiver::new(ReceiverConfig::default());
        r.handle_datagram(
            LocalNs::from_ns(MS),
            "0.0.0.0:40000".parse().unwrap(),
            &status(7),
        );
        assert_eq!(
            r.stream().unwrap().source,
            "127.0.0.1:40000".parse().unwrap()
        );
        let server: SocketAddr = "127.0.0.1:45301".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:40000".parse().unwrap();
        let seen = serve_time(
            &mut r,
            any,
            server,
            server,
            5_000 * MS,
            LocalNs::from_ns(MS),
            LocalNs::from_ns(3_000 * MS),
        );
        assert!(r.clock().is_some(), "{:?}", r.clock_diagnosis());
        assert_eq!(r.stats().time_wrong_source, 0);
        assert!(!seen.iter().any(|e| matches!(e, Event::NoClock(_))));
        assert_eq!(
            attributed_source("[::]:9".parse().unwrap()),
            "[::1]:9".parse().unwrap()
        );
        assert_eq!(attributed_source(master()), master());
    }

    #[test]
    fn a_clock_that_never_comes_is_reported_once_with_the_reason() {
        let mut r = Receiver::new(ReceiverConfig::default());
        r.handle_datagram(LocalNs::from_ns(MS), master(), &status(7));
        let server: SocketAddr = "10.0.0.1:45301".parse().unwrap();
        // Every answer comes from another address of the master's host.
        let elsewhere: SocketAddr = "10.0.0.2:45301".parse().unwrap();
        let seen = serve_time(
            &mut r,
            master(),
            server,
            elsewhere,
            0,
            LocalNs::from_ns(MS),
            LocalNs::from_ns(12_000 * MS),
        );
        let reports: Vec<ClockDiagnosis> = seen
            .iter()
            .filter_map(|e| match e {
                Event::NoClock(d) => Some(*d),
                _ => None,
            })
            .collect();
        assert_eq!(reports.len(), 1, "once, not per query: {seen:?}");
        let d = reports[0];
        assert_eq!(d.server, Some(server));
        assert!(d.sent >= 16, "{d:?}");
        assert_eq!(d.answered, 0);
        assert_eq!(d.wrong_source, d.sent);
        assert_eq!(d.last_refusal, Some(TimeRefusal::WrongSource(elsewhere)));
        let text = d.to_string();
        assert!(text.contains("came from 10.0.0.2:45301"), "{text}");
        // Once answers come from the right place the clock is had, and a later loss of it
        // would be reported again.
        serve_time(
            &mut r,
            master(),
            server,
            server,
            0,
            LocalNs::from_ns(12_000 * MS),
            LocalNs::from_ns(15_000 * MS),
        );
        assert!(r.clock().is_some());
        assert!(!r.no_clock_reported && r.no_clock_since.is_none());
    }

    #[test]
    fn a_silent_time_server_is_reported_as_such() {
        let mut r = Receiver::new(ReceiverConfig::default());
        r.handle_datagram(LocalNs::from_ns(0), master(), &status(7));
        let mut buf = [0u8; 1500];
        let mut now = 0;
        let mut seen = Vec::new();
        while now < 6_000 * MS {
            r.handle_datagram(LocalNs::from_ns(now), master(), &status(7));
            while r.poll_transmit(LocalNs::from_ns(now), &mut buf).is_some() {}
            seen.extend(events(&mut r));
            now = (r
                .poll_timeout()
                .clamp(LocalNs::from_ns(now + MS), LocalNs::from_ns(now + 100 * MS)))
            .ns();
        }
        let d = seen
            .iter()
            .find_map(|e| match e {
                Event::NoClock(d) => Some(*d),
                _ => None,
            })
            .expect("reported after 5 s");
        assert!(d.sent > 0 && d.answered == 0 && d.timeouts > 0, "{d:?}");
        assert!(d.to_string().contains("nothing comes back"), "{d}");
    }

    #[test]
    fn lost_packets_are_asked_for_from_the_master() {
        let mut r = Receiver::new(ReceiverConfig {
            clock: ClockSource::System,
            ..ReceiverConfig::default()
        });
        r.handle_datagram(LocalNs::from_ns(0), master(), &sys_status(7));
        r.handle_datagram(LocalNs::from_ns(0), master(), &audio(7, 10, 1_000 * MS));
        r.handle_datagram(LocalNs::from_ns(MS), master(), &audio(7, 14, 1_020 * MS));
        let mut buf = [0u8; 1500];
        assert!(
            r.poll_transmit(LocalNs::from_ns(2 * MS), &mut buf)
                .is_none(),
            "reorder grace"
        );
        let t = r
            .poll_transmit(r.poll_timeout(), &mut buf)
            .expect("a NACK once the grace is over");
        assert_eq!(t.to, "10.0.0.1:45301".parse().unwrap());
        let n = nack::Nack::decode(&buf[..t.len]).unwrap();
        assert_eq!(n.lost().collect::<Vec<_>>(), vec![11, 12, 13]);
        assert_eq!(r.stats().nacks_sent, 1);
        // With resends off, nothing is asked.
        let mut quiet = Receiver::new(ReceiverConfig {
            clock: ClockSource::System,
            resend: false,
            ..ReceiverConfig::default()
        });
        quiet.handle_datagram(LocalNs::from_ns(0), master(), &sys_status(7));
        quiet.handle_datagram(LocalNs::from_ns(0), master(), &audio(7, 10, 0));
        quiet.handle_datagram(LocalNs::from_ns(0), master(), &audio(7, 14, 0));
        assert!(quiet
            .poll_transmit(LocalNs::from_ns(100 * MS), &mut buf)
            .is_none());
    }

    #[test]
    fn losses_beyond_one_nacks_capacity_go_out_in_several() {
        let mut r = Receiver::new(ReceiverConfig {
            clock: ClockSource::System,
            ..ReceiverConfig::default()
        });
        r.handle_datagram(LocalNs::from_ns(0), master(), &sys_status(7));
        // Every 20th packet lost: each needs its own FCI entry, 99 of them.
        let mut lost = Vec::new();
        for seq in 1..2000u16 {
            if seq % 20 == 0 {
                lost.push(seq);
                continue;
            }
            r.handle_datagram(LocalNs::from_ns(0), master(), &audio(7, seq, 10_000 * MS));
        }
        let mut buf = [0u8; 1500];
        let now = r.poll_timeout();
        let mut asked = Vec::new();
        let mut messages = 0;
        while let Some(t) = r.poll_transmit(now, &mut buf) {
            let n = nack::Nack::decode(&buf[..t.len]).unwrap();
            asked.extend(n.lost());
            messages += 1;
        }
        asked.sort_unstable();
        assert_eq!(asked, lost);
        assert_eq!(messages, 2);
        assert_eq!(r.stats().loss.requested, lost.len() as u64);
    }

    /// Answers the receiver's time queries as a master `offset` ahead until it locks; returns
    /// the local time reached.
    fn lock_clock(r: &mut Receiver, offset: i64, mut now: LocalNs) -> LocalNs {
        let mut buf = [0u8; 1500];
        let server: SocketAddr = "10.0.0.1:45301".parse().unwrap();
        for _ in 0..40 {
            while let Some(t) = r.poll_transmit(now, &mut buf) {
                if t.to != server {
                    continue;
                }
                let req = NtpPacket::decode(&buf[..t.len]).unwrap();
                let t2 = ns_from_ntp64(req.transmit_ts) + 200_000 + offset;
                let reply = NtpPacket::server_reply(&req, ntp64_from_ns(t2), ntp64_from_ns(t2));
                r.handle_datagram(now + 400_000, server, &reply.encode());
            }
            now = r.poll_timeout().max(now + MS);
        }
        assert!(r.clock_locked());
        now
    }

    #[test]
    fn a_new_stream_far_off_the_clock_resets_it_at_once() {
        let mut r = Receiver::new(ReceiverConfig {
            // (The stream stays alive while the test locks the clock.)
            stream_timeout_ns: i64::MAX / 4,
            ..ReceiverConfig::default()
        });
        r.handle_datagram(LocalNs::from_ns(0), master(), &status(7));
        // (Play times on the wire are NTP-64: keep them positive.)
        let offset = 20_000_000 * MS;
        let now = lock_clock(&mut r, offset, LocalNs::from_ns(MS));
        events(&mut r);
        // The same stream, stamped 100 ms (its latency) ahead: nothing to say.
        r.handle_datagram(now, master(), &audio(7, 1, (now + offset + 100 * MS).ns()));
        assert!(events(&mut r).is_empty());
        // The master restarts on a timeline an hour behind.
        r.handle_datagram(now, master(), &status(8));
        let generation = r.clock_generation();
        let far = now + offset - 3_600_000 * MS + 100 * MS;
        let first = audio(8, 1, far.ns());
        assert!(r.handle_datagram(now, master(), &first).is_some());
        assert!(
            matches!(events(&mut r).as_slice(), [Event::StreamStarted(_)]),
            "one packet proves nothing"
        );
        assert!(r.clock().is_some());
        r.handle_datagram(now + 5 * MS, master(), &audio(8, 2, (far + 5 * MS).ns()));
        assert!(matches!(
            events(&mut r).as_slice(),
            [Event::ClockStale { off_ns }] if (*off_ns + 3_600_000 * MS).abs() < MS
        ));
        assert!(r.clock().is_none() && r.clock_generation() > generation);
        // Re-read at once: a query goes out now, not at the next poll.
        let mut buf = [0u8; 1500];
        let t = r
            .poll_transmit(now + 6 * MS, &mut buf)
            .expect("a time query");
        assert_eq!(t.len, NtpPacket::LEN);
        // Only the first packets of a stream are checked...
        r.handle_datagram(now, master(), &audio(8, 3, (far + 1_000_000 * MS).ns()));
        r.handle_datagram(now, master(), &audio(8, 4, (far + 1_000_000 * MS).ns()));
        assert!(events(&mut r).is_empty());
        // ...and the first of every run: the master's timeline stepped 2 s ahead.
        let offset = offset - 3_600_000 * MS;
        let now = lock_clock(&mut r, offset, now + 10 * MS);
        events(&mut r);
        let mut marked = audio(8, 5, (now + offset + 2_100 * MS).ns());
        marked[1] |= 0x80;
        // (A lone odd packet is forgotten when the next one is fine.)
        r.handle_datagram(now, master(), &marked);
        r.handle_datagram(now, master(), &audio(8, 6, (now + offset + 100 * MS).ns()));
        r.handle_datagram(
            now,
            master(),
            &audio(8, 7, (now + offset + 2_100 * MS).ns()),
        );
        assert!(events(&mut r).is_empty());
        r.handle_datagram(now, master(), &marked);
        r.handle_datagram(
            now,
            master(),
            &audio(8, 8, (now + offset + 2_105 * MS).ns()),
        );
        assert!(matches!(
            events(&mut r).as_slice(),
            [Event::ClockStale { off_ns }] if (*off_ns - 2_000 * MS).abs() < 10 * MS
        ));
    }

    /// Feeds `r` the stream `status` (and lost audio, sequence gaps that would ask for
    /// resends) for 10 s; returns the events and the datagrams it wanted to send.
    fn run_stream(r: &mut Receiver, status: &[u8]) -> (Vec<Event>, Vec<Transmit>) {
        let mut buf = [0u8; 1500];
        let (mut seen, mut sent) = (Vec::new(), Vec::new());
        let mut now = LocalNs::from_ns(MS);
        let mut seq = 0u16;
        while now < LocalNs::from_ns(10_000 * MS) {
            r.handle_datagram(now, master(), status);
            seq = seq.wrapping_add(2);
            r.handle_datagram(now, master(), &audio(7, seq, (now + 100 * MS).ns()));
            while let Some(t) = r.poll_transmit(now, &mut buf) {
                sent.push(t);
            }
            seen.extend(events(r));
            now = r.poll_timeout().clamp(now + MS, now + 100 * MS);
        }
        (seen, sent)
    }

    fn mismatches(seen: &[Event]) -> Vec<ClockMismatch> {
        seen.iter()
            .filter_map(|e| match e {
                Event::ClockMismatch(m) => Some(*m),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_ntp_server_against_a_master_stream_is_refused_at_once_and_once() {
        let ntp: SocketAddr = "192.0.2.9:123".parse().unwrap();
        let mut r = Receiver::new(ReceiverConfig {
            clock: ClockSource::Ntp(Some(ntp)),
            ..ReceiverConfig::default()
        });
        r.handle_datagram(LocalNs::from_ns(0), master(), &status(7));
        // At the first status message, with the stream.
        let first = events(&mut r);
        assert!(
            matches!(
                first.as_slice(),
                [Event::StreamStarted(_), Event::ClockMismatch(_)]
            ),
            "{first:?}"
        );
        let (seen, sent) = run_stream(&mut r, &status(7));
        assert!(mismatches(&seen).is_empty(), "said once: {seen:?}");
        assert!(
            !seen.iter().any(|e| matches!(e, Event::NoClock(_))),
            "the mismatch says why, not a diagnosis of queries never made: {seen:?}"
        );
        assert!(sent.is_empty(), "no time queries, no NACKs: {sent:?}");
        assert!(r.clock().is_none() && !r.clock_locked());
        let m = r.clock_mismatch().unwrap();
        assert_eq!(
            m,
            ClockMismatch {
                stream: ClockDomain::Master,
                source: ClockSource::Ntp(Some(ntp))
            }
        );
        let text = m.to_string();
        assert!(
            text.contains("clock domain master")
                && text.contains("NTP server 192.0.2.9:123")
                && text.contains("nothing plays"),
            "{text}"
        );
        assert_eq!(
            r.clock_diagnosis().last_refusal,
            Some(TimeRefusal::NotQuerying)
        );
        // An answer from that server (it was never asked) moves nothing.
        let reply = NtpPacket::server_reply(
            &NtpPacket::decode(&NtpPacket::client_request(1).encode()).unwrap(),
            1 << 40,
            1 << 40,
        );
        r.handle_datagram(LocalNs::from_ns(11_000 * MS), ntp, &reply.encode());
        assert!(r.clock().is_none());
    }

    #[test]
    fn every_source_that_cannot_read_the_streams_domain_is_refused() {
        let ntp: SocketAddr = "192.0.2.9:123".parse().unwrap();
        let with_server = |d| status_in(7, d, Some(ntp));
        for (source, domain) in [
            (ClockSource::Master, ClockDomain::Ntp),
            (ClockSource::Master, ClockDomain::System),
            (ClockSource::Ntp(Some(ntp)), ClockDomain::System),
            (ClockSource::Ntp(None), ClockDomain::Master),
            (ClockSource::System, ClockDomain::Master),
            (ClockSource::System, ClockDomain::Ntp),
        ] {
            let mut r = Receiver::new(ReceiverConfig {
                clock: source,
                ..ReceiverConfig::default()
            });
            let (seen, sent) = run_stream(&mut r, &with_server(domain));
            assert_eq!(
                mismatches(&seen),
                vec![ClockMismatch {
                    stream: domain,
                    source
                }],
                "{source:?} vs {domain:?}"
            );
            assert!(sent.is_empty() && !r.wants_system_clock() && r.clock().is_none());
        }
        // `auto` is refused only by an `ntp` stream that names no server.
        let mut r = Receiver::new(ReceiverConfig::default());
        let (seen, _) = run_stream(&mut r, &status_in(7, ClockDomain::Ntp, None));
        let m = mismatches(&seen);
        assert_eq!(m.len(), 1);
        assert!(m[0].to_string().contains("names no NTP server"), "{}", m[0]);
    }

    #[test]
    fn auto_follows_the_streams_domain() {
        // `system`: this host's clock, supplied by the shell; no queries.
        let mut r = Receiver::new(ReceiverConfig::default());
        let (seen, _) = run_stream(&mut r, &sys_status(7));
        assert!(mismatches(&seen).is_empty() && r.wants_system_clock());
        assert_eq!(r.clock_diagnosis().sent, 0, "no time queries");
        assert!(r.time_client().is_none());
        assert!(r.clock().is_none(), "until the shell supplies it");
        let est = ClockEstimate {
            ref_local: LocalNs::from_ns(0),
            ref_timeline: TimelineNs::from_ns(1_796_601_600 * 1_000_000_000),
            rate: 1.0,
            uncertainty_ns: 0,
        };
        r.set_external_clock(est);
        assert_eq!(r.clock(), Some(est));
        // The master switches to `master`: its time service is asked, the system clock
        // forgotten (and no longer taken).
        r.handle_datagram(LocalNs::from_ns(20_000 * MS), master(), &status(7));
        assert!(r.clock().is_none() && !r.wants_system_clock());
        r.set_external_clock(est);
        assert!(r.clock().is_none());
        let mut buf = [0u8; 1500];
        let t = r
            .poll_transmit(LocalNs::from_ns(20_000 * MS), &mut buf)
            .unwrap();
        assert_eq!(t.to, "10.0.0.1:45301".parse().unwrap());
    }

    /// Answers `r`'s queries to `server` as an NTP server whose UTC (counted from 1900) is
    /// `utc_offset` ahead of our local clock, for 3 s from `now`.
    fn serve_ntp(r: &mut Receiver, stream: &[u8], server: SocketAddr, utc_offset: i64) {
        let mut buf = [0u8; 1500];
        let mut now = LocalNs::from_ns(MS);
        while now < LocalNs::from_ns(3_000 * MS) {
            r.handle_datagram(now, master(), stream);
            while let Some(t) = r.poll_transmit(now, &mut buf) {
                assert_eq!(t.to, server);
                let req = NtpPacket::decode(&buf[..t.len]).unwrap();
                let t2 = ns_from_ntp64(req.transmit_ts) + 200_000 + utc_offset;
                let reply = NtpPacket::server_reply(&req, ntp64_from_ns(t2), ntp64_from_ns(t2));
                r.handle_datagram(now + 400_000, server, &reply.encode());
            }
            now = r.poll_timeout().clamp(now + MS, now + 100 * MS);
        }
    }

    #[test]
    fn an_ntp_stream_is_read_from_its_server_on_the_utc_timeline_from_1970() {
        // 2026-12-07 in NTP seconds (since 1900); the timeline counts from 1970.
        let unix_s = 1_796_601_600i64;
        let utc_offset = (unix_s + crate::time::NTP_TO_UNIX_S as i64) * 1_000_000_000;
        // The master names the NTP server on its own host by its loopback address: we reach
        // it at the master's address.
        let stream = status_in(
            7,
            ClockDomain::Ntp,
            Some("127.0.0.1:11123".parse().unwrap()),
        );
        let mut r = Receiver::new(ReceiverConfig::default());
        serve_ntp(
            &mut r,
            &stream,
            "10.0.0.1:11123".parse().unwrap(),
            utc_offset,
        );
        let est = r.clock().expect("locked to the stream's NTP server");
        let t = est.to_timeline(LocalNs::from_ns(3_000 * MS));
        assert!(
            (t - TimelineNs::from_ns(unix_s * 1_000_000_000 + 3_000 * MS)).abs() < 1_000,
            "{t}"
        );
        // A receiver given its own server reads that one instead.
        let own: SocketAddr = "192.0.2.9:123".parse().unwrap();
        let mut r = Receiver::new(ReceiverConfig {
            clock: ClockSource::Ntp(Some(own)),
            ..ReceiverConfig::default()
        });
        serve_ntp(&mut r, &stream, own, utc_offset);
        assert!(r.clock().is_some() && r.clock_mismatch().is_none());
        // `--clock ntp` without a server of its own reads the one the stream names.
        let mut r = Receiver::new(ReceiverConfig {
            clock: ClockSource::Ntp(None),
            ..ReceiverConfig::default()
        });
        serve_ntp(
            &mut r,
            &stream,
            "10.0.0.1:11123".parse().unwrap(),
            utc_offset,
        );
        assert!(r.clock().is_some());
    }

    #[test]
    fn a_master_that_names_another_ntp_server_is_followed_there() {
        let mut r = Receiver::new(ReceiverConfig::default());
        let first: SocketAddr = "192.0.2.9:123".parse().unwrap();
        let second: SocketAddr = "192.0.2.10:123".parse().unwrap();
        let mut buf = [0u8; 1500];
        r.handle_datagram(
            LocalNs::from_ns(0),
            master(),
            &status_in(7, ClockDomain::Ntp, Some(first)),
        );
        let t = r.poll_transmit(LocalNs::from_ns(0), &mut buf).unwrap();
        assert_eq!(t.to, first);
        r.handle_datagram(
            LocalNs::from_ns(MS),
            master(),
            &status_in(7, ClockDomain::Ntp, Some(second)),
        );
        let t = r
            .poll_transmit(LocalNs::from_ns(50 * MS), &mut buf)
            .unwrap();
        assert_eq!(t.to, second);
    }

    #[test]
    fn a_master_that_changes_to_a_readable_domain_is_played() {
        let mut r = Receiver::new(ReceiverConfig {
            clock: ClockSource::System,
            ..ReceiverConfig::default()
        });
        r.handle_datagram(LocalNs::from_ns(0), master(), &status(7));
        assert_eq!(mismatches(&events(&mut r)).len(), 1);
        r.handle_datagram(LocalNs::from_ns(MS), master(), &sys_status(7));
        assert!(mismatches(&events(&mut r)).is_empty());
        assert!(r.clock_mismatch().is_none() && r.wants_system_clock());
        // Back to `master`: refused again, and said again.
        r.handle_datagram(LocalNs::from_ns(2 * MS), master(), &status(7));
        assert_eq!(mismatches(&events(&mut r)).len(), 1);
    }

    proptest! {
        #[test]
        fn garbage_never_panics_nor_starts_a_stream(
            bytes in proptest::collection::vec(any::<u8>(), 0..1500)
        ) {
            let mut r = Receiver::new(ReceiverConfig::default());
            r.handle_datagram(LocalNs::from_ns(0), master(), &status(7));
            let before = r.stats().audio;
            let _ = r.handle_datagram(LocalNs::from_ns(MS), other(), &bytes);
            prop_assert_eq!(r.stream().map(|s| s.status.ssrc), Some(7));
            prop_assert_eq!(r.stats().audio, before);
        }
    }
}
