//! The measurement signal: a periodic random-phase multisine ("periodic noise").
//!
//! One period is exactly one second (`rate` samples); every bin between 150 Hz and 16 kHz
//! (at most 0.45 x rate) has the same magnitude and a pseudo-random phase, so it sounds like
//! soft hiss, its spectrum is flat (the sharpest GCC-PHAT peak) and it has no edges: a room can
//! be switched on at any moment and a window anywhere in the recording holds the same signal.
//! A delay is found modulo the period, so arrivals up to +-0.5 s apart are told apart.

use realfft::num_complex::Complex;
use realfft::RealFftPlanner;

/// Lowest and highest frequency in the probe, Hz (the high end at most 0.45 x rate).
pub const BAND_HZ: (f64, f64) = (150.0, 16_000.0);
/// Quietest and loudest level accepted, dBFS RMS.
pub const LEVEL_RANGE_DB: (f64, f64) = (-60.0, -6.0);

/// Why a probe cannot be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// The level is outside [`LEVEL_RANGE_DB`].
    #[error("level {0} dBFS is out of range (-60 to -6 dBFS)")]
    Level(f64),
    /// The rate is too low for the probe's band.
    #[error("rate {0} Hz: calibration needs 16000 Hz or more")]
    Rate(u32),
}

/// The measurement signal.
#[derive(Clone, Debug)]
pub struct Probe {
    rate: u32,
    period: Vec<f32>,
}

impl Probe {
    /// A probe at `rate` with an RMS level of `level_db` dBFS.
    pub fn new(rate: u32, level_db: f64) -> Result<Probe, ProbeError> {
        if !(LEVEL_RANGE_DB.0..=LEVEL_RANGE_DB.1).contains(&level_db) {
            return Err(ProbeError::Level(level_db));
        }
        if rate < 16_000 {
            return Err(ProbeError::Rate(rate));
        }
        let n = rate as usize;
        let mut planner = RealFftPlanner::<f64>::new();
        let inv = planner.plan_fft_inverse(n);
        let mut spec = inv.make_input_vec();
        let hi = BAND_HZ.1.min(0.45 * f64::from(rate));
        // Bins are 1 Hz apart (the period is one second).
        let mut s: u64 = 0x2545_F491_4F6C_DD1D;
        for (k, c) in spec.iter_mut().enumerate() {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let phase = (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 * std::f64::consts::PI;
            let f = k as f64;
            *c = if f >= BAND_HZ.0 && f <= hi {
                Complex::from_polar(1.0, phase)
            } else {
                Complex::new(0.0, 0.0)
            };
        }
        let mut time = inv.make_output_vec();
        // Lengths match the plan by construction.
        let _ = inv.process(&mut spec, &mut time);
        let rms = (time.iter().map(|x| x * x).sum::<f64>() / n as f64).sqrt();
        let gain = 10f64.powf(level_db / 20.0) / rms.max(1e-30);
        Ok(Probe {
            rate,
            period: time.iter().map(|x| (x * gain) as f32).collect(),
        })
    }

    /// Sample `n` of the endless signal (any integer: it repeats every second).
    pub fn at(&self, n: i64) -> f32 {
        self.period[n.rem_euclid(self.period.len() as i64) as usize]
    }

    /// One period.
    pub fn period(&self) -> &[f32] {
        &self.period
    }

    /// Samples per second (= samples per period).
    pub fn rate(&self) -> u32 {
        self.rate
    }
}

/// RMS level of `x` in dBFS (-200 for digital silence or nothing).
pub fn level_db(x: &[f32]) -> f64 {
    if x.is_empty() {
        return -200.0;
    }
    let ms = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / x.len() as f64;
    if ms <= 1e-20 {
        -200.0
    } else {
        10.0 * ms.log10()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_and_peak_are_as_asked_and_it_repeats() {
        let p = Probe::new(48_000, -20.0).unwrap();
        assert!((level_db(p.period()) + 20.0).abs() < 0.01);
        let peak = p.period().iter().fold(0f32, |m, x| m.max(x.abs()));
        // Random phases: crest factor about 4, far from clipping at -20 dBFS.
        assert!(peak > 0.1 && peak < 0.6, "peak {peak}");
        assert_eq!(p.at(-1), p.at(47_999));
        assert_eq!(p.at(48_000 * 7 + 5), p.at(5));
    }

    #[test]
    fn bad_levels_and_rates_are_refused() {
        assert_eq!(Probe::new(48_000, 0.0).unwrap_err(), ProbeError::Level(0.0));
        assert!(Probe::new(48_000, f64::NAN).is_err());
        assert_eq!(
            Probe::new(8_000, -20.0).unwrap_err(),
            ProbeError::Rate(8_000)
        );
        assert_eq!(level_db(&[]), -200.0);
        assert_eq!(level_db(&[0.0; 10]), -200.0);
    }
}
