//! Black-box skew: how late one recording is against another, by cross-correlation.
//!
//! GCC-PHAT (generalized cross-correlation with phase transform): over a Hann window, the cross
//! spectrum `G(k) = B(k) conj(A(k))` is whitened, `G / |G|^0.7` (nearly every frequency in the
//! band votes equally, so the peak is sharp whatever the signal's colour, while bins holding
//! only noise count a little less than pure PHAT's `G / |G|`), limited to a band, and
//! transformed back; the peak's lag is the delay. The integer peak is then refined to
//! a fraction of a sample by maximizing the band-limited correlation itself,
//! `r(tau) = sum_k W(k) e^(j 2 pi k tau / M)`, evaluated exactly at fractional `tau` (golden
//! section search between the neighbours of the integer peak): this is sinc interpolation of
//! the correlation, without the bias of a parabola fitted to a sinc-shaped peak.
//!
//! Sliding windows give the delay over time; windows whose whitened peak is weak (silence, a
//! mismatch) are left out and counted.

use realfft::num_complex::Complex;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};
use serde::Serialize;
use std::sync::Arc;

/// Partial whitening: the cross spectrum is divided by its magnitude to this power. 1 is pure
/// PHAT (sharpest peak, but bins where one side is only noise vote as loudly as the rest);
/// 0.7 keeps the peak sharp and lets strong bins count more, which is what survives noise.
const PHAT_BETA: f64 = 0.7;

/// What went wrong in a correlation.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum XcorrError {
    /// The window is not a power of two of at least 256, or the lag does not fit in it.
    #[error("window {window} must be a power of two >= 256 and > 2 x max lag {max_lag}")]
    BadWindow {
        /// Window length, samples.
        window: usize,
        /// Largest lag searched, samples.
        max_lag: usize,
    },
    /// The signals are shorter than one window.
    #[error("signals too short: {len} samples, one window is {window}")]
    TooShort {
        /// Samples available in both.
        len: usize,
        /// Window length.
        window: usize,
    },
}

/// Parameters of the sliding correlation.
#[derive(Clone, Copy, Debug)]
pub struct XcorrConfig {
    /// Sample rate, Hz.
    pub rate: u32,
    /// Window length, samples (a power of two).
    pub window: usize,
    /// Step between windows, samples.
    pub hop: usize,
    /// Largest |delay| searched, samples.
    pub max_lag: usize,
    /// Band used, Hz (low, high).
    pub band_hz: (f64, f64),
    /// Windows whose whitened peak (0..1, the fraction of the band agreeing on one delay) is
    /// below this are left out.
    pub min_peak: f64,
}

impl XcorrConfig {
    /// 8192-sample windows every 0.25 s, lags up to +/-50 ms, band 100 Hz - 0.45 x rate.
    pub fn new(rate: u32) -> Self {
        XcorrConfig {
            rate,
            window: 8192,
            hop: rate as usize / 4,
            max_lag: rate as usize / 20,
            band_hz: (100.0, 0.45 * f64::from(rate)),
            min_peak: 0.1,
        }
    }
}

/// The delay found in one window.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Delay {
    /// Delay of B against A, samples (positive: B late).
    pub samples: f64,
    /// Height of the whitened correlation peak, 0..1.
    pub peak: f64,
}

/// A reusable GCC-PHAT correlator for one window length.
pub struct Correlator {
    n: usize,
    m: usize,
    fwd: Arc<dyn RealToComplex<f64>>,
    inv: Arc<dyn ComplexToReal<f64>>,
    time: Vec<f64>,
    spec_a: Vec<Complex<f64>>,
    spec_b: Vec<Complex<f64>>,
    white: Vec<Complex<f64>>,
    scratch: Vec<Complex<f64>>,
    corr: Vec<f64>,
}

impl std::fmt::Debug for Correlator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Correlator")
            .field("window", &self.n)
            .finish()
    }
}

impl Correlator {
    /// A correlator of `window` samples (zero-padded to twice that, so lags do not wrap).
    pub fn new(window: usize) -> Self {
        let m = 2 * window;
        let mut planner = RealFftPlanner::<f64>::new();
        let fwd = planner.plan_fft_forward(m);
        let inv = planner.plan_fft_inverse(m);
        let scratch_len = fwd.get_scratch_len().max(inv.get_scratch_len());
        Correlator {
            n: window,
            m,
            time: vec![0.0; m],
            spec_a: fwd.make_output_vec(),
            spec_b: fwd.make_output_vec(),
            white: fwd.make_output_vec(),
            scratch: vec![Complex::new(0.0, 0.0); scratch_len],
            corr: vec![0.0; m],
            fwd,
            inv,
        }
    }

    fn spectrum(&mut self, x: &[f32], into_b: bool) {
        // A Hann window: the window's edges do not add broadband clicks.
        let n = self.n;
        for (i, t) in self.time.iter_mut().enumerate() {
            *t = if i < n {
                let w = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos();
                f64::from(x[i]) * w
            } else {
                0.0
            };
        }
        let out = if into_b {
            &mut self.spec_b
        } else {
            &mut self.spec_a
        };
        // The lengths match the plan by construction, so this cannot fail.
        let _ = self
            .fwd
            .process_with_scratch(&mut self.time, out, &mut self.scratch);
    }

    /// The delay of `b` against `a` (both `window` samples long), searched within +/-`max_lag`
    /// samples over the band `band_hz` at `rate`. None if there is no signal in the band.
    pub fn delay(
        &mut self,
        a: &[f32],
        b: &[f32],
        rate: u32,
        max_lag: usize,
        band_hz: (f64, f64),
    ) -> Option<Delay> {
        if a.len() < self.n || b.len() < self.n || max_lag * 2 >= self.n {
            return None;
        }
        self.spectrum(a, false);
        self.spectrum(b, true);
        let bin_hz = f64::from(rate) / self.m as f64;
        let (lo, hi) = (
            (band_hz.0 / bin_hz).ceil() as usize,
            ((band_hz.1 / bin_hz).floor() as usize).min(self.m / 2),
        );
        let mut used = 0usize;
        let mut total = 0.0;
        for k in 0..self.white.len() {
            let g = self.spec_b[k] * self.spec_a[k].conj();
            let mag = g.norm();
            // Whiten; keep only the band (and bins with something in them).
            self.white[k] = if k >= lo && k <= hi && mag > 1e-20 {
                used += 1;
                total += mag.powf(1.0 - PHAT_BETA);
                g / mag.powf(PHAT_BETA)
            } else {
                Complex::new(0.0, 0.0)
            };
        }
        if used == 0 {
            return None;
        }
        // The inverse transform uses its input as scratch: give it a copy.
        self.spec_a.copy_from_slice(&self.white);
        // The imaginary parts of DC and Nyquist must be zero for a real inverse.
        self.spec_a[0].im = 0.0;
        if let Some(last) = self.spec_a.last_mut() {
            last.im = 0.0;
        }
        self.inv
            .process_with_scratch(&mut self.spec_a, &mut self.corr, &mut self.scratch)
            .ok()?;
        // Integer peak within +/- max_lag (negative lags wrap to the end).
        let m = self.m as isize;
        let mut best = (0isize, f64::MIN);
        for lag in -(max_lag as isize)..=(max_lag as isize) {
            let v = self.corr[lag.rem_euclid(m) as usize];
            if v > best.1 {
                best = (lag, v);
            }
        }
        // Normalize: a perfect match has every used bin in phase: r = 2 x the sum of the weighted
        // magnitudes (half spectrum).
        let peak = best.1 / (2.0 * total);
        let tau = self.refine(best.0 as f64, lo, hi);
        Some(Delay { samples: tau, peak })
    }

    /// The band-limited correlation at fractional lag `tau` (from the whitened half spectrum,
    /// bins `lo..=hi`).
    fn corr_at(&self, tau: f64, lo: usize, hi: usize) -> f64 {
        let step = 2.0 * std::f64::consts::PI * tau / self.m as f64;
        let rot = Complex::new(step.cos(), step.sin());
        let start = step * lo as f64;
        let mut e = Complex::new(start.cos(), start.sin());
        let mut sum = 0.0;
        for k in lo..=hi.min(self.white.len() - 1) {
            sum += (self.white[k] * e).re;
            e *= rot;
        }
        sum
    }

    /// Golden-section search for the maximum of the correlation in [k - 1, k + 1].
    fn refine(&self, k: f64, lo: usize, hi: usize) -> f64 {
        let g = (5f64.sqrt() - 1.0) / 2.0;
        let (mut a, mut b) = (k - 1.0, k + 1.0);
        let mut c = b - g * (b - a);
        let mut d = a + g * (b - a);
        let mut fc = self.corr_at(c, lo, hi);
        let mut fd = self.corr_at(d, lo, hi);
        while b - a > 1e-5 {
            if fc > fd {
                b = d;
                d = c;
                fd = fc;
                c = b - g * (b - a);
                fc = self.corr_at(c, lo, hi);
            } else {
                a = c;
                c = d;
                fc = fd;
                d = a + g * (b - a);
                fd = self.corr_at(d, lo, hi);
            }
        }
        (a + b) / 2.0
    }
}

/// The delay in one window of the sliding correlation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct WindowDelay {
    /// Centre of the window in A, seconds from the start.
    pub time_s: f64,
    /// Delay of B against A, us (positive: B late).
    pub delay_us: f64,
    /// Whitened peak height, 0..1.
    pub peak: f64,
}

/// Delay over time between two recordings (mono, same rate, same start).
pub fn sliding(a: &[f32], b: &[f32], cfg: &XcorrConfig) -> Result<Vec<WindowDelay>, XcorrError> {
    if !cfg.window.is_power_of_two() || cfg.window < 256 || cfg.max_lag * 2 >= cfg.window {
        return Err(XcorrError::BadWindow {
            window: cfg.window,
            max_lag: cfg.max_lag,
        });
    }
    let len = a.len().min(b.len());
    if len < cfg.window {
        return Err(XcorrError::TooShort {
            len,
            window: cfg.window,
        });
    }
    let mut c = Correlator::new(cfg.window);
    let mut out = Vec::new();
    let mut start = 0;
    while start + cfg.window <= len {
        let end = start + cfg.window;
        if let Some(d) = c.delay(
            &a[start..end],
            &b[start..end],
            cfg.rate,
            cfg.max_lag,
            cfg.band_hz,
        ) {
            out.push(WindowDelay {
                time_s: (start + cfg.window / 2) as f64 / f64::from(cfg.rate),
                delay_us: d.samples * 1e6 / f64::from(cfg.rate),
                peak: d.peak,
            });
        }
        start += cfg.hop.max(1);
    }
    Ok(out)
}

/// Figures of a sliding correlation.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct XcorrSummary {
    /// Windows correlated.
    pub windows: usize,
    /// Windows kept (peak over the threshold).
    pub used: usize,
    /// Median |delay|, us.
    pub p50_us: f64,
    /// 99th percentile |delay|, us.
    pub p99_us: f64,
    /// Largest |delay|, us.
    pub max_us: f64,
    /// Mean signed delay, us.
    pub mean_us: f64,
}

/// Summarizes the windows whose peak is at least `min_peak`.
pub fn summarize(w: &[WindowDelay], min_peak: f64) -> XcorrSummary {
    let kept: Vec<f64> = w
        .iter()
        .filter(|w| w.peak >= min_peak)
        .map(|w| w.delay_us)
        .collect();
    let mut abs: Vec<f64> = kept.iter().map(|d| d.abs()).collect();
    abs.sort_by(f64::total_cmp);
    XcorrSummary {
        windows: w.len(),
        used: kept.len(),
        p50_us: crate::analyze::quantile(&abs, 0.5),
        p99_us: crate::analyze::quantile(&abs, 0.99),
        max_us: abs.last().copied().unwrap_or(0.0),
        mean_us: if kept.is_empty() {
            0.0
        } else {
            kept.iter().sum::<f64>() / kept.len() as f64
        },
    }
}

/// Delays `x` by `d` samples (any real number; the integer part too) with a windowed-sinc
/// (Blackman, `taps` long) fractional delay filter. For tests and the lab's self-checks.
pub fn fractional_delay(x: &[f32], d: f64, taps: usize) -> Vec<f32> {
    let half = (taps / 2) as isize;
    let int = d.floor() as isize;
    let frac = d - d.floor();
    let h: Vec<f64> = (-half..=half)
        .map(|k| {
            let t = k as f64 - frac;
            let sinc = if t.abs() < 1e-12 {
                1.0
            } else {
                (std::f64::consts::PI * t).sin() / (std::f64::consts::PI * t)
            };
            // Blackman window centred on the fractional delay.
            let u = (t + half as f64 + 1.0) / (2.0 * half as f64 + 2.0);
            let w = 0.42 - 0.5 * (2.0 * std::f64::consts::PI * u).cos()
                + 0.08 * (4.0 * std::f64::consts::PI * u).cos();
            sinc * w
        })
        .collect();
    (0..x.len() as isize)
        .map(|n| {
            let mut acc = 0.0;
            for (j, &hk) in h.iter().enumerate() {
                let idx = n - int - (j as isize - half);
                if idx >= 0 && (idx as usize) < x.len() {
                    acc += hk * f64::from(x[idx as usize]);
                }
            }
            acc as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut r = StdRng::seed_from_u64(seed);
        (0..n).map(|_| r.gen_range(-0.5..0.5)).collect()
    }

    #[test]
    fn integer_delay_is_exact() {
        let a = noise(20_000, 1);
        let b = fractional_delay(&a, 25.0, 129);
        let mut c = Correlator::new(8192);
        let d = c
            .delay(&a[4000..], &b[4000..], 48_000, 1000, (100.0, 21_600.0))
            .unwrap();
        assert!((d.samples - 25.0).abs() < 0.002, "{d:?}");
        assert!(d.peak > 0.9, "{d:?}");
        let d = c
            .delay(&b[4000..], &a[4000..], 48_000, 1000, (100.0, 21_600.0))
            .unwrap();
        assert!((d.samples + 25.0).abs() < 0.002, "{d:?}");
    }

    #[test]
    fn fractional_delay_of_noise_within_a_microsecond() {
        let a = noise(48_000, 2);
        for &d in &[12.37, -3.71, 0.5, 40.05] {
            let b = fractional_delay(&a, d, 257);
            let w = sliding(&a, &b, &XcorrConfig::new(48_000)).unwrap();
            assert!(w.len() >= 3);
            for x in &w {
                let want = d * 1e6 / 48_000.0;
                // Measured: < 0.002 us.
                assert!((x.delay_us - want).abs() < 0.05, "d={d}: {x:?} want {want}");
            }
        }
    }

    #[test]
    fn fractional_delay_of_the_lab_signal_within_a_microsecond() {
        let a = crate::signal::generate(&crate::signal::SignalConfig {
            seconds: 3.0,
            ..Default::default()
        });
        let b = fractional_delay(&a, 12.37, 257);
        let w = sliding(&a, &b, &XcorrConfig::new(48_000)).unwrap();
        let s = summarize(&w, 0.1);
        assert_eq!(s.used, s.windows);
        let want = 12.37e6 / 48_000.0; // 257.708 us
        for x in &w {
            // Measured: < 0.17 us.
            assert!((x.delay_us - want).abs() < 0.5, "{x:?} want {want}");
        }
        assert!((s.mean_us - want).abs() < 0.5, "{s:?}");
    }

    #[test]
    fn lab_signal_with_noise_40_db_down_within_a_microsecond() {
        let a = crate::signal::generate(&crate::signal::SignalConfig {
            seconds: 3.0,
            seed: 9,
            ..Default::default()
        });
        let n = noise(a.len(), 10);
        let b: Vec<f32> = fractional_delay(&a, -7.81, 257)
            .iter()
            .zip(&n)
            .map(|(x, e)| x + 0.01 * e)
            .collect();
        let w = sliding(&a, &b, &XcorrConfig::new(48_000)).unwrap();
        let want = -7.81e6 / 48_000.0;
        assert!(w.len() >= 10);
        for x in &w {
            // Measured: < 0.11 us.
            assert!((x.delay_us - want).abs() < 1.0, "{x:?} want {want}");
        }
    }

    #[test]
    fn unrelated_signals_have_a_weak_peak() {
        let a = noise(20_000, 3);
        let b = noise(20_000, 4);
        let mut c = Correlator::new(8192);
        let d = c.delay(&a, &b, 48_000, 2000, (100.0, 21_600.0)).unwrap();
        assert!(d.peak < 0.1, "{d:?}");
        let silence = vec![0.0f32; 8192];
        assert_eq!(
            c.delay(&silence, &silence, 48_000, 100, (100.0, 21_600.0)),
            None
        );
    }

    #[test]
    fn bad_parameters_are_errors() {
        let a = noise(1000, 5);
        let mut cfg = XcorrConfig::new(48_000);
        assert!(matches!(
            sliding(&a, &a, &cfg),
            Err(XcorrError::TooShort { .. })
        ));
        cfg.window = 5000;
        assert!(matches!(
            sliding(&a, &a, &cfg),
            Err(XcorrError::BadWindow { .. })
        ));
    }
}
