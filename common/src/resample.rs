//! Fine-ratio resampling of interleaved `f32` audio for drift correction.
//!
//! The playout controller (`crate::playout`) steers the speed at which the receiver consumes the
//! stream by a few hundred ppm at most, so that a DAC whose crystal runs fast or slow still plays
//! every frame at its stamped time. [`Resampler`] turns a stream of input frames into output
//! frames read at a fractional position that advances by `ratio` input frames per output frame.
//!
//! The interpolator is a 4-point, 3rd-order Catmull-Rom (cubic Hermite) spline: four
//! multiply-adds per sample, cheap enough for the smallest receivers, and it reproduces any
//! linear signal exactly (the playout simulation relies on that to read positions back from a
//! ramp). At a ratio of exactly 1.0 and a phase of exactly 0 it copies its input bit for bit,
//! so a lossless run with drift correction off is byte-exact. `common/benches/jitter.rs`
//! measures its CPU cost and distortion; `docs/playout.md` has the figures.
//!
//! State is kept across calls: the last four input frames and the fractional read position, so
//! input and output can be split into buffers of any size.

/// Frames of history the interpolator looks at (x\[n-1\], x\[n\], x\[n+1\], x\[n+2\]).
const TAPS: usize = 4;

/// Streaming cubic resampler for interleaved `f32` frames with a slowly varying ratio.
///
/// Positions: the next output frame is interpolated at input position
/// `p = (index of the next input frame to be pushed) + offset()`, where `offset()` lies in
/// between -3 and -1 in steady state (the interpolator needs two frames of look-ahead).
#[derive(Clone, Debug)]
pub struct Resampler {
    channels: usize,
    /// The last `TAPS` input frames, oldest first (interleaved).
    window: Vec<f32>,
    /// Position of the next output frame relative to the second frame of `window`, in input
    /// frames. Output is produced while it is below 1.0.
    phase: f64,
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
    /// A resampler for `channels` interleaved channels, history silent, phase 0.
    ///
    /// # Panics
    /// If `channels` is 0 (a programming error, not a data error).
    pub fn new(channels: usize) -> Self {
        assert!(channels > 0, "Resampler needs at least one channel");
        let mut r = Resampler {
            channels,
            window: vec![0.0; TAPS * channels],
            phase: 0.0,
        };
        r.reset(0.0);
        r
    }

    /// Interleaved channels per frame.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Forgets the history (treated as silence) and places the next output frame at
    /// `frac` (in `[0, 1)`) input frames after the next input frame to be pushed.
    pub fn reset(&mut self, frac: f64) {
        self.window.fill(0.0);
        let frac = if frac.is_finite() {
            frac.clamp(0.0, 0.999_999_999)
        } else {
            0.0
        };
        // The next pushed frame becomes window[3]; three pushes bring it to window[1].
        self.phase = 3.0 + frac;
    }

    /// Position of the next output frame relative to the next input frame to be pushed, in
    /// input frames (between -3 and -1 in steady state; `frac` right after
    /// [`Resampler::reset`]).
    pub fn offset(&self) -> f64 {
        self.phase - 3.0
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
        let mut consumed = 0;
        let mut produced = 0;
        while produced < out_frames {
            if self.phase >= 1.0 {
                if consumed == in_frames {
                    break;
                }
                self.window.copy_within(ch.., 0);
                self.window[(TAPS - 1) * ch..]
                    .copy_from_slice(&input[consumed * ch..(consumed + 1) * ch]);
                consumed += 1;
                self.phase -= 1.0;
                continue;
            }
            let out = &mut output[produced * ch..(produced + 1) * ch];
            if self.phase == 0.0 {
                out.copy_from_slice(&self.window[ch..2 * ch]);
            } else {
                let w = catmull_rom_weights(self.phase as f32);
                let (x0, rest) = self.window.split_at(ch);
                let (x1, rest) = rest.split_at(ch);
                let (x2, x3) = rest.split_at(ch);
                for c in 0..ch {
                    out[c] = w[0] * x0[c] + w[1] * x1[c] + w[2] * x2[c] + w[3] * x3[c];
                }
            }
            produced += 1;
            self.phase += ratio;
        }
        Processed { consumed, produced }
    }
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
    fn garbage_ratio_is_treated_as_unity() {
        let mut r = Resampler::new(1);
        let mut out = [0.0f32; 4];
        let p = r.process(&[1.0; 8], &mut out, f64::NAN);
        assert_eq!(p.produced, 4);
        assert_eq!(out, [1.0; 4]);
    }
}
