//! Generated inputs for tests and demos: a sine tone and a repeating logarithmic chirp, paced
//! in real time.

use std::f64::consts::TAU;

use super::paced::Pacer;
use super::{check_format, Block, Input, InputError, InputFormat, InputOptions};

/// Level of the generated signals (-6 dBFS).
pub const AMPLITUDE: f64 = 0.5;
/// Lowest frequency of the chirp, Hz.
pub const CHIRP_LOW_HZ: f64 = 100.0;
/// Highest frequency of the chirp, Hz.
pub const CHIRP_HIGH_HZ: f64 = 10_000.0;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Tone { hz: f64 },
    Chirp { seconds: f64 },
}

/// A tone or chirp generator, the same signal on every channel.
#[derive(Debug)]
pub struct Generator {
    kind: Kind,
    format: InputFormat,
    block: usize,
    frame: u64,
    pacer: Pacer,
}

impl Generator {
    /// A sine of `hz`.
    pub fn tone(hz: f64, opts: &InputOptions) -> Self {
        Self::new(Kind::Tone { hz }, opts)
    }

    /// A sweep from 100 Hz to 10 kHz lasting `seconds`, repeated.
    pub fn chirp(seconds: f64, opts: &InputOptions) -> Self {
        Self::new(Kind::Chirp { seconds }, opts)
    }

    fn new(kind: Kind, opts: &InputOptions) -> Self {
        let format = opts.format_or(48_000);
        Generator {
            kind,
            format,
            block: opts.block_frames(format.rate),
            frame: 0,
            pacer: Pacer::new(format.rate),
        }
    }

    /// The value of frame `n` (every channel carries it).
    pub fn sample(&self, n: u64) -> f32 {
        let rate = self.format.rate as f64;
        let phase = match self.kind {
            Kind::Tone { hz } => (n as f64 * hz / rate).fract(),
            Kind::Chirp { seconds } => {
                let len = (seconds * rate).round().max(1.0) as u64;
                let t = (n % len) as f64 / rate;
                let k = (CHIRP_HIGH_HZ / CHIRP_LOW_HZ).ln();
                // Integral of f(t) = low * (high/low)^(t/T): the phase in cycles.
                (CHIRP_LOW_HZ * seconds / k * ((k * t / seconds).exp() - 1.0)).fract()
            }
        };
        (AMPLITUDE * (TAU * phase).sin()) as f32
    }
}

impl Input for Generator {
    fn describe(&self) -> String {
        let what = match self.kind {
            Kind::Tone { hz } => format!("tone {hz} Hz"),
            Kind::Chirp { seconds } => {
                format!("chirp {CHIRP_LOW_HZ}-{CHIRP_HIGH_HZ} Hz every {seconds} s")
            }
        };
        format!(
            "{what}, {} Hz, {} ch",
            self.format.rate, self.format.channels
        )
    }

    fn format(&self) -> InputFormat {
        self.format
    }

    fn next_block(&mut self, buf: &mut [f32]) -> Result<Block, InputError> {
        check_format("tone", self.format)?;
        let ch = self.format.channels as usize;
        let frames = self.block.min(buf.len() / ch);
        for (i, frame) in buf[..frames * ch].chunks_exact_mut(ch).enumerate() {
            frame.fill(self.sample(self.frame + i as u64));
        }
        self.frame += frames as u64;
        let capture = self.pacer.pace(frames);
        Ok(Block::Audio { capture, frames })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> InputOptions {
        InputOptions {
            rate: Some(8_000),
            channels: Some(2),
            block_ns: 10_000_000,
            ..InputOptions::default()
        }
    }

    #[test]
    fn the_tone_has_its_frequency_and_level() {
        let mut g = Generator::tone(1_000.0, &opts());
        let mut buf = vec![0f32; 160];
        let Block::Audio { frames, .. } = g.next_block(&mut buf).unwrap() else {
            panic!("audio expected")
        };
        assert_eq!(frames, 80);
        // 1 kHz at 8 kHz: 8 frames per cycle, peaks of 0.5 at frames 2, 10, ...
        assert_eq!(buf[0], 0.0);
        assert!((buf[2 * 2] - 0.5).abs() < 1e-6);
        assert!((buf[2 * 6] + 0.5).abs() < 1e-6);
        assert_eq!(buf[2 * 10], buf[2 * 10 + 1]);
        assert!((buf[2 * 10] - 0.5).abs() < 1e-6);
    }

    #[test]
    fn the_chirp_sweeps_up_and_repeats() {
        let g = Generator::chirp(1.0, &opts());
        let crossings = |from: u64, to: u64| {
            (from..to)
                .filter(|&n| (g.sample(n) >= 0.0) != (g.sample(n + 1) >= 0.0))
                .count()
        };
        // Early in the sweep: low frequency; late: high; and the next sweep starts low again.
        let early = crossings(0, 400);
        let late = crossings(7_000, 7_400);
        assert!(late > 5 * early, "{early} {late}");
        assert_eq!(g.sample(8_000 + 17), g.sample(17));
    }
}
