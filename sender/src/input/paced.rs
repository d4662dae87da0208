//! Pacing for file and generated inputs: frame `n` is captured at `start + n / rate` on
//! CLOCK_MONOTONIC, and a block is handed out once its last frame's time has come.

use wavesync_common::time::{frames_to_ns, LocalNs, NS_PER_SEC};

use wavesync_net::clock;

/// If the process falls this far behind (suspend, stopped by a debugger), the pacing starts
/// again from now instead of rushing to catch up with audio nobody can play any more.
const MAX_BEHIND_NS: i64 = NS_PER_SEC / 2;

/// Stamps and paces the blocks of a file or generated input.
#[derive(Clone, Debug)]
pub struct Pacer {
    rate: u32,
    start: Option<LocalNs>,
    frames: u64,
    restarts: u64,
}

impl Pacer {
    /// A pacer for `rate` frames per second; the first block starts its clock.
    pub fn new(rate: u32) -> Self {
        Pacer {
            rate: rate.max(1),
            start: None,
            frames: 0,
            restarts: 0,
        }
    }

    /// Times the pacing started again after falling behind.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// Waits until a block of `frames` frames has been "captured" and returns the capture time
    /// of its first frame.
    pub fn pace(&mut self, frames: usize) -> LocalNs {
        let now = clock::monotonic_ns();
        let start = *self.start.get_or_insert(now);
        let mut capture = start + frames_to_ns(self.frames as i64, self.rate);
        if now - capture > MAX_BEHIND_NS {
            log::warn!(
                "input fell {:.1} s behind real time (was the process stopped?); starting again from now",
                (now - capture) as f64 / 1e9
            );
            self.restarts += 1;
            self.start = Some(now);
            self.frames = 0;
            capture = now;
        }
        let end = capture + frames_to_ns(frames as i64, self.rate);
        clock::sleep_until(end);
        self.frames += frames as u64;
        capture
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_stamped_exactly_and_released_after_their_last_frame() {
        let mut p = Pacer::new(48_000);
        let first = p.pace(240);
        let after_first = clock::monotonic_ns();
        assert!(after_first >= first + 5_000_000);
        let second = p.pace(240);
        assert_eq!(second - first, frames_to_ns(240, 48_000));
        assert!(clock::monotonic_ns() >= second + 5_000_000);
        let third = p.pace(1);
        assert_eq!(third - first, frames_to_ns(480, 48_000));
        assert_eq!(p.restarts(), 0);
    }

    #[test]
    fn falling_far_behind_restarts_from_now() {
        let mut p = Pacer::new(48_000);
        let first = p.pace(48);
        std::thread::sleep(std::time::Duration::from_millis(600));
        let next = p.pace(48);
        assert_eq!(p.restarts(), 1);
        assert!(next - first >= 600_000_000);
    }
}
