//! Stamping live inputs: arrival times smoothed by a delay-locked loop, backlogs paced,
//! stalls logged.
//!
//! - In step with real time: each block's capture time comes from [`Dll`], so arrival jitter
//!   and bursts do not shake the stream time, and a source whose clock runs a little fast or
//!   slow is followed.
//! - Ahead of real time (a backlog: a pipe filled by a file, a burst after a pause): a block
//!   whose predicted end lies more than [`AHEAD_SLACK_NS`] after its arrival is stamped on the
//!   prediction without correcting the loop, and held until real time is within that slack of
//!   its end. Reading stops meanwhile, so the rest stays in the pipe or socket, whose buffer
//!   is bounded: nothing queues up in the sender and the stream time never runs ahead.
//! - Stalled (nothing for [`STALL_NS`]): one log line; when audio comes back, one more, and the
//!   loop restarts at the late block, so the sender starts a new run at real time.

use wavesync_common::dll::{Dll, DllUpdate};
use wavesync_common::time::LocalNs;

use wavesync_net::clock;

/// How far ahead of its arrival a block's predicted end may lie before it is held back.
pub const AHEAD_SLACK_NS: i64 = 2_000_000;
/// Held back for this much audio in a row, the input has a backlog worth a log line (bursty
/// sources are held back for a few tens of ms within each burst).
pub const BACKLOG_LOG_NS: i64 = 1_000_000_000;
/// At most one backlog log line this often.
const BACKLOG_LOG_INTERVAL_NS: i64 = 10_000_000_000;
/// No audio for this long is a stall.
pub const STALL_NS: i64 = 500_000_000;
/// The loop restarts when a block departs this far from its prediction.
pub const MAX_ERROR_NS: i64 = 50_000_000;
/// Loop bandwidth, Hz.
pub const BANDWIDTH_HZ: f64 = 0.2;

/// Counters of a [`LiveClock`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveStats {
    /// Blocks stamped.
    pub blocks: u64,
    /// Blocks held back because they arrived ahead of real time.
    pub paced_blocks: u64,
    /// Times the loop restarted after the first block (stalls, jumps).
    pub restarts: u64,
    /// Stalls logged.
    pub stalls: u64,
}

/// The stamping state of one live input.
#[derive(Debug)]
pub struct LiveClock {
    what: String,
    dll: Dll,
    last_data: Option<LocalNs>,
    stalled: bool,
    backlog_logged: Option<LocalNs>,
    /// Audio held back in a row, ns.
    held_in_a_row: i64,
    stats: LiveStats,
}

impl LiveClock {
    /// A clock for input `what` at `rate` frames per second.
    pub fn new(what: &str, rate: u32) -> Self {
        LiveClock {
            what: what.to_string(),
            dll: Dll::new(rate, BANDWIDTH_HZ, MAX_ERROR_NS),
            last_data: None,
            stalled: false,
            backlog_logged: None,
            held_in_a_row: 0,
            stats: LiveStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> LiveStats {
        self.stats
    }

    /// The input's measured rate error, ppm.
    pub fn rate_error_ppm(&self) -> f64 {
        self.dll.rate_error_ppm()
    }

    /// A block of `frames` frames finished arriving at `arrival` (now). Returns the capture
    /// time of its first frame; holds the caller back first if the block is ahead of real
    /// time.
    pub fn stamp(&mut self, arrival: LocalNs, frames: usize) -> LocalNs {
        self.stats.blocks += 1;
        if self.stalled {
            self.stalled = false;
            let gap = self.last_data.map(|t| arrival - t).unwrap_or(0);
            log::info!(
                "{}: input resumed after {:.2} s (a new run starts)",
                self.what,
                gap as f64 / 1e9
            );
        }
        self.last_data = Some(arrival);
        if let Some(end) = self.dll.predicted_end(frames) {
            if end - arrival > AHEAD_SLACK_NS {
                let capture_start = self.dll.predicted_end(0).unwrap_or(end);
                self.held_in_a_row += end - capture_start;
                let quiet = self
                    .backlog_logged
                    .is_some_and(|t| arrival - t < BACKLOG_LOG_INTERVAL_NS);
                if self.held_in_a_row > BACKLOG_LOG_NS && !quiet {
                    self.backlog_logged = Some(arrival);
                    log::info!(
                        "{}: input delivers faster than real time (a backlog); reading it at \
                         real-time pace, the rest waits in the input's buffer",
                        self.what
                    );
                }
                self.stats.paced_blocks += 1;
                let capture = self.dll.advance(arrival, frames);
                clock::sleep_until(end - AHEAD_SLACK_NS);
                self.last_data = Some(clock::monotonic_ns());
                return capture;
            }
        }
        self.held_in_a_row = 0;
        let first = !self.dll.is_started();
        match self.dll.update(arrival, frames) {
            DllUpdate::Tracked { capture } => capture,
            DllUpdate::Restarted { capture } => {
                if !first {
                    self.stats.restarts += 1;
                    log::info!(
                        "{}: input timing jumped; stamping restarts from this block",
                        self.what
                    );
                }
                capture
            }
        }
    }

    /// Nothing arrived up to `now`: logs a stall once.
    pub fn idle(&mut self, now: LocalNs) {
        if let Some(t) = self.last_data {
            if !self.stalled && now - t > STALL_NS {
                self.stalled = true;
                self.stats.stalls += 1;
                log::warn!(
                    "{}: input stalled (no audio for {:.1} s); the stream pauses until it comes back",
                    self.what,
                    (now - t) as f64 / 1e9
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wavesync_common::time::frames_to_ns;

    #[test]
    fn a_backlog_is_stamped_back_to_back_and_released_at_real_time_pace() {
        let mut c = LiveClock::new("test", 48_000);
        let t0 = clock::monotonic_ns();
        let first = c.stamp(t0, 480);
        assert_eq!(first, t0 - 10_000_000);
        let mut prev = first;
        // Ten more 10 ms blocks, all "arriving" now: they follow each other on the timeline
        // and the caller is held until each is within the slack of real time.
        for _ in 0..10 {
            let now = clock::monotonic_ns();
            let cap = c.stamp(now, 480);
            assert_eq!(cap - prev, frames_to_ns(480, 48_000));
            let end = cap + frames_to_ns(480, 48_000);
            assert!(clock::monotonic_ns() >= end - AHEAD_SLACK_NS);
            prev = cap;
        }
        assert!(c.stats().paced_blocks >= 8, "{:?}", c.stats());
        assert_eq!(c.stats().restarts, 0);
    }

    #[test]
    fn bursts_do_not_shake_the_stamps() {
        // A source delivering 25 ms at once (five 5 ms blocks read back to back), each burst
        // 0-3 ms late, its clock 80 ppm fast. Times are in the past, so nothing sleeps.
        let mut rng_state = 12345u64;
        let mut rnd = || {
            rng_state = rng_state.wrapping_mul(6364136223846793005).wrapping_add(1);
            (rng_state >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut c = LiveClock::new("test", 48_000);
        let ns_per_frame = 1e9 / (48_000.0 * (1.0 + 80e-6));
        let mut frames = 0u64;
        let mut prev: Option<LocalNs> = None;
        let mut offsets = Vec::new();
        let mut rate_sum = 0.0;
        for burst in 0..8_000 {
            let burst_end = 1e9 + (frames + 1_200) as f64 * ns_per_frame;
            let arrival = burst_end + rnd() * 3e6;
            for i in 0..5 {
                let true_start = 1e9 + frames as f64 * ns_per_frame;
                let cap = c.stamp(LocalNs::from_ns(arrival as i64 + i * 10_000), 240);
                if let Some(p) = prev {
                    let step = (cap - p) as f64 - 240.0 * ns_per_frame;
                    assert!(
                        step.abs() < 60_000.0,
                        "burst {burst} block {i}: step off by {step}"
                    );
                }
                prev = Some(cap);
                if burst > 4_000 {
                    offsets.push(cap.ns() as f64 - true_start);
                    rate_sum += c.rate_error_ppm();
                }
                frames += 240;
            }
        }
        assert_eq!(c.stats().restarts, 0);
        let min = offsets.iter().cloned().fold(f64::MAX, f64::min);
        let max = offsets.iter().cloned().fold(f64::MIN, f64::max);
        // A constant offset (the bursts' delay) is fine; its wander is what would be heard.
        assert!(max - min < 1.0e6, "capture offset wanders {} ns", max - min);
        // The rate estimate is noisy from block to block but follows the source's clock.
        let mean_rate = rate_sum / offsets.len() as f64;
        assert!((mean_rate - 80.0).abs() < 10.0, "{mean_rate}");
    }

    #[test]
    fn a_stall_is_logged_once_and_the_stamps_restart_at_real_time() {
        let mut c = LiveClock::new("test", 48_000);
        let mut t = 1_000_000_000;
        for _ in 0..50 {
            t += 10_000_000;
            c.stamp(LocalNs::from_ns(t), 480);
        }
        c.idle(LocalNs::from_ns(t + 100_000_000));
        assert_eq!(c.stats().stalls, 0);
        c.idle(LocalNs::from_ns(t + 600_000_000));
        c.idle(LocalNs::from_ns(t + 900_000_000));
        assert_eq!(c.stats().stalls, 1);
        let late = t + 2_000_000_000;
        assert_eq!(
            c.stamp(LocalNs::from_ns(late), 480),
            LocalNs::from_ns(late - 10_000_000)
        );
        assert_eq!(c.stats().restarts, 1);
    }
}
