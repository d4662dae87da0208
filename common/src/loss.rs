//! Which packets are missing, and when to ask the master for them again (the NACK schedule).
//!
//! The receiver feeds every audio packet's sequence number and play time. A jump in sequence
//! opens gaps; each missing packet is asked for after a reordering grace, then again whenever a
//! resend should have arrived and did not, while an answer can still be played, up to
//! `max_tries`. A packet that is still missing when it can no longer be played in time is given
//! up (the playout conceals it). Memory is fixed: at most `capacity` missing packets are
//! tracked; a longer outage (a partition) gives up the oldest ones.
//!
//! Both waits adapt to the path, from what the tracker sees:
//! - **Reordering grace**: a missing packet that turns up before it was asked for, or sooner
//!   after its NACK than any resend could come back, was reordered; the grace follows the
//!   deepest recent reordering (a decaying maximum) plus a millisecond, between
//!   `reorder_grace_ns` and `max_grace_ns`. Asking too early costs a needless resend, asking too
//!   late eats the latency budget.
//! - **Retry interval**: the time from a NACK to the resend's arrival is measured on packets
//!   asked for once (Karn's rule: the answer to a retry is ambiguous) and smoothed as TCP does its
//!   RTO (`srtt + 4 rttvar`, RFC 6298), between `min_retry_ns` and `max_retry_ns`; until the
//!   first measurement it is `retry_ns`.

use crate::time::{frames_to_ns, LocalNs, TimelineNs};

/// Tuning of the NACK schedule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossConfig {
    /// Shortest wait after noticing a gap before the first NACK (reordering grace).
    pub reorder_grace_ns: i64,
    /// Longest reordering grace, however deep the reordering seen.
    pub max_grace_ns: i64,
    /// Ask again after this long without an answer, until the resend delay is measured.
    pub retry_ns: i64,
    /// Bounds of the measured retry interval.
    pub min_retry_ns: i64,
    /// See `min_retry_ns`.
    pub max_retry_ns: i64,
    /// Ask at most this many times for one packet.
    pub max_tries: u8,
    /// Do not ask when the packet's play time is closer than this plus the measured resend
    /// delay (it could not arrive in time: the output's lead over the DAC, plus a margin). See
    /// [`LossTracker::set_deadline_margin`].
    pub deadline_margin_ns: i64,
    /// Most missing packets tracked at once.
    pub capacity: usize,
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig {
            reorder_grace_ns: 3_000_000,
            max_grace_ns: 30_000_000,
            retry_ns: 20_000_000,
            min_retry_ns: 5_000_000,
            max_retry_ns: 60_000_000,
            max_tries: 10,
            deadline_margin_ns: 3_000_000,
            capacity: 512,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Missing {
    seq: u64,
    due: TimelineNs,
    noticed: LocalNs,
    next_at: LocalNs,
    last_asked: LocalNs,
    tries: u8,
}

/// Counters of the loss tracker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LossStats {
    /// Packets found missing.
    pub missing: u64,
    /// NACK entries sent (one per packet per try).
    pub requested: u64,
    /// Missing packets that arrived after all (resent or reordered).
    pub recovered: u64,
    /// Of those, packets that were only reordered (before their NACK, or too soon after it to
    /// be its answer).
    pub reordered: u64,
    /// Missing packets given up (too late, too many tries, or beyond capacity).
    pub given_up: u64,
}

/// Tracks gaps in the sequence and schedules NACKs.
#[derive(Clone, Debug)]
pub struct LossTracker {
    cfg: LossConfig,
    highest: Option<u64>,
    missing: Vec<Missing>,
    stats: LossStats,
    /// Deepest recent reordering, ns, as of `reorder_at`.
    reorder_ns: f64,
    reorder_at: LocalNs,
    /// Smoothed NACK-to-resend delay and its mean deviation (None before the first sample).
    srtt: Option<(f64, f64)>,
    /// Shortest time a resend can take (the time client's round trip), ns.
    rtt_floor_ns: i64,
}

/// Half-life of the reordering depth, ns.
const REORDER_HALF_LIFE_NS: f64 = 5e9;

/// Extends a 16-bit sequence number to the 64-bit value closest to `reference`.
pub fn extend_seq(reference: u64, seq: u16) -> u64 {
    let base = reference & !0xffff;
    let candidate = base | seq as u64;
    if candidate + 0x8000 < reference {
        candidate + 0x1_0000
    } else if candidate > reference + 0x8000 && candidate >= 0x1_0000 {
        candidate - 0x1_0000
    } else {
        candidate
    }
}

impl LossTracker {
    /// A tracker with room for `cfg.capacity` missing packets (allocated once, here).
    pub fn new(cfg: LossConfig) -> Self {
        LossTracker {
            cfg,
            highest: None,
            missing: Vec::with_capacity(cfg.capacity.max(1)),
            stats: LossStats::default(),
            reorder_ns: 0.0,
            reorder_at: LocalNs::from_ns(0),
            srtt: None,
            rtt_floor_ns: 0,
        }
    }

    /// Forgets the sequence and what is missing (a new stream). What was learnt of the path
    /// (reordering, resend delay) and the counters stay.
    pub fn reset(&mut self) {
        self.highest = None;
        self.missing.clear();
    }

    /// Counters so far.
    pub fn stats(&self) -> LossStats {
        self.stats
    }

    /// Packets currently missing and still wanted.
    pub fn outstanding(&self) -> usize {
        self.missing.len()
    }

    /// Sets how long before its play time a packet must arrive to be of use (the output's
    /// lead over the DAC plus a margin).
    pub fn set_deadline_margin(&mut self, ns: i64) {
        self.cfg.deadline_margin_ns = ns.max(0);
    }

    /// Sets the shortest round trip to the master (from the time client): a missing packet
    /// arriving sooner than this (plus 1 ms) after its NACK was reordered, not resent.
    pub fn set_rtt_floor(&mut self, ns: i64) {
        self.rtt_floor_ns = ns.max(0);
    }

    /// The current reordering grace, ns.
    pub fn grace_ns(&self, now: LocalNs) -> i64 {
        let age = (now - self.reorder_at).max(0) as f64;
        let depth = self.reorder_ns * 0.5f64.powf(age / REORDER_HALF_LIFE_NS);
        ((depth as i64).saturating_add(1_000_000))
            .clamp(self.cfg.reorder_grace_ns, self.cfg.max_grace_ns)
    }

    /// The current retry interval, ns.
    pub fn retry_ns(&self) -> i64 {
        match self.srtt {
            None => self.cfg.retry_ns,
            Some((s, v)) => ((s + 4.0 * v) as i64 + 1_000_000)
                .clamp(self.cfg.min_retry_ns, self.cfg.max_retry_ns),
        }
    }

    fn note_reorder(&mut self, now: LocalNs, depth_ns: i64) {
        let age = (now - self.reorder_at).max(0) as f64;
        let current = self.reorder_ns * 0.5f64.powf(age / REORDER_HALF_LIFE_NS);
        self.reorder_ns = current.max(depth_ns as f64);
        self.reorder_at = now;
    }

    fn note_repair(&mut self, sample_ns: i64) {
        let s = sample_ns as f64;
        self.srtt = Some(match self.srtt {
            None => (s, s / 2.0),
            Some((srtt, var)) => (
                0.875 * srtt + 0.125 * s,
                0.75 * var + 0.25 * (s - srtt).abs(),
            ),
        });
    }

    /// Notes an arrived packet: `seq`, the play time of its first frame, and its duration.
    pub fn on_packet(&mut self, now: LocalNs, seq: u16, play_time: TimelineNs, duration_ns: i64) {
        let Some(highest) = self.highest else {
            self.highest = Some(0x1_0000 + seq as u64);
            return;
        };
        let ext = extend_seq(highest, seq);
        if ext <= highest {
            if let Some(i) = self.missing.iter().position(|m| m.seq == ext) {
                let m = self.missing.swap_remove(i);
                self.stats.recovered += 1;
                let since_asked = now - m.last_asked;
                if m.tries == 0 || since_asked < self.rtt_floor_ns + 1_000_000 {
                    self.stats.reordered += 1;
                    self.note_reorder(now, now - m.noticed);
                } else if m.tries == 1 {
                    self.note_repair(since_asked);
                }
            }
            return;
        }
        let gap = ext - highest - 1;
        self.highest = Some(ext);
        if gap == 0 {
            return;
        }
        self.stats.missing += gap;
        // Only the newest `capacity` of a long outage can still matter.
        let keep = gap.min(self.cfg.capacity as u64);
        self.stats.given_up += gap - keep;
        let first_at = now + self.grace_ns(now);
        for k in (1..=keep).rev() {
            if self.missing.len() == self.cfg.capacity {
                // Full: the entry due first is the least likely to be saved.
                if let Some(i) = (0..self.missing.len()).min_by_key(|&i| self.missing[i].due) {
                    self.missing.swap_remove(i);
                    self.stats.given_up += 1;
                }
            }
            self.missing.push(Missing {
                seq: ext - k,
                due: play_time - k as i64 * duration_ns,
                noticed: now,
                next_at: first_at,
                last_asked: now,
                tries: 0,
            });
        }
    }

    /// Writes into `out` the sequence numbers to ask for now and returns how many. `to_local`
    /// maps a play time to the local clock when the clock is known (None: ask regardless).
    pub fn poll_nack(
        &mut self,
        now: LocalNs,
        to_local: Option<&dyn Fn(TimelineNs) -> LocalNs>,
        out: &mut [u16],
    ) -> usize {
        let retry = self.retry_ns();
        // A NACK sent now is answered this long from now, on average.
        let flight = self.srtt.map_or(0, |(s, _)| s as i64);
        let margin = self.cfg.deadline_margin_ns.saturating_add(flight);
        let mut n = 0;
        let mut i = 0;
        while i < self.missing.len() {
            let m = self.missing[i];
            let too_late = to_local.is_some_and(|f| f(m.due) - margin < now);
            if too_late || (m.tries >= self.cfg.max_tries && m.next_at <= now) {
                self.missing.swap_remove(i);
                self.stats.given_up += 1;
                continue;
            }
            if m.next_at <= now && n < out.len() {
                out[n] = m.seq as u16;
                n += 1;
                let e = &mut self.missing[i];
                e.tries += 1;
                e.last_asked = now;
                e.next_at = now + retry;
                self.stats.requested += 1;
            }
            i += 1;
        }
        n
    }

    /// Takes back requests [`LossTracker::poll_nack`] handed out that could not be sent (a NACK
    /// message holds only so many entries): they are due again at once.
    pub fn retract(&mut self, seqs: &[u16]) {
        for &seq in seqs {
            if let Some(m) = self.missing.iter_mut().find(|m| m.seq as u16 == seq) {
                if m.tries > 0 {
                    m.tries -= 1;
                    m.next_at = LocalNs::MIN;
                    self.stats.requested -= 1;
                }
            }
        }
    }

    /// When [`LossTracker::poll_nack`] next has something to do.
    pub fn poll_timeout(&self) -> Option<LocalNs> {
        self.missing.iter().map(|m| m.next_at).min()
    }
}

/// Duration of `frames` at `rate`, for [`LossTracker::on_packet`].
pub fn packet_duration_ns(frames: usize, rate: u32) -> i64 {
    frames_to_ns(frames as i64, rate.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    fn l(ns: i64) -> LocalNs {
        LocalNs::from_ns(ns)
    }

    fn tl(ns: i64) -> TimelineNs {
        TimelineNs::from_ns(ns)
    }

    fn tracker() -> LossTracker {
        LossTracker::new(LossConfig::default())
    }

    fn nacks(t: &mut LossTracker, now: LocalNs) -> Vec<u16> {
        let mut out = [0u16; 64];
        let n = t.poll_nack(now, None, &mut out);
        out[..n].to_vec()
    }

    #[test]
    fn extends_across_wraparound() {
        assert_eq!(extend_seq(0x1_fffe, 0xffff), 0x1_ffff);
        assert_eq!(extend_seq(0x1_fffe, 0x0001), 0x2_0001);
        assert_eq!(extend_seq(0x2_0001, 0xfffe), 0x1_fffe);
        assert_eq!(extend_seq(5, 3), 3);
    }

    #[test]
    fn gap_is_asked_for_after_the_grace_then_retried_then_given_up() {
        let mut t = tracker();
        t.on_packet(l(0), 10, tl(1_000 * MS), 5 * MS);
        t.on_packet(l(MS), 13, tl(1_015 * MS), 5 * MS); // 11 and 12 missing
        assert_eq!(
            nacks(&mut t, l(MS)),
            Vec::<u16>::new(),
            "still in the reorder grace"
        );
        let mut first = nacks(&mut t, l(4 * MS));
        first.sort();
        assert_eq!(first, vec![11, 12]);
        assert!(
            nacks(&mut t, l(10 * MS)).is_empty(),
            "not again before retry_ns"
        );
        assert_eq!(nacks(&mut t, l(24 * MS)).len(), 2);
        // 12 arrives (resent): only 11 is asked for from now on.
        t.on_packet(l(25 * MS), 12, tl(1_010 * MS), 5 * MS);
        assert_eq!(t.stats().recovered, 1);
        let mut now = 44 * MS;
        let mut asked = 2;
        while t.outstanding() > 0 {
            let v = nacks(&mut t, l(now));
            assert!(v.iter().all(|&s| s == 11));
            asked += v.len();
            now += 20 * MS;
        }
        assert_eq!(
            asked,
            LossConfig::default().max_tries as usize,
            "max_tries bounds the requests for one packet"
        );
        assert_eq!(t.stats().given_up, 1);
    }

    #[test]
    fn packets_that_cannot_be_played_in_time_are_not_asked_for() {
        let mut t = tracker();
        t.on_packet(l(0), 1, tl(100 * MS), 5 * MS);
        t.on_packet(l(0), 4, tl(115 * MS), 5 * MS); // 2 (due 105 ms) and 3 (due 110 ms) missing
        let identity = |x: TimelineNs| LocalNs::from_ns(x.ns()); // the two clocks coincide here
        let mut out = [0u16; 8];
        let n = t.poll_nack(l(106 * MS), Some(&identity), &mut out);
        // 2 is due in the past, 3 is due in 4 ms (> the 3 ms margin): only 3 is wanted.
        assert_eq!(&out[..n], &[3]);
        assert_eq!(t.stats().given_up, 1);
    }

    #[test]
    fn a_long_outage_keeps_memory_bounded() {
        let mut t = LossTracker::new(LossConfig {
            capacity: 16,
            ..LossConfig::default()
        });
        t.on_packet(l(0), 0, tl(0), MS);
        t.on_packet(l(0), 30_000, tl(30_000 * MS), MS);
        assert_eq!(t.outstanding(), 16);
        assert_eq!(t.stats().missing, 29_999);
        assert_eq!(t.stats().given_up, 29_999 - 16);
        // The newest are kept: they are the ones that can still be played.
        let mut asked = nacks(&mut t, l(10 * MS));
        asked.sort();
        assert_eq!(asked, (29_984..30_000).collect::<Vec<u16>>());
        // A further gap while full evicts the earliest-due entries, never grows.
        t.on_packet(l(0), 30_010, tl(30_010 * MS), MS);
        assert_eq!(t.outstanding(), 16);
    }

    #[test]
    fn duplicates_and_old_packets_change_nothing() {
        let mut t = tracker();
        t.on_packet(l(0), 7, tl(0), MS);
        t.on_packet(l(0), 8, tl(MS), MS);
        t.on_packet(l(0), 8, tl(MS), MS);
        t.on_packet(l(0), 3, tl(0), MS);
        assert_eq!(t.outstanding(), 0);
        assert_eq!(t.stats(), LossStats::default());
    }

    #[test]
    fn reordering_widens_the_grace_and_it_decays() {
        let mut t = tracker();
        assert_eq!(t.grace_ns(l(0)), 3 * MS);
        t.on_packet(l(0), 1, tl(0), 5 * MS);
        t.on_packet(l(0), 3, tl(10 * MS), 5 * MS); // 2 missing...
        t.on_packet(l(2 * MS), 2, tl(5 * MS), 5 * MS); // ...only reordered, 2 ms late: not asked yet
        assert_eq!(t.stats().reordered, 1);
        assert!(nacks(&mut t, l(2 * MS)).is_empty());
        // A packet 3.5 ms late arrives just after its NACK: too soon to be a resend.
        t.on_packet(l(10 * MS), 5, tl(20 * MS), 5 * MS); // 4 missing
        assert_eq!(nacks(&mut t, l(13 * MS)), vec![4]);
        t.on_packet(l(13 * MS + MS / 2), 4, tl(15 * MS), 5 * MS);
        assert_eq!(t.stats().reordered, 2);
        let g = t.grace_ns(l(13 * MS + MS / 2));
        assert_eq!(g, 4 * MS + MS / 2, "deepest reordering + 1 ms");
        // The next gap waits that long before its first NACK.
        t.on_packet(l(20 * MS), 7, tl(30 * MS), 5 * MS);
        assert!(nacks(&mut t, l(20 * MS + g - MS)).is_empty());
        assert_eq!(nacks(&mut t, l(20 * MS + g)), vec![6]);
        // Without more reordering it falls back towards the floor (half-life 5 s).
        assert!(t.grace_ns(l(20_000 * MS)) < 4 * MS);
        // Never beyond the ceiling.
        t.on_packet(l(20_000 * MS), 9, tl(40 * MS), 5 * MS);
        t.on_packet(l(20_500 * MS), 8, tl(35 * MS), 5 * MS);
        assert_eq!(
            t.grace_ns(l(20_500 * MS)),
            LossConfig::default().max_grace_ns
        );
    }

    #[test]
    fn the_retry_interval_follows_the_measured_resend_delay() {
        let mut t = tracker();
        assert_eq!(t.retry_ns(), 20 * MS, "before any measurement");
        t.set_rtt_floor(MS / 2);
        let mut seq = 1u16;
        let mut now = 0;
        t.on_packet(l(now), seq, tl(0), 5 * MS);
        // Resends that take 30 ms: the interval grows beyond them.
        for _ in 0..20 {
            t.on_packet(l(now), seq + 2, tl(0), 5 * MS);
            now += 5 * MS;
            assert_eq!(nacks(&mut t, l(now)), vec![seq + 1]);
            now += 30 * MS;
            t.on_packet(l(now), seq + 1, tl(0), 5 * MS);
            seq += 2;
        }
        let slow = t.retry_ns();
        assert!((31 * MS..=45 * MS).contains(&slow), "retry {slow}");
        // A fast path (2 ms): it shrinks to the floor.
        for _ in 0..40 {
            t.on_packet(l(now), seq + 2, tl(0), 5 * MS);
            now += 5 * MS;
            assert_eq!(nacks(&mut t, l(now)), vec![seq + 1]);
            now += 2 * MS;
            t.on_packet(l(now), seq + 1, tl(0), 5 * MS);
            seq += 2;
        }
        assert_eq!(t.retry_ns(), LossConfig::default().min_retry_ns);
        assert_eq!(t.stats().reordered, 0);
    }

    #[test]
    fn the_deadline_margin_covers_the_outputs_lead() {
        let mut t = tracker();
        t.set_deadline_margin(40 * MS);
        t.on_packet(l(0), 1, tl(100 * MS), 5 * MS);
        t.on_packet(l(0), 4, tl(115 * MS), 5 * MS); // 2 due at 105 ms, 3 at 110 ms
        let identity = |x: TimelineNs| LocalNs::from_ns(x.ns()); // the two clocks coincide here
        let mut out = [0u16; 8];
        // At 68 ms, 2 is due in 37 ms: within the output's 40 ms lead, useless to ask.
        let n = t.poll_nack(l(68 * MS), Some(&identity), &mut out);
        assert_eq!(&out[..n], &[3]);
        assert_eq!(t.stats().given_up, 1);
    }

    #[test]
    fn retracted_requests_are_due_again_at_once() {
        let mut t = tracker();
        t.on_packet(l(0), 1, tl(0), MS);
        t.on_packet(l(0), 5, tl(0), MS); // 2, 3, 4 missing
        let mut asked = nacks(&mut t, l(5 * MS));
        asked.sort();
        assert_eq!(asked, vec![2, 3, 4]);
        t.retract(&[3, 4]);
        assert_eq!(t.stats().requested, 1);
        assert_eq!(t.poll_timeout(), Some(LocalNs::MIN));
        let mut again = nacks(&mut t, l(5 * MS));
        again.sort();
        assert_eq!(again, vec![3, 4]);
    }
}
