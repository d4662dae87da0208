//! From device status snapshots to "when will the next written frame leave the DAC".
//!
//! A snapshot is (timestamp, frames written so far, delay). The frames that have left the DAC
//! are `consumed = written - delay`. A smooth device (most PCI/USB/I2S cards, the virtual DAC
//! in fine mode) gives an exact snapshot: the next frame leaves at `ts + delay / rate`.
//! A batch device moves its pointer only once per period (or a sound server once per
//! quantum): between moves the reported `consumed` stays put while time runs, so `delay` is
//! too large by up to a step. The true pointer is the *upper envelope* of the observations:
//! each observation projected forward at the nominal rate is a lower bound of the present
//! position, and the one taken right after a step is exact. [`PointerTracker`] keeps the
//! observations of a short window and predicts from the most advanced one.
//!
//! The window adapts to the step size it sees (ten times the longest stall, at least 20 ms,
//! at most 500 ms), so the error from projecting at the nominal instead of the true rate stays
//! below `window * ppm` (50 us at 100 ppm over the longest window).

use wavesync_common::time::{LocalNs, NS_PER_SEC};

/// How [`PointerTracker`] turns snapshots into a prediction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PointerMode {
    /// Use each snapshot as-is until the pointer is seen to move coarsely, then the envelope.
    #[default]
    Auto,
    /// Always each snapshot as-is (`ts + delay / rate`).
    Raw,
    /// Always the upper envelope of the recent snapshots.
    Envelope,
}

const CAP: usize = 128;
/// A stall this long (pointer unmoved while running) marks the device as coarse.
const STALL_NS: i64 = 1_000_000;
/// A raw snapshot this far behind the envelope marks the device as coarse.
const LAG_NS: i64 = 1_000_000;
const MIN_WINDOW_NS: i64 = 20_000_000;
const MAX_WINDOW_NS: i64 = 500_000_000;

/// Tracks the DAC pointer of one device over time; see the module documentation.
#[derive(Clone, Debug)]
pub struct PointerTracker {
    rate: u32,
    mode: PointerMode,
    ring: [(i64, i64); CAP],
    head: usize,
    len: usize,
    coarse: bool,
    evidence: u32,
    stall_start: Option<(i64, i64)>,
    max_stall_ns: i64,
}

impl PointerTracker {
    /// A tracker for a device running at `rate` Hz.
    pub fn new(rate: u32, mode: PointerMode) -> Self {
        PointerTracker {
            rate: rate.max(1),
            mode,
            ring: [(0, 0); CAP],
            head: 0,
            len: 0,
            coarse: mode == PointerMode::Envelope,
            evidence: 0,
            stall_start: None,
            max_stall_ns: 0,
        }
    }

    /// Forgets the observations (a new run: start, underrun, reopen). What was learnt about
    /// the device (coarse or not, step size) is kept.
    pub fn reset(&mut self) {
        self.len = 0;
        self.head = 0;
        self.stall_start = None;
    }

    /// True once the device has been seen to move its pointer in coarse steps.
    pub fn is_coarse(&self) -> bool {
        self.coarse
    }

    /// The longest stall of the pointer seen so far, in ns.
    pub fn max_stall_ns(&self) -> i64 {
        self.max_stall_ns
    }

    fn window_ns(&self) -> i64 {
        (10 * self.max_stall_ns).clamp(MIN_WINDOW_NS, MAX_WINDOW_NS)
    }

    fn frames_to_ns(&self, frames: f64) -> f64 {
        frames * NS_PER_SEC as f64 / self.rate as f64
    }

    /// Adds a snapshot of a running device taken at `ts` (local ns): `written` frames written
    /// since the run started, `delay` frames reported. Returns the predicted local instant at
    /// which the next written frame leaves the DAC.
    pub fn predict(&mut self, ts: LocalNs, written: i64, delay: i64) -> LocalNs {
        let consumed = written - delay;
        let raw = ts + self.frames_to_ns(delay as f64).round() as i64;
        if let Some((lt, lc)) = self.latest() {
            if ts < lt || consumed < lc {
                // Time or pointer went backwards: a new run the caller did not announce.
                self.reset();
            }
        }
        // Stall tracking: how long the pointer stays put while time runs.
        match self.stall_start {
            Some((st, sc)) if sc == consumed => {
                let stall = ts - st;
                if stall > self.max_stall_ns {
                    self.max_stall_ns = stall;
                }
                if stall >= STALL_NS && self.mode == PointerMode::Auto {
                    self.note_evidence();
                }
            }
            _ => self.stall_start = Some((ts, consumed)),
        }
        self.push(ts, consumed);
        let window = self.window_ns();
        let mut best = consumed as f64;
        for i in 0..self.len {
            let (t, c) = self.ring[(self.head + CAP - 1 - i) % CAP];
            if ts - t > window {
                break;
            }
            let projected = c as f64 + (ts - t) as f64 * self.rate as f64 / NS_PER_SEC as f64;
            if projected > best {
                best = projected;
            }
        }
        let env = ts + self.frames_to_ns(written as f64 - best).round() as i64;
        if self.mode == PointerMode::Auto && !self.coarse && raw - env > LAG_NS {
            self.note_evidence();
        }
        let use_env = match self.mode {
            PointerMode::Raw => false,
            PointerMode::Envelope => true,
            PointerMode::Auto => self.coarse,
        };
        if use_env {
            env
        } else {
            raw
        }
    }

    fn note_evidence(&mut self) {
        self.evidence += 1;
        if self.evidence >= 2 && !self.coarse {
            self.coarse = true;
            log::info!(
                "output: the device pointer moves in coarse steps (up to {:.1} ms): fitting it",
                self.max_stall_ns as f64 / 1e6
            );
        }
    }

    fn latest(&self) -> Option<(i64, i64)> {
        (self.len > 0).then(|| self.ring[(self.head + CAP - 1) % CAP])
    }

    fn push(&mut self, t: i64, c: i64) {
        self.ring[self.head] = (t, c);
        self.head = (self.head + 1) % CAP;
        self.len = (self.len + 1).min(CAP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 48_000;

    /// A device playing at `ppm` from t=0 with `step` frames of pointer granularity and
    /// `latency` frames of codec delay; the app keeps `queued` frames ahead.
    fn snapshot(t: i64, ppm: f64, step: i64, latency: i64, queued: i64) -> (i64, i64) {
        let true_consumed = (t as f64 * RATE as f64 * (1.0 + ppm * 1e-6) / 1e9) as i64;
        let reported = (true_consumed / step) * step;
        let written = true_consumed + queued;
        (written, written - reported + latency)
    }

    fn true_next(written: i64, ppm: f64, latency: i64) -> i64 {
        ((written + latency) as f64 / (RATE as f64 * (1.0 + ppm * 1e-6)) * 1e9) as i64
    }

    #[test]
    fn smooth_device_uses_each_snapshot() {
        let mut p = PointerTracker::new(RATE, PointerMode::Auto);
        for k in 1..200 {
            let t = k * 5_000_000 + (k * 7919 % 1000) * 1000;
            let (w, d) = snapshot(t, 0.0, 1, 96, 960);
            let next = p.predict(t, w, d);
            let err = next - true_next(w, 0.0, 96);
            assert!(err.abs() < 25_000, "k {k}: error {err} ns");
        }
        assert!(!p.is_coarse());
    }

    #[test]
    fn batch_device_is_detected_and_fitted() {
        // Pointer moves per 1024-frame quantum (21.3 ms); polled every 5 ms at odd phases.
        let mut p = PointerTracker::new(RATE, PointerMode::Auto);
        let mut raw_worst = 0i64;
        let mut worst_late = 0i64;
        for k in 1..400i64 {
            let t = k * 5_000_000 + (k * 7919 % 3000) * 1000;
            let (w, d) = snapshot(t, 80.0, 1024, 0, 4096);
            let next = p.predict(t, w, d);
            let truth = true_next(w, 80.0, 0);
            let raw = t + d * 1_000_000_000 / RATE as i64;
            raw_worst = raw_worst.max(raw - truth);
            if k > 50 {
                worst_late = worst_late.max((next - truth).abs());
            }
        }
        assert!(p.is_coarse());
        assert!(raw_worst > 15_000_000, "raw lag {raw_worst}");
        // After warm-up the envelope is within a poll-phase miss plus drift over the window.
        eprintln!("raw worst lag {raw_worst} ns, fitted worst {worst_late} ns");
        assert!(worst_late < 2_000_000, "fitted error {worst_late} ns");
    }

    #[test]
    fn reset_on_backwards_pointer() {
        let mut p = PointerTracker::new(RATE, PointerMode::Envelope);
        p.predict(1_000_000_000, 96_000, 4_000);
        // A new run: the pointer restarts at 0.
        let next = p.predict(1_010_000_000, 960, 960);
        assert_eq!(next, 1_030_000_000);
    }
}
