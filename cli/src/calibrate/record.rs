//! Records the microphone in a thread, through the sender's inputs (`pulse[:SOURCE]`,
//! `fifo:PATH` with raw f32le mono 48 kHz, ...): the samples without a break, and the capture
//! time of each block on this host's CLOCK_MONOTONIC, to know which stretch of the recording
//! each room played in.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use wavesync_common::calibrate::solve::line;
use wavesync_sender::input::{self, Block, InputOptions, InputSpec, RawFormat};

/// What the microphone heard.
#[derive(Debug, Default)]
pub struct Recording {
    /// Mono samples.
    pub samples: Vec<f32>,
    /// (capture time of the block's first sample, ns; its index in `samples`).
    pub blocks: Vec<(i64, usize)>,
    /// Samples per second.
    pub rate: u32,
}

impl Recording {
    /// The index of the sample captured at `t_ns` (clamped to the recording), from a line
    /// fitted to all blocks' capture times: the stamps of a live input jitter and may jump
    /// when its loop restarts, while its sample count does not.
    pub fn index_at(&self, t_ns: i64) -> usize {
        let Some(&(c0, _)) = self.blocks.first() else {
            return 0;
        };
        // Capture time (relative to the first block, s) against index: its intercept and
        // slope (seconds per sample; 1 / rate when the microphone keeps time).
        let pts: Vec<(f64, f64)> = self
            .blocks
            .iter()
            .map(|&(c, i)| (i as f64, (c - c0) as f64 / 1e9))
            .collect();
        let (b, mut slope) = line(&pts);
        if !(slope > 0.5 / f64::from(self.rate) && slope < 2.0 / f64::from(self.rate)) {
            slope = 1.0 / f64::from(self.rate);
        }
        let i = (((t_ns - c0) as f64 / 1e9 - b) / slope).round();
        i.clamp(0.0, self.samples.len() as f64) as usize
    }

    /// The samples captured between `from_ns` and `to_ns`, and the index of the first.
    pub fn between(&self, from_ns: i64, to_ns: i64) -> (&[f32], usize) {
        let (a, b) = (self.index_at(from_ns), self.index_at(to_ns));
        (&self.samples[a..b.max(a)], a)
    }
}

/// The microphone recording in a thread.
pub struct Recorder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Recording, String>>>,
}

impl Recorder {
    /// Opens `spec` (a sender input) as mono at `rate` and starts recording.
    pub fn start(spec: &str, rate: u32) -> Result<Recorder, String> {
        let parsed: InputSpec = spec.parse().map_err(|e| format!("--mic: {e}"))?;
        if matches!(
            parsed,
            InputSpec::Tone { .. } | InputSpec::Chirp { .. } | InputSpec::Wav(_)
        ) {
            return Err(format!(
                "--mic {spec}: a microphone is pulse[:SOURCE], fifo:PATH, unix:PATH or -"
            ));
        }
        let opts = InputOptions {
            rate: Some(rate),
            channels: Some(1),
            raw_format: RawFormat::F32Le,
            // Every sample as captured: the solver fits the microphone's clock itself.
            retime: false,
            ..InputOptions::default()
        };
        let mut mic = input::open(&parsed, &opts).map_err(|e| format!("--mic: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let what = mic.describe();
        let thread = std::thread::Builder::new()
            .name("calibrate-mic".into())
            .spawn(move || {
                let mut rec = Recording {
                    rate,
                    ..Recording::default()
                };
                let mut buf = vec![0f32; 4096];
                while !s.load(Ordering::Relaxed) {
                    match mic
                        .next_block(&mut buf)
                        .map_err(|e| format!("--mic: {e}"))?
                    {
                        Block::Audio { capture, frames } => {
                            let c = capture.ns();
                            rec.blocks.push((c, rec.samples.len()));
                            rec.samples.extend_from_slice(&buf[..frames]);
                        }
                        Block::Idle => {}
                        Block::End => return Err(format!("{what}: the microphone ended")),
                    }
                }
                Ok(rec)
            })
            .map_err(|e| format!("cannot start the recording thread: {e}"))?;
        Ok(Recorder {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops and returns the recording.
    pub fn stop(mut self) -> Result<Recording, String> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            _ => Err("the recording thread failed".into()),
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_map_to_samples_through_the_blocks() {
        let r = Recording {
            samples: vec![0.0; 960],
            blocks: vec![(1_000_000_000, 0), (1_010_000_000, 480)],
            rate: 48_000,
        };
        assert_eq!(r.index_at(0), 0);
        assert_eq!(r.index_at(1_005_000_000), 240);
        assert_eq!(r.index_at(1_015_000_000), 720);
        // A stamp that jumped does not move the samples around it much.
        let j = Recording {
            samples: vec![0.0; 4800],
            blocks: (0..10)
                .map(|k| {
                    (
                        k * 10_000_000 + if k == 5 { 30_000_000 } else { 0 },
                        k as usize * 480,
                    )
                })
                .collect(),
            rate: 48_000,
        };
        assert!((j.index_at(45_000_000) as i64 - 2160).abs() < 200);
        assert_eq!(r.index_at(9_000_000_000), 960);
        let (s, at) = r.between(1_005_000_000, 1_010_000_000);
        assert_eq!((s.len(), at), (240, 240));
        assert_eq!(r.between(1_010_000_000, 1_000_000_000).0.len(), 0);
        assert_eq!(Recording::default().index_at(5), 0);
    }
}
