//! A delay-locked loop (DLL): turns the jittery arrival times of a live input's blocks into
//! smooth capture times that advance at the input's true rate.
//!
//! A live input (a pipe, a socket, PulseAudio) hands over audio in blocks whose arrival is late
//! by scheduling noise and comes in bursts. The loop predicts when each block ends from a
//! running origin and a measured duration per frame, and corrects both a little at each block
//! (a second-order loop, critically damped, of bandwidth `bandwidth_hz`), so the capture times
//! it gives follow the input's clock but not its jitter. A block that departs from the
//! prediction by more than `max_error_ns` (the input stalled, or was reopened) restarts the
//! loop at that block.
//!
//! Sans-I/O: the caller passes the arrival times (CLOCK_MONOTONIC ns).

use crate::time::{LocalNs, NS_PER_SEC};

/// What one block did to the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DllUpdate {
    /// Tracked: the block's first frame was captured at `capture`.
    Tracked {
        /// Smoothed capture time of the block's first frame.
        capture: LocalNs,
    },
    /// The loop (re)started at this block (first block, or a departure beyond the limit).
    Restarted {
        /// Capture time of the block's first frame: its arrival minus its duration.
        capture: LocalNs,
    },
}

impl DllUpdate {
    /// The capture time of the block's first frame.
    pub fn capture(self) -> LocalNs {
        match self {
            DllUpdate::Tracked { capture } | DllUpdate::Restarted { capture } => capture,
        }
    }
}

/// The loop. See the module documentation.
#[derive(Clone, Debug)]
pub struct Dll {
    nominal_ns_per_frame: f64,
    bandwidth_hz: f64,
    max_error_ns: i64,
    /// Predicted time of the next block's first frame.
    next: f64,
    /// Measured duration of one frame, ns.
    ns_per_frame: f64,
    started: bool,
}

/// The local instant nearest to `ns` (a time the loop keeps in `f64`).
fn local(ns: f64) -> LocalNs {
    LocalNs::from_ns(ns.round() as i64)
}

/// The loop never believes the input is further than this from its nominal rate.
const MAX_RATE_ERROR: f64 = 1e-3;

impl Dll {
    /// A loop for an input of `rate` frames per second, of bandwidth `bandwidth_hz` (0.1 to
    /// 1 Hz suits pipes and sockets: lower smooths more, higher follows rate changes faster),
    /// restarting when a block departs more than `max_error_ns` from the prediction.
    pub fn new(rate: u32, bandwidth_hz: f64, max_error_ns: i64) -> Self {
        let nominal = NS_PER_SEC as f64 / rate.max(1) as f64;
        Dll {
            nominal_ns_per_frame: nominal,
            bandwidth_hz: if bandwidth_hz.is_finite() {
                bandwidth_hz.clamp(0.001, 50.0)
            } else {
                0.1
            },
            max_error_ns: max_error_ns.max(1),
            next: 0.0,
            ns_per_frame: nominal,
            started: false,
        }
    }

    /// True once a block has started the loop.
    pub fn is_started(&self) -> bool {
        self.started
    }

    /// Forgets the past: the next block restarts the loop.
    pub fn reset(&mut self) {
        self.started = false;
        self.ns_per_frame = self.nominal_ns_per_frame;
    }

    /// The measured input rate relative to nominal, in ppm.
    pub fn rate_error_ppm(&self) -> f64 {
        (self.nominal_ns_per_frame / self.ns_per_frame - 1.0) * 1e6
    }

    /// When the last frame of the next block of `frames` frames is predicted to arrive (`None`
    /// before the first block).
    pub fn predicted_end(&self, frames: usize) -> Option<LocalNs> {
        self.started
            .then(|| local(self.next + frames as f64 * self.ns_per_frame))
    }

    /// Feeds a block of `frames` frames whose last frame arrived at `arrival`; returns the
    /// capture time of its first frame.
    pub fn update(&mut self, arrival: LocalNs, frames: usize) -> DllUpdate {
        let duration = frames as f64 * self.ns_per_frame;
        let measured_start = arrival.ns() as f64 - duration;
        if !self.started || (measured_start - self.next).abs() > self.max_error_ns as f64 {
            self.started = true;
            self.ns_per_frame = self.nominal_ns_per_frame;
            let start = arrival.ns() as f64 - frames as f64 * self.ns_per_frame;
            self.next = arrival.ns() as f64;
            return DllUpdate::Restarted {
                capture: local(start),
            };
        }
        let capture = self.next;
        let predicted_end = self.next + duration;
        let err = arrival.ns() as f64 - predicted_end;
        // Second-order loop gains for this block's duration (critically damped).
        let omega = 2.0 * std::f64::consts::PI * self.bandwidth_hz * duration / NS_PER_SEC as f64;
        let b = (std::f64::consts::SQRT_2 * omega).min(1.0);
        let c = (omega * omega).min(1.0);
        self.next = predicted_end + b * err;
        if frames > 0 {
            let lim = self.nominal_ns_per_frame * MAX_RATE_ERROR;
            // One block that came very late (the reader was not scheduled for a while) moves
            // the rate no more than one a tenth of the restart limit late: otherwise a single
            // 100 ms hiccup would shift the rate by hundreds of ppm.
            let rate_err = err.clamp(
                -(self.max_error_ns as f64) / 10.0,
                self.max_error_ns as f64 / 10.0,
            );
            self.ns_per_frame = (self.ns_per_frame + c * rate_err / frames as f64).clamp(
                self.nominal_ns_per_frame - lim,
                self.nominal_ns_per_frame + lim,
            );
        }
        DllUpdate::Tracked {
            capture: local(capture),
        }
    }

    /// Takes a block of `frames` frames at the predicted times without correcting the loop,
    /// for blocks whose arrival says nothing about their timing (a backlog read at once);
    /// returns the capture time of its first frame. Before the first block this is
    /// [`Dll::update`] at `arrival`.
    pub fn advance(&mut self, arrival: LocalNs, frames: usize) -> LocalNs {
        if !self.started {
            return self.update(arrival, frames).capture();
        }
        let capture = self.next;
        self.next += frames as f64 * self.ns_per_frame;
        local(capture)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    const MS: i64 = 1_000_000;

    fn l(ns: i64) -> LocalNs {
        LocalNs::from_ns(ns)
    }

    #[test]
    fn jittery_arrivals_become_smooth_capture_times_at_the_true_rate() {
        // An input at +120 ppm delivering 480-frame blocks, each arriving 0..4 ms late.
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let true_ns_per_frame = 1e9 / (48_000.0 * (1.0 + 120e-6));
        let mut dll = Dll::new(48_000, 0.1, 20 * MS);
        let mut frames = 0u64;
        let mut worst = 0.0f64;
        let mut rate_sum = 0.0;
        let mut prev: Option<LocalNs> = None;
        let mut worst_step = 0.0f64;
        for block in 0..3000 {
            let true_start = (1_000 * MS) as f64 + frames as f64 * true_ns_per_frame;
            frames += 480;
            let true_end = (1_000 * MS) as f64 + frames as f64 * true_ns_per_frame;
            let arrival = true_end + rng.gen_range(0.0..4e6);
            let u = dll.update(l(arrival as i64), 480);
            if block > 1000 {
                assert!(matches!(u, DllUpdate::Tracked { .. }));
                // The smoothed time sits at the jitter's mean (2 ms) behind the truth and
                // wanders far less than the jitter's 4 ms span.
                worst = worst.max((u.capture().ns() as f64 - true_start - 2e6).abs());
                rate_sum += dll.rate_error_ppm();
                if let Some(p) = prev {
                    // Block to block, capture times advance by the block's true duration.
                    let step = (u.capture() - p) as f64 - 480.0 * true_ns_per_frame;
                    worst_step = worst_step.max(step.abs());
                }
            }
            prev = Some(u.capture());
        }
        assert!(worst < 1.0e6, "smoothed capture off by {worst} ns");
        assert!(worst_step < 100_000.0, "block step off by {worst_step} ns");
        let mean_rate = rate_sum / 1999.0;
        assert!(
            (mean_rate - 120.0).abs() < 15.0,
            "mean rate {mean_rate} ppm"
        );
    }

    #[test]
    fn one_very_late_block_barely_moves_the_rate() {
        // Blocks on time, then one 40 ms late (under the 50 ms restart limit): the rate it
        // leaves is off by far less than the ~300 ppm an unclamped correction would give.
        let mut dll = Dll::new(48_000, 0.2, 50 * MS);
        let mut t = l(0);
        for _ in 0..2_000 {
            t += 5 * MS;
            dll.update(t, 240);
        }
        dll.update(t + 5 * MS + 40 * MS, 240);
        assert!(
            dll.rate_error_ppm().abs() < 50.0,
            "{}",
            dll.rate_error_ppm()
        );
    }

    #[test]
    fn a_stall_restarts_the_loop_at_the_late_block() {
        let mut dll = Dll::new(48_000, 0.5, 20 * MS);
        let mut t = l(0);
        for _ in 0..100 {
            t += 10 * MS;
            dll.update(t, 480);
        }
        t += 500 * MS; // the input stalled for half a second
        match dll.update(t, 480) {
            DllUpdate::Restarted { capture } => assert_eq!(capture, t - 10 * MS),
            other => panic!("expected a restart, got {other:?}"),
        }
        assert!(
            matches!(dll.update(t + 10 * MS, 480), DllUpdate::Tracked { capture } if (capture - t).abs() < 1000)
        );
    }

    #[test]
    fn advance_follows_the_prediction_without_correcting_it() {
        let mut dll = Dll::new(48_000, 0.5, 20 * MS);
        assert_eq!(dll.predicted_end(480), None);
        // Before the first block, advance starts the loop as update does.
        assert_eq!(dll.advance(l(100 * MS), 480), l(90 * MS));
        assert_eq!(dll.predicted_end(480), Some(l(110 * MS)));
        // A backlog read at once: each block goes right after the previous one whatever its
        // arrival, and the loop's rate is untouched.
        for k in 0..10 {
            assert_eq!(dll.advance(l(100 * MS), 480), l(100 * MS + k * 10 * MS));
        }
        assert_eq!(dll.rate_error_ppm(), 0.0);
        dll.reset();
        assert!(!dll.is_started());
        assert!(
            matches!(dll.update(l(5 * MS), 48), DllUpdate::Restarted { capture } if capture == l(4 * MS))
        );
    }

    #[test]
    fn odd_settings_do_not_break_it() {
        let mut dll = Dll::new(0, f64::NAN, -5);
        // Rate 0 is taken as 1 Hz, a NaN bandwidth as 0.1 Hz, a negative limit as 1 ns.
        assert_eq!(dll.update(l(1_000), 0).capture(), l(1_000));
        assert_eq!(dll.update(l(3 * NS_PER_SEC), 2).capture(), l(NS_PER_SEC));
        assert!(matches!(
            dll.update(l(4 * NS_PER_SEC + 2), 1),
            DllUpdate::Restarted { .. }
        ));
        assert!(dll.rate_error_ppm().is_finite());
    }
}
