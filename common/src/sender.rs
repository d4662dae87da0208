//! The master's sender core, sans-I/O: audio in, datagrams out, control messages answered.
//!
//! The shell (the `sender` daemon or the PipeWire module) owns the sockets and the clock:
//! - [`SenderCore::push_audio`] with each captured buffer (capture time on the timeline);
//! - [`SenderCore::handle_control`] with every datagram arriving on the control port (NTP
//!   requests, NACKs, receiver reports and room control messages, see [`crate::rooms`]), passing the kernel receive time as `now` when it has it;
//! - [`SenderCore::poll_transmit`] until it returns `None`, sending each datagram to the stream
//!   target (multicast group or unicast list) or to the given peer from the control socket;
//! - and again at [`SenderCore::poll_timeout`].
//!
//! What goes out, in this order of priority: time-service replies (T3 is the `now` of
//! `poll_transmit`), the status message (at the first poll, before the first packet of every
//! run, then every `status_interval_ns`), fresh audio packets, resends.
//!
//! Resends: a NACKed packet is resent by unicast to the NACK's source only while it can still
//! be played (its play time is at least `min_lead_ns` after the resend leaves), after a short
//! coalescing delay; when another receiver asks for the same packet during that delay it goes
//! out once to the stream target instead, and requests arriving shortly after a multicast
//! resend are served by it. Every resend costs a
//! token from the receiver's bucket and from a global bucket, so no receiver, and no crowd of
//! receivers, can make the master send without limit.

use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::format::{ClockDomain, StreamFormat};
use crate::packetizer::{ConfigError, PacketOut, Packetizer, PacketizerConfig};
use crate::resend::ResendRing;
use crate::rooms::{RoomEvent, RoomPolicy, RoomStats, RoomTable};
use crate::time::{
    frames_to_ns, ntp64_from_timeline, timeline_in_range, OutOfTimeline, TimelineNs, NS_PER_SEC,
};
use crate::wire::nack::Nack;
use crate::wire::ntp::{NtpPacket, MODE_CLIENT};
use crate::wire::status::{Status, StatusName};
use crate::wire::{classify, Kind};

/// Limits of the resend service. Rates are shares of the stream's own packet rate, bursts are
/// durations of stream audio, so they scale with the packet size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ResendPolicy {
    /// Audio kept for resends, ns.
    pub history_ns: i64,
    /// Sustained resend rate per receiver, as a fraction of the stream's packet rate.
    pub peer_share: f64,
    /// Per-receiver burst: as many packets as this much audio, ns.
    pub peer_burst_ns: i64,
    /// Sustained resend rate of the master, as a fraction of the stream's packet rate.
    pub total_share: f64,
    /// The master's resend burst, ns of audio.
    pub total_burst_ns: i64,
    /// A resend waits this long for other receivers' requests for the same packet (then goes
    /// out once by multicast), ns. 0 sends at the next poll.
    pub coalesce_ns: i64,
    /// A resend is only made if it leaves at least this long before the packet's play time
    /// (after the coalescing delay), ns: one that would arrive too late only wastes tokens.
    pub min_lead_ns: i64,
    /// After a multicast resend, requests for the same packet are ignored this long, ns.
    pub multicast_holdoff_ns: i64,
    /// Receivers tracked for rate limiting (least recently seen evicted).
    pub max_peers: usize,
}

impl Default for ResendPolicy {
    fn default() -> Self {
        ResendPolicy {
            history_ns: NS_PER_SEC,
            peer_share: 0.5,
            peer_burst_ns: 200_000_000,
            total_share: 2.0,
            total_burst_ns: 1_000_000_000,
            coalesce_ns: 2_000_000,
            min_lead_ns: 1_000_000,
            multicast_holdoff_ns: 20_000_000,
            max_peers: 64,
        }
    }
}

/// Everything a [`SenderCore`] needs.
#[derive(Clone, Debug, PartialEq)]
pub struct SenderConfig {
    /// Rate, channels, wire sample format.
    pub format: StreamFormat,
    /// Capture-to-DAC latency added to every stamp, ns (whole microseconds on the wire).
    pub latency_ns: i64,
    /// Frames in a full packet.
    pub frames_per_packet: u16,
    /// Sender name announced in the status message (cut to 64 bytes).
    pub name: String,
    /// The control port (time service, NACKs), announced in the status message.
    pub time_port: u16,
    /// Clock domain of the stamps, announced in the status message.
    pub clock_domain: ClockDomain,
    /// Clock domain `ntp`: the NTP server the timeline is read from, announced in the status
    /// message so receivers read the same one.
    pub ntp_server: Option<SocketAddr>,
    /// The positions of the channels, announced in the status message (`None`: the default
    /// order for the channel count, see `channels::ChannelMap::default_for`).
    pub channel_map: Option<crate::channels::ChannelMap>,
    /// Stop sending after this much all-zero input; `None` never stops.
    pub silence_timeout_ns: Option<i64>,
    /// Start a new run when capture times depart from the prediction by more than this, ns.
    pub resync_threshold_ns: i64,
    /// Stream id; the shell picks a random one per start.
    pub ssrc: u32,
    /// Status flags (see `wire::status::FLAG_AUTHENTICATED`).
    pub flags: u32,
    /// Interval between status messages, ns.
    pub status_interval_ns: i64,
    /// Resend limits.
    pub resend: ResendPolicy,
    /// Limits of the room table (receivers' reports, commands to them).
    pub rooms: RoomPolicy,
}

impl SenderConfig {
    /// Defaults for `format`: 150 ms latency, packets filling a 1472-byte UDP payload, control
    /// port 45301, clock domain `master`, 1 s silence timeout, 20 ms resync threshold, status
    /// every second, [`ResendPolicy::default`].
    pub fn new(format: StreamFormat, ssrc: u32) -> Self {
        let p = PacketizerConfig::new(format, 150_000_000, ssrc);
        SenderConfig {
            format,
            latency_ns: p.latency_ns,
            frames_per_packet: p.frames_per_packet,
            name: String::from("WaveSync"),
            time_port: 45301,
            clock_domain: ClockDomain::Master,
            ntp_server: None,
            channel_map: None,
            silence_timeout_ns: p.silence_timeout_ns,
            resync_threshold_ns: p.resync_threshold_ns,
            ssrc,
            flags: 0,
            status_interval_ns: NS_PER_SEC,
            resend: ResendPolicy::default(),
            rooms: RoomPolicy::default(),
        }
    }

    fn packetizer(&self) -> PacketizerConfig {
        PacketizerConfig {
            format: self.format,
            latency_ns: self.latency_ns,
            frames_per_packet: self.frames_per_packet,
            ssrc: self.ssrc,
            silence_timeout_ns: self.silence_timeout_ns,
            resync_threshold_ns: self.resync_threshold_ns,
            first_seq: 0,
            first_timestamp: 0,
        }
    }
}

/// Where a datagram goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// The stream's destination (multicast group or the configured unicast receivers), from the
    /// stream socket.
    Stream,
    /// One peer, from the control socket.
    Peer(SocketAddr),
}

/// A datagram written by [`SenderCore::poll_transmit`] into the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub to: Target,
    /// Bytes at the start of the buffer.
    pub len: usize,
}

/// Counters of a [`SenderCore`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SenderStats {
    /// Fresh audio packets handed out (resends not counted; announced in the status).
    pub packets_sent: u64,
    /// Bytes of every datagram handed out.
    pub bytes_sent: u64,
    /// Status messages handed out.
    pub status_sent: u64,
    /// Time-service replies handed out.
    pub ntp_replies: u64,
    /// Time requests dropped because the reply queue was full.
    pub ntp_dropped: u64,
    /// Valid NACKs for this stream.
    pub nacks_received: u64,
    /// Sequence numbers those NACKs asked for.
    pub seqs_requested: u64,
    /// Resends handed out (unicast and multicast).
    pub resends_sent: u64,
    /// Of those, sent once to the stream target for several receivers.
    pub resends_multicast: u64,
    /// Requests served by a resend already pending or just multicast.
    pub resends_coalesced: u64,
    /// Requests for packets no longer in the ring or no longer playable.
    pub resends_too_late: u64,
    /// Requests refused by the rate limits.
    pub resends_rate_limited: u64,
    /// Control datagrams ignored: malformed, of the wrong kind, or for another stream.
    pub rejected: u64,
    /// Runs started (first sound, after silence, after a resync).
    pub runs_started: u64,
    /// Runs restarted because capture times departed from the prediction.
    pub resyncs: u64,
    /// Runs stopped by silence.
    pub silence_stops: u64,
    /// Capture time minus the run's prediction at the last push, ns (drift of the capture
    /// clock against the timeline shows here before it causes a resync).
    pub last_capture_departure_ns: i64,
    /// Audio packets dropped before they were handed out (not polled in time, or `buf` too
    /// small).
    pub dropped_unsent: u64,
    /// Audio blocks refused because their capture or play times fell outside the timeline's
    /// valid range ([`crate::time::TIMELINE_END_NS`]).
    pub audio_out_of_timeline: u64,
    /// Time requests left unanswered because the timeline's `now` was outside its valid range.
    pub ntp_out_of_timeline: u64,
}

/// Token bucket: `rate` tokens per second up to `burst`.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    last: TimelineNs,
}

impl Bucket {
    fn full(burst: f64, now: TimelineNs) -> Self {
        Bucket {
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: TimelineNs, rate: f64, burst: f64) {
        if now > self.last {
            self.tokens = (self.tokens + (now - self.last) as f64 * rate / 1e9).min(burst);
            self.last = now;
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Peer {
    addr: SocketAddr,
    bucket: Bucket,
    last_seen: TimelineNs,
}

/// Resend state of one ring slot.
#[derive(Clone, Copy, Debug, Default)]
struct ResendSlot {
    seq: u16,
    pending: Option<Target>,
    multicast_at: Option<TimelineNs>,
}

#[derive(Clone, Copy, Debug)]
struct TimeRequest {
    from: SocketAddr,
    request: NtpPacket,
    received: TimelineNs,
}

const NTP_QUEUE: usize = 64;

/// The sender's state machine. See the module documentation.
#[derive(Debug)]
pub struct SenderCore {
    cfg: SenderConfig,
    packetizer: Packetizer,
    ring: ResendRing,
    /// Fresh packets not yet handed out, by sequence number (their bytes live in the ring).
    fresh: VecDeque<u16>,
    status_due: bool,
    next_status: TimelineNs,
    ntp: VecDeque<TimeRequest>,
    slots: Vec<ResendSlot>,
    /// Pending resends in order of due time.
    resend_queue: VecDeque<(u16, TimelineNs)>,
    peers: Vec<Peer>,
    rooms: RoomTable,
    total: Option<Bucket>,
    peer_rate: f64,
    peer_burst: f64,
    total_rate: f64,
    total_burst: f64,
    last_now: Option<TimelineNs>,
    stats: SenderStats,
}

impl SenderCore {
    /// A sender for `cfg`; all buffers are allocated here.
    pub fn new(cfg: SenderConfig) -> Result<Self, ConfigError> {
        let packetizer = Packetizer::new(cfg.packetizer())?;
        if cfg.status_interval_ns <= 0 {
            return Err(ConfigError::Invalid("status interval must be positive"));
        }
        let r = &cfg.resend;
        if !(r.peer_share >= 0.0 && r.total_share >= 0.0) || r.max_peers == 0 {
            return Err(ConfigError::Invalid("resend policy"));
        }
        let fpp = cfg.frames_per_packet;
        let packets =
            |ns: i64| ns.max(0) as f64 * cfg.format.rate as f64 / (fpp as f64 * NS_PER_SEC as f64);
        let packet_rate = packets(NS_PER_SEC);
        let history = ResendRing::packets_for_duration(cfg.format, fpp, r.history_ns);
        let ring = ResendRing::new(history, packetizer.config().packet_len());
        let capacity = ring.capacity();
        Ok(SenderCore {
            peer_rate: packet_rate * r.peer_share,
            peer_burst: packets(r.peer_burst_ns).max(1.0),
            total_rate: packet_rate * r.total_share,
            total_burst: packets(r.total_burst_ns).max(1.0),
            packetizer,
            fresh: VecDeque::with_capacity(capacity),
            status_due: true,
            next_status: TimelineNs::MIN,
            ntp: VecDeque::with_capacity(NTP_QUEUE),
            slots: vec![ResendSlot::default(); capacity],
            resend_queue: VecDeque::with_capacity(capacity),
            peers: Vec::with_capacity(r.max_peers),
            rooms: RoomTable::new(cfg.rooms, cfg.ssrc),
            total: None,
            ring,
            last_now: None,
            stats: SenderStats::default(),
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SenderConfig {
        &self.cfg
    }

    /// Largest datagram [`SenderCore::poll_transmit`] writes: give it a buffer this big.
    pub fn max_datagram_len(&self) -> usize {
        self.ring
            .max_packet_len()
            .max(crate::wire::status::MAX_LEN)
            .max(crate::wire::control::MAX_LEN)
            .max(NtpPacket::LEN)
    }

    /// Counters, including the packetizer's run counters.
    pub fn stats(&self) -> SenderStats {
        let p = self.packetizer.stats();
        SenderStats {
            runs_started: p.runs_started,
            resyncs: p.resyncs,
            silence_stops: p.silence_stops,
            last_capture_departure_ns: p.last_departure_ns,
            ..self.stats
        }
    }

    /// The room table (receivers that report to this master).
    pub fn rooms(&self) -> &RoomTable {
        &self.rooms
    }

    /// The next room event for the log (a room appeared, went offline, came back, changed).
    pub fn poll_room_event(&mut self, now: TimelineNs) -> Option<RoomEvent> {
        self.rooms.poll_event(now)
    }

    /// The room table's counters.
    pub fn room_stats(&self) -> RoomStats {
        self.rooms.stats()
    }

    /// The status message as it would be sent now.
    pub fn status(&self) -> Status {
        Status {
            ssrc: self.cfg.ssrc,
            format: self.cfg.format,
            clock_domain: self.cfg.clock_domain,
            frames_per_packet: self.cfg.frames_per_packet,
            time_port: self.cfg.time_port,
            latency_ns: self.cfg.latency_ns,
            packets_sent: self.stats.packets_sent,
            flags: self.cfg.flags,
            name: StatusName::truncated(&self.cfg.name),
            ntp_server: self.cfg.ntp_server,
            channel_map: self.cfg.channel_map,
        }
    }

    /// Feeds captured audio: interleaved `f32`, the first frame captured at `capture_time`.
    ///
    /// A block whose capture time, or its last frame's play time, lies outside the timeline's
    /// valid range is refused whole (counted in [`SenderStats::audio_out_of_timeline`]): its
    /// stamps could not be put on the wire.
    pub fn push_audio(
        &mut self,
        capture_time: TimelineNs,
        samples: &[f32],
    ) -> Result<(), OutOfTimeline> {
        let channels = usize::from(self.cfg.format.channels.max(1));
        let frames = (samples.len() / channels) as i64;
        let last_play = capture_time
            .saturating_add(self.cfg.latency_ns)
            .saturating_add(frames_to_ns(frames, self.cfg.format.rate));
        for t in [capture_time, last_play] {
            if !timeline_in_range(t) {
                self.stats.audio_out_of_timeline += 1;
                return Err(OutOfTimeline { t_ns: t.ns() });
            }
        }
        let (ring, fresh, status_due, dropped) = (
            &mut self.ring,
            &mut self.fresh,
            &mut self.status_due,
            &mut self.stats.dropped_unsent,
        );
        self.packetizer.push(capture_time, samples, |p| {
            if p.marker {
                *status_due = true;
            }
            enqueue(ring, fresh, dropped, &p);
        });
        Ok(())
    }

    /// Changes the latency: the current run ends, the next audio starts a new run with the new
    /// latency, and the status goes out again before it.
    pub fn set_latency_ns(&mut self, latency_ns: i64) -> Result<(), ConfigError> {
        let (ring, fresh, dropped) = (
            &mut self.ring,
            &mut self.fresh,
            &mut self.stats.dropped_unsent,
        );
        self.packetizer
            .set_latency_ns(latency_ns, |p| enqueue(ring, fresh, dropped, &p))?;
        self.cfg.latency_ns = latency_ns;
        self.status_due = true;
        Ok(())
    }

    /// Changes the announced name (cut to 64 bytes); the status goes out again at once.
    pub fn set_name(&mut self, name: &str) {
        self.cfg.name = name.to_owned();
        self.status_due = true;
    }

    /// Sends the partially filled packet now (at the end of the stream).
    pub fn flush(&mut self) {
        let (ring, fresh, dropped) = (
            &mut self.ring,
            &mut self.fresh,
            &mut self.stats.dropped_unsent,
        );
        self.packetizer.flush(|p| enqueue(ring, fresh, dropped, &p));
    }

    /// Handles a datagram that arrived on the control port at `now` from `from`.
    pub fn handle_control(&mut self, now: TimelineNs, from: SocketAddr, bytes: &[u8]) {
        self.last_now = Some(now);
        match classify(bytes) {
            Kind::Ntp => match NtpPacket::decode(bytes) {
                Ok(request) if request.mode == MODE_CLIENT => {
                    if self.ntp.len() >= NTP_QUEUE {
                        self.stats.ntp_dropped += 1;
                    } else {
                        self.ntp.push_back(TimeRequest {
                            from,
                            request,
                            received: now,
                        });
                    }
                }
                _ => self.stats.rejected += 1,
            },
            Kind::Nack => match Nack::decode(bytes) {
                Ok(nack) if nack.media_ssrc == self.cfg.ssrc => {
                    self.stats.nacks_received += 1;
                    for seq in nack.lost() {
                        self.stats.seqs_requested += 1;
                        self.request_resend(now, from, seq);
                    }
                }
                _ => self.stats.rejected += 1,
            },
            Kind::Report => self.rooms.handle_report(now, from, bytes),
            Kind::Control => self.rooms.handle_control(now, from, bytes),
            _ => self.stats.rejected += 1,
        }
    }

    fn request_resend(&mut self, now: TimelineNs, from: SocketAddr, seq: u16) {
        let send_at = now.saturating_add(self.cfg.resend.coalesce_ns);
        match self.ring.get(seq) {
            Some(p) if p.play_time > send_at.saturating_add(self.cfg.resend.min_lead_ns) => {}
            _ => {
                self.stats.resends_too_late += 1;
                return;
            }
        }
        let slot = &mut self.slots[seq as usize & (self.ring.capacity() - 1)];
        if slot.seq != seq {
            *slot = ResendSlot {
                seq,
                pending: None,
                multicast_at: None,
            };
        }
        if matches!(slot.multicast_at, Some(t) if now.ns().saturating_sub(t.ns()) < self.cfg.resend.multicast_holdoff_ns)
        {
            self.stats.resends_coalesced += 1;
            return;
        }
        match slot.pending {
            Some(Target::Peer(p)) if p != from => {
                slot.pending = Some(Target::Stream);
                self.stats.resends_coalesced += 1;
                return;
            }
            Some(_) => {
                self.stats.resends_coalesced += 1;
                return;
            }
            None => {}
        }
        if !self.take_tokens(now, from) {
            self.stats.resends_rate_limited += 1;
            return;
        }
        let slot = &mut self.slots[seq as usize & (self.ring.capacity() - 1)];
        slot.pending = Some(Target::Peer(from));
        if self.resend_queue.len() == self.resend_queue.capacity() {
            // Cannot happen while every queued entry has its own slot; stay bounded anyway.
            if let Some((old, _)) = self.resend_queue.pop_front() {
                let i = old as usize & (self.ring.capacity() - 1);
                if self.slots[i].seq == old {
                    self.slots[i].pending = None;
                }
            }
        }
        self.resend_queue.push_back((seq, send_at));
    }

    /// Takes one token from `from`'s bucket and one from the global bucket, or neither.
    fn take_tokens(&mut self, now: TimelineNs, from: SocketAddr) -> bool {
        let total = self
            .total
            .get_or_insert_with(|| Bucket::full(self.total_burst, now));
        total.refill(now, self.total_rate, self.total_burst);
        let i = match self.peers.iter().position(|p| p.addr == from) {
            Some(i) => i,
            None => {
                let peer = Peer {
                    addr: from,
                    bucket: Bucket::full(self.peer_burst, now),
                    last_seen: now,
                };
                if self.peers.len() < self.cfg.resend.max_peers {
                    self.peers.push(peer);
                    self.peers.len() - 1
                } else {
                    let (i, _) = self
                        .peers
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, p)| p.last_seen)
                        .unwrap_or((0, &peer));
                    self.peers[i] = peer;
                    i
                }
            }
        };
        let peer = &mut self.peers[i];
        peer.last_seen = now;
        peer.bucket.refill(now, self.peer_rate, self.peer_burst);
        if peer.bucket.tokens >= 1.0 && total.tokens >= 1.0 {
            peer.bucket.tokens -= 1.0;
            total.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// The next datagram to send at `now`, written to `buf` (give it
    /// [`SenderCore::max_datagram_len`] bytes); `None` when nothing is due.
    pub fn poll_transmit(&mut self, now: TimelineNs, buf: &mut [u8]) -> Option<Transmit> {
        self.last_now = Some(now);
        while let Some(t) = self.ntp.pop_front() {
            let (Ok(t2), Ok(t3)) = (ntp64_from_timeline(t.received), ntp64_from_timeline(now))
            else {
                // A reply would carry clamped or wrapped stamps: a receiver would lock onto a
                // wrong clock. Better unanswered (its time client says so).
                self.stats.ntp_out_of_timeline += 1;
                continue;
            };
            let reply = NtpPacket::server_reply(&t.request, t2, t3);
            let bytes = reply.encode();
            if let Some(dst) = buf.get_mut(..bytes.len()) {
                dst.copy_from_slice(&bytes);
                self.stats.ntp_replies += 1;
                return Some(self.sent(Target::Peer(t.from), bytes.len()));
            }
            self.stats.ntp_dropped += 1;
        }
        if self.status_due || now >= self.next_status {
            self.status_due = false;
            self.next_status = now.saturating_add(self.cfg.status_interval_ns);
            // The latency was validated against the status range in `new`.
            if let Ok(len) = self.status().encode(buf) {
                self.stats.status_sent += 1;
                return Some(self.sent(Target::Stream, len));
            }
        }
        while let Some(seq) = self.fresh.pop_front() {
            match self.ring.get(seq).and_then(|p| copy_into(buf, p.bytes)) {
                Some(len) => {
                    self.stats.packets_sent += 1;
                    return Some(self.sent(Target::Stream, len));
                }
                None => self.stats.dropped_unsent += 1,
            }
        }
        if let Some(t) = self.rooms.poll_transmit(now, buf) {
            return Some(self.sent(Target::Peer(t.to), t.len));
        }
        while let Some(&(seq, due)) = self.resend_queue.front() {
            if due > now {
                break;
            }
            self.resend_queue.pop_front();
            let slot = &mut self.slots[seq as usize & (self.ring.capacity() - 1)];
            if slot.seq != seq {
                continue;
            }
            let Some(to) = slot.pending.take() else {
                continue;
            };
            let lead = self.cfg.resend.min_lead_ns;
            let Some(p) = self
                .ring
                .get(seq)
                .filter(|p| p.play_time > now.saturating_add(lead))
            else {
                self.stats.resends_too_late += 1;
                continue;
            };
            let Some(len) = copy_into(buf, p.bytes) else {
                continue;
            };
            if to == Target::Stream {
                slot.multicast_at = Some(now);
                self.stats.resends_multicast += 1;
            }
            self.stats.resends_sent += 1;
            return Some(self.sent(to, len));
        }
        None
    }

    fn sent(&mut self, to: Target, len: usize) -> Transmit {
        self.stats.bytes_sent += len as u64;
        Transmit { to, len }
    }

    /// When [`SenderCore::poll_transmit`] should be called next even if nothing else happens:
    /// the last `now` seen if something is already queued, else the next status or resend due.
    pub fn poll_timeout(&self) -> TimelineNs {
        let last = self.last_now.unwrap_or(TimelineNs::MIN);
        if !self.ntp.is_empty() || !self.fresh.is_empty() || self.status_due {
            return last;
        }
        let mut t = self.next_status;
        if let Some(&(_, due)) = self.resend_queue.front() {
            t = t.min(due);
        }
        if let Some(due) = self.rooms.poll_timeout() {
            t = t.min(due.max(last));
        }
        t
    }
}

/// Stores a fresh packet in the ring and queues it for sending (dropping the oldest unsent one
/// when the queue is full, so nothing grows).
fn enqueue(ring: &mut ResendRing, fresh: &mut VecDeque<u16>, dropped: &mut u64, p: &PacketOut<'_>) {
    // Slots are sized from the packetizer's own packet length: this cannot fail.
    if ring.insert(p.seq, p.play_time, p.bytes).is_err() {
        *dropped += 1;
        return;
    }
    if fresh.len() == fresh.capacity() {
        fresh.pop_front();
        *dropped += 1;
    }
    fresh.push_back(p.seq);
}

fn copy_into(buf: &mut [u8], bytes: &[u8]) -> Option<usize> {
    buf.get_mut(..bytes.len())?.copy_from_slice(bytes);
    Some(bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::frames_to_ns;
    use crate::wire::rtp::AudioPacket;
    use crate::wire::{nack, Kind};

    const MS: i64 = 1_000_000;
    const T0: i64 = 5_000 * NS_PER_SEC;
    const FPP: i64 = 361;

    fn addr(i: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 40_000 + i))
    }

    #[test]
    fn reports_fill_the_room_table_and_lists_go_back_from_the_control_port() {
        use crate::wire::control::{encode_list, Envelope, Message};
        use crate::wire::report::Report;
        let mut s = SenderCore::new(cfg(150 * MS)).unwrap();
        let r = Report {
            id: 42,
            name: StatusName::truncated("kitchen"),
            ..Report::default()
        };
        let mut b = [0u8; 256];
        let n = r.encode(&mut b).unwrap();
        let t0 = TimelineNs::from_ns(T0);
        s.handle_control(t0, addr(1), &b[..n]);
        assert_eq!(s.rooms().len(), 1);
        assert_eq!(s.stats().rejected, 0);
        let n = encode_list(9, 3, 0, &mut b).unwrap();
        s.handle_control(t0, addr(2), &b[..n]);
        assert_eq!(s.poll_timeout(), t0, "an answer waits");
        let mut out = vec![0u8; s.max_datagram_len()];
        let mut pages = 0;
        while let Some(t) = s.poll_transmit(t0, &mut out) {
            if let Ok(Envelope {
                message: Message::Rooms(p),
                ..
            }) = Envelope::decode(&out[..t.len])
            {
                assert_eq!(t.to, Target::Peer(addr(2)));
                assert_eq!(p.entries().next().unwrap().unwrap().report, r);
                pages += 1;
            }
        }
        assert_eq!(pages, 1);
    }

    fn cfg(latency_ns: i64) -> SenderConfig {
        let mut c = SenderConfig::new(StreamFormat::DEFAULT, 0xABCD);
        c.latency_ns = latency_ns;
        c
    }

    fn tone(frames: usize) -> Vec<f32> {
        (0..frames * 2)
            .map(|i| ((i % 64) as f32 - 31.5) / 64.0)
            .collect()
    }

    /// Pushes `frames` of tone from capture time `t` in 256-frame buffers; returns the end time.
    fn push_tone(s: &mut SenderCore, t: i64, frames: usize) -> i64 {
        let audio = tone(256);
        let mut done = 0;
        while done < frames {
            let n = (frames - done).min(256);
            s.push_audio(
                TimelineNs::from_ns(t + frames_to_ns(done as i64, 48_000)),
                &audio[..n * 2],
            )
            .unwrap();
            done += n;
        }
        t + frames_to_ns(frames as i64, 48_000)
    }

    fn drain(s: &mut SenderCore, now: i64) -> Vec<(Target, Vec<u8>)> {
        let mut buf = vec![0u8; s.max_datagram_len()];
        let mut out = Vec::new();
        while let Some(t) = s.poll_transmit(TimelineNs::from_ns(now), &mut buf) {
            out.push((t.to, buf[..t.len].to_vec()));
        }
        out
    }

    fn audio(out: &[(Target, Vec<u8>)]) -> Vec<AudioPacket<'_>> {
        out.iter()
            .filter(|(_, b)| classify(b) == Kind::Audio)
            .map(|(_, b)| AudioPacket::decode(b).unwrap())
            .collect()
    }

    fn nack_bytes(seqs: &[u16], media: u32) -> Vec<u8> {
        let mut b = vec![0u8; nack::MAX_LEN];
        let e = nack::encode(77, media, seqs, &mut b).unwrap();
        assert_eq!(e.consumed, seqs.len());
        b.truncate(e.len);
        b
    }

    #[test]
    fn stamps_advance_by_exactly_frames_over_rate() {
        let mut s = SenderCore::new(cfg(150 * MS)).unwrap();
        let end = push_tone(&mut s, T0, 48_000);
        let out = drain(&mut s, end);
        assert_eq!(classify(&out[0].1), Kind::Status, "status goes first");
        let pk = audio(&out);
        assert_eq!(pk.len(), 48_000 / 361);
        for (n, p) in pk.iter().enumerate() {
            let first = n as i64 * FPP;
            assert_eq!(
                p.play_time,
                TimelineNs::from_ns(T0 + frames_to_ns(first, 48_000) + 150 * MS)
            );
            assert_eq!(p.timestamp, first as u32);
            assert_eq!(p.seq, n as u16);
            assert_eq!(p.marker, n == 0);
            assert_eq!(p.ssrc, 0xABCD);
            assert_eq!(p.frames(2), 361);
        }
        assert!(out.iter().all(|(to, _)| *to == Target::Stream));
        let st = s.stats();
        assert_eq!(st.packets_sent, pk.len() as u64);
        assert_eq!(st.runs_started, 1);
        let bytes: usize = out.iter().map(|(_, b)| b.len()).sum();
        assert_eq!(st.bytes_sent, bytes as u64);
    }

    #[test]
    fn silence_stops_sending_and_resume_is_anchored_at_the_new_capture_time() {
        let mut s = SenderCore::new(cfg(150 * MS)).unwrap();
        let t = push_tone(&mut s, T0, 9_600); // 200 ms of sound
        let zeros = vec![0.0f32; 512];
        let mut t_sil = t;
        for _ in 0..(3 * 48_000 / 256) {
            s.push_audio(TimelineNs::from_ns(t_sil), &zeros).unwrap();
            t_sil += frames_to_ns(256, 48_000);
        }
        let before = drain(&mut s, t_sil);
        let sent: usize = audio(&before).iter().map(|p| p.frames(2)).sum();
        assert_eq!(sent, 9_600 + 48_000, "sound + 1 s of silence, then nothing");
        assert_eq!(s.stats().silence_stops, 1);
        // Sound resumes much later; its capture time is what anchors the new run.
        let resume = T0 + 60 * NS_PER_SEC + 17;
        push_tone(&mut s, resume, 1_000);
        let after = drain(&mut s, resume + 30 * MS);
        assert_eq!(
            classify(&after[0].1),
            Kind::Status,
            "a new run is announced first"
        );
        let pk = audio(&after);
        assert!(pk[0].marker);
        assert_eq!(pk[0].play_time, TimelineNs::from_ns(resume + 150 * MS));
        assert_eq!(
            pk[0].seq,
            audio(&before).last().unwrap().seq.wrapping_add(1)
        );
        assert_eq!(s.stats().runs_started, 2);
    }

    #[test]
    fn status_at_start_then_every_second_with_packets_sent() {
        let mut s = SenderCore::new(cfg(150 * MS)).unwrap();
        let out = drain(&mut s, T0);
        assert_eq!(out.len(), 1);
        let st = Status::decode(&out[0].1).unwrap();
        assert_eq!(st.ssrc, 0xABCD);
        assert_eq!(st.frames_per_packet, 361);
        assert_eq!(st.time_port, 45301);
        assert_eq!(st.latency_ns, 150 * MS);
        assert_eq!(st.name.as_str(), "WaveSync");
        assert_eq!(s.poll_timeout(), TimelineNs::from_ns(T0 + NS_PER_SEC));
        assert!(drain(&mut s, T0 + NS_PER_SEC - 1).is_empty());
        let end = push_tone(&mut s, T0, 3_610);
        let out = drain(&mut s, end);
        assert_eq!(Status::decode(&out[0].1).unwrap().packets_sent, 0);
        assert_eq!(audio(&out).len(), 10);
        // The run's status restarted the 1 s period.
        assert_eq!(s.poll_timeout(), TimelineNs::from_ns(end + NS_PER_SEC));
        assert!(drain(&mut s, end + NS_PER_SEC - 1).is_empty());
        let out = drain(&mut s, end + NS_PER_SEC);
        assert_eq!(out.len(), 1);
        assert_eq!(Status::decode(&out[0].1).unwrap().packets_sent, 10);
    }

    #[test]
    fn ntp_request_gets_a_reply_with_the_request_transmit_as_origin() {
        let mut s = SenderCore::new(cfg(150 * MS)).unwrap();
        drain(&mut s, T0);
        let req = NtpPacket::client_request(0x1234_5678_9ABC_DEF0);
        s.handle_control(TimelineNs::from_ns(T0 + 10), addr(1), &req.encode());
        assert_eq!(
            s.poll_timeout(),
            TimelineNs::from_ns(T0 + 10),
            "a queued reply is due at once"
        );
        let out = drain(&mut s, T0 + 35);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, Target::Peer(addr(1)));
        let reply = NtpPacket::decode(&out[0].1).unwrap();
        assert_eq!(reply.mode, crate::wire::ntp::MODE_SERVER);
        assert_eq!(reply.origin_ts, 0x1234_5678_9ABC_DEF0);
        assert_eq!(reply.receive_ts, crate::time::ntp64_from_ns(T0 + 10));
        assert_eq!(reply.transmit_ts, crate::time::ntp64_from_ns(T0 + 35));
        assert_eq!(s.stats().ntp_replies, 1);
    }

    #[test]
    fn a_timeline_near_zero_streams_and_answers_like_any_other() {
        // A master whose host booted a moment ago: capture at 1 ms.
        let mut s = SenderCore::new(cfg(150 * MS)).unwrap();
        let end = push_tone(&mut s, MS, 361 * 4);
        s.handle_control(
            TimelineNs::from_ns(end),
            addr(1),
            &NtpPacket::client_request(7).encode(),
        );
        let out = drain(&mut s, end);
        let pkts = audio(&out);
        assert_eq!(pkts.len(), 4);
        assert_eq!(pkts[0].play_time, TimelineNs::from_ns(151 * MS));
        let reply = out
            .iter()
            .find(|(_, b)| classify(b) == Kind::Ntp)
            .map(|(_, b)| NtpPacket::decode(b).unwrap())
            .expect("a time reply");
        assert_eq!(crate::time::ns_from_ntp64(reply.transmit_ts), end);
        assert_eq!(s.stats().audio_out_of_timeline, 0);
    }

    #[test]
    fn times_outside_the_timeline_are_refused_and_counted_never_clamped() {
        let mut s = SenderCore::new(cfg(150 * MS)).unwrap();
        let block = tone(256);
        // Before the epoch (a negative timeline), and past the end of the era.
        assert_eq!(
            s.push_audio(TimelineNs::from_ns(-10 * MS), &block),
            Err(OutOfTimeline { t_ns: -10 * MS })
        );
        let late = crate::time::TIMELINE_END_NS - 100 * MS;
        assert!(
            s.push_audio(TimelineNs::from_ns(late), &block).is_err(),
            "its play time is past the end"
        );
        assert_eq!(s.stats().audio_out_of_timeline, 2);
        assert!(audio(&drain(&mut s, T0)).is_empty(), "nothing was sent");
        // A time request answered with a `now` before the epoch stays unanswered.
        s.handle_control(
            TimelineNs::from_ns(-5 * MS),
            addr(1),
            &NtpPacket::client_request(7).encode(),
        );
        let out = drain(&mut s, -4 * MS);
        assert!(
            out.iter().all(|(_, b)| classify(b) != Kind::Ntp),
            "no reply"
        );
        assert_eq!(s.stats().ntp_out_of_timeline, 1);
        assert_eq!(s.stats().ntp_replies, 0);
        // The stream goes on normally once its times are valid again.
        let end = push_tone(&mut s, T0, 361 * 2);
        assert_eq!(audio(&drain(&mut s, end)).len(), 2);
    }

    #[test]
    fn nack_resends_exactly_the_requested_playable_packets() {
        let mut s = SenderCore::new(cfg(150 * MS)).unwrap();
        let end = push_tone(&mut s, T0, 361 * 50);
        let first = drain(&mut s, end);
        let orig: Vec<&Vec<u8>> = first
            .iter()
            .filter(|(_, b)| classify(b) == Kind::Audio)
            .map(|(_, b)| b)
            .collect();
        // At `end` = T0 + 376 ms, packet n plays at T0 + n * 7.52 ms + 150 ms: packets 0..=30
        // are no longer playable. Ask for 1 (late), 35, 36, 45.
        let now = end;
        let late_play = AudioPacket::decode(orig[1]).unwrap().play_time;
        assert!(late_play <= TimelineNs::from_ns(now));
        s.handle_control(
            TimelineNs::from_ns(now),
            addr(1),
            &nack_bytes(&[1, 35, 36, 45], 0xABCD),
        );
        assert!(
            drain(&mut s, now).is_empty(),
            "waits for the coalescing window"
        );
        assert_eq!(s.poll_timeout(), TimelineNs::from_ns(now + 2 * MS));
        let out = drain(&mut s, now + 2 * MS);
        assert_eq!(out.len(), 3);
        for ((to, b), seq) in out.iter().zip([35usize, 36, 45]) {
            assert_eq!(*to, Target::Peer(addr(1)));
            assert_eq!(b, orig[seq], "resend of {seq} is the original packet");
        }
        let st = s.stats();
        assert_eq!(st.nacks_received, 1);
        assert_eq!(st.seqs_requested, 4);
        assert_eq!(st.resends_sent, 3);
        assert_eq!(st.resends_too_late, 1);
        assert_eq!(
            st.packets_sent, 50,
            "resends are not counted as packets sent"
        );
        // Much later nothing is playable any more.
        s.handle_control(
            TimelineNs::from_ns(now + NS_PER_SEC),
            addr(1),
            &nack_bytes(&[45], 0xABCD),
        );
        assert!(drain(&mut s, now + NS_PER_SEC + 5 * MS)
            .iter()
            .all(|(_, b)| classify(b) != Kind::Audio));
        assert_eq!(s.stats().resends_too_late, 2);
    }

    #[test]
    fn same_packet_asked_by_several_receivers_goes_out_once_by_multicast() {
        let mut s = SenderCore::new(cfg(500 * MS)).unwrap();
        let end = push_tone(&mut s, T0, 361 * 20);
        drain(&mut s, end);
        let nack = nack_bytes(&[7, 8], 0xABCD);
        s.handle_control(TimelineNs::from_ns(end), addr(1), &nack);
        s.handle_control(TimelineNs::from_ns(end + MS), addr(2), &nack);
        s.handle_control(TimelineNs::from_ns(end + MS), addr(3), &nack);
        let out = drain(&mut s, end + 2 * MS);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|(to, _)| *to == Target::Stream));
        assert_eq!(
            audio(&out).iter().map(|p| p.seq).collect::<Vec<_>>(),
            [7, 8]
        );
        // A straggler shortly after is served by the multicast copy.
        s.handle_control(TimelineNs::from_ns(end + 5 * MS), addr(4), &nack);
        assert!(drain(&mut s, end + 10 * MS).is_empty());
        let st = s.stats();
        assert_eq!((st.resends_sent, st.resends_multicast), (2, 2));
        assert_eq!(st.resends_coalesced, 6);
        // After the hold-off a receiver that still misses it gets its own unicast copy.
        s.handle_control(
            TimelineNs::from_ns(end + 40 * MS),
            addr(4),
            &nack_bytes(&[7], 0xABCD),
        );
        let out = drain(&mut s, end + 42 * MS);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, Target::Peer(addr(4)));
    }

    /// 50 receivers each NACK 1000 packets in the same instant: the master sends at most its
    /// global burst (1 s of packets = 132 at 133 packets/s), and one greedy receiver
    /// re-asking every 10 ms for a second gets at most its burst + 1 s of its rate.
    #[test]
    fn nack_storm_is_bounded() {
        let mut s = SenderCore::new(cfg(2_000 * MS)).unwrap();
        let end = push_tone(&mut s, T0, 361 * 256);
        let sent = drain(&mut s, end);
        let last = audio(&sent).last().unwrap().seq;
        let seqs: Vec<u16> = (0..1000u16).map(|i| last.wrapping_sub(999 - i)).collect();
        let nack = nack_bytes(&seqs, 0xABCD);
        for r in 0..50 {
            s.handle_control(TimelineNs::from_ns(end), addr(r), &nack);
        }
        let out = drain(&mut s, end + 2 * MS);
        let total_burst = 48_000.0 / 361.0;
        assert!(out.len() as f64 <= total_burst, "{} resends", out.len());
        assert!(
            out.len() >= 26,
            "the first receiver is served: {}",
            out.len()
        );
        let st = s.stats();
        assert_eq!(st.nacks_received, 50);
        assert_eq!(st.seqs_requested, 50_000);
        // The ring holds the last 256 packets: the other 744 asked for are gone. Every other
        // request is accounted for: sent, merged into a pending resend, or refused.
        assert_eq!(st.resends_too_late, 50 * 744);
        assert_eq!(
            st.resends_rate_limited + st.resends_coalesced + out.len() as u64,
            50 * 256
        );
        // Every request not refused joined the pending set, which the global bucket caps at
        // 132 packets: each receiver saw at least 256 - 132 refusals.
        assert!(st.resends_rate_limited >= 50 * (256 - 132));

        // One greedy receiver alone, after the buckets refilled.
        let mut s = SenderCore::new(cfg(2_000 * MS)).unwrap();
        let end = push_tone(&mut s, T0, 361 * 256);
        drain(&mut s, end);
        let mut resent = 0;
        for k in 0..100 {
            let now = end + k * 10 * MS;
            s.handle_control(TimelineNs::from_ns(now), addr(9), &nack);
            resent += drain(&mut s, now + 2 * MS)
                .iter()
                .filter(|(to, _)| *to == Target::Peer(addr(9)))
                .count();
        }
        let packet_rate = 48_000.0 / 361.0;
        let bound = 0.2 * packet_rate + 0.5 * packet_rate * 1.0;
        assert!(resent as f64 <= bound + 1.0, "{resent} > {bound}");
        assert!(resent as f64 >= bound - 2.0, "{resent} well below {bound}");
        assert_eq!(s.stats().dropped_unsent, 0);
    }

    #[test]
    fn foreign_and_malformed_control_datagrams_are_rejected() {
        let mut s = SenderCore::new(cfg(150 * MS)).unwrap();
        let end = push_tone(&mut s, T0, 361 * 5);
        drain(&mut s, end);
        s.handle_control(TimelineNs::from_ns(end), addr(1), &nack_bytes(&[1], 0x9999)); // another stream
        s.handle_control(TimelineNs::from_ns(end), addr(1), b"hello");
        let mut server = NtpPacket::client_request(1);
        server.mode = crate::wire::ntp::MODE_SERVER;
        s.handle_control(TimelineNs::from_ns(end), addr(1), &server.encode());
        let mut truncated = nack_bytes(&[1, 2], 0xABCD);
        truncated[3] = 9; // length beyond the datagram
        s.handle_control(TimelineNs::from_ns(end), addr(1), &truncated);
        assert!(drain(&mut s, end + 5 * MS).is_empty());
        let st = s.stats();
        assert_eq!(st.rejected, 4);
        assert_eq!(st.nacks_received, 0);
    }

    proptest::proptest! {
        /// Whatever arrives on the control port (garbage, NACKs for random seqs from random
        /// peers, time requests), nothing panics and resends stay within the global bucket.
        #[test]
        fn arbitrary_control_traffic_is_bounded(
            msgs in proptest::collection::vec(
                (0u16..200, 0u8..3, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
                 proptest::collection::vec(proptest::prelude::any::<u16>(), 1..200)),
                1..60),
        ) {
            let mut s = SenderCore::new(cfg(1_000 * MS)).unwrap();
            let end = push_tone(&mut s, T0, 361 * 100);
            drain(&mut s, end);
            let mut buf = vec![0u8; s.max_datagram_len()];
            let mut resends = 0u64;
            for (i, (peer, kind, junk, seqs)) in msgs.iter().enumerate() {
                let now = end + i as i64 * MS;
                match kind {
                    0 => s.handle_control(TimelineNs::from_ns(now), addr(*peer), junk),
                    1 => {
                        let mut b = [0u8; nack::MAX_LEN];
                        let e = nack::encode(1, 0xABCD, seqs, &mut b).unwrap();
                        s.handle_control(TimelineNs::from_ns(now), addr(*peer), &b[..e.len]);
                    }
                    _ => s.handle_control(TimelineNs::from_ns(now), addr(*peer), &NtpPacket::client_request(9).encode()),
                }
                while let Some(t) = s.poll_transmit(TimelineNs::from_ns(now), &mut buf) {
                    proptest::prop_assert!(t.len <= buf.len());
                    if classify(&buf[..t.len]) == Kind::Audio {
                        resends += 1;
                    }
                }
            }
            let elapsed = msgs.len() as f64 * 1e-3;
            let packet_rate = 48_000.0 / 361.0;
            proptest::prop_assert!(resends as f64 <= packet_rate + elapsed * 2.0 * packet_rate + 1.0);
            proptest::prop_assert_eq!(resends, s.stats().resends_sent);
        }
    }

    /// Deterministic xorshift generator for the loss simulations.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// How a receiver's link loses datagrams (both directions), stepped once per ms.
    enum Link {
        /// Each datagram lost with this probability (percent).
        Random(u64),
        /// Gilbert-style outages: every ms, enter a `burst_ms` outage (all lost) with
        /// probability 1/`per_ms`; outside outages, `base` percent random loss.
        Bursty {
            burst_ms: i64,
            per_ms: u64,
            base: u64,
        },
    }

    struct SimResult {
        /// Packet deliveries that arrived after their play time (or never), over all receivers.
        late: usize,
        /// Packets x receivers checked.
        checked: usize,
        /// Audio datagrams lost on the way (first sends and resends).
        losses: u64,
        stats: SenderStats,
    }

    /// 10 receivers behind `link`, 1 ms one way, 150 ms latency, ~9.8 s of audio pushed in
    /// 5 ms buffers; receivers NACK every gap in the last 40 packets and re-ask every 10 ms.
    fn simulate(link: Link, seed: u64) -> SimResult {
        const RX: usize = 10;
        const PACKETS: usize = 1_300; // no seq wrap
        struct Rx {
            arrival: Vec<Option<i64>>,
            highest: Option<usize>,
            asked: Vec<i64>,
            outage_until: i64,
        }
        let mut rng = Rng(seed);
        let mut s = SenderCore::new(cfg(150 * MS)).unwrap();
        let mut rx: Vec<Rx> = (0..RX)
            .map(|_| Rx {
                arrival: vec![None; PACKETS + 50],
                highest: None,
                asked: vec![i64::MIN / 2; PACKETS + 50],
                outage_until: i64::MIN,
            })
            .collect();
        let lost = |rng: &mut Rng, r: &Rx, t: i64| match link {
            Link::Random(pct) => rng.below(100) < pct,
            Link::Bursty { base, .. } => t < r.outage_until || rng.below(100) < base,
        };
        // (deliver at, destination: Some(receiver) or None = the sender, from, bytes)
        let mut wire: Vec<(i64, Option<usize>, usize, Vec<u8>)> = Vec::new();
        let mut buf = vec![0u8; s.max_datagram_len()];
        let audio = tone(240);
        let mut losses = 0u64;
        let mut frames = 0i64;
        let end = T0 + frames_to_ns(PACKETS as i64 * FPP, 48_000);
        let mut t = T0;
        while t < end + 300 * MS {
            if let Link::Bursty {
                burst_ms, per_ms, ..
            } = link
            {
                for r in rx.iter_mut() {
                    if t >= r.outage_until && rng.below(per_ms) == 0 {
                        r.outage_until = t + burst_ms * MS;
                    }
                }
            }
            if t >= T0 + frames_to_ns(frames, 48_000) && t < end {
                s.push_audio(
                    TimelineNs::from_ns(T0 + frames_to_ns(frames, 48_000)),
                    &audio,
                )
                .unwrap();
                frames += 240;
            }
            while let Some(tx) = s.poll_transmit(TimelineNs::from_ns(t), &mut buf) {
                let dests: Vec<usize> = match tx.to {
                    Target::Stream => (0..RX).collect(),
                    Target::Peer(a) => vec![(a.port() - 40_000) as usize],
                };
                for d in dests {
                    if lost(&mut rng, &rx[d], t) {
                        losses += (classify(&buf[..tx.len]) == Kind::Audio) as u64;
                    } else {
                        wire.push((t + MS, Some(d), 0, buf[..tx.len].to_vec()));
                    }
                }
            }
            let (due, later): (Vec<_>, Vec<_>) = wire.drain(..).partition(|w| w.0 <= t);
            wire = later;
            for (_, dst, from, bytes) in due {
                match dst {
                    None => s.handle_control(TimelineNs::from_ns(t), addr(from as u16), &bytes),
                    Some(r) => {
                        if let Ok(p) = AudioPacket::decode(&bytes) {
                            let seq = p.seq as usize;
                            let r = &mut rx[r];
                            r.arrival[seq].get_or_insert(t);
                            r.highest = r.highest.max(Some(seq));
                        }
                    }
                }
            }
            for (i, r) in rx.iter_mut().enumerate() {
                let Some(h) = r.highest else { continue };
                let missing: Vec<u16> = (h.saturating_sub(40)..h)
                    .filter(|&q| r.arrival[q].is_none() && t - r.asked[q] >= 10 * MS)
                    .map(|q| q as u16)
                    .collect();
                if missing.is_empty() {
                    continue;
                }
                for &q in &missing {
                    r.asked[q as usize] = t;
                }
                let mut b = [0u8; nack::MAX_LEN];
                let e = nack::encode(i as u32, 0xABCD, &missing, &mut b).unwrap();
                if !lost(&mut rng, r, t) {
                    wire.push((t + MS, None, i, b[..e.len].to_vec()));
                }
            }
            t += MS;
        }
        let mut late = 0;
        let mut checked = 0;
        for r in &rx {
            for n in 0..PACKETS - 2 {
                let play = T0 + frames_to_ns(n as i64 * FPP, 48_000) + 150 * MS;
                checked += 1;
                late += !matches!(r.arrival[n], Some(got) if got < play) as usize;
            }
        }
        SimResult {
            late,
            checked,
            losses,
            stats: s.stats(),
        }
    }

    /// Issue 7's functional case at the core level: 5% independent loss on every datagram in
    /// both directions (audio, resends, NACKs). Every packet arrives before its play time, with
    /// fewer resends than losses (multicast serves several receivers at once).
    #[test]
    fn five_percent_loss_ten_receivers_all_repaired_in_time() {
        let r = simulate(Link::Random(5), 0x2545_F491_4F6C_DD1D);
        assert_eq!(r.late, 0, "{:?}", r.stats);
        assert!(r.losses > 500, "{} losses", r.losses);
        let overhead = r.stats.resends_sent as f64 / r.losses as f64;
        assert!(
            overhead <= 1.0,
            "resends per loss {overhead}: {:?}",
            r.stats
        );
        assert_eq!(r.stats.resends_rate_limited, 0);
    }

    /// 20% loss in 50 ms outages per receiver (plus 1% random): at most 0.1% of packets late.
    #[test]
    fn bursty_twenty_percent_loss_is_repaired_within_the_budget() {
        let r = simulate(
            Link::Bursty {
                burst_ms: 50,
                per_ms: 200,
                base: 1,
            },
            0x9E37_79B9_7F4A_7C15,
        );
        let late = r.late as f64 / r.checked as f64;
        assert!(
            late <= 0.001,
            "{} of {} late: {:?}",
            r.late,
            r.checked,
            r.stats
        );
    }

    #[test]
    fn latency_and_name_changes_start_a_new_run_and_are_announced() {
        let mut s = SenderCore::new(cfg(150 * MS)).unwrap();
        let t = push_tone(&mut s, T0, 500); // one full packet, 139 frames buffered
        drain(&mut s, t);
        assert!(s.set_latency_ns(-5).is_err());
        s.set_latency_ns(80 * MS).unwrap();
        s.set_name("living room");
        push_tone(&mut s, t, 361);
        let out = drain(&mut s, t + 10 * MS);
        let st = Status::decode(&out[0].1).unwrap();
        assert_eq!((st.latency_ns, st.name.as_str()), (80 * MS, "living room"));
        let pk = audio(&out);
        // The old run's 139 buffered frames, then the new run at the new latency.
        assert_eq!((pk[0].frames(2), pk[0].marker), (139, false));
        assert_eq!(
            pk[0].play_time,
            TimelineNs::from_ns(T0 + frames_to_ns(361, 48_000) + 150 * MS)
        );
        assert!(pk[1].marker);
        assert_eq!(pk[1].play_time, TimelineNs::from_ns(t + 80 * MS));
    }

    #[test]
    fn config_is_validated() {
        let mut c = cfg(-1);
        assert!(SenderCore::new(c.clone()).is_err());
        c.latency_ns = 0;
        c.status_interval_ns = 0;
        assert_eq!(
            SenderCore::new(c).err(),
            Some(ConfigError::Invalid("status interval must be positive"))
        );
    }
}
