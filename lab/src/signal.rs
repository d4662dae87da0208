//! The lab's test signal: chirps between stretches of music-like noise.
//!
//! Every `period_s` seconds: `period_s - chirp_s` of "music" (a few decaying harmonic notes at
//! random pitches over pink noise, never repeating: seeded RNG), then a `chirp_s` logarithmic
//! sweep from 200 Hz to 12 kHz with short fades. The noise makes every window's alignment unique
//! (no periodic ambiguity) and broadband (sub-sample precise under GCC-PHAT); the chirps make
//! the start of each period easy to see by eye and by ear.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};

/// What went wrong reading or writing a WAV file.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// hound could not read or write the file.
    #[error("{path}: {source}")]
    Wav {
        /// The file.
        path: PathBuf,
        /// What hound said.
        source: hound::Error,
    },
    /// Reading a raw file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The requested channel is not in the file.
    #[error("{path}: channel {channel} requested, the file has {channels}")]
    NoSuchChannel {
        /// The file.
        path: PathBuf,
        /// Requested (0-based).
        channel: u16,
        /// Channels in the file.
        channels: u16,
    },
}

/// Parameters of the signal.
#[derive(Clone, Copy, Debug)]
pub struct SignalConfig {
    /// Sample rate, Hz.
    pub rate: u32,
    /// Length, seconds.
    pub seconds: f64,
    /// Seed of the music-like noise.
    pub seed: u64,
    /// One chirp every this many seconds.
    pub period_s: f64,
    /// Length of a chirp, seconds.
    pub chirp_s: f64,
    /// Peak amplitude (full scale = 1).
    pub peak: f32,
}

impl Default for SignalConfig {
    fn default() -> Self {
        SignalConfig {
            rate: 48_000,
            seconds: 10.0,
            seed: 1,
            period_s: 2.0,
            chirp_s: 0.25,
            peak: 0.8,
        }
    }
}

/// Generates the signal, mono.
pub fn generate(cfg: &SignalConfig) -> Vec<f32> {
    let rate = f64::from(cfg.rate);
    let n = (cfg.seconds * rate).round().max(0.0) as usize;
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut out = vec![0f64; n];
    let period = ((cfg.period_s * rate) as usize).max(1);
    let chirp_len = ((cfg.chirp_s * rate) as usize).min(period);
    let music_len = period - chirp_len;
    let fade = (0.01 * rate) as usize;

    // Pink noise (Paul Kellet's economy filter over white noise).
    let (mut b0, mut b1, mut b2) = (0.0f64, 0.0f64, 0.0f64);
    // Notes: (start, frequency, amplitude).
    let mut notes: Vec<(usize, f64, f64)> = Vec::new();
    let mut next_note = 0usize;
    for (i, o) in out.iter_mut().enumerate() {
        let in_period = i % period;
        if in_period < music_len {
            let white: f64 = rng.gen_range(-1.0..1.0);
            b0 = 0.99765 * b0 + white * 0.099_046;
            b1 = 0.963 * b1 + white * 0.296_516_4;
            b2 = 0.57 * b2 + white * 1.052_691_3;
            let pink = (b0 + b1 + b2 + white * 0.1848) * 0.1;
            if i >= next_note {
                let semitone: f64 = rng.gen_range(0.0..36.0f64).floor();
                notes.push((
                    i,
                    110.0 * 2f64.powf(semitone / 12.0),
                    rng.gen_range(0.1..0.3),
                ));
                next_note = i + rng.gen_range((0.12 * rate) as usize..(0.4 * rate) as usize);
            }
            notes.retain(|&(s, _, _)| i - s < (1.5 * rate) as usize);
            let mut tone = 0.0;
            for &(s, f, a) in &notes {
                let t = (i - s) as f64 / rate;
                let env = a * (-t / 0.3).exp() * (t * 200.0).min(1.0);
                for h in 1..=4 {
                    tone += env / h as f64 * (2.0 * std::f64::consts::PI * f * h as f64 * t).sin();
                }
            }
            // Fade the music in and out around the chirps.
            let edge = in_period.min(music_len - in_period).min(fade) as f64 / fade.max(1) as f64;
            *o = (pink + tone) * edge;
        } else {
            let k = in_period - music_len;
            let t = k as f64 / rate;
            let (f0, f1, dur) = (200.0f64, 12_000.0f64, chirp_len as f64 / rate);
            let l = (f1 / f0).ln();
            let phase = 2.0 * std::f64::consts::PI * f0 * dur / l * ((t / dur * l).exp() - 1.0);
            let edge = k.min(chirp_len - k).min(fade / 2) as f64 / (fade / 2).max(1) as f64;
            *o = 0.9 * phase.sin() * edge;
        }
    }
    let max = out.iter().fold(0.0f64, |m, &x| m.max(x.abs()));
    let scale = if max > 0.0 {
        f64::from(cfg.peak) / max
    } else {
        0.0
    };
    out.into_iter().map(|x| (x * scale) as f32).collect()
}

/// Writes `mono` as a 16-bit WAV with `channels` identical channels.
pub fn write_wav(path: &Path, mono: &[f32], rate: u32, channels: u16) -> Result<(), SignalError> {
    let err = |source| SignalError::Wav {
        path: path.to_path_buf(),
        source,
    };
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).map_err(err)?;
    for &x in mono {
        let s = (x.clamp(-1.0, 1.0) * 32767.0).round() as i16;
        for _ in 0..channels {
            w.write_sample(s).map_err(err)?;
        }
    }
    w.finalize().map_err(err)
}

/// Reads one channel of a WAV file (any integer width or float) as f32; returns it and the
/// sample rate.
pub fn read_wav(path: &Path, channel: u16) -> Result<(Vec<f32>, u32), SignalError> {
    let err = |source| SignalError::Wav {
        path: path.to_path_buf(),
        source,
    };
    let mut r = hound::WavReader::open(path).map_err(err)?;
    let spec = r.spec();
    if channel >= spec.channels {
        return Err(SignalError::NoSuchChannel {
            path: path.to_path_buf(),
            channel,
            channels: spec.channels,
        });
    }
    let step = usize::from(spec.channels);
    let skip = usize::from(channel);
    let out: Result<Vec<f32>, hound::Error> = match spec.sample_format {
        hound::SampleFormat::Float => r.samples::<f32>().skip(skip).step_by(step).collect(),
        hound::SampleFormat::Int => {
            let full = (1i64 << (spec.bits_per_sample - 1)) as f32;
            r.samples::<i32>()
                .skip(skip)
                .step_by(step)
                .map(|s| s.map(|s| s as f32 / full))
                .collect()
        }
    };
    Ok((out.map_err(err)?, spec.sample_rate))
}

/// Reads one channel of a raw interleaved signed 16-bit little-endian file.
pub fn read_raw_s16le(path: &Path, channels: u16, channel: u16) -> Result<Vec<f32>, SignalError> {
    if channel >= channels {
        return Err(SignalError::NoSuchChannel {
            path: path.to_path_buf(),
            channel,
            channels,
        });
    }
    let bytes = std::fs::read(path).map_err(|source| SignalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let frame = 2 * usize::from(channels);
    Ok(bytes
        .chunks_exact(frame)
        .map(|f| {
            let o = 2 * usize::from(channel);
            f32::from(i16::from_le_bytes([f[o], f[o + 1]])) / 32768.0
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_peak_and_determinism() {
        let cfg = SignalConfig {
            seconds: 4.0,
            ..Default::default()
        };
        let a = generate(&cfg);
        assert_eq!(a.len(), 192_000);
        let peak = a.iter().fold(0f32, |m, &x| m.max(x.abs()));
        assert!((peak - 0.8).abs() < 1e-6);
        assert_eq!(a, generate(&cfg));
        assert_ne!(a, generate(&SignalConfig { seed: 2, ..cfg }));
    }

    #[test]
    fn chirps_sit_at_the_end_of_each_period() {
        let a = generate(&SignalConfig {
            seconds: 4.0,
            ..Default::default()
        });
        // The chirp (0.9 before scaling) is louder than the music around its middle, and the
        // music is not silent.
        let rms = |s: &[f32]| (s.iter().map(|x| x * x).sum::<f32>() / s.len() as f32).sqrt();
        let chirp = rms(&a[(1.8 * 48_000.0) as usize..(1.95 * 48_000.0) as usize]);
        let music = rms(&a[(0.2 * 48_000.0) as usize..(1.6 * 48_000.0) as usize]);
        assert!(
            chirp > 0.3 && music > 0.05 && music < chirp,
            "{chirp} {music}"
        );
    }

    #[test]
    fn wav_round_trip_and_missing_channel() {
        let dir = std::env::temp_dir().join(format!("wslab-signal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.wav");
        let a = generate(&SignalConfig {
            seconds: 0.5,
            ..Default::default()
        });
        write_wav(&path, &a, 48_000, 2).unwrap();
        let (b, rate) = read_wav(&path, 1).unwrap();
        assert_eq!(rate, 48_000);
        assert_eq!(b.len(), a.len());
        assert!(a
            .iter()
            .zip(&b)
            .all(|(x, y)| (x - y).abs() <= 2.0 / 32768.0));
        assert!(matches!(
            read_wav(&path, 2),
            Err(SignalError::NoSuchChannel { channels: 2, .. })
        ));
        assert!(matches!(
            read_wav(&dir.join("missing.wav"), 0),
            Err(SignalError::Wav { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
