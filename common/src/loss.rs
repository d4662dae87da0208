//! Which packets are missing, and when to ask the master for them again (the NACK schedule).
//!
//! The receiver feeds every audio packet's sequence number and play time. A jump in sequence
//! opens gaps; each missing packet is asked for after a short reordering grace (a reordered
//! packet usually arrives within a packet time), then again every `retry_ns` while an answer can
//! still be played, up to `max_tries`. A packet that is still missing when it can no longer be
//! played in time is given up (the playout conceals it). Memory is fixed: at most `capacity`
//! missing packets are tracked; a longer outage (a partition) gives up the oldest ones.

use crate::time::{frames_to_ns, LocalNs, TimelineNs};

/// Tuning of the NACK schedule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossConfig {
    /// Wait this long after noticing a gap before the first NACK (reordering grace).
    pub reorder_grace_ns: i64,
    /// Ask again after this long without an answer.
    pub retry_ns: i64,
    /// Ask at most this many times for one packet.
    pub max_tries: u8,
    /// Do not ask when the packet's play time is closer than this (it could not arrive in time).
    pub deadline_margin_ns: i64,
    /// Most missing packets tracked at once.
    pub capacity: usize,
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig {
            reorder_grace_ns: 3_000_000,
            retry_ns: 20_000_000,
            max_tries: 5,
            deadline_margin_ns: 3_000_000,
            capacity: 512,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Missing {
    seq: u64,
    due: TimelineNs,
    next_at: LocalNs,
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
}

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
        }
    }

    /// Forgets everything (a new stream).
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

    /// Notes an arrived packet: `seq`, the play time of its first frame, and its duration.
    pub fn on_packet(&mut self, now: LocalNs, seq: u16, play_time: TimelineNs, duration_ns: i64) {
        let Some(highest) = self.highest else {
            self.highest = Some(0x1_0000 + seq as u64);
            return;
        };
        let ext = extend_seq(highest, seq);
        if ext <= highest {
            if let Some(i) = self.missing.iter().position(|m| m.seq == ext) {
                self.missing.swap_remove(i);
                self.stats.recovered += 1;
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
                next_at: now + self.cfg.reorder_grace_ns,
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
        let mut n = 0;
        let mut i = 0;
        while i < self.missing.len() {
            let m = self.missing[i];
            let too_late = to_local.is_some_and(|f| f(m.due) - self.cfg.deadline_margin_ns < now);
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
                e.next_at = now + self.cfg.retry_ns;
                self.stats.requested += 1;
            }
            i += 1;
        }
        n
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
        t.on_packet(0, 10, 1_000 * MS, 5 * MS);
        t.on_packet(MS, 13, 1_015 * MS, 5 * MS); // 11 and 12 missing
        assert_eq!(
            nacks(&mut t, MS),
            Vec::<u16>::new(),
            "still in the reorder grace"
        );
        let mut first = nacks(&mut t, 4 * MS);
        first.sort();
        assert_eq!(first, vec![11, 12]);
        assert!(
            nacks(&mut t, 10 * MS).is_empty(),
            "not again before retry_ns"
        );
        assert_eq!(nacks(&mut t, 24 * MS).len(), 2);
        // 12 arrives (resent): only 11 is asked for from now on.
        t.on_packet(25 * MS, 12, 1_010 * MS, 5 * MS);
        assert_eq!(t.stats().recovered, 1);
        let mut now = 44 * MS;
        let mut asked = 2;
        while t.outstanding() > 0 {
            let v = nacks(&mut t, now);
            assert!(v.iter().all(|&s| s == 11));
            asked += v.len();
            now += 20 * MS;
        }
        assert_eq!(asked, 5, "max_tries bounds the requests for one packet");
        assert_eq!(t.stats().given_up, 1);
    }

    #[test]
    fn packets_that_cannot_be_played_in_time_are_not_asked_for() {
        let mut t = tracker();
        t.on_packet(0, 1, 100 * MS, 5 * MS);
        t.on_packet(0, 4, 115 * MS, 5 * MS); // 2 (due 105 ms) and 3 (due 110 ms) missing
        let identity = |x: TimelineNs| x;
        let mut out = [0u16; 8];
        let n = t.poll_nack(106 * MS, Some(&identity), &mut out);
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
        t.on_packet(0, 0, 0, MS);
        t.on_packet(0, 30_000, 30_000 * MS, MS);
        assert_eq!(t.outstanding(), 16);
        assert_eq!(t.stats().missing, 29_999);
        assert_eq!(t.stats().given_up, 29_999 - 16);
        // The newest are kept: they are the ones that can still be played.
        let mut asked = nacks(&mut t, 10 * MS);
        asked.sort();
        assert_eq!(asked, (29_984..30_000).collect::<Vec<u16>>());
        // A further gap while full evicts the earliest-due entries, never grows.
        t.on_packet(0, 30_010, 30_010 * MS, MS);
        assert_eq!(t.outstanding(), 16);
    }

    #[test]
    fn duplicates_and_old_packets_change_nothing() {
        let mut t = tracker();
        t.on_packet(0, 7, 0, MS);
        t.on_packet(0, 8, MS, MS);
        t.on_packet(0, 8, MS, MS);
        t.on_packet(0, 3, 0, MS);
        assert_eq!(t.outstanding(), 0);
        assert_eq!(t.stats(), LossStats::default());
    }
}
