//! Where one signal lies in another: GCC-PHAT cross-correlation with sub-sample precision.
//!
//! Shared by the lab's black-box skew measurement (`lab/src/xcorr.rs`, sliding windows over two
//! recordings) and calibration by ear ([`crate::calibrate`], a room's measurement signal in a
//! microphone recording).
//!
//! GCC-PHAT (generalized cross-correlation with phase transform): over a Hann window, the cross
//! spectrum `G(k) = B(k) conj(A(k))` is whitened, `G / |G|^0.7` (nearly every frequency in the
//! band votes equally, so the peak is sharp whatever the signal's colour, while bins holding
//! only noise count a little less than pure PHAT's `G / |G|`), limited to a band, and
//! transformed back; the peak's lag is the delay. The integer peak is then refined to
//! a fraction of a sample by maximizing the band-limited correlation itself,
//! `r(tau) = sum_k W(k) e^(j 2 pi k tau / M)`, evaluated exactly at fractional `tau` (golden
//! section search between the neighbours of the integer peak): this is sinc interpolation of
//! the correlation, without the bias of a parabola fitted to a sinc-shaped peak. Reflections
//! (a room's reverberation) show as later, smaller peaks: the strongest path wins.

use realfft::num_complex::Complex;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};
use std::sync::Arc;

/// Partial whitening: the cross spectrum is divided by its magnitude to this power. 1 is pure
/// PHAT (sharpest peak, but bins where one side is only noise vote as loudly as the rest);
/// 0.7 keeps the peak sharp and lets strong bins count more, which is what survives noise.
const PHAT_BETA: f64 = 0.7;

/// The delay found in one window.
#[derive(Clone, Copy, Debug, PartialEq)]
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
pub(crate) mod tests {
    use super::*;

    /// Deterministic white noise in -0.5..0.5 (an xorshift; `common` has no RNG dependency).
    pub(crate) fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 11) as f64 / (1u64 << 53) as f64 - 0.5) as f32
            })
            .collect()
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
    fn fractional_delays_within_a_hundredth_of_a_sample() {
        let a = noise(20_000, 2);
        let mut c = Correlator::new(8192);
        for &d in &[12.37, -3.71, 0.5, 40.05] {
            let b = fractional_delay(&a, d, 257);
            let got = c
                .delay(&a[4000..], &b[4000..], 48_000, 1000, (100.0, 21_600.0))
                .unwrap();
            assert!((got.samples - d).abs() < 0.01, "d={d}: {got:?}");
        }
    }

    #[test]
    fn unrelated_signals_have_a_weak_peak_and_silence_none() {
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
        // Too short, or a lag that does not fit: no answer rather than a panic.
        assert_eq!(
            c.delay(&a[..100], &b[..100], 48_000, 10, (100.0, 21_600.0)),
            None
        );
        assert_eq!(c.delay(&a, &b, 48_000, 5000, (100.0, 21_600.0)), None);
    }
}
