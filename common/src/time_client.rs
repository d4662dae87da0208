//! Sans-I/O SNTP client feeding one [`ClockModel`]: which query to send when, and what an
//! answer means.
//!
//! The caller owns the socket and the clock. It sends whatever [`TimeClient::poll_transmit`]
//! returns, sleeps until [`TimeClient::poll_timeout`] or a datagram, and hands every datagram
//! from the time service to [`TimeClient::handle_response`] with its local receive time
//! (kernel timestamp where available).
//!
//! Schedule: a burst of [`TimeClientConfig::burst_count`] queries
//! [`TimeClientConfig::burst_interval_ns`] apart at start and after every step or reset (a
//! first estimate within a few hundred ms), then a warm-up of one query per
//! [`TimeClientConfig::warmup_interval_ns`] until [`TimeClientConfig::warmup_ns`] after the
//! burst began (more exchanges to pick low round trips from while the rate is still being
//! learnt), then one per [`TimeClientConfig::poll_interval_ns`]. A *jittery* path (median
//! round-trip excess over [`TimeClientConfig::jittery_spread_ns`], e.g. Wi-Fi) is queried every
//! [`TimeClientConfig::jittery_interval_ns`] instead, from the end of the burst on: there the
//! estimate rests on the few exchanges that crossed an empty queue one way or the other, and
//! more queries find more of them. An answer the model holds as a step suspect brings the next
//! query forward ([`TimeClientConfig::confirm_delay_ns`]) so a step is
//! confirmed, or the outlier dismissed, within milliseconds rather than a poll interval.
//!
//! Requests carry T1 = `ntp64_from_ns(local send time)` as their transmit timestamp; an answer
//! counts only if its origin timestamp matches an outstanding request (a bounded table; entries
//! older than [`TimeClientConfig::response_timeout_ns`] expire and count as timeouts), each
//! request is answered at most once, and kiss-o'-death or "unsynchronised" answers are refused.

use crate::clock::{ClockConfig, ClockEstimate, ClockEvent, ClockModel, Exchange};
use crate::time::{
    ntp64_from_ns, timeline_from_ntp64, utc_timeline_from_ntp64, LocalNs, TimelineNs,
};
use crate::wire::ntp::{NtpPacket, MODE_SERVER};
use crate::wire::DecodeError;

/// Most requests awaiting an answer at once; the oldest is dropped (a timeout) beyond this.
pub const MAX_OUTSTANDING: usize = 16;

/// Schedule and clock-model tuning of a [`TimeClient`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimeClientConfig {
    /// Queries in a burst (at start, after a step or reset). Default 16.
    pub burst_count: u32,
    /// Spacing of burst queries. Default 20 ms: a receiver starts playing about its stream's
    /// latency after the burst begins, by the estimate it then has; 16 exchanges in 320 ms
    /// rather than 8 give it twice as many to find the one-way floors from (on the lab's Wi-Fi
    /// path the skew between two receivers in their first second, p99 551 -> 370 us in
    /// simulation).
    pub burst_interval_ns: i64,
    /// Spacing of queries during the warm-up that follows a burst. Default 250 ms.
    pub warmup_interval_ns: i64,
    /// Length of the warm-up, counted from the start of the burst. Default 20 s.
    pub warmup_ns: i64,
    /// Spacing of queries after the warm-up. Default 1 s.
    pub poll_interval_ns: i64,
    /// A path whose round trips exceed their minimum by more than this (median,
    /// [`ClockModel::rtt_spread_ns`]) is *jittery*: from the end of the burst on, it is queried
    /// every [`Self::jittery_interval_ns`], warm-up or not. There the estimate rests on the few
    /// exchanges that crossed empty queues, and more queries find more of them. Default
    /// 250 µs (a wired LAN queues tens of µs, Wi-Fi milliseconds).
    pub jittery_spread_ns: i64,
    /// Spacing of queries on a jittery path. Default 100 ms (about 1 kB/s each way).
    pub jittery_interval_ns: i64,
    /// Delay of the extra query sent after a step suspect. Default 30 ms.
    pub confirm_delay_ns: i64,
    /// A request unanswered for this long is forgotten and counted as a timeout. Default 1 s.
    pub response_timeout_ns: i64,
    /// Pause after a kiss-o'-death before querying again. Default 60 s.
    pub kod_backoff_ns: i64,
    /// What the server's timestamps count. Default [`ServerClock::Timeline`].
    pub server_clock: ServerClock,
    /// The clock model's tuning.
    pub clock: ClockConfig,
}

/// What a time server's timestamps count, and so how they map onto the timeline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServerClock {
    /// The timeline itself (a WaveSync master's time service, any clock domain).
    #[default]
    Timeline,
    /// UTC since 1900, as every NTP server answers: mapped onto the UTC timeline of clock
    /// domain `ntp` (counted from 1970, [`utc_timeline_from_ntp64`]).
    NtpUtc,
}

impl ServerClock {
    /// The timeline instant of a server's timestamp.
    pub fn to_timeline(self, ntp: u64) -> TimelineNs {
        match self {
            ServerClock::Timeline => timeline_from_ntp64(ntp),
            ServerClock::NtpUtc => utc_timeline_from_ntp64(ntp),
        }
    }
}

impl Default for TimeClientConfig {
    fn default() -> Self {
        TimeClientConfig {
            burst_count: 16,
            burst_interval_ns: 20_000_000,
            warmup_interval_ns: 250_000_000,
            warmup_ns: 20_000_000_000,
            poll_interval_ns: 1_000_000_000,
            jittery_spread_ns: 250_000,
            jittery_interval_ns: 100_000_000,
            confirm_delay_ns: 30_000_000,
            response_timeout_ns: 1_000_000_000,
            kod_backoff_ns: 60_000_000_000,
            server_clock: ServerClock::Timeline,
            clock: ClockConfig::default(),
        }
    }
}

/// Why an answer from the time service was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimeClientError {
    /// Not a valid NTP packet.
    #[error("undecodable time response: {0}")]
    Decode(#[from] DecodeError),
    /// The packet is not a server-mode answer.
    #[error("time response has mode {0}, expected 4 (server)")]
    NotServerMode(u8),
    /// The origin timestamp matches no outstanding request (late, duplicate or forged).
    #[error("time response answers no outstanding request (origin {origin:#018x})")]
    UnknownOrigin {
        /// The origin timestamp received.
        origin: u64,
    },
    /// Stratum 0: the server asks us to go away (RFC 5905 kiss code in `code`).
    #[error("kiss-o'-death from the time server: {code:?}")]
    KissOfDeath {
        /// The four-letter kiss code (reference id field).
        code: [u8; 4],
    },
    /// Leap indicator 3: the server's clock is not synchronised.
    #[error("time server reports an unsynchronised clock (leap indicator 3)")]
    Unsynchronized,
    /// Receive or transmit timestamp is zero.
    #[error("time response lacks its receive/transmit timestamps")]
    ZeroTimestamp,
}

/// Counters of a [`TimeClient`], for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeClientStats {
    /// Requests sent.
    pub sent: u64,
    /// Answers matched to a request and given to the clock model.
    pub answered: u64,
    /// Answers refused before reaching the model (every [`TimeClientError`]).
    pub rejected: u64,
    /// Answers the clock model did not use ([`ClockEvent::Rejected`]).
    pub outliers: u64,
    /// Requests that expired unanswered.
    pub timeouts: u64,
    /// Steps detected.
    pub steps: u64,
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    t1: LocalNs,
    origin: u64,
}

/// The sans-I/O SNTP client (see the module documentation).
#[derive(Clone, Debug)]
pub struct TimeClient {
    cfg: TimeClientConfig,
    model: ClockModel,
    pending: [Option<Pending>; MAX_OUTSTANDING],
    /// Local time of the next query; 0 means "now".
    next_tx: LocalNs,
    burst_left: u32,
    /// Start of the current burst and warm-up (None before the first query).
    phase_start: Option<LocalNs>,
    stats: TimeClientStats,
}

impl TimeClient {
    /// A client that will start with a burst at the first [`Self::poll_transmit`].
    pub fn new(cfg: TimeClientConfig) -> Self {
        TimeClient {
            model: ClockModel::new(cfg.clock),
            cfg,
            pending: [None; MAX_OUTSTANDING],
            next_tx: LocalNs::from_ns(0),
            burst_left: cfg.burst_count,
            phase_start: None,
            stats: TimeClientStats::default(),
        }
    }

    /// The request to send now, if one is due (48 bytes for the time service). Also expires
    /// requests that waited too long.
    pub fn poll_transmit(&mut self, now: LocalNs) -> Option<[u8; NtpPacket::LEN]> {
        self.expire(now);
        if now < self.next_tx {
            return None;
        }
        // T1 travels as an opaque count, only to be echoed back and matched.
        let origin = ntp64_from_ns(now.ns());
        // Two requests stamped with the same instant could not be told apart.
        if self.pending.iter().flatten().any(|p| p.origin == origin) {
            return None;
        }
        let slot = match self.pending.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                let oldest = self.oldest_pending().unwrap_or(0);
                self.stats.timeouts += 1;
                oldest
            }
        };
        self.pending[slot] = Some(Pending { t1: now, origin });
        self.stats.sent += 1;
        let phase_start = *self.phase_start.get_or_insert(now);
        let interval = if self.burst_left > 0 {
            self.burst_left -= 1;
            self.cfg.burst_interval_ns
        } else if self
            .model
            .rtt_spread_ns()
            .is_some_and(|s| s > self.cfg.jittery_spread_ns)
        {
            self.cfg.jittery_interval_ns
        } else if now.ns().saturating_sub(phase_start.ns()) < self.cfg.warmup_ns {
            self.cfg.warmup_interval_ns
        } else {
            self.cfg.poll_interval_ns
        };
        self.next_tx = now.saturating_add(interval);
        Some(NtpPacket::client_request(origin).encode())
    }

    /// When to call [`Self::poll_transmit`] next: the next query or the next request to expire,
    /// whichever comes first. A time in the past means now.
    pub fn poll_timeout(&self) -> LocalNs {
        self.pending
            .iter()
            .flatten()
            .map(|p| p.t1.saturating_add(self.cfg.response_timeout_ns))
            .fold(self.next_tx, LocalNs::min)
    }

    /// Takes an answer received at local time `now_rx`; on success returns what it did to the
    /// clock model.
    pub fn handle_response(
        &mut self,
        now_rx: LocalNs,
        bytes: &[u8],
    ) -> Result<ClockEvent, TimeClientError> {
        let r = self.check_response(now_rx, bytes);
        if r.is_err() {
            self.stats.rejected += 1;
        }
        r
    }

    fn check_response(
        &mut self,
        now_rx: LocalNs,
        bytes: &[u8],
    ) -> Result<ClockEvent, TimeClientError> {
        self.expire(now_rx);
        let pkt = NtpPacket::decode(bytes)?;
        if pkt.mode != MODE_SERVER {
            return Err(TimeClientError::NotServerMode(pkt.mode));
        }
        let slot = self
            .pending
            .iter()
            .position(|p| p.is_some_and(|p| p.origin == pkt.origin_ts))
            .ok_or(TimeClientError::UnknownOrigin {
                origin: pkt.origin_ts,
            })?;
        let Some(req) = self.pending[slot].take() else {
            return Err(TimeClientError::UnknownOrigin {
                origin: pkt.origin_ts,
            });
        };
        if pkt.stratum == 0 {
            self.burst_left = 0;
            self.next_tx = self
                .next_tx
                .max(now_rx.saturating_add(self.cfg.kod_backoff_ns));
            return Err(TimeClientError::KissOfDeath {
                code: pkt.reference_id,
            });
        }
        if pkt.leap == 3 {
            return Err(TimeClientError::Unsynchronized);
        }
        if pkt.receive_ts == 0 || pkt.transmit_ts == 0 {
            return Err(TimeClientError::ZeroTimestamp);
        }
        self.stats.answered += 1;
        let event = self.model.add_exchange(Exchange {
            t1: req.t1,
            t2: self.cfg.server_clock.to_timeline(pkt.receive_ts),
            t3: self.cfg.server_clock.to_timeline(pkt.transmit_ts),
            t4: now_rx,
        });
        match event {
            ClockEvent::Rejected => {
                self.stats.outliers += 1;
                // Confirm or dismiss a possible step quickly.
                self.next_tx = self
                    .next_tx
                    .min(now_rx.saturating_add(self.cfg.confirm_delay_ns));
            }
            ClockEvent::StepDetected { .. } => {
                self.stats.steps += 1;
                self.start_burst(now_rx);
            }
            ClockEvent::Updated | ClockEvent::Locked => {}
        }
        Ok(event)
    }

    /// Sets what the server's timestamps count (for the next answers; a new server is a new
    /// clock: [`Self::reset`] too).
    pub fn set_server_clock(&mut self, kind: ServerClock) {
        self.cfg.server_clock = kind;
    }

    /// Forgets the clock model and starts over with a burst (e.g. the stream changed master).
    pub fn reset(&mut self, now: LocalNs) {
        self.model.reset();
        self.start_burst(now);
    }

    fn start_burst(&mut self, now: LocalNs) {
        self.burst_left = self.cfg.burst_count;
        self.phase_start = Some(now);
        self.next_tx = self
            .next_tx
            .min(now.saturating_add(self.cfg.burst_interval_ns));
    }

    fn expire(&mut self, now: LocalNs) {
        for p in self.pending.iter_mut() {
            if p.is_some_and(|p| now.ns().saturating_sub(p.t1.ns()) > self.cfg.response_timeout_ns)
            {
                *p = None;
                self.stats.timeouts += 1;
            }
        }
    }

    fn oldest_pending(&self) -> Option<usize> {
        (0..MAX_OUTSTANDING)
            .filter_map(|i| self.pending[i].map(|p| (p.t1, i)))
            .min()
            .map(|(_, i)| i)
    }

    /// The clock model's current estimate.
    pub fn estimate(&self) -> Option<ClockEstimate> {
        self.model.estimate()
    }

    /// The clock model.
    pub fn model(&self) -> &ClockModel {
        &self.model
    }

    /// True when the clock model is locked.
    pub fn is_locked(&self) -> bool {
        self.model.is_locked()
    }

    /// Counters.
    pub fn stats(&self) -> TimeClientStats {
        self.stats
    }

    /// Requests awaiting an answer.
    pub fn outstanding(&self) -> usize {
        self.pending.iter().flatten().count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;
    const L0: i64 = 10_000 * MS;

    fn reply_to(req: &[u8; 48], t2: i64, t3: i64) -> [u8; 48] {
        let req = NtpPacket::decode(req).unwrap();
        NtpPacket::server_reply(&req, ntp64_from_ns(t2), ntp64_from_ns(t3)).encode()
    }

    #[test]
    fn burst_then_warm_up_then_one_per_second() {
        let mut c = TimeClient::new(TimeClientConfig::default());
        let mut sent = Vec::new();
        let mut now = L0;
        while now < L0 + 30_000 * MS {
            if c.poll_transmit(LocalNs::from_ns(now)).is_some() {
                sent.push(now - L0);
            }
            now = (c.poll_timeout().max(LocalNs::from_ns(now + MS))).ns();
        }
        let gaps: Vec<i64> = sent.windows(2).map(|w| (w[1] - w[0]) / MS).collect();
        // 16 burst queries after the first, 20 ms apart...
        assert!(gaps[..16].iter().all(|&g| g == 20), "{gaps:?}");
        // ...then 250 ms apart until 20 s after the start...
        let warm = sent
            .iter()
            .filter(|&&t| t > 320 * MS && t < 20_000 * MS)
            .count();
        assert_eq!(warm, 78, "{sent:?}");
        // (the query at 19.82 s is still in the warm-up, so the next follows 250 ms later)
        assert!(gaps[16..17 + warm].iter().all(|&g| g == 250), "{gaps:?}");
        // ...then once a second.
        assert!(gaps[17 + warm..].iter().all(|&g| g == 1_000), "{gaps:?}");
        assert_eq!(c.stats().sent as usize, sent.len());
        // None answered: all but the last second's requests expired.
        assert_eq!(c.stats().timeouts as usize + c.outstanding(), sent.len());
        assert!(c.outstanding() <= 2);
    }

    /// Runs a client 30 s against a master 5000 s ahead whose answers take `delay(i)` each way
    /// for the i-th request; returns the gaps between queries in ms.
    fn gaps_with(delay: impl Fn(u64) -> (i64, i64)) -> Vec<i64> {
        let mut c = TimeClient::new(TimeClientConfig::default());
        let off = 5_000_000 * MS;
        let mut sent = Vec::new();
        let mut now = L0;
        let mut pending: Vec<(i64, [u8; 48])> = Vec::new();
        while now < L0 + 30_000 * MS {
            if let Some(req) = c.poll_transmit(LocalNs::from_ns(now)) {
                let (up, down) = delay(c.stats().sent);
                let t2 = now + up + off;
                pending.push((now + up + 10_000 + down, reply_to(&req, t2, t2 + 10_000)));
                sent.push(now);
            }
            pending.retain(|(at, bytes)| {
                if *at <= now {
                    let _ = c.handle_response(LocalNs::from_ns(*at), bytes);
                    false
                } else {
                    true
                }
            });
            let next = pending.iter().map(|p| p.0).min().unwrap_or(i64::MAX);
            now = (c
                .poll_timeout()
                .min(LocalNs::from_ns(next))
                .max(LocalNs::from_ns(now + 100_000)))
            .ns();
        }
        sent.windows(2).map(|w| (w[1] - w[0]) / MS).collect()
    }

    #[test]
    fn a_jittery_path_is_queried_ten_times_a_second() {
        // Round trips of 2.4 ms or 8.4 ms: a median spread of 6 ms.
        let gaps = gaps_with(|i| {
            if i % 2 == 0 {
                (1_200_000, 1_200_000)
            } else {
                (4_200_000, 4_200_000)
            }
        });
        assert!(gaps[..16].iter().all(|&g| g == 20), "{gaps:?}");
        assert!(gaps[16..].iter().all(|&g| g == 100), "{gaps:?}");
        // A quiet path (round trips 300-340 µs) keeps the warm-up and then once a second.
        let gaps = gaps_with(|i| (150_000 + (i as i64 % 3) * 10_000, 150_000));
        assert!(gaps[16..90].iter().all(|&g| g == 250), "{gaps:?}");
        assert!(
            gaps[gaps.len() - 5..].iter().all(|&g| g == 1_000),
            "{gaps:?}"
        );
    }

    #[test]
    fn matches_origin_once_and_refuses_bad_answers() {
        let mut c = TimeClient::new(TimeClientConfig::default());
        let req = c.poll_transmit(LocalNs::from_ns(L0)).unwrap();
        let off = 5_000_000 * MS;
        let good = reply_to(&req, L0 + off + MS, L0 + off + MS + 10_000);
        // Wrong mode: a request echoed back.
        assert_eq!(
            c.handle_response(LocalNs::from_ns(L0 + 2 * MS), &req),
            Err(TimeClientError::NotServerMode(3))
        );
        let mut unsync = NtpPacket::decode(&good).unwrap();
        unsync.leap = 3;
        assert!(matches!(
            c.handle_response(LocalNs::from_ns(L0 + 2 * MS), &good[..20]),
            Err(TimeClientError::Decode(_))
        ));
        assert_eq!(
            c.handle_response(LocalNs::from_ns(L0 + 2 * MS), &unsync.encode()),
            Err(TimeClientError::Unsynchronized)
        );
        // The unsynchronised answer consumed the request: the good one is now unknown.
        assert!(matches!(
            c.handle_response(LocalNs::from_ns(L0 + 2 * MS), &good),
            Err(TimeClientError::UnknownOrigin { .. })
        ));
        let req = c.poll_transmit(LocalNs::from_ns(L0 + 40 * MS)).unwrap();
        let good = reply_to(&req, L0 + 41 * MS + off, L0 + 41 * MS + off + 10_000);
        assert_eq!(
            c.handle_response(LocalNs::from_ns(L0 + 42 * MS), &good),
            Ok(ClockEvent::Updated)
        );
        assert!(matches!(
            c.handle_response(LocalNs::from_ns(L0 + 42 * MS), &good),
            Err(TimeClientError::UnknownOrigin { .. })
        ));
        let est = c.estimate().unwrap();
        assert!((est.offset_ns() - off).abs() < 10_000);
        // Kiss-o'-death backs off.
        let req = c.poll_transmit(LocalNs::from_ns(L0 + 80 * MS)).unwrap();
        let mut kod = NtpPacket::decode(&reply_to(&req, 1, 2)).unwrap();
        kod.stratum = 0;
        kod.reference_id = *b"RATE";
        assert_eq!(
            c.handle_response(LocalNs::from_ns(L0 + 81 * MS), &kod.encode()),
            Err(TimeClientError::KissOfDeath { code: *b"RATE" })
        );
        assert!(c
            .poll_transmit(LocalNs::from_ns(L0 + 30_000 * MS))
            .is_none());
        let s = c.stats();
        assert_eq!((s.sent, s.answered, s.rejected), (3, 1, 6));
    }

    #[test]
    fn outstanding_table_is_bounded() {
        let cfg = TimeClientConfig {
            response_timeout_ns: 1_000_000 * MS,
            ..TimeClientConfig::default()
        };
        let mut c = TimeClient::new(cfg);
        for i in 0..100 {
            c.poll_transmit(LocalNs::from_ns(L0 + i * 1_000 * MS));
        }
        assert_eq!(c.outstanding(), MAX_OUTSTANDING);
        assert_eq!(c.stats().timeouts, 100 - MAX_OUTSTANDING as u64);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_answers_never_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            rx in proptest::prelude::any::<i64>(),
        ) {
            let mut c = TimeClient::new(TimeClientConfig::default());
            let _ = c.poll_transmit(LocalNs::from_ns(L0));
            let _ = c.handle_response(LocalNs::from_ns(rx), &bytes);
            let _ = c.poll_transmit(LocalNs::from_ns(rx));
            let _ = c.poll_timeout();
        }
    }
}
