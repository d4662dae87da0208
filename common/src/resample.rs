//! Fine-ratio resampling of interleaved `f32` audio for drift correction.
//!
//! The playout controller (`crate::playout`) steers the speed at which the receiver consumes the
//! stream by a few hundred ppm at most, so that a DAC whose crystal runs fast or slow still plays
//! every frame at its stamped time. [`Resampler`] turns a stream of input frames into output
//! frames read at a fractional position that advances by `ratio` input frames per output frame.
//!
//! Interpolators ([`Quality`]):
//! - a 4-point, 3rd-order Catmull-Rom (cubic Hermite) spline: four multiply-adds per sample,
//!   cheap enough for the smallest receivers, and it reproduces any linear signal exactly (the
//!   playout simulation relies on that to read positions back from a ramp); but its frequency
//!   response depends on the fractional phase, which a drifting ratio sweeps, so high
//!   frequencies pick up distortion (about -30 dB THD+N at 10 kHz);
//! - a 16- or 32-tap Kaiser-windowed sinc read from a 1024-phase table: 3.5x and 6x the cubic's
//!   cost, distortion below -120 dB up to 10 kHz (16 taps, the playout's default) or 18 kHz
//!   (32 taps).
//!
//! At a ratio of exactly 1.0 and a phase of exactly 0 both copy their input bit for bit, so a
//! lossless run with drift correction off is byte-exact. `common/benches/jitter.rs` measures
//! CPU cost and distortion against rubato; `docs/playout.md` has the figures.
//!
//! State is kept across calls: the last input frames (as many as the interpolator has taps)
//! and the fractional read position, so input and output can be split into buffers of any
//! size.

/// Which interpolator a [`Resampler`] uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Quality {
    /// 4-point Catmull-Rom cubic: the cheapest; THD+N about -92 dB at 1 kHz, but its response
    /// varies with the fractional phase, which drift sweeps: -29 dB at 10 kHz, -11 dB at
    /// 18 kHz. For the smallest CPUs only.
    Cubic,
    /// 16-tap Kaiser-windowed sinc (1024-phase table, linear between phases): about 3.5x the
    /// cubic's cost; THD+N -122 dB at 1 and 10 kHz, -30 dB at 18 kHz. The default.
    #[default]
    Sinc16,
    /// 32-tap Kaiser-windowed sinc: about 1.7x the 16-tap cost; THD+N below -118 dB up to
    /// 18 kHz.
    Sinc32,
}

impl Quality {
    /// Frames in the interpolation window.
    fn taps(self) -> usize {
        match self {
            Quality::Cubic => 4,
            Quality::Sinc16 => 16,
            Quality::Sinc32 => 32,
        }
    }

    /// Index in the window of x\[n\], the frame the fractional phase counts from.
    fn center(self) -> usize {
        self.taps() / 2 - 1
    }
}

/// Largest sinc length (coefficient scratch size); lengths are multiples of 16.
const MAX_SINC_TAPS: usize = 32;
const SINC_PHASES: usize = 1024;
const KAISER_BETA: f64 = 12.0;

/// Streaming fine resampler for interleaved `f32` frames with a slowly varying ratio.
///
/// Positions: the next output frame is interpolated at input position
/// `p = (index of the next input frame to be pushed) + offset()`; `offset()` stays a few
/// frames negative in steady state (the interpolator's look-ahead: 2 frames for
/// [`Quality::Cubic`], 8 for [`Quality::Sinc16`]).
#[derive(Clone, Debug)]
pub struct Resampler {
    channels: usize,
    quality: Quality,
    taps: usize,
    /// Input history, planar: channel `c` owns `ring[c * 2 * taps..(c + 1) * 2 * taps]`, each
    /// frame stored twice (at `i` and `i + taps`) so a channel's window is always one
    /// contiguous slice starting at `head`, oldest first.
    ring: Vec<f32>,
    head: usize,
    /// Position of the next output frame relative to x\[n\] (window index `center`), in input
    /// frames. Output is produced while it is below 1.0.
    phase: f64,
    /// Sinc coefficients: `(SINC_PHASES + 1) * taps` (empty for cubic).
    table: Vec<f32>,
}

/// What one call to [`Resampler::process`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Processed {
    /// Input frames consumed (all of them unless the output filled up first).
    pub consumed: usize,
    /// Output frames written.
    pub produced: usize,
}

impl Resampler {
    /// A cubic resampler for `channels` interleaved channels (0 is taken as 1), history
    /// silent, phase 0.
    pub fn new(channels: usize) -> Self {
        Resampler::with_quality(channels, Quality::Cubic)
    }

    /// A resampler of the given quality for `channels` interleaved channels (0 is taken as
    /// 1); allocates its tables here, never afterwards.
    pub fn with_quality(channels: usize, quality: Quality) -> Self {
        let channels = channels.max(1);
        let taps = quality.taps();
        let table = match quality {
            Quality::Cubic => Vec::new(),
            Quality::Sinc16 | Quality::Sinc32 => sinc_table(taps, quality.center()),
        };
        let mut r = Resampler {
            channels,
            quality,
            taps,
            ring: vec![0.0; 2 * taps * channels],
            head: 0,
            phase: 0.0,
            table,
        };
        r.reset(0.0);
        r
    }

    /// Interleaved channels per frame.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The interpolator in use.
    pub fn quality(&self) -> Quality {
        self.quality
    }

    /// Frames between the next output position and the newest frame it needs (look-ahead).
    fn lookahead(&self) -> f64 {
        (self.taps - self.quality.center()) as f64
    }

    /// Forgets the history (treated as silence) and places the next output frame at
    /// `frac` (in `[0, 1)`) input frames after the next input frame to be pushed.
    pub fn reset(&mut self, frac: f64) {
        self.ring.fill(0.0);
        self.head = 0;
        let frac = if frac.is_finite() {
            frac.clamp(0.0, 0.999_999_999)
        } else {
            0.0
        };
        // The next pushed frame becomes the newest in the window; `lookahead` pushes bring
        // it to x[n].
        self.phase = self.lookahead() + frac;
    }

    /// Forgets the history and fills it with the newest frames of `history` (interleaved,
    /// oldest first; silence where it is short), placing the next output frame exactly on
    /// the next input frame to be pushed: a stream that went through unresampled until now
    /// continues without a seam.
    pub fn prime(&mut self, history: &[f32]) {
        self.reset(0.0);
        let ch = self.channels;
        let n = history.len() / ch;
        let skip = n.saturating_sub(self.taps);
        for frame in history[skip * ch..n * ch].chunks_exact(ch) {
            self.push(frame);
        }
        // `reset` placed the next output `lookahead` pushes ahead whatever the history.
    }

    /// Position of the next output frame relative to the next input frame to be pushed, in
    /// input frames (a few frames negative in steady state; `frac` right after
    /// [`Resampler::reset`]).
    pub fn offset(&self) -> f64 {
        self.phase - self.lookahead()
    }

    /// Moves the read position `frames` (>= 0) input frames forward without output (the
    /// frames it passes are read from input pushed later, as usual).
    pub fn skip(&mut self, frames: f64) {
        if frames.is_finite() && frames > 0.0 {
            self.phase += frames;
        }
    }

    fn push(&mut self, frame: &[f32]) {
        let taps = self.taps;
        let slot = self.head;
        for (c, x) in frame.iter().enumerate() {
            let base = c * 2 * taps;
            self.ring[base + slot] = *x;
            self.ring[base + slot + taps] = *x;
        }
        self.head += 1;
        if self.head == taps {
            self.head = 0;
        }
    }

    /// Consumes interleaved frames from `input` and writes interleaved frames to `output`,
    /// advancing the read position by `ratio` input frames per output frame. Stops when the
    /// output is full or the input is exhausted, whichever comes first; call again with the
    /// rest. Partial frames at the end of either slice are ignored.
    pub fn process(&mut self, input: &[f32], output: &mut [f32], ratio: f64) -> Processed {
        let ch = self.channels;
        let in_frames = input.len() / ch;
        let out_frames = output.len() / ch;
        let ratio = if ratio.is_finite() && ratio > 0.0 {
            ratio
        } else {
            1.0
        };
        let center = self.quality.center();
        let mut consumed = 0;
        let mut produced = 0;
        while produced < out_frames {
            if self.phase >= 1.0 {
                if consumed == in_frames {
                    break;
                }
                self.push(&input[consumed * ch..(consumed + 1) * ch]);
                consumed += 1;
                self.phase -= 1.0;
                continue;
            }
            let taps = self.taps;
            let head = self.head;
            let win = |c: usize| &self.ring[c * 2 * taps + head..c * 2 * taps + head + taps];
            let out = &mut output[produced * ch..(produced + 1) * ch];
            if self.phase == 0.0 {
                for (c, o) in out.iter_mut().enumerate() {
                    *o = win(c)[center];
                }
            } else {
                match self.quality {
                    Quality::Cubic => {
                        let w = catmull_rom_weights(self.phase as f32);
                        for (c, o) in out.iter_mut().enumerate() {
                            let x = win(c);
                            *o = w[0] * x[0] + w[1] * x[1] + w[2] * x[2] + w[3] * x[3];
                        }
                    }
                    Quality::Sinc16 | Quality::Sinc32 => {
                        let f = self.phase * SINC_PHASES as f64;
                        let i = (f as usize).min(SINC_PHASES - 1);
                        let a = (f - i as f64) as f32;
                        let t0 = &self.table[i * taps..(i + 1) * taps];
                        let t1 = &self.table[(i + 1) * taps..(i + 2) * taps];
                        let mut coef = [0.0f32; MAX_SINC_TAPS];
                        for ((k, x0), x1) in coef.iter_mut().zip(t0).zip(t1) {
                            *k = x0 + a * (x1 - x0);
                        }
                        for (c, o) in out.iter_mut().enumerate() {
                            let x = win(c);
                            let mut y = 0.0;
                            for (cs, xs) in coef[..taps].chunks_exact(16).zip(x.chunks_exact(16)) {
                                y += dot16(cs, xs);
                            }
                            *o = y;
                        }
                    }
                }
            }
            produced += 1;
            self.phase += ratio;
        }
        Processed { consumed, produced }
    }
}

/// Dot product of 16 coefficients with 16 samples (in a shape the compiler vectorises).
#[inline]
fn dot16(coef: &[f32], x: &[f32]) -> f32 {
    let (coef, x) = (&coef[..16], &x[..16]);
    let mut acc = [0.0f32; 8];
    for k in 0..8 {
        acc[k] = coef[k] * x[k] + coef[k + 8] * x[k + 8];
    }
    (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7])
}

/// Kaiser-windowed sinc fractional-delay coefficients for phases 0..=SINC_PHASES, each
/// normalised to unit DC gain. Tap `k` weighs input x\[n + k - center\].
fn sinc_table(taps: usize, center: usize) -> Vec<f32> {
    let half = taps as f64 / 2.0;
    let i0_beta = bessel_i0(KAISER_BETA);
    let mut table = vec![0.0f32; (SINC_PHASES + 1) * taps];
    let mut row = vec![0.0f64; taps];
    for p in 0..=SINC_PHASES {
        let mu = p as f64 / SINC_PHASES as f64;
        for (k, h) in row.iter_mut().enumerate() {
            let t = k as f64 - center as f64 - mu;
            let sinc = if t == 0.0 {
                1.0
            } else {
                (std::f64::consts::PI * t).sin() / (std::f64::consts::PI * t)
            };
            let r = t / half;
            let w = if r.abs() >= 1.0 {
                0.0
            } else {
                bessel_i0(KAISER_BETA * (1.0 - r * r).sqrt()) / i0_beta
            };
            *h = sinc * w;
        }
        let sum: f64 = row.iter().sum();
        for (k, h) in row.iter().enumerate() {
            table[p * taps + k] = (h / sum) as f32;
        }
    }
    table
}

/// Modified Bessel function of the first kind, order 0 (power series).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let q = x * x / 4.0;
    for k in 1..50 {
        term *= q / (k * k) as f64;
        sum += term;
        if term < 1e-12 * sum {
            break;
        }
    }
    sum
}

/// Catmull-Rom weights for x\[n-1\], x\[n\], x\[n+1\], x\[n+2\] at fraction `mu` past x\[n\].
/// They sum to 1 and reproduce linear signals exactly.
fn catmull_rom_weights(mu: f32) -> [f32; 4] {
    let mu2 = mu * mu;
    let mu3 = mu2 * mu;
    [
        -0.5 * mu3 + mu2 - 0.5 * mu,
        1.5 * mu3 - 2.5 * mu2 + 1.0,
        -1.5 * mu3 + 2.0 * mu2 + 0.5 * mu,
        0.5 * mu3 - 0.5 * mu2,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(r: &mut Resampler, input: &[f32], out_frames: usize, ratio: f64) -> Vec<f32> {
        let ch = r.channels();
        let mut out = vec![0.0; out_frames * ch];
        let mut i = 0;
        let mut o = 0;
        // Feed in uneven chunks to exercise state kept across calls.
        let mut chunk = 1;
        while o < out_frames && i < input.len() / ch {
            let end = (i + chunk).min(input.len() / ch);
            let p = r.process(&input[i * ch..end * ch], &mut out[o * ch..], ratio);
            i += p.consumed;
            o += p.produced;
            chunk = chunk % 7 + 3;
        }
        out.truncate(o * ch);
        out
    }

    #[test]
    fn unit_ratio_zero_phase_is_bit_exact_with_three_frame_delay() {
        let input: Vec<f32> = (0..2000)
            .map(|i| ((i * 7919) % 65_536) as f32 / 65_536.0)
            .collect();
        let mut r = Resampler::new(2);
        assert_eq!(r.offset(), 0.0);
        let out = run(&mut r, &input, 900, 1.0);
        assert_eq!(out.len(), 900 * 2);
        assert_eq!(&out[..], &input[..900 * 2]);
        // 902 frames pushed (input is pulled lazily), next output at frame 900.
        assert_eq!(r.offset(), -2.0);
    }

    #[test]
    fn linear_ramp_is_reproduced_at_fractional_positions() {
        let input: Vec<f32> = (0..4000).map(|i| i as f32 / 4096.0).collect();
        let mut r = Resampler::new(1);
        r.reset(0.25);
        let ratio = 1.0 + 300e-6;
        let out = run(&mut r, &input, 3000, ratio);
        // The first output frame's left neighbour is the (silent) history: skip it.
        for (k, y) in out.iter().enumerate().skip(1) {
            let expect = (0.25 + k as f64 * ratio) / 4096.0;
            assert!(
                (*y as f64 - expect).abs() < 2e-7,
                "frame {k}: {y} vs {expect}"
            );
        }
    }

    #[test]
    fn offset_tracks_the_read_position() {
        let mut r = Resampler::new(1);
        r.reset(0.5);
        let input = [0.0f32; 100];
        let mut out = [0.0f32; 50];
        let ratio = 0.9995;
        let p = r.process(&input, &mut out, ratio);
        assert_eq!(p.produced, 50);
        // Next output position relative to next input frame index `p.consumed`.
        let expect = 0.5 + 50.0 * ratio - p.consumed as f64;
        assert!(
            (r.offset() - expect).abs() < 1e-9,
            "{} {}",
            r.offset(),
            expect
        );
        assert!(r.offset() > -3.0 && r.offset() < -1.0);
    }

    #[test]
    fn stops_when_input_runs_out() {
        let mut r = Resampler::new(2);
        let mut out = [0.0f32; 20];
        let p = r.process(&[0.5; 6], &mut out, 1.0);
        // Three frames in: the first one comes out (zero phase needs no look-ahead beyond 2).
        assert_eq!(
            p,
            Processed {
                consumed: 3,
                produced: 1
            }
        );
        assert_eq!(&out[..2], &[0.5, 0.5]);
    }

    #[test]
    fn sinc_unit_ratio_zero_phase_is_bit_exact_with_eight_frame_look_ahead() {
        let input: Vec<f32> = (0..2000)
            .map(|i| ((i * 7919) % 65_536) as f32 / 65_536.0)
            .collect();
        let mut r = Resampler::with_quality(2, Quality::Sinc16);
        let out = run(&mut r, &input, 900, 1.0);
        assert_eq!(&out[..], &input[..900 * 2]);
        assert_eq!(r.offset(), -8.0);
    }

    #[test]
    fn sinc_interpolates_a_sine_between_samples() {
        // 5 kHz at 48 kHz, read at +250 ppm from a quarter-frame offset.
        let w = 2.0 * std::f64::consts::PI * 5_000.0 / 48_000.0;
        let input: Vec<f32> = (0..6000)
            .map(|n| (0.5 * (w * n as f64).sin()) as f32)
            .collect();
        let mut r = Resampler::with_quality(1, Quality::Sinc16);
        r.reset(0.25);
        let ratio = 1.0 + 250e-6;
        let out = run(&mut r, &input, 5000, ratio);
        let mut worst = 0.0f64;
        for (k, y) in out.iter().enumerate().skip(16) {
            let expect = 0.5 * (w * (0.25 + k as f64 * ratio)).sin();
            worst = worst.max((*y as f64 - expect).abs());
        }
        // Under -90 dB of full scale.
        assert!(worst < 3e-5, "worst error {worst}");
    }

    #[test]
    fn prime_continues_a_copied_stream_without_a_seam() {
        // A sine copied as-is up to frame 3000, then resampled at ratio 1.0 after priming with
        // what was copied: the output goes on with frame 3000 and matches the input exactly
        // (at ratio 1.0 and phase 0 the sinc copies).
        let input: Vec<f32> = (0..6000).map(|n| (0.01 * n as f32).sin()).collect();
        let mut r = Resampler::with_quality(1, Quality::Sinc16);
        r.prime(&input[..3000]);
        assert_eq!(r.offset(), 0.0);
        let out = run(&mut r, &input[3000..], 2000, 1.0);
        assert_eq!(&out[..], &input[3000..5000]);
        // Slightly faster: the first frames still follow the copied ones smoothly.
        let mut r = Resampler::with_quality(1, Quality::Sinc16);
        r.prime(&input[..3000]);
        let out = run(&mut r, &input[3000..], 2000, 1.0 + 300e-6);
        for (k, y) in out.iter().enumerate() {
            let x = 3000.0 + k as f64 * (1.0 + 300e-6);
            let expect = (0.01 * x).sin();
            assert!(
                (*y as f64 - expect).abs() < 1e-4,
                "frame {k}: {y} vs {expect}"
            );
        }
    }

    #[test]
    fn garbage_ratio_is_treated_as_unity() {
        let mut r = Resampler::new(1);
        let mut out = [0.0f32; 4];
        let p = r.process(&[1.0; 8], &mut out, f64::NAN);
        assert_eq!(p.produced, 4);
        assert_eq!(out, [1.0; 4]);
    }
}
