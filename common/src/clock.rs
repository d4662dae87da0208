//! The receiver's model of the master's clock: `timeline = a + b * local`.
//!
//! Each time query gives four timestamps ([`Exchange`]): T1 (local send), T2 (master receive),
//! T3 (master send) and T4 (local receive). From them, an offset sample
//! `θ = ((T2 - T1) + (T3 - T4)) / 2` (timeline minus local) valid at the local midpoint
//! `(T1 + T4) / 2`, and a round trip `δ = (T4 - T1) - (T3 - T2)`. Whatever the queueing, the
//! true offset lies within `θ ± δ/2`; an exchange with a small round trip therefore carries a
//! small error, and only its *excess* over the smallest round trip seen says how much.
//!
//! [`ClockModel`] keeps the last [`ClockConfig::window`] samples, at most
//! [`ClockConfig::max_age_ns`] old, in a fixed ring (no allocation per exchange) and fits
//! offset and rate by weighted least squares in two stages:
//!
//! 1. on the offset samples, each weighted by `1 / σ²` with `σ = f · (1 + (δ - δ_min) / 2f)²`,
//!    `f = max(noise_floor, δ_min / 8)`: the low-round-trip exchanges dominate. This gives the
//!    rate a start and says whether a narrow rate prior (after a step) still holds;
//! 2. on the two *one-way bounds* of every exchange: `θ + δ/2 = (T2 - T1)` is the offset plus
//!    the request's one-way delay, `θ - δ/2 = (T3 - T4)` the offset minus the answer's. Across
//!    the window the lower envelope of the first and the upper envelope of the second are lines
//!    of one slope (the rate), `D_up` above and `D_down` below the offset (the floors of the
//!    one-way delays); the offset is half-way between them (plus half of `D_up - D_down`, the
//!    asymmetry no filter sees). Each bound is weighted by its own excess over its envelope
//!    (`σ = f₁ · (1 + e / f₁)²`, `f₁ = max(noise_floor, δ_min / 16)`, reweighted a few times), so
//!    an exchange whose request crossed an empty queue counts on that side even if its answer
//!    queued. Where the queues are as deep as the floors (Wi-Fi), few exchanges have *both*
//!    directions near their floor, but many have one: the envelopes are far tighter than the
//!    best round trips (the lab's Wi-Fi path: skew between two receivers p99 533 → 278 µs in
//!    simulation, see `docs/timing.md`).
//!
//! σ grows with the square of the excess because queueing is not only noise but bias (queues
//! are rarely symmetric), which averaging does not remove. A weak prior on the rate
//! (`1 ± max_rate_ppm`), weighed against the data at their measured scatter, keeps the fit
//! defined with one sample or a burst only milliseconds wide. All absolute times stay whole
//! nanoseconds ([`LocalNs`], [`TimelineNs`]); the fit works in `f64` on differences from a reference point (the newest
//! sample), so offsets of days keep nanosecond precision.
//!
//! An exchange that disagrees with the prediction by more than its own round trip, the model's
//! possible bias and [`ClockConfig::step_sigmas`] standard errors allow is a *suspect*: it is
//! rejected, and a second suspect agreeing with it confirms a step (master restarted, a clock
//! jumped): the window is emptied and re-seeded from the two, so the estimate jumps at once
//! instead of slewing. A lone outlier is forgotten as soon as a consistent exchange arrives.
//!
//! Limit that no filter can lift: a constant asymmetry between the two directions biases the
//! offset by half the asymmetry (at most half the smallest round trip). See `docs/timing.md`.

use crate::time::{LocalNs, TimelineNs};

/// Most samples a [`ClockModel`] can hold; [`ClockConfig::window`] is clamped to this.
pub const WINDOW_CAPACITY: usize = 512;

/// The σ floor is at least the smallest round trip divided by this.
const FLOOR_RTT_DIVISOR: i64 = 8;

/// The σ floor of a one-way bound is at least the smallest round trip divided by this.
const ONE_WAY_DIVISOR: i64 = 16;

/// Reweighting passes of the envelope fit.
const ENVELOPE_ITERATIONS: usize = 4;

/// The four timestamps of one time query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exchange {
    /// Local send time of the request.
    pub t1: LocalNs,
    /// Master's receive time of the request (timeline).
    pub t2: TimelineNs,
    /// Master's send time of the response (timeline).
    pub t3: TimelineNs,
    /// Local receive time of the response.
    pub t4: LocalNs,
}

impl Exchange {
    /// Offset sample `((t2 - t1) + (t3 - t4)) / 2` (timeline minus local), saturated to `i64`.
    pub fn offset_ns(&self) -> i64 {
        let (t1, t2, t3, t4) = (self.t1.ns(), self.t2.ns(), self.t3.ns(), self.t4.ns());
        let o = ((t2 as i128 - t1 as i128) + (t3 as i128 - t4 as i128)) / 2;
        o.clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }

    /// Round trip `(t4 - t1) - (t3 - t2)` spent on the network, saturated to `i64`.
    pub fn round_trip_ns(&self) -> i64 {
        let (t1, t2, t3, t4) = (self.t1.ns(), self.t2.ns(), self.t3.ns(), self.t4.ns());
        let d = (t4 as i128 - t1 as i128) - (t3 as i128 - t2 as i128);
        d.clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }

    /// Local midpoint `(t1 + t4) / 2`, the instant the offset sample refers to.
    pub fn local_mid(&self) -> LocalNs {
        LocalNs::from_ns(((self.t1.ns() as i128 + self.t4.ns() as i128) / 2) as i64)
    }
}

/// The model's current answer: `timeline = ref_timeline + rate * (local - ref_local)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClockEstimate {
    /// Local reference instant (the newest sample's midpoint).
    pub ref_local: LocalNs,
    /// The timeline instant estimated for `ref_local`.
    pub ref_timeline: TimelineNs,
    /// Timeline nanoseconds per local nanosecond (about 1.0).
    pub rate: f64,
    /// One standard error of the offset at `ref_local`, in ns (statistical only: it does not
    /// include the path-asymmetry bias, see [`ClockModel::min_rtt_ns`]). It grows away from
    /// `ref_local` by the rate's own error, which this figure does not show.
    pub uncertainty_ns: i64,
}

fn sat_i64(v: i128) -> i64 {
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

impl ClockEstimate {
    /// Maps a local instant to the timeline.
    pub fn to_timeline(&self, l: LocalNs) -> TimelineNs {
        let d = l.ns() as i128 - self.ref_local.ns() as i128;
        // Through i64: the cast saturates (NaN gives 0), so the sum below cannot overflow.
        let drift = (d as f64 * (self.rate - 1.0)).round() as i64 as i128;
        TimelineNs::from_ns(sat_i64(self.ref_timeline.ns() as i128 + d + drift))
    }

    /// Maps a timeline instant to the local clock (inverse of [`Self::to_timeline`]).
    pub fn to_local(&self, t: TimelineNs) -> LocalNs {
        let d = t.ns() as i128 - self.ref_timeline.ns() as i128;
        let drift = (d as f64 * (self.rate - 1.0) / self.rate).round() as i64 as i128;
        LocalNs::from_ns(sat_i64(self.ref_local.ns() as i128 + d - drift))
    }

    /// Rate error of the local clock against the timeline, in parts per million.
    pub fn rate_ppm(&self) -> f64 {
        (self.rate - 1.0) * 1e6
    }

    /// Offset `timeline - local` at the reference instant.
    pub fn offset_ns(&self) -> i64 {
        sat_i64(self.ref_timeline.ns() as i128 - self.ref_local.ns() as i128)
    }
}

/// What one exchange did to the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockEvent {
    /// The exchange was taken into the fit.
    Updated,
    /// The exchange was taken into the fit and the model became locked (once per lock).
    Locked,
    /// A step of the master's clock was confirmed: the model was emptied and re-seeded from
    /// the exchanges that saw the step. `step_ns` is the jump of the offset (new minus old).
    /// Whoever plays by this clock must resynchronise, not slew.
    StepDetected {
        /// The jump of `timeline - local`, in ns.
        step_ns: i64,
    },
    /// The exchange was not used: invalid, an outlier round trip, or a step suspect waiting
    /// for confirmation.
    Rejected,
}

/// Tuning of a [`ClockModel`]. `Default` suits a LAN or Wi-Fi polled about once a second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClockConfig {
    /// Samples kept for the fit (clamped to 2..=[`WINDOW_CAPACITY`]). Default 512 (the last
    /// two minutes at four queries a second, as on a jittery path).
    pub window: usize,
    /// Samples older than this (local time before the newest one) leave the window (the two
    /// newest always stay), so the fit follows a slowly wandering oscillator however often the
    /// path is queried. Default 128 s.
    pub max_age_ns: i64,
    /// Exchanges needed before the model may lock. Default 4.
    pub lock_min_exchanges: usize,
    /// The model locks once its predicted standard error [`Self::lock_horizon_ns`] after the
    /// newest exchange is at most this (so a rate still poorly known prevents the lock).
    /// Default 500 µs.
    pub lock_uncertainty_ns: i64,
    /// How far ahead the lock criterion looks (about one poll interval). Default 1 s.
    pub lock_horizon_ns: i64,
    /// Error assumed for an exchange with the smallest round trip (σ floor; raised to a
    /// eighth of that round trip when larger). Default 5 µs.
    pub noise_floor_ns: i64,
    /// Exchanges with a longer round trip (or a negative one) are rejected. Default 500 ms.
    pub max_rtt_ns: i64,
    /// Smallest disagreement treated as a step, on top of round trips and standard errors.
    /// Default 500 µs.
    pub step_min_ns: i64,
    /// Standard errors of the prediction allowed before an exchange is a step suspect.
    /// Default 5.
    pub step_sigmas: f64,
    /// Suspects in a row that force a reset even if they do not agree with each other.
    /// Default 6.
    pub max_suspects: u32,
    /// Standard deviation of the prior on the rate, in ppm, around 1.0 (or around the rate
    /// measured before a step). Default 500 ppm.
    pub max_rate_ppm: f64,
    /// Standard deviation of the rate prior after a step, around the rate measured before it
    /// (a step moves the clock, not its oscillator); dropped as soon as the new exchanges
    /// contradict it. Default 20 ppm.
    pub step_rate_prior_ppm: f64,
}

impl Default for ClockConfig {
    fn default() -> Self {
        ClockConfig {
            window: 512,
            max_age_ns: 128_000_000_000,
            lock_min_exchanges: 4,
            lock_uncertainty_ns: 500_000,
            lock_horizon_ns: 1_000_000_000,
            noise_floor_ns: 5_000,
            max_rtt_ns: 500_000_000,
            step_min_ns: 500_000,
            step_sigmas: 5.0,
            max_suspects: 6,
            max_rate_ppm: 500.0,
            step_rate_prior_ppm: 20.0,
        }
    }
}

/// One offset sample: midpoint, offset, round trip.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Sample {
    mid: LocalNs,
    theta: i64,
    rtt: i64,
}

/// What [`ClockModel::envelope_fit`] found (x relative to the newest sample, y to its offset).
#[derive(Clone, Copy, Debug, Default)]
struct Envelope {
    slope: f64,
    offset_at_ref: f64,
    mean_x: f64,
    sum_w: f64,
    sxx: f64,
    scale: f64,
    var_at_ref: f64,
}

/// The fitted line and what is needed to predict with error bars.
#[derive(Clone, Copy, Debug)]
struct Fit {
    est: ClockEstimate,
    /// Weighted mean of x (ns relative to `est.ref_local`).
    mean_x: f64,
    /// Sum of weights (1/ns²).
    sum_w: f64,
    /// Centred weighted sum of squares of x plus the rate prior's weight.
    sxx: f64,
    /// Residual variance factor (>= 1).
    scale: f64,
    /// Smallest round trip in the window.
    min_rtt: i64,
}

impl Fit {
    /// Predicted offset at local `mid` and its standard error.
    fn predict(&self, mid: LocalNs) -> (i64, f64) {
        // The offset timeline minus local: the one place two kinds meet, as raw counts.
        let theta = self.est.to_timeline(mid).ns().saturating_sub(mid.ns());
        let x = (mid.ns() as i128 - self.est.ref_local.ns() as i128) as f64;
        let dx = x - self.mean_x;
        let var = self.scale * (1.0 / self.sum_w + dx * dx / self.sxx);
        (theta, var.sqrt())
    }
}

/// The receiver's model of the master's clock (see the module documentation).
#[derive(Clone, Debug)]
pub struct ClockModel {
    cfg: ClockConfig,
    ring: [Sample; WINDOW_CAPACITY],
    /// Index of the oldest sample.
    head: usize,
    len: usize,
    fit: Option<Fit>,
    locked: bool,
    suspect: Option<Sample>,
    suspects_in_row: u32,
    /// Centre of the rate prior.
    rate_prior: f64,
    /// Standard deviation of the rate prior (wide, or narrow just after a step).
    rate_prior_sd: f64,
}

impl ClockModel {
    /// An empty model.
    pub fn new(cfg: ClockConfig) -> Self {
        let mut cfg = cfg;
        cfg.window = cfg.window.clamp(2, WINDOW_CAPACITY);
        cfg.noise_floor_ns = cfg.noise_floor_ns.max(1);
        cfg.max_rate_ppm = if cfg.max_rate_ppm > 0.0 {
            cfg.max_rate_ppm
        } else {
            500.0
        };
        ClockModel {
            cfg,
            ring: [Sample::default(); WINDOW_CAPACITY],
            head: 0,
            len: 0,
            fit: None,
            locked: false,
            suspect: None,
            suspects_in_row: 0,
            rate_prior: 1.0,
            rate_prior_sd: cfg.max_rate_ppm * 1e-6,
        }
    }

    /// The configuration in use (after clamping).
    pub fn config(&self) -> &ClockConfig {
        &self.cfg
    }

    /// Feeds one exchange; returns what it did.
    pub fn add_exchange(&mut self, e: Exchange) -> ClockEvent {
        let rtt = e.round_trip_ns();
        if e.t4 < e.t1 || e.t3 < e.t2 || rtt < 0 || rtt > self.cfg.max_rtt_ns {
            return ClockEvent::Rejected;
        }
        let s = Sample {
            mid: e.local_mid(),
            theta: e.offset_ns(),
            rtt,
        };
        if let Some(fit) = self.fit {
            let (pred, sigma) = fit.predict(s.mid);
            let residual = s.theta.saturating_sub(pred);
            let allowed = (s.rtt / 2)
                .saturating_add(fit.min_rtt / 2)
                .saturating_add(self.cfg.step_min_ns) as f64
                + self.cfg.step_sigmas * sigma;
            if (residual as f64).abs() > allowed {
                return self.on_suspect(s, residual, &fit);
            }
        }
        self.suspect = None;
        self.suspects_in_row = 0;
        self.push(s);
        self.refit();
        self.lock_event()
    }

    /// A step suspect: keep it, or confirm a step with the one kept before.
    fn on_suspect(&mut self, s: Sample, residual: i64, fit: &Fit) -> ClockEvent {
        self.suspects_in_row += 1;
        if let Some(prev) = self.suspect {
            let (prev_pred, _) = fit.predict(prev.mid);
            let prev_residual = prev.theta.saturating_sub(prev_pred);
            let agree = (s.rtt / 2) as i128 + (prev.rtt / 2) as i128 + self.cfg.step_min_ns as i128;
            if (residual as i128 - prev_residual as i128).abs() <= agree {
                // Use the sharper of the two to say how far the clock jumped.
                let step_ns = if s.rtt <= prev.rtt {
                    residual
                } else {
                    prev_residual
                };
                self.reseed(&[prev, s], fit.est.rate);
                return ClockEvent::StepDetected { step_ns };
            }
        }
        if self.suspects_in_row >= self.cfg.max_suspects {
            self.reseed(&[s], fit.est.rate);
            return ClockEvent::StepDetected { step_ns: residual };
        }
        self.suspect = Some(s);
        ClockEvent::Rejected
    }

    /// Empties the model and starts again from `samples`, keeping the rate as a prior: a step
    /// moves a clock, not its oscillator.
    fn reseed(&mut self, samples: &[Sample], rate: f64) {
        self.reset();
        self.rate_prior = rate;
        self.rate_prior_sd = self.cfg.step_rate_prior_ppm.max(1e-3) * 1e-6;
        for s in samples {
            self.push(*s);
        }
        self.refit();
    }

    fn lock_event(&mut self) -> ClockEvent {
        if self.locked {
            return ClockEvent::Updated;
        }
        match self.fit {
            Some(f)
                if self.len >= self.cfg.lock_min_exchanges
                    && f.predict(f.est.ref_local.saturating_add(self.cfg.lock_horizon_ns))
                        .1
                        <= self.cfg.lock_uncertainty_ns as f64 =>
            {
                self.locked = true;
                ClockEvent::Locked
            }
            _ => ClockEvent::Updated,
        }
    }

    fn push(&mut self, s: Sample) {
        if self.len == self.cfg.window {
            self.head = (self.head + 1) % WINDOW_CAPACITY;
            self.len -= 1;
        }
        let at = (self.head + self.len) % WINDOW_CAPACITY;
        self.ring[at] = s;
        self.len += 1;
        while self.len > 2
            && s.mid.ns().saturating_sub(self.ring[self.head].mid.ns()) > self.cfg.max_age_ns
        {
            self.head = (self.head + 1) % WINDOW_CAPACITY;
            self.len -= 1;
        }
    }

    fn samples(&self) -> impl Iterator<Item = &Sample> + '_ {
        (0..self.len).map(move |i| &self.ring[(self.head + i) % WINDOW_CAPACITY])
    }

    /// The error assumed for the best exchange: the configured floor, or an eighth of the
    /// smallest round trip when larger (even the best exchange carries some queueing, and
    /// paths with long round trips queue more).
    fn noise_floor(&self, min_rtt: i64) -> i64 {
        self.cfg.noise_floor_ns.max(min_rtt / FLOOR_RTT_DIVISOR)
    }

    /// Weighted least squares of offset against local time over the window: first on the
    /// offset samples weighted by round-trip excess (which gives the rate a start and says
    /// whether a narrow rate prior still holds), then on the two one-way envelopes.
    fn refit(&mut self) {
        let newest = match self.len {
            0 => {
                self.fit = None;
                return;
            }
            n => self.ring[(self.head + n - 1) % WINDOW_CAPACITY],
        };
        let min_rtt = self.samples().map(|s| s.rtt).min().unwrap_or(0);
        let floor = self.noise_floor(min_rtt) as f64;
        let weight = |s: &Sample| {
            let r = 1.0 + (s.rtt - min_rtt) as f64 / (2.0 * floor);
            let sigma = floor * r * r;
            1.0 / (sigma * sigma)
        };
        // x: ns since the newest midpoint; y: offset minus the newest offset.
        let xy = |s: &Sample| {
            (
                (s.mid.ns() as i128 - newest.mid.ns() as i128) as f64,
                (s.theta as i128 - newest.theta as i128) as f64,
            )
        };
        let (mut sw, mut swx, mut swy) = (0.0, 0.0, 0.0);
        for s in self.samples() {
            let (w, (x, y)) = (weight(s), xy(s));
            sw += w;
            swx += w * x;
            swy += w * y;
        }
        let (mx, my) = (swx / sw, swy / sw);
        let (mut sxx, mut sxy) = (0.0, 0.0);
        for s in self.samples() {
            let (w, (x, y)) = (weight(s), xy(s));
            sxx += w * (x - mx) * (x - mx);
            sxy += w * (x - mx) * (y - my);
        }
        let n = self.len;
        let chi2 = |slope: f64| -> f64 {
            self.samples()
                .map(|s| {
                    let (x, y) = xy(s);
                    let r = y - (my + slope * (x - mx));
                    weight(s) * r * r
                })
                .sum()
        };
        let prior_slope = self.rate_prior - 1.0;
        // A narrow prior (the rate measured before a step) is dropped as soon as the data
        // alone contradict it: the master may have come back on other hardware.
        let wide_sd = self.cfg.max_rate_ppm * 1e-6;
        let mut prior_sd = self.rate_prior_sd;
        if prior_sd < wide_sd && n > 2 && sxx > 0.0 {
            let data_slope = sxy / sxx;
            let data_var = (chi2(data_slope) / (n - 2) as f64).max(1.0) / sxx;
            let combined = (data_var + prior_sd * prior_sd).sqrt();
            if (data_slope - prior_slope).abs() > 4.0 * combined {
                prior_sd = wide_sd;
            }
        }
        // The rate prior, weighed against the data at the data's measured scatter: weights
        // assume σ per sample, the residuals say how far off that is (`scale`).
        let lambda = 1.0 / (prior_sd * prior_sd);
        let mut slope = (sxy + lambda * prior_slope) / (sxx + lambda);
        if n > 2 {
            for _ in 0..3 {
                let scale = (chi2(slope) / (n - 2) as f64).max(1.0);
                slope = (sxy + lambda * scale * prior_slope) / (sxx + lambda * scale);
            }
        }
        self.rate_prior_sd = prior_sd;
        let env = self.envelope_fit(newest, min_rtt, slope, lambda, prior_slope);
        let ref_timeline =
            newest.mid.ns() as i128 + newest.theta as i128 + env.offset_at_ref.round() as i128;
        self.fit = Some(Fit {
            est: ClockEstimate {
                ref_local: newest.mid,
                ref_timeline: TimelineNs::from_ns(sat_i64(ref_timeline)),
                rate: 1.0 + env.slope,
                uncertainty_ns: env.var_at_ref.sqrt().ceil() as i64,
            },
            mean_x: env.mean_x,
            sum_w: env.sum_w,
            sxx: env.sxx,
            scale: env.scale,
            min_rtt,
        });
    }

    /// The fit on the one-way envelopes, from a first `slope`. Each exchange bounds the offset
    /// from both sides: `θ + δ/2` is the offset plus the request's one-way delay, `θ - δ/2`
    /// the offset minus the answer's. Through the window, the lower envelope of the first and
    /// the upper envelope of the second are lines of the same slope (the rate), `D_up` above
    /// and `D_down` below the offset, the floors of the two one-way delays; half-way between
    /// them lies the offset (plus half the floors' difference, the asymmetry no filter sees).
    /// Each bound is weighted by its own excess over its envelope, so the exchange whose
    /// request crossed an empty queue counts for that side even if its answer queued, and the
    /// other way round: each envelope is fixed by the best one-way trips, far tighter than the
    /// best round trips on a path whose queues are as deep as its floors.
    fn envelope_fit(
        &self,
        newest: Sample,
        min_rtt: i64,
        slope: f64,
        lambda: f64,
        prior_slope: f64,
    ) -> Envelope {
        let floor = self.cfg.noise_floor_ns.max(min_rtt / ONE_WAY_DIVISOR) as f64;
        let n = self.len;
        // (x, upper bound θ + δ/2, lower bound θ - δ/2), relative to the newest sample.
        let pts = |s: &Sample| {
            let x = (s.mid.ns() as i128 - newest.mid.ns() as i128) as f64;
            let y = (s.theta as i128 - newest.theta as i128) as f64;
            let h = s.rtt as f64 / 2.0;
            (x, y + h, y - h)
        };
        let weight = |excess: f64| {
            let r = 1.0 + excess.max(0.0) / floor;
            let sigma = floor * r * r;
            1.0 / (sigma * sigma)
        };
        let mut slope = slope;
        let mut scale = 1.0;
        let mut env = Envelope::default();
        for _ in 0..ENVELOPE_ITERATIONS {
            // Envelopes of the bounds with the slope so far: the lowest upper bound, the
            // highest lower bound.
            let tilt = slope;
            let (mut lo_up, mut hi_down) = (f64::INFINITY, f64::NEG_INFINITY);
            for s in self.samples() {
                let (x, up, down) = pts(s);
                lo_up = lo_up.min(up - tilt * x);
                hi_down = hi_down.max(down - tilt * x);
            }
            let w_of = |s: &Sample| {
                let (x, up, down) = pts(s);
                (
                    weight(up - tilt * x - lo_up),
                    weight(hi_down - (down - tilt * x)),
                )
            };
            // Weighted means per side, then a common slope on the centred points.
            let mut m = [[0.0f64; 3]; 2]; // [side][sum w, sum wx, sum wy]
            for s in self.samples() {
                let (x, up, down) = pts(s);
                let (wu, wd) = w_of(s);
                for (k, (w, y)) in [(wu, up), (wd, down)].into_iter().enumerate() {
                    m[k][0] += w;
                    m[k][1] += w * x;
                    m[k][2] += w * y;
                }
            }
            let mean = |k: usize| (m[k][1] / m[k][0], m[k][2] / m[k][0]);
            let ((xu, yu), (xd, yd)) = (mean(0), mean(1));
            let (mut sxx, mut sxy) = (0.0, 0.0);
            for s in self.samples() {
                let (x, up, down) = pts(s);
                let (wu, wd) = w_of(s);
                sxx += wu * (x - xu) * (x - xu) + wd * (x - xd) * (x - xd);
                sxy += wu * (x - xu) * (up - yu) + wd * (x - xd) * (down - yd);
            }
            slope = (sxy + lambda * scale * prior_slope) / (sxx + lambda * scale);
            let mut chi2 = 0.0;
            for s in self.samples() {
                let (x, up, down) = pts(s);
                let (wu, wd) = w_of(s);
                let ru = up - (yu + slope * (x - xu));
                let rd = down - (yd + slope * (x - xd));
                chi2 += wu * ru * ru + wd * rd * rd;
            }
            // Two bounds per exchange, two intercepts and a slope.
            if n >= 2 {
                scale = (chi2 / (2 * n - 3) as f64).max(1.0);
            }
            let mean_x = (xu + xd) / 2.0;
            let offset_mean = (yu - slope * xu + yd - slope * xd) / 2.0 + slope * mean_x;
            // The offset is the mean of two independent lines: a quarter of their variances.
            let sum_w = 4.0 / (1.0 / m[0][0] + 1.0 / m[1][0]);
            let sxx = sxx + lambda * scale;
            env = Envelope {
                slope,
                offset_at_ref: offset_mean - slope * mean_x,
                mean_x,
                sum_w,
                sxx,
                scale,
                var_at_ref: scale * (1.0 / sum_w + mean_x * mean_x / sxx),
            };
        }
        env
    }

    /// The current estimate (`None` until the first accepted exchange).
    pub fn estimate(&self) -> Option<ClockEstimate> {
        self.fit.map(|f| f.est)
    }

    /// True once enough exchanges agree within [`ClockConfig::lock_uncertainty_ns`]; false
    /// again only after a reset or a step.
    pub fn is_locked(&self) -> bool {
        self.locked
    }

    /// Forgets every exchange (after a step, or when the stream's clock changed).
    pub fn reset(&mut self) {
        self.head = 0;
        self.len = 0;
        self.fit = None;
        self.locked = false;
        self.suspect = None;
        self.suspects_in_row = 0;
        self.rate_prior = 1.0;
        self.rate_prior_sd = self.cfg.max_rate_ppm * 1e-6;
    }

    /// Exchanges in the window.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the window holds no exchange.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Median excess of the window's round trips over the smallest one: how much the path
    /// queues (a few tens of µs on a wired LAN, milliseconds on Wi-Fi). `None` when empty.
    pub fn rtt_spread_ns(&self) -> Option<i64> {
        let min = self.fit?.min_rtt;
        let mut excess = [0i64; WINDOW_CAPACITY];
        for (e, s) in excess.iter_mut().zip(self.samples()) {
            *e = s.rtt.saturating_sub(min);
        }
        let excess = &mut excess[..self.len];
        let mid = self.len / 2;
        excess.select_nth_unstable(mid);
        Some(excess[mid])
    }

    /// Smallest round trip in the window: half of it bounds the bias a path asymmetry can put
    /// on the offset, which no filter can see.
    pub fn min_rtt_ns(&self) -> Option<i64> {
        self.fit.map(|f| f.min_rtt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L0: i64 = 3 * 3600 * 1_000_000_000;
    const M0: i64 = 17 * 86_400 * 1_000_000_000;

    fn l(ns: i64) -> LocalNs {
        LocalNs::from_ns(ns)
    }

    fn tl(ns: i64) -> TimelineNs {
        TimelineNs::from_ns(ns)
    }

    /// A symmetric exchange at local `t1` against a master at `M0 + rate * (l - L0)`.
    fn exchange(t1: i64, rtt: i64, rate: f64, extra: i64) -> Exchange {
        let master = |l: i64| M0 + ((l - L0) as f64 * rate).round() as i64 + extra;
        let t2 = master(t1 + rtt / 2);
        Exchange {
            t1: l(t1),
            t2: tl(t2),
            t3: tl(t2 + 10_000),
            t4: l(t1 + rtt + ((10_000.0 / rate).round() as i64)),
        }
    }

    #[test]
    fn exchange_arithmetic() {
        let e = Exchange {
            t1: l(100),
            t2: tl(1_000_150),
            t3: tl(1_000_160),
            t4: l(310),
        };
        assert_eq!(e.round_trip_ns(), 200);
        assert_eq!(e.offset_ns(), 999_950);
        assert_eq!(e.local_mid(), l(205));
        let wild = Exchange {
            t1: LocalNs::MIN,
            t2: TimelineNs::MAX,
            t3: TimelineNs::MIN,
            t4: LocalNs::MAX,
        };
        // Saturates instead of overflowing.
        let _ = (wild.offset_ns(), wild.round_trip_ns(), wild.local_mid());
    }

    #[test]
    fn estimate_maps_both_ways_with_hours_of_offset() {
        let est = ClockEstimate {
            ref_local: l(L0),
            ref_timeline: tl(M0),
            rate: 1.0 + 150e-6,
            uncertainty_ns: 1,
        };
        let x = l(L0 + 3_600_000_000_000);
        let t = est.to_timeline(x);
        assert_eq!(t, tl(M0 + 3_600_000_000_000 + 540_000_000));
        assert_eq!(est.to_local(t), x);
        assert_eq!(est.offset_ns(), M0 - L0);
        assert!((est.rate_ppm() - 150.0).abs() < 1e-6);
    }

    #[test]
    fn fits_offset_and_rate_exactly_without_noise() {
        let rate = 1.0 - 180e-6;
        let mut m = ClockModel::new(ClockConfig::default());
        let mut locked_at = None;
        for i in 0..20 {
            let ev = m.add_exchange(exchange(L0 + i * 1_000_000_000, 300_000, rate, 0));
            if ev == ClockEvent::Locked {
                locked_at = Some(i);
            }
        }
        assert_eq!(locked_at, Some(3));
        let est = m.estimate().unwrap();
        // Exact but for the rate prior's pull (1e-9 here).
        assert!((est.rate - rate).abs() < 1e-8, "rate {}", est.rate);
        let x = L0 + 25_000_000_000;
        let truth = tl(M0 + ((x - L0) as f64 * rate).round() as i64);
        assert!((est.to_timeline(l(x)) - truth).abs() < 100);
        assert!(m.is_locked());
    }

    #[test]
    fn rejects_invalid_and_huge_rtt() {
        let mut m = ClockModel::new(ClockConfig::default());
        let mut e = exchange(L0, 300_000, 1.0, 0);
        e.t4 = e.t1 - 1;
        assert_eq!(m.add_exchange(e), ClockEvent::Rejected);
        let e = exchange(L0, 2_000_000_000, 1.0, 0);
        assert_eq!(m.add_exchange(e), ClockEvent::Rejected);
        assert!(m.is_empty());
        assert!(m.estimate().is_none());
    }

    #[test]
    fn single_outlier_does_not_reset_and_step_is_confirmed_by_two() {
        let mut m = ClockModel::new(ClockConfig::default());
        for i in 0..10 {
            m.add_exchange(exchange(L0 + i * 1_000_000_000, 300_000, 1.0, 0));
        }
        let before = m.estimate().unwrap();
        let outlier = exchange(L0 + 10_000_000_000, 300_000, 1.0, 50_000_000);
        assert_eq!(m.add_exchange(outlier), ClockEvent::Rejected);
        assert_eq!(m.estimate(), Some(before));
        let ok = exchange(L0 + 11_000_000_000, 300_000, 1.0, 0);
        assert_eq!(m.add_exchange(ok), ClockEvent::Updated);
        assert_eq!(m.len(), 11);
        // Now a real step: two agreeing suspects.
        let a = exchange(L0 + 12_000_000_000, 300_000, 1.0, -300_000_000);
        assert_eq!(m.add_exchange(a), ClockEvent::Rejected);
        let b = exchange(L0 + 12_050_000_000, 300_000, 1.0, -300_000_000);
        match m.add_exchange(b) {
            ClockEvent::StepDetected { step_ns } => assert!((step_ns + 300_000_000).abs() < 1000),
            other => panic!("expected a step, got {other:?}"),
        }
        assert_eq!(m.len(), 2);
        assert!(!m.is_locked());
        let est = m.estimate().unwrap();
        assert!((est.offset_ns() - (M0 - L0 - 300_000_000)).abs() < 1000);
    }

    #[test]
    fn rate_prior_after_a_step_yields_to_a_different_oscillator() {
        let mut m = ClockModel::new(ClockConfig::default());
        for i in 0..30 {
            m.add_exchange(exchange(L0 + i * 1_000_000_000, 300_000, 1.0, 0));
        }
        // The master comes back 1 s later on hardware running 300 ppm fast.
        let rate = 1.0 + 300e-6;
        let back = |i: i64| exchange(L0 + (30 + i) * 1_000_000_000, 300_000, rate, 1_000_000_000);
        let mut steps = 0;
        for i in 0..30 {
            if let ClockEvent::StepDetected { .. } = m.add_exchange(back(i)) {
                steps += 1;
            }
        }
        assert_eq!(steps, 1);
        let est = m.estimate().unwrap();
        assert!((est.rate - rate).abs() < 1e-6, "rate {}", est.rate_ppm());
        assert!(m.is_locked());
    }

    #[test]
    fn window_is_bounded() {
        let cfg = ClockConfig {
            window: 8,
            ..ClockConfig::default()
        };
        let mut m = ClockModel::new(cfg);
        for i in 0..100 {
            m.add_exchange(exchange(L0 + i * 1_000_000_000, 300_000, 1.0, 0));
        }
        assert_eq!(m.len(), 8);
        m.reset();
        assert!(m.is_empty() && !m.is_locked() && m.estimate().is_none());
    }

    /// An exchange at local `t1` with the given one-way delays against a master at
    /// `M0 + (l - L0)` (same rate).
    fn one_way(t1: i64, up: i64, down: i64) -> Exchange {
        let t2 = M0 + (t1 + up - L0);
        Exchange {
            t1: l(t1),
            t2: tl(t2),
            t3: tl(t2 + 10_000),
            t4: l(t1 + up + 10_000 + down),
        }
    }

    #[test]
    fn each_direction_counts_at_its_own_floor() {
        // No exchange has both directions at their floor (500 µs each way): every other
        // request queues 3 ms, the answers in between queue 2 ms. Offset samples are off by
        // +1.5 ms and -1 ms; the round trips say only which is less bad. Each direction alone
        // reaches its floor every other exchange: the envelopes find the offset.
        let mut m = ClockModel::new(ClockConfig::default());
        for i in 0..60 {
            let (up, down) = if i % 2 == 0 {
                (3_500_000, 500_000)
            } else {
                (500_000, 2_500_000)
            };
            m.add_exchange(one_way(L0 + i * 250_000_000, up, down));
        }
        let est = m.estimate().unwrap();
        let x = L0 + 15_000_000_000;
        let err = est.to_timeline(l(x)) - tl(M0 + (x - L0));
        assert!(err.abs() < 5_000, "error {err} ns");
        assert!(est.rate_ppm().abs() < 0.5, "rate {}", est.rate_ppm());
        assert_eq!(m.min_rtt_ns(), Some(3_000_000));
        assert_eq!(m.rtt_spread_ns(), Some(1_000_000));
    }

    #[test]
    fn window_is_bounded_by_age() {
        let mut m = ClockModel::new(ClockConfig::default());
        // One a second for 300 s: the last 128 s stay (129 samples, both ends included).
        for i in 0..300 {
            m.add_exchange(exchange(L0 + i * 1_000_000_000, 300_000, 1.0, 0));
        }
        assert_eq!(m.len(), 129);
        // Ten a second: the ring's capacity bounds it first.
        for i in 0..2000 {
            m.add_exchange(exchange(
                L0 + 300_000_000_000 + i * 100_000_000,
                300_000,
                1.0,
                0,
            ));
        }
        assert_eq!(m.len(), WINDOW_CAPACITY);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_exchanges_never_panic(
            ts in proptest::collection::vec(
                (
                    proptest::prelude::any::<i64>(),
                    proptest::prelude::any::<i64>(),
                    0i64..600_000_000,
                    0i64..1_000_000,
                ),
                0..20,
            ),
        ) {
            let mut m = ClockModel::new(ClockConfig::default());
            for (i, (t1, off, rtt, hold)) in ts.into_iter().enumerate() {
                let t2 = t1.saturating_add(off);
                let e = Exchange {
                    t1: l(t1),
                    t2: tl(t2),
                    t3: tl(t2.saturating_add(hold)),
                    t4: l(t1.saturating_add(rtt + hold)),
                };
                m.add_exchange(e);
                // Interleave sane exchanges so arbitrary ones meet a fitted model too.
                m.add_exchange(exchange(L0 + i as i64 * 1_000_000_000, 300_000, 1.0, 0));
                if let Some(est) = m.estimate() {
                    let _ = (est.to_timeline(l(t1)), est.to_local(tl(t2)), est.offset_ns());
                }
            }
        }
    }
}
