//! Where the probe lies in a stretch of microphone recording, and whether it can be trusted.
//!
//! A stretch is what the microphone heard while one room played the probe. Its delay `tau` is
//! defined against the recording's own sample count: recording sample `m` holds probe sample
//! `m - tau` (modulo the one-second period). Since the probe plays without a break through the
//! whole calibration and the recording runs without a break too, the rooms' `tau`s differ only
//! by when each room's sound reaches the microphone (and by the microphone's clock rate, which
//! [`super::solve`] fits): the capture delay of the microphone is the same in all of them.
//!
//! Two passes: one long window (about 1.4 s at 48 kHz) finds the delay anywhere within +-0.5 s;
//! then short windows (a quarter of that, overlapping by half), each compared with the probe
//! shifted by the coarse delay, measure it to a fraction of a sample several times along the
//! stretch, which shows the microphone's clock drift and how steady the result is.

use super::probe::{level_db, Probe, BAND_HZ};
use crate::correlate::Correlator;

/// Samples at or above this magnitude count as clipped.
pub const CLIP_LEVEL: f32 = 0.999;
/// More than this fraction of clipped samples is refused.
pub const MAX_CLIPPED: f64 = 1e-4;
/// A stretch quieter than this (dBFS RMS) is refused even if it is above the noise floor.
pub const MIN_LEVEL_DB: f64 = -75.0;
/// A stretch less than this far above the noise floor (dB) has nothing in it.
pub const NOTHING_DB: f64 = 1.0;
/// The probe must be at least this far above the noise (dB).
pub const MIN_SNR_DB: f64 = 6.0;
/// Correlation peaks (0..1, the fraction of the band agreeing on one delay) under this are not
/// the probe.
pub const MIN_PEAK: f64 = 0.15;
/// The short windows must agree within this (us, after the drift line is removed).
pub const MAX_UNSTEADY_US: f64 = 20.0;

/// Why a stretch gives no arrival.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum MeasureError {
    /// Fewer samples than one long window.
    #[error("recorded {got} samples, a measurement needs {need}")]
    TooShort {
        /// Samples in the stretch.
        got: usize,
        /// Samples needed.
        need: usize,
    },
    /// The microphone clipped: the probe is too loud for it.
    #[error("clipped: {:.2} % of the samples are at full scale (lower --level or the mic gain)", fraction * 100.0)]
    Clipped {
        /// Fraction of samples at full scale.
        fraction: f64,
    },
    /// Nothing above the microphone's noise floor.
    #[error(
        "nothing heard: {level_db:.1} dBFS, the same as the silence before ({floor_db:.1} dBFS)"
    )]
    NothingHeard {
        /// Level of the stretch, dBFS.
        level_db: f64,
        /// Level of the silence, dBFS.
        floor_db: f64,
    },
    /// Heard, but too quiet to trust.
    #[error("too quiet: {level_db:.1} dBFS (raise --level or the mic gain)")]
    TooQuiet {
        /// Level of the stretch, dBFS.
        level_db: f64,
    },
    /// Something is heard but the probe is buried in it.
    #[error("too noisy: the probe is {snr_db:.1} dB above the noise, correlation peak {peak:.2} (need {MIN_SNR_DB} dB and {MIN_PEAK})")]
    TooNoisy {
        /// Probe over noise, dB.
        snr_db: f64,
        /// Correlation peak, 0..1.
        peak: f64,
    },
    /// The short windows disagree.
    #[error("unsteady: the arrival wanders by {spread_us:.0} us within the measurement")]
    Unsteady {
        /// Largest departure from the fitted line, us.
        spread_us: f64,
    },
}

/// The probe's arrival in one stretch.
#[derive(Debug, Clone, PartialEq)]
pub struct Arrival {
    /// Per short window: (its centre, as a sample index of the whole recording; `tau` there,
    /// samples).
    pub windows: Vec<(f64, f64)>,
    /// Level of the stretch, dBFS.
    pub level_db: f64,
    /// Probe over noise, dB.
    pub snr_db: f64,
    /// Weakest correlation peak of the windows, 0..1.
    pub peak: f64,
}

/// The long window for `rate`: the power of two at or above one period.
pub fn long_window(rate: u32) -> usize {
    (rate as usize).next_power_of_two()
}

/// Measures the probe's arrival in `stretch`, which starts at sample `start` of the recording;
/// `floor_db` is the level the microphone heard with every room silent.
pub fn measure(
    probe: &Probe,
    stretch: &[f32],
    start: u64,
    floor_db: f64,
) -> Result<Arrival, MeasureError> {
    let rate = probe.rate();
    let wl = long_window(rate);
    if stretch.len() < wl {
        return Err(MeasureError::TooShort {
            got: stretch.len(),
            need: wl,
        });
    }
    let clipped = stretch.iter().filter(|x| x.abs() >= CLIP_LEVEL).count();
    let fraction = clipped as f64 / stretch.len() as f64;
    if fraction > MAX_CLIPPED {
        return Err(MeasureError::Clipped { fraction });
    }
    let level = level_db(stretch);
    if level < floor_db + NOTHING_DB || level <= -200.0 {
        return Err(MeasureError::NothingHeard {
            level_db: level,
            floor_db,
        });
    }
    if level < MIN_LEVEL_DB {
        return Err(MeasureError::TooQuiet { level_db: level });
    }
    // Power of the stretch less the noise's, over the noise's.
    let snr_db = if floor_db <= -200.0 {
        200.0
    } else {
        let (p, n) = (10f64.powf(level / 10.0), 10f64.powf(floor_db / 10.0));
        10.0 * ((p - n).max(1e-30) / n).log10()
    };
    let band = (BAND_HZ.0, BAND_HZ.1.min(0.45 * f64::from(rate)));
    let probe_at =
        |from: i64, n: usize| -> Vec<f32> { (0..n as i64).map(|i| probe.at(from + i)).collect() };
    let noisy = |peak: f64| MeasureError::TooNoisy { snr_db, peak };

    // Coarse: one long window in the middle of the stretch, lags within half a period.
    let c0 = (stretch.len() - wl) / 2;
    let abs0 = start as i64 + c0 as i64;
    let mut long = Correlator::new(wl);
    let coarse = long
        .delay(
            &probe_at(abs0, wl),
            &stretch[c0..c0 + wl],
            rate,
            rate as usize / 2 - 1,
            band,
        )
        .ok_or(noisy(0.0))?;
    if coarse.peak < MIN_PEAK || snr_db < MIN_SNR_DB {
        return Err(noisy(coarse.peak));
    }
    let shift = coarse.samples.round() as i64;

    // Fine: short windows along the stretch against the probe moved by the coarse delay.
    let ws = wl / 4;
    let mut short = Correlator::new(ws);
    let mut windows = Vec::new();
    let mut weakest = coarse.peak;
    let mut s = 0;
    while s + ws <= stretch.len() {
        let abs = start as i64 + s as i64;
        if let Some(d) = short.delay(
            &probe_at(abs - shift, ws),
            &stretch[s..s + ws],
            rate,
            ws / 8,
            band,
        ) {
            if d.peak >= MIN_PEAK {
                weakest = weakest.min(d.peak);
                windows.push((abs as f64 + ws as f64 / 2.0, shift as f64 + d.samples));
            }
        }
        s += ws / 2;
    }
    if windows.len() < 2 {
        return Err(noisy(coarse.peak));
    }
    let (_, slope) = super::solve::line(&windows);
    let mean_m = windows.iter().map(|w| w.0).sum::<f64>() / windows.len() as f64;
    let mean_t = windows.iter().map(|w| w.1).sum::<f64>() / windows.len() as f64;
    let spread = windows
        .iter()
        .map(|(m, t)| (t - mean_t - slope * (m - mean_m)).abs())
        .fold(0.0, f64::max);
    let spread_us = spread / f64::from(rate) * 1e6;
    if spread_us > MAX_UNSTEADY_US {
        return Err(MeasureError::Unsteady { spread_us });
    }
    Ok(Arrival {
        windows,
        level_db: level,
        snr_db,
        peak: weakest,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::correlate::fractional_delay;
    use crate::correlate::tests::noise;

    pub(crate) const RATE: u32 = 48_000;

    /// What a microphone hears: the probe from recording sample `start` on, delayed by `delay`
    /// samples, `gain`, a reverberant tail (decaying noise from 2 ms on, `reverb` x the direct
    /// sound's energy), and white noise at `noise_db` dBFS.
    #[allow(clippy::too_many_arguments)] // a test helper: every knob of a synthetic room
    pub(crate) fn heard(
        probe: &Probe,
        start: i64,
        len: usize,
        delay: f64,
        gain: f32,
        reverb: f32,
        noise_db: f64,
        seed: u64,
    ) -> Vec<f32> {
        // Generate with 0.6 s of lead-in so the delay and the tail are in steady state.
        let lead = 28_800usize;
        let src: Vec<f32> = (0..(len + lead) as i64)
            .map(|i| probe.at(start - lead as i64 + i))
            .collect();
        let direct = fractional_delay(&src, delay, 65);
        let tail_len = 4800usize;
        let h: Vec<f32> = noise(tail_len, seed ^ 77)
            .iter()
            .enumerate()
            .map(|(i, n)| {
                if i < 96 {
                    0.0
                } else {
                    n * (-(i as f32) / 1200.0).exp()
                }
            })
            .collect();
        let h_energy: f32 = h.iter().map(|x| x * x).sum();
        let hg = (reverb / h_energy.max(1e-12)).sqrt();
        let amp = 10f64.powf(noise_db / 20.0) as f32 * 12f32.sqrt();
        let nz = noise(len, seed);
        (0..len)
            .map(|i| {
                let n = i + lead;
                let mut y = direct[n];
                if reverb > 0.0 {
                    for (k, hk) in h.iter().enumerate().skip(96).step_by(7) {
                        y += hg * 7f32.sqrt() * hk * direct[n - k];
                    }
                }
                gain * y + amp * nz[i]
            })
            .collect()
    }

    fn tau_at(a: &Arrival, m: f64) -> f64 {
        let (b, s) = super::super::solve::line(&a.windows);
        b + s * m
    }

    #[test]
    fn known_delays_within_a_microsecond_with_reverb_and_noise() {
        let p = Probe::new(RATE, -20.0).unwrap();
        let floor = -70.0;
        for (i, &d) in [0.0, 163.2, 1920.0, -7.37, 8640.5, 23_000.25]
            .iter()
            .enumerate()
        {
            let start = 100_000 * i as i64;
            let x = heard(&p, start, 96_000, d, 0.5, 0.1, floor, i as u64);
            let a = measure(&p, &x, start as u64, floor).unwrap();
            let err_us = (tau_at(&a, start as f64 + 48_000.0) - d) / 48.0 * 1e3;
            eprintln!("delay {d} samples: error {err_us:+.3} us, {a:?}");
            // Measured: under 0.5 us.
            assert!(err_us.abs() < 2.0, "delay {d}: {err_us} us");
            assert!(a.snr_db > 30.0);
        }
    }

    #[test]
    fn bad_stretches_are_refused_with_the_reason() {
        let p = Probe::new(RATE, -20.0).unwrap();
        let floor = -60.0;
        // Nothing: just the noise floor.
        let silence = heard(&p, 0, 96_000, 0.0, 0.0, 0.0, floor, 1);
        assert!(matches!(
            measure(&p, &silence, 0, floor),
            Err(MeasureError::NothingHeard { .. })
        ));
        // Clipped.
        let loud = heard(&p, 0, 96_000, 10.0, 8.0, 0.0, floor, 2);
        assert!(matches!(
            measure(&p, &loud, 0, floor),
            Err(MeasureError::Clipped { .. })
        ));
        // Too noisy: the probe 3 dB over the noise floor.
        let buried = heard(&p, 0, 96_000, 10.0, 0.141, 0.0, -40.0, 3);
        let e = measure(&p, &buried, 0, -40.0);
        assert!(matches!(e, Err(MeasureError::TooNoisy { .. })), "{e:?}");
        // Loud, but not the probe (music, a vacuum cleaner).
        let other = noise(96_000, 4);
        let e = measure(&p, &other, 0, -60.0);
        assert!(
            matches!(e, Err(MeasureError::TooNoisy { peak, .. }) if peak < MIN_PEAK),
            "{e:?}"
        );
        // Too quiet, though above a digital-silence floor.
        let faint = heard(&p, 0, 96_000, 10.0, 0.0005, 0.0, -200.0, 5);
        assert!(matches!(
            measure(&p, &faint, 0, -200.0),
            Err(MeasureError::TooQuiet { .. })
        ));
        // Too short.
        assert!(matches!(
            measure(&p, &faint[..1000], 0, -200.0),
            Err(MeasureError::TooShort { .. })
        ));
        // The room stops half-way: the windows disagree or the second half is nothing.
        let mut half = heard(&p, 0, 96_000, 500.0, 0.5, 0.0, floor, 6);
        let other = heard(&p, 0, 96_000, 2000.0, 0.5, 0.0, floor, 7);
        half[48_000..].copy_from_slice(&other[48_000..]);
        let e = measure(&p, &half, 0, floor);
        assert!(matches!(e, Err(MeasureError::Unsteady { .. })), "{e:?}");
    }
}
