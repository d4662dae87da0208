//! Live inputs resampled to CLOCK_MONOTONIC.
//!
//! A live input (a pipe, a socket, PulseAudio) is paced by someone else's clock: a capture
//! card, another machine's sound server. Its blocks are stamped by [`super::live::LiveClock`]
//! (arrival smoothed by a delay-locked loop), which follows that clock; but the sender's
//! stamps count frames at the nominal rate, so a source 300 ppm fast would drift 20 ms off its
//! stamps in about a minute and restart the run. [`LiveRetimer`] puts the frames back on
//! CLOCK_MONOTONIC: the rate-match loop and resampler of `wavesync_common::follow` (the same
//! ones the PipeWire module runs), fed with the smoothed capture times. A source whose clock
//! agrees with ours stays within the loop's 2 ms threshold and passes bit for bit.

use wavesync_common::follow::{FollowConfig, FollowStats, Retimer};
use wavesync_common::resample::Quality;
use wavesync_common::time::LocalNs;

/// The retiming state of one live input, with the buffer its raw frames are decoded into.
#[derive(Debug)]
pub struct LiveRetimer {
    what: String,
    retimer: Retimer,
    channels: usize,
    input: Vec<f32>,
    /// What was logged: engaged, re-anchors.
    logged: (bool, u64),
    /// Off: frames and stamps pass as they came.
    enabled: bool,
}

impl LiveRetimer {
    /// For input `what` (for the log) of `channels` channels at `rate`, blocks of at most
    /// `block_frames` frames.
    pub fn new(what: &str, rate: u32, channels: usize, block_frames: usize) -> Self {
        let channels = channels.max(1);
        LiveRetimer {
            what: what.to_string(),
            retimer: Retimer::new(rate, channels, FollowConfig::LIVE, Quality::Sinc32),
            channels,
            input: vec![0.0; block_frames.max(1) * channels],
            logged: (false, 0),
            enabled: true,
        }
    }

    /// With `false`, passes frames and capture times through untouched (for measurements).
    pub fn enabled(mut self, on: bool) -> Self {
        self.enabled = on;
        self
    }

    /// The most input frames (at most the block size) whose output fits in `out_frames`.
    pub fn input_frames_for(&self, out_frames: usize) -> usize {
        let block = self.input.len() / self.channels;
        let mut n = block.min(out_frames);
        if !self.enabled {
            return n;
        }
        while n > 0 && self.retimer.max_output_frames(n) > out_frames {
            n = n * 9 / 10;
        }
        n
    }

    /// Where to decode `frames` input frames (at most the block size).
    pub fn input(&mut self, frames: usize) -> &mut [f32] {
        let n = (frames * self.channels).min(self.input.len());
        &mut self.input[..n]
    }

    /// Retimes the `frames` frames decoded into [`LiveRetimer::input`], the first captured at
    /// `capture`, into `out`; returns the capture time of the first output frame and the
    /// output frames (0 is possible just after the loop engages).
    pub fn finish(&mut self, capture: LocalNs, frames: usize, out: &mut [f32]) -> (LocalNs, usize) {
        let n = (frames * self.channels).min(self.input.len());
        if !self.enabled {
            let n = n.min(out.len() / self.channels * self.channels);
            out[..n].copy_from_slice(&self.input[..n]);
            return (capture, n / self.channels);
        }
        let r = self.retimer.process(capture, &self.input[..n], out);
        let st = self.retimer.stats();
        if st.engaged && !self.logged.0 {
            self.logged.0 = true;
            log::info!(
                "{}: the input's clock departs from ours ({:+.2} ms, about {:+.0} ppm): \
                 resampling it to CLOCK_MONOTONIC",
                self.what,
                st.error_ns / 1e6,
                st.rate_ppm
            );
        }
        if st.reanchors > self.logged.1 {
            self.logged.1 = st.reanchors;
            log::debug!(
                "{}: input timing jumped; the clock follower re-anchors (rate {:+.1} ppm kept)",
                self.what,
                st.rate_ppm
            );
        }
        (r.capture, r.frames)
    }

    /// The loop's figures.
    pub fn stats(&self) -> FollowStats {
        self.retimer.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::super::live::LiveClock;
    use super::*;
    use wavesync_common::format::{SampleFormat, StreamFormat};
    use wavesync_common::packetizer::{Packetizer, PacketizerConfig};
    use wavesync_common::time::TimelineNs;

    /// A source `ppm` fast delivering 5 ms blocks in bursts of five, each burst 0-3 ms late,
    /// for `seconds` of stream time (simulated: times lie in the past, nothing sleeps),
    /// stamped by [`LiveClock`], retimed, packetized. Returns (runs, resyncs, worst departure
    /// ns, loop stats).
    fn pace(ppm: f64, seconds: f64, retime: bool) -> (u64, u64, i64, FollowStats) {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ ppm.to_bits();
        let mut rnd = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let format = StreamFormat {
            rate: 48_000,
            channels: 1,
            sample: SampleFormat::L16,
        };
        let mut pk = Packetizer::new(PacketizerConfig::new(format, 150_000_000, 1)).unwrap();
        let mut clock = LiveClock::new("test", 48_000);
        let mut rt = LiveRetimer::new("test", 48_000, 1, 240);
        let mut out = vec![0.0f32; 480];
        let ns_per_frame = 1e9 / (48_000.0 * (1.0 + ppm * 1e-6));
        let mut frames = 0u64;
        let mut worst = 0i64;
        let mut k = 0u64;
        while (frames as f64) * ns_per_frame < seconds * 1e9 {
            let burst_end = 1e9 + (frames + 1_200) as f64 * ns_per_frame;
            let arrival = (burst_end + rnd() * 3e6) as i64;
            for i in 0..5 {
                let n = rt.input_frames_for(out.len()).min(240);
                assert_eq!(n, 240);
                for x in rt.input(n).iter_mut() {
                    k += 1;
                    *x = 0.25 * (k as f32 * 0.05).sin();
                }
                let capture = clock.stamp(LocalNs::from_ns(arrival + i * 10_000), n);
                let (capture, m) = if retime {
                    rt.finish(capture, n, &mut out)
                } else {
                    out[..n].copy_from_slice(rt.input(n));
                    (capture, n)
                };
                pk.push(
                    TimelineNs::from_master_monotonic(capture),
                    &out[..m],
                    |_| {},
                );
                worst = worst.max(pk.stats().last_departure_ns.abs());
                frames += n as u64;
            }
        }
        assert_eq!(clock.stats().restarts, 0);
        let s = pk.stats();
        (s.runs_started, s.resyncs, worst, rt.stats())
    }

    /// Ten minutes of stream time from a source `ppm` off: one run, departures far below the
    /// 20 ms threshold (the loop engages at 2 ms), the source's rate found.
    fn ten_minutes(ppm: f64) {
        let (runs, resyncs, worst, st) = pace(ppm, 600.0, true);
        eprintln!(
            "source {ppm:+} ppm, 10 min: runs {runs}, resyncs {resyncs}, worst departure \
             {:.2} ms, loop followed {:+.1} ppm",
            worst as f64 / 1e6,
            st.rate_ppm
        );
        assert_eq!((runs, resyncs), (1, 0), "{ppm} ppm");
        assert!(worst < 5_000_000, "{ppm} ppm: {worst} ns");
        assert!((st.rate_ppm - ppm).abs() < 10.0, "{ppm}: {}", st.rate_ppm);
    }

    #[test]
    fn a_source_300_ppm_fast_plays_ten_minutes_in_one_run() {
        ten_minutes(300.0);
    }

    #[test]
    fn a_source_300_ppm_slow_plays_ten_minutes_in_one_run() {
        ten_minutes(-300.0);
    }

    #[test]
    fn without_retiming_such_a_source_restarts_the_run() {
        let (_, resyncs, _, _) = pace(300.0, 200.0, false);
        assert!(resyncs >= 2, "{resyncs}");
    }

    #[test]
    fn disabled_it_passes_a_drifting_source_untouched() {
        let mut rt = LiveRetimer::new("test", 48_000, 2, 240).enabled(false);
        let mut out = vec![0.0f32; 480];
        // 2 ms late every block: the loop would engage; disabled, nothing changes.
        for b in 0..400i64 {
            let n = rt.input_frames_for(240);
            assert_eq!(n, 240);
            for (i, x) in rt.input(n).iter_mut().enumerate() {
                *x = (b * 1000 + i as i64) as f32;
            }
            let at = LocalNs::from_ns(b * 5_100_000);
            let (c, m) = rt.finish(at, n, &mut out);
            assert_eq!((c, m), (at, 240));
            assert_eq!(out[479], (b * 1000 + 479) as f32);
        }
        assert!(!rt.stats().engaged);
    }

    #[test]
    fn a_source_on_our_clock_passes_bit_for_bit() {
        let (runs, resyncs, _, st) = pace(0.0, 60.0, true);
        assert_eq!((runs, resyncs), (1, 0));
        assert!(!st.engaged);
    }
}
