//! Black-box skew: how late one recording is against another, by cross-correlation.
//!
//! Sliding windows of the GCC-PHAT correlator ([`wavesync_common::correlate`], shared with
//! calibration by ear) give the delay over time; windows whose whitened peak is weak (silence, a
//! mismatch) are left out and counted.

use serde::Serialize;
pub use wavesync_common::correlate::{fractional_delay, Correlator, Delay};

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
