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
//! The window adapts to the step size it sees (ten times the longest stall, at least 60 ms,
//! at most 500 ms), so the error from projecting at the nominal instead of the true rate stays
//! below `window * ppm` (50 us at 100 ppm over the longest window).
//!
//! Two things break "every old snapshot is a lower bound", and both are handled: a device that
//! does not consume yet right after the start (the snapshots before the pointer first moves are
//! not projected), and a device whose timeline slips (a sound server's graph missing a cycle:
//! when the newest snapshots agree with each other but all lie behind an older one, the older
//! ones are dropped).

use wavesync_common::time::{LocalNs, NS_PER_SEC};

/// How [`PointerTracker`] turns snapshots into a prediction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PointerMode {
    /// Use each snapshot as-is until the pointer is seen to stall (over 1 ms, twice), then the
    /// envelope; a snapshot more than 0.5 ms behind the envelope is never used as-is.
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
/// Snapshots that must agree to reveal a slip of the device's timeline.
const SLIP_SAMPLES: usize = 5;
/// How closely they must agree (a coarse device's scatter over a step is far wider).
const SLIP_AGREE_NS: i64 = 200_000;
/// The smallest slip acted on.
const SLIP_MIN_NS: i64 = 1_000_000;
/// A raw snapshot this far behind the envelope is not used, even before the device is known
/// to be coarse (a smooth device's readings differ from the envelope by jitter and
/// `ppm * window`, far less).
const STALE_NS: i64 = 500_000;
const MIN_WINDOW_NS: i64 = 60_000_000;
const MAX_WINDOW_NS: i64 = 500_000_000;

/// Tracks the DAC pointer of one device over time; see the module documentation.
#[derive(Clone, Debug)]
pub struct PointerTracker {
    rate: u32,
    mode: PointerMode,
    ring: [(LocalNs, i64); CAP],
    head: usize,
    len: usize,
    coarse: bool,
    evidence: u32,
    stall_start: Option<(LocalNs, i64)>,
    max_stall_ns: i64,
    last: Option<(LocalNs, i64)>,
    first_consumed: Option<i64>,
    moved: bool,
}

impl PointerTracker {
    /// A tracker for a device running at `rate` Hz.
    pub fn new(rate: u32, mode: PointerMode) -> Self {
        PointerTracker {
            rate: rate.max(1),
            mode,
            ring: [(LocalNs::from_ns(0), 0); CAP],
            head: 0,
            len: 0,
            coarse: mode == PointerMode::Envelope,
            evidence: 0,
            stall_start: None,
            max_stall_ns: 0,
            last: None,
            first_consumed: None,
            moved: false,
        }
    }

    /// Forgets the observations (a new run: start, underrun, reopen). What was learnt about
    /// the device (coarse or not, step size) is kept.
    pub fn reset(&mut self) {
        self.len = 0;
        self.head = 0;
        self.stall_start = None;
        self.last = None;
        self.first_consumed = None;
        self.moved = false;
    }

    /// True once the device has been seen to move its pointer in coarse steps.
    pub fn is_coarse(&self) -> bool {
        self.coarse
    }

    /// True once the pointer has moved in this run (the device is consuming).
    pub fn is_moving(&self) -> bool {
        self.moved
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
        if let Some((lt, lc)) = self.last {
            if ts < lt || consumed < lc {
                // Time or pointer went backwards: a new run the caller did not announce.
                self.reset();
            }
        }
        self.last = Some((ts, consumed));
        // Until the pointer first moves, the device may not be consuming yet (a sound server
        // pulls its first quantum a graph cycle later): such snapshots must not be projected.
        match self.first_consumed {
            None => self.first_consumed = Some(consumed),
            Some(c0) if c0 != consumed => self.moved = true,
            Some(_) => {}
        }
        if !self.moved {
            return raw;
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
        self.forget_before_slip(ts);
        let window = self.window_ns();
        let mut best = consumed as f64;
        for i in 0..self.len {
            let (t, c) = self.nth_latest(i);
            if ts - t > window {
                break;
            }
            let projected = c as f64 + (ts - t) as f64 * self.rate as f64 / NS_PER_SEC as f64;
            if projected > best {
                best = projected;
            }
        }
        let env = ts + self.frames_to_ns(written as f64 - best).round() as i64;
        let use_env = match self.mode {
            PointerMode::Raw => false,
            PointerMode::Envelope => true,
            // A reading far behind a recent one is stale whatever the device.
            PointerMode::Auto => self.coarse || raw - env > STALE_NS,
        };
        if use_env {
            env
        } else {
            raw
        }
    }

    /// The pointer's phase: frames consumed extrapolated back to local time 0 at the nominal
    /// rate. Snapshots of a steadily running device share it (up to the step lag).
    fn phase(&self, (t, c): (LocalNs, i64)) -> f64 {
        c as f64 - t.ns() as f64 * self.rate as f64 / NS_PER_SEC as f64
    }

    /// When the last [`SLIP_SAMPLES`] snapshots agree with each other but all lie behind an
    /// older one, the device slipped (a sound server's graph missed a cycle, a device paused):
    /// the older snapshots describe a timeline that is gone, so they are dropped. A coarse
    /// device's snapshots scatter over a whole step instead of agreeing.
    fn forget_before_slip(&mut self, now: LocalNs) {
        if self.len <= SLIP_SAMPLES {
            return;
        }
        let per_ns = self.rate as f64 / NS_PER_SEC as f64;
        let (mut lo, mut hi) = (f64::MAX, f64::MIN);
        for i in 0..SLIP_SAMPLES {
            let p = self.phase(self.nth_latest(i));
            lo = lo.min(p);
            hi = hi.max(p);
        }
        if hi - lo > SLIP_AGREE_NS as f64 * per_ns {
            return;
        }
        let window = self.window_ns();
        let older_best = (SLIP_SAMPLES..self.len)
            .map(|i| self.nth_latest(i))
            .take_while(|(t, _)| now - *t <= window)
            .map(|s| self.phase(s))
            .fold(f64::MIN, f64::max);
        if older_best - hi > SLIP_MIN_NS as f64 * per_ns {
            log::debug!(
                "output: the device pointer slipped by {:.0} frames; refitting",
                older_best - hi
            );
            self.len = SLIP_SAMPLES;
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

    /// The `i`-th newest snapshot (0: the newest); `i < self.len`.
    fn nth_latest(&self, i: usize) -> (LocalNs, i64) {
        self.ring[(self.head + CAP - 1 - i) % CAP]
    }

    fn push(&mut self, t: LocalNs, c: i64) {
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
            let next = p.predict(LocalNs::from_ns(t), w, d);
            let err = next.ns() - true_next(w, 0.0, 96);
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
            let next = p.predict(LocalNs::from_ns(t), w, d);
            let truth = true_next(w, 80.0, 0);
            let raw = t + d * 1_000_000_000 / RATE as i64;
            raw_worst = raw_worst.max(raw - truth);
            if k > 50 {
                worst_late = worst_late.max((next.ns() - truth).abs());
            }
        }
        assert!(p.is_coarse());
        assert!(raw_worst > 15_000_000, "raw lag {raw_worst}");
        // After warm-up the envelope is within a poll-phase miss plus drift over the window.
        eprintln!("raw worst lag {raw_worst} ns, fitted worst {worst_late} ns");
        assert!(worst_late < 2_000_000, "fitted error {worst_late} ns");
    }

    #[test]
    fn snapshots_before_the_device_moves_are_not_projected() {
        // A sound server: "running" at t=0 but the first quantum is pulled 12.5 ms later.
        let mut p = PointerTracker::new(RATE, PointerMode::Auto);
        let start = 12_500_000;
        let truth = |w: i64| start + w * 1_000_000_000 / RATE as i64;
        for (t, w) in [(10_000, 240), (50_000, 480), (100_000, 720)] {
            p.predict(LocalNs::from_ns(t), w, w);
        }
        for k in 0..40i64 {
            let t = start + 300_000 + k * 5_000_000;
            let consumed = (t - start) * RATE as i64 / 1_000_000_000;
            let w = consumed + 800;
            let err = p.predict(LocalNs::from_ns(t), w, w - consumed).ns() - truth(w);
            assert!(err.abs() < 50_000, "k {k}: error {err} ns");
        }
    }

    #[test]
    fn a_slip_of_the_timeline_is_followed() {
        // A smooth device that loses 128 frames (2.67 ms) at t = 500 ms.
        let mut p = PointerTracker::new(RATE, PointerMode::Auto);
        let slip = 128i64;
        let mut worst_after = 0i64;
        for k in 1..200i64 {
            let t = k * 5_000_000 + (k * 7919 % 300) * 1000;
            let mut consumed = t * RATE as i64 / 1_000_000_000;
            if t > 500_000_000 {
                consumed -= slip;
            }
            let w = consumed + 900;
            let truth = t + 900 * 1_000_000_000 / RATE as i64;
            let err = p.predict(LocalNs::from_ns(t), w, w - consumed).ns() - truth;
            // Right after the slip the tracker may trust the old timeline for a few readings.
            if !(500_000_000..=500_000_000 + 5 * 5_400_000).contains(&t) {
                worst_after = worst_after.max(err.abs());
            }
        }
        assert!(worst_after < 50_000, "error {worst_after} ns");
        assert!(!p.is_coarse());
    }

    #[test]
    fn reset_on_backwards_pointer() {
        let mut p = PointerTracker::new(RATE, PointerMode::Envelope);
        p.predict(LocalNs::from_ns(1_000_000_000), 96_000, 4_000);
        // A new run: the pointer restarts at 0.
        let next = p.predict(LocalNs::from_ns(1_010_000_000), 960, 960);
        assert_eq!(next, LocalNs::from_ns(1_030_000_000));
    }
}
