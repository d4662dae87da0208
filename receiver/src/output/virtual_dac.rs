//! The virtual DAC: a sound card simulated on CLOCK_MONOTONIC, for tests and the lab.
//!
//! It consumes frames in real time at `rate * (1 + ppm / 1e6)` from a ring of `buffer_frames`,
//! and each frame leaves the "DAC" a fixed `latency` after it left the ring (a real card's
//! codec and FIFO). Nothing runs in the background: the consumed count is computed from the
//! clock whenever it is asked. A run starts at the first write after open or after an
//! underrun: frame `k` of a run that started at `s` plays at `s + k / (rate * (1 + ppm/1e6)) +
//! latency`. When the ring runs dry the DAC stops (an underrun, counted, reported once as
//! [`OutputError::Underrun`] like ALSA's EPIPE) and restarts at the next write.
//!
//! It reports its delay the way ALSA does (queued frames plus the latency, in whole frames of
//! the nominal rate, with the time of the reading); in `coarse` mode the pointer only moves per
//! period, like a batch device, and the prediction goes through the same pointer fit as ALSA.
//!
//! Log (one line per write, buffered, flushed every second and on close):
//! `<stream_position or -1> <frames> <played_realtime_ns> <played_monotonic_ns>`, where
//! `played_*` is the true instant the first frame of those frames left the DAC. A write that
//! starts with silence and then plays (see [`WriteMeta::audio_start`]) gives two lines.
//! Optionally the raw audio is written too (interleaved f32 or s16, little-endian).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use wavesync_common::time::{LocalNs, NS_PER_SEC};

use super::convert::{convert, DeviceFormat};
use super::pointer::{PointerMode, PointerTracker};
use super::{ms_to_frames, DacTiming, Output, OutputError, OutputInfo, WriteMeta};
use crate::clock_io::{monotonic_ns, realtime_ns};

/// Sample format of the virtual DAC's optional audio file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AudioFileFormat {
    /// Interleaved f32 little-endian, exactly what was written.
    #[default]
    F32Le,
    /// Interleaved s16 little-endian.
    S16Le,
}

/// Parameters of a [`VirtualDac`].
#[derive(Clone, Debug, PartialEq)]
pub struct VirtualConfig {
    /// Crystal error: the DAC consumes `rate * (1 + ppm / 1e6)` frames per second.
    pub ppm: f64,
    /// Fixed latency between leaving the ring and leaving the DAC, in ms (part of the delay).
    pub latency_ms: f64,
    /// Report the pointer only per period, like a batch device.
    pub coarse: bool,
    /// Where to write the play log, if anywhere.
    pub log: Option<PathBuf>,
    /// Where to write the played audio, if anywhere.
    pub audio: Option<PathBuf>,
    /// Format of the audio file.
    pub audio_format: AudioFileFormat,
    /// Period in ms (the wake-up granularity of [`Output::wait`]).
    pub period_ms: f64,
    /// Ring size in frames; default 4 periods.
    pub buffer_frames: Option<u32>,
    /// How the delay is turned into a prediction.
    pub pointer: PointerMode,
}

impl Default for VirtualConfig {
    fn default() -> Self {
        VirtualConfig {
            ppm: 0.0,
            latency_ms: 2.0,
            coarse: false,
            log: None,
            audio: None,
            audio_format: AudioFileFormat::F32Le,
            period_ms: 5.0,
            buffer_frames: None,
            pointer: PointerMode::Auto,
        }
    }
}

/// A run: frames written since the DAC (re)started at `start`.
#[derive(Clone, Copy, Debug)]
struct Run {
    start: LocalNs,
    written: i64,
}

struct Open {
    channels: usize,
    period: i64,
    buffer: i64,
    latency_ns: i64,
    latency_frames: i64,
    /// Frames consumed per ns.
    speed: f64,
    coarse: bool,
    run: Option<Run>,
    tracker: PointerTracker,
    log: Option<(PathBuf, BufWriter<File>)>,
    audio: Option<(PathBuf, BufWriter<File>, AudioFileFormat)>,
    scratch: Vec<u8>,
    last_flush: LocalNs,
    underruns: u64,
    frames_played: u64,
}

/// The simulated DAC; see the module documentation.
pub struct VirtualDac {
    cfg: VirtualConfig,
    open: Option<Open>,
}

fn create(path: &Path) -> Result<BufWriter<File>, OutputError> {
    File::create(path)
        .map(|f| BufWriter::with_capacity(64 * 1024, f))
        .map_err(|source| OutputError::File {
            path: path.to_path_buf(),
            source,
        })
}

/// Sleeps until `t` on CLOCK_MONOTONIC.
fn sleep_until(t: LocalNs) {
    let ts = libc::timespec {
        tv_sec: (t.ns() / NS_PER_SEC) as libc::time_t,
        tv_nsec: (t.ns() % NS_PER_SEC) as libc::c_long,
    };
    loop {
        // SAFETY: `ts` is a valid timespec; the remainder pointer may be null with ABSTIME.
        let r = unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &ts,
                std::ptr::null_mut(),
            )
        };
        if r != libc::EINTR {
            break;
        }
    }
}

impl Open {
    /// Frames that have left the ring by `now` in the current run (exact, not as reported).
    fn consumed(&self, run: &Run, now: LocalNs) -> i64 {
        (((now - run.start) as f64) * self.speed).floor() as i64
    }

    /// The pointer as the device reports it (per period in coarse mode).
    fn reported(&self, consumed: i64) -> i64 {
        if self.coarse {
            consumed / self.period * self.period
        } else {
            consumed
        }
    }

    /// Ends the run if the ring ran dry before `now`.
    fn check_underrun(&mut self, now: LocalNs) -> Result<(), OutputError> {
        if let Some(run) = self.run {
            if self.consumed(&run, now) >= run.written {
                self.run = None;
                self.underruns += 1;
                self.frames_played += run.written as u64;
                self.tracker.reset();
                return Err(OutputError::Underrun);
            }
        }
        Ok(())
    }

    /// True instant (local) the frame `k` of `run` leaves the DAC.
    fn played_at(&self, run: &Run, k: i64) -> LocalNs {
        run.start + (k as f64 / self.speed).round() as i64 + self.latency_ns
    }

    fn log_line(&mut self, pos: Option<f64>, frames: usize, mono: LocalNs, rt_offset: i64) {
        if let Some((path, w)) = self.log.as_mut() {
            let r = match pos {
                Some(p) => writeln!(w, "{p:.3} {frames} {} {mono}", mono.ns() + rt_offset),
                None => writeln!(w, "-1 {frames} {} {mono}", mono.ns() + rt_offset),
            };
            if let Err(e) = r {
                log::warn!("virtual DAC: cannot write the log {path:?}: {e}; logging stops");
                self.log = None;
            }
        }
    }

    fn flush(&mut self) {
        if let Some((path, w)) = self.log.as_mut() {
            if let Err(e) = w.flush() {
                log::warn!("virtual DAC: cannot write the log {path:?}: {e}");
            }
        }
        if let Some((path, w, _)) = self.audio.as_mut() {
            if let Err(e) = w.flush() {
                log::warn!("virtual DAC: cannot write the audio file {path:?}: {e}");
            }
        }
    }
}

impl VirtualDac {
    /// A virtual DAC with these parameters (not open yet).
    pub fn new(cfg: VirtualConfig) -> Self {
        VirtualDac { cfg, open: None }
    }

    /// Underruns since open.
    pub fn underruns(&self) -> u64 {
        self.open.as_ref().map_or(0, |o| o.underruns)
    }

    /// Frames that have left the ring since open (finished runs plus the current one).
    pub fn frames_played(&self) -> u64 {
        let Some(o) = self.open.as_ref() else {
            return 0;
        };
        let now = monotonic_ns();
        let current = o
            .run
            .map_or(0, |r| o.consumed(&r, now).min(r.written).max(0) as u64);
        o.frames_played + current
    }
}

impl Output for VirtualDac {
    fn open(&mut self, rate: u32, channels: u8) -> Result<OutputInfo, OutputError> {
        self.close();
        let c = &self.cfg;
        if rate == 0 || channels == 0 {
            return Err(OutputError::BadParameter {
                name: "rate/channels",
                why: "must be positive",
            });
        }
        if !(-10_000.0..=10_000.0).contains(&c.ppm) {
            return Err(OutputError::BadParameter {
                name: "virtual ppm",
                why: "must be within +-10000",
            });
        }
        if !(0.0..=10_000.0).contains(&c.latency_ms)
            || !(0.0..=1000.0).contains(&c.period_ms)
            || c.period_ms == 0.0
        {
            return Err(OutputError::BadParameter {
                name: "virtual latency/period",
                why: "latency must be 0..10000 ms, period 0..1000 ms",
            });
        }
        let period = ms_to_frames(c.period_ms, rate) as i64;
        let buffer = c.buffer_frames.map_or(4 * period, |b| b as i64).max(period);
        let latency_ns = (c.latency_ms * 1e6).round() as i64;
        let log = match &c.log {
            Some(p) => Some((p.clone(), create(p)?)),
            None => None,
        };
        let audio = match &c.audio {
            Some(p) => Some((p.clone(), create(p)?, c.audio_format)),
            None => None,
        };
        self.open = Some(Open {
            channels: channels as usize,
            period,
            buffer,
            latency_ns,
            latency_frames: (latency_ns as f64 * rate as f64 / 1e9).round() as i64,
            speed: rate as f64 * (1.0 + c.ppm * 1e-6) / 1e9,
            coarse: c.coarse,
            run: None,
            tracker: PointerTracker::new(rate, c.pointer),
            log,
            audio,
            scratch: vec![0; buffer as usize * channels as usize * 4],
            last_flush: monotonic_ns(),
            underruns: 0,
            frames_played: 0,
        });
        Ok(OutputInfo {
            rate,
            channels,
            device_channels: channels as u32,
            period_frames: period as usize,
            buffer_frames: buffer as usize,
            device_format: DeviceFormat::FloatLe,
            positions: None,
            device: format!(
                "virtual ({:+} ppm, {} ms latency{})",
                c.ppm,
                c.latency_ms,
                if c.coarse { ", coarse" } else { "" }
            ),
        })
    }

    fn wait(&mut self, timeout_ms: i32) -> Result<bool, OutputError> {
        let o = self.open.as_mut().ok_or(OutputError::NotOpen)?;
        let now = monotonic_ns();
        o.check_underrun(now)?;
        let Some(run) = o.run else {
            return Ok(true);
        };
        // Room for a period once the reported pointer reaches `need`.
        let mut need = run.written - o.buffer + o.period;
        if o.coarse {
            need = (need + o.period - 1).div_euclid(o.period) * o.period;
        }
        if o.reported(o.consumed(&run, now)) >= need {
            return Ok(true);
        }
        let wake = run.start + (need as f64 / o.speed).ceil() as i64;
        let deadline = if timeout_ms < 0 {
            wake
        } else {
            wake.min(now + timeout_ms as i64 * 1_000_000)
        };
        sleep_until(deadline);
        Ok(wake <= deadline)
    }

    fn timing(&mut self) -> Result<DacTiming, OutputError> {
        let o = self.open.as_mut().ok_or(OutputError::NotOpen)?;
        let now = monotonic_ns();
        o.check_underrun(now)?;
        let Some(run) = o.run else {
            return Ok(DacTiming {
                next_frame_local: now + o.latency_ns,
                delay_frames: o.latency_frames,
                avail_frames: o.buffer as usize,
                settled: false,
            });
        };
        let reported = o.reported(o.consumed(&run, now));
        let queued = run.written - reported;
        let delay = queued + o.latency_frames;
        let next = o.tracker.predict(now, run.written, delay);
        Ok(DacTiming {
            next_frame_local: next,
            delay_frames: delay,
            avail_frames: (o.buffer - queued).max(0) as usize,
            settled: true,
        })
    }

    fn write(&mut self, samples: &[f32], meta: &WriteMeta) -> Result<usize, OutputError> {
        let o = self.open.as_mut().ok_or(OutputError::NotOpen)?;
        let mono1 = monotonic_ns();
        let real = realtime_ns();
        let now = monotonic_ns();
        let rt_offset = real - (mono1.ns() + now.ns()) / 2;
        o.check_underrun(now)?;
        let frames_in = samples.len() / o.channels;
        let mut run = o.run.unwrap_or(Run {
            start: now,
            written: 0,
        });
        let queued = run.written - o.reported(o.consumed(&run, now));
        let n = frames_in.min((o.buffer - queued).max(0) as usize);
        if n == 0 {
            return Ok(0);
        }
        if o.run.is_none() {
            o.tracker.reset();
        }
        let first = o.played_at(&run, run.written);
        match (meta.stream_position, meta.audio_start) {
            (Some(p), _) => o.log_line(Some(p), n, first, rt_offset),
            (None, Some((j, p))) if j > 0 && j < n => {
                o.log_line(None, j, first, rt_offset);
                let at = o.played_at(&run, run.written + j as i64);
                o.log_line(Some(p), n - j, at, rt_offset);
            }
            _ => o.log_line(None, n, first, rt_offset),
        }
        if let Some((path, w, fmt)) = o.audio.as_mut() {
            let s = &samples[..n * o.channels];
            let r = match fmt {
                AudioFileFormat::F32Le => s.iter().try_for_each(|x| w.write_all(&x.to_le_bytes())),
                AudioFileFormat::S16Le => {
                    let bytes = convert(
                        s,
                        o.channels,
                        DeviceFormat::S16Le,
                        o.channels,
                        &mut o.scratch,
                    ) * o.channels
                        * 2;
                    w.write_all(&o.scratch[..bytes])
                }
            };
            if let Err(e) = r {
                log::warn!("virtual DAC: cannot write the audio file {path:?}: {e}; stops");
                o.audio = None;
            }
        }
        run.written += n as i64;
        o.run = Some(run);
        if now - o.last_flush > NS_PER_SEC {
            o.last_flush = now;
            o.flush();
        }
        Ok(n)
    }

    fn recover(&mut self, err: &OutputError) -> Result<(), OutputError> {
        let o = self.open.as_mut().ok_or(OutputError::NotOpen)?;
        if matches!(err, OutputError::Underrun) && o.underruns == 1 {
            log::warn!("virtual DAC: underrun; restarting at the next write");
        }
        // An underrun already left the DAC stopped and ready; nothing else can happen here.
        Ok(())
    }

    fn close(&mut self) {
        if let Some(mut o) = self.open.take() {
            o.flush();
        }
    }
}

impl Drop for VirtualDac {
    fn drop(&mut self) {
        self.close();
    }
}

impl std::fmt::Debug for VirtualDac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualDac")
            .field("cfg", &self.cfg)
            .field("open", &self.open.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_parameters() {
        let mut d = VirtualDac::new(VirtualConfig {
            ppm: f64::NAN,
            ..VirtualConfig::default()
        });
        assert!(matches!(
            d.open(48_000, 2),
            Err(OutputError::BadParameter { .. })
        ));
        let mut d = VirtualDac::new(VirtualConfig::default());
        assert!(matches!(d.timing(), Err(OutputError::NotOpen)));
        assert!(matches!(
            d.open(0, 2),
            Err(OutputError::BadParameter { .. })
        ));
    }

    #[test]
    fn prepared_dac_reports_latency_and_full_room() {
        let mut d = VirtualDac::new(VirtualConfig::default());
        let info = d.open(48_000, 2).expect("open");
        assert_eq!(info.period_frames, 240);
        assert_eq!(info.buffer_frames, 960);
        let t = d.timing().expect("timing");
        assert_eq!(t.delay_frames, 96);
        assert_eq!(t.avail_frames, 960);
        // A write larger than the ring is cut to the ring.
        let n = d
            .write(&[0.0; 2 * 2000], &WriteMeta::default())
            .expect("write");
        assert_eq!(n, 960);
    }
}
