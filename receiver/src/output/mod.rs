//! Output backends behind one small trait: the real ALSA device (`alsa::AlsaOutput`), a
//! native PipeWire stream (`pipewire::PipeWireOutput`), a native PulseAudio stream
//! (`pulse::PulseOutput`) and the virtual DAC used by tests and the lab
//! ([`virtual_dac::VirtualDac`]). Each sound-system output is a cargo feature of the same name
//! (all on by default); the virtual DAC is always built.
//!
//! The playback loop never knows which one it drives. Each cycle it asks
//! [`Output::timing`] when the next written frame will leave the DAC (on this host's
//! CLOCK_MONOTONIC), lets the playout fill that many frames, and [`Output::write`]s them:
//!
//! ```text
//! let info = out.open(rate, channels)?;
//! loop {
//!     out.wait(100)?;                      // until a period is free (or 100 ms passed)
//!     let t = out.timing()?;               // measured: htstamp + delay, pointer fitted
//!     let n = t.avail_frames.min(max);     // room in the device buffer
//!     let rep = playout.fill(t.next_frame_local, &mut buf[..n * ch]);
//!     out.write(&buf[..n * ch], &WriteMeta { .. })?;
//! }
//! // on Err(e) with e.is_recoverable(): out.recover(&e), or close and reopen with backoff
//! ```
//!
//! Shared pieces: [`convert`] (f32 -> device sample format, channel mapping) and [`pointer`]
//! (turns status snapshots into a prediction, fitting coarse/batch pointers).

#[cfg(feature = "alsa")]
pub mod alsa;
pub mod convert;
#[cfg(feature = "pipewire")]
pub mod pipewire;
pub mod pointer;
#[cfg(feature = "pulse")]
pub mod pulse;
pub mod virtual_dac;

use std::fmt;
use std::path::PathBuf;
use wavesync_common::channels::ChannelMap;
use wavesync_common::wire::status::Status;

use wavesync_common::time::LocalNs;

use crate::config::OutputConfig;
pub use convert::DeviceFormat;
pub use pointer::PointerMode;

/// When the next written frame will leave the DAC, and how much room the device has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DacTiming {
    /// Local CLOCK_MONOTONIC instant at which the next frame written will leave the DAC.
    pub next_frame_local: LocalNs,
    /// Frames between the application pointer and the DAC output, as the device reported it
    /// (queued frames plus the codec/FIFO delay).
    pub delay_frames: i64,
    /// Frames that can be written now without blocking.
    pub avail_frames: usize,
    /// True when the prediction comes from a device seen consuming (running, pointer moved).
    /// False before that: the device has not started (or, like a sound server, has not pulled
    /// its first frames yet) and the prediction assumes it starts now; it may be late by the
    /// start-up latency (PipeWire: 5-13 ms). A playout may wait for `settled` before aligning.
    pub settled: bool,
}

/// What a write carries, for logs (the virtual DAC records it; ALSA ignores it).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WriteMeta {
    /// Stream position (extended RTP timestamp, fractional) of the first frame written, or
    /// `None` when the write starts with silence.
    pub stream_position: Option<f64>,
    /// When a write starts with silence and then plays: the index (in frames) of the first
    /// frame carrying the stream and its stream position.
    pub audio_start: Option<(usize, f64)>,
}

/// What [`Output::open`] negotiated.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputInfo {
    /// Frames per second (always the stream's rate: a device that cannot do it fails to open).
    pub rate: u32,
    /// Channels the stream is given in (the device may have more; see `device_channels`).
    pub channels: u8,
    /// Channels the device plays; [`convert`] maps the stream onto them.
    pub device_channels: u32,
    /// Frames per device period (the wake-up granularity).
    pub period_frames: usize,
    /// Frames the device buffer holds.
    pub buffer_frames: usize,
    /// Sample format the device is fed.
    pub device_format: DeviceFormat,
    /// Human-readable device name (for logs).
    pub device: String,
    /// The positions of the channels as the device takes them, when it says (the stream's
    /// channels are reordered to match); `None`: in the stream's order.
    pub positions: Option<ChannelMap>,
}

/// Errors of an output. [`OutputError::is_recoverable`] tells the ones a reopen (or
/// [`Output::recover`]) may cure.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The device could not be opened (missing, busy, no permission).
    #[cfg(feature = "alsa")]
    #[error("cannot open ALSA device {device:?}: {source}")]
    Open {
        /// Device name.
        device: String,
        /// What alsa-lib said.
        source: ::alsa::Error,
    },
    /// `--device-index` pointed past the list of playback devices.
    #[error("no playback device with index {index} (there are {found}; see `aplay -L`)")]
    NoSuchIndex {
        /// The index asked for.
        index: u32,
        /// How many playback devices exist.
        found: usize,
    },
    /// The device cannot play the stream's shape.
    #[error("ALSA device {device:?} cannot play {what}")]
    Unsupported {
        /// Device name.
        device: String,
        /// What was asked (e.g. "44100 Hz", "2 channels", "any of S32/S24_3LE/S16/FLOAT").
        what: String,
    },
    /// The device ran out of audio (ALSA EPIPE); it restarts on the next write after recovery.
    #[error("underrun: the device ran out of audio")]
    Underrun,
    /// The system suspended the device (ALSA ESTRPIPE).
    #[error("the device was suspended")]
    Suspended,
    /// The device went away (ALSA ENODEV, e.g. a USB DAC unplugged).
    #[error("the device was disconnected")]
    Disconnected,
    /// An operation needs an open device.
    #[error("the output is not open")]
    NotOpen,
    /// Another ALSA call failed.
    #[cfg(feature = "alsa")]
    #[error("ALSA {op} failed: {source}")]
    Alsa {
        /// What we were doing.
        op: &'static str,
        /// What alsa-lib said.
        source: ::alsa::Error,
    },
    /// A log or audio file of the virtual DAC could not be written.
    #[error("virtual DAC file {path:?}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A PipeWire call failed (no daemon, no sink, the connection dropped).
    #[error("PipeWire {op}: {why}")]
    PipeWire {
        /// What we were doing.
        op: &'static str,
        /// What went wrong.
        why: String,
    },
    /// A PulseAudio call failed (no server, no sink, the connection dropped).
    #[error("PulseAudio {op}: {why}")]
    Pulse {
        /// What we were doing.
        op: &'static str,
        /// What went wrong.
        why: String,
    },
    /// This build of the receiver has no such output (its cargo feature was left out).
    #[error("this receiver was built without the {0} output (cargo feature {0:?})")]
    NotBuilt(&'static str),
    /// A parameter is out of range.
    #[error("bad output parameter {name}: {why}")]
    BadParameter {
        /// Parameter name.
        name: &'static str,
        /// Why it is rejected.
        why: &'static str,
    },
}

impl OutputError {
    /// True for runtime failures that [`Output::recover`] or a reopen can cure: underrun,
    /// suspend, disconnect (the latter only once the device is back).
    pub fn is_recoverable(&self) -> bool {
        matches!(
            self,
            OutputError::Underrun | OutputError::Suspended | OutputError::Disconnected
        )
    }
}

/// One output backend. All times are this host's CLOCK_MONOTONIC in ns.
pub trait Output: Send {
    /// Opens the device for interleaved audio of `rate` Hz and `channels` channels; closes a
    /// previously open device first.
    fn open(&mut self, rate: u32, channels: u8) -> Result<OutputInfo, OutputError>;
    /// Waits until at least one period can be written, at most `timeout_ms` (negative: no
    /// limit; 0: poll). Returns `Ok(true)` when a period is free, `Ok(false)` on timeout.
    fn wait(&mut self, timeout_ms: i32) -> Result<bool, OutputError>;
    /// Measures when the next written frame will leave the DAC: one status read (timestamp
    /// and delay together), the pointer fitted when it moves coarsely.
    fn timing(&mut self) -> Result<DacTiming, OutputError>;
    /// Writes interleaved f32 samples (`channels` per frame; a partial last frame is ignored)
    /// without blocking; returns the frames taken (fewer than given when the buffer is full).
    fn write(&mut self, samples: &[f32], meta: &WriteMeta) -> Result<usize, OutputError>;
    /// Tries to cure a recoverable error in place: prepare after an underrun, resume after a
    /// suspend, reopen after a disconnect. On failure the caller closes and retries later
    /// (see [`Backoff`]). Logs the first failure of a series once.
    fn recover(&mut self, err: &OutputError) -> Result<(), OutputError>;
    /// Stops playback at once (drops queued audio), flushes logs and releases the device.
    fn close(&mut self);
}

/// Builds (does not open) the output the receiver's configuration asks for. An output whose
/// cargo feature this build left out fails to open with [`OutputError::NotBuilt`] (the
/// configuration already refuses it, so this is only reached by direct callers).
pub fn from_config(cfg: &OutputConfig) -> Box<dyn Output> {
    build(cfg, None)
}

/// Builds (does not open) the output for the stream `status` describes: outputs whose period
/// is not configured size their wake-ups from its latency (see [`alsa_period_ms`] and
/// `PipeWireConfig::quantum_request`); the PipeWire output declares the stream's channel
/// positions.
pub fn for_stream(cfg: &OutputConfig, status: &Status) -> Box<dyn Output> {
    build(cfg, Some(status))
}

/// [`from_config`], for a stream when there is one.
#[cfg_attr(
    not(any(feature = "alsa", feature = "pipewire")),
    allow(unused_variables)
)]
fn build(cfg: &OutputConfig, stream: Option<&Status>) -> Box<dyn Output> {
    match cfg {
        #[cfg(feature = "alsa")]
        OutputConfig::Alsa {
            device,
            device_index,
            period_ms,
            buffer_frames,
        } => Box::new(alsa::AlsaOutput::new(alsa::AlsaConfig {
            device: device.clone(),
            device_index: *device_index,
            period_ms: alsa_period_for(*period_ms, stream),
            buffer_frames: *buffer_frames,
            ..alsa::AlsaConfig::default()
        })),
        OutputConfig::Virtual {
            ppm,
            latency_ms,
            coarse,
            log,
            audio,
            period_ms,
            buffer_frames,
        } => Box::new(virtual_dac::VirtualDac::new(virtual_dac::VirtualConfig {
            ppm: *ppm,
            latency_ms: *latency_ms,
            coarse: *coarse,
            log: log.clone(),
            audio: audio.clone(),
            period_ms: *period_ms,
            buffer_frames: *buffer_frames,
            ..virtual_dac::VirtualConfig::default()
        })),
        #[cfg(feature = "pipewire")]
        OutputConfig::PipeWire {
            target,
            period_ms,
            buffer_frames,
        } => Box::new(pipewire::PipeWireOutput::new(pipewire::PipeWireConfig {
            target: target.clone(),
            period_ms: *period_ms,
            buffer_frames: *buffer_frames,
            stream_latency_ns: stream.map(|s| s.latency_ns),
            positions: stream.map(Status::positions),
            ..pipewire::PipeWireConfig::default()
        })),
        #[cfg(feature = "pulse")]
        OutputConfig::Pulse {
            sink,
            period_ms,
            buffer_frames,
        } => Box::new(pulse::PulseOutput::new(pulse::PulseConfig {
            sink: sink.clone(),
            period_ms: *period_ms,
            buffer_frames: *buffer_frames,
            ..pulse::PulseConfig::default()
        })),
        #[allow(unreachable_patterns)]
        other => Box::new(NotBuilt(other.name())),
    }
}

/// The period of an output whose configuration gives none and no stream says otherwise.
pub const DEFAULT_PERIOD_MS: f64 = 5.0;

/// The ALSA period for a stream of `latency_ns` when none is configured: a twelfth of the
/// latency (the default buffer of four periods then takes a third of it), within 2-20 ms. At
/// 150 ms that is 12.5 ms (80 wake-ups a second instead of 200); a sound server behind ALSA
/// (pipewire-alsa) sizes its graph quantum from it too.
pub fn alsa_period_ms(latency_ns: i64) -> f64 {
    (latency_ns as f64 / 12.0 / 1e6).clamp(2.0, 20.0)
}

#[cfg(feature = "alsa")]
/// The ALSA period: the configured one, else [`alsa_period_ms`] of the stream's latency, else
/// (no stream: the device check) [`DEFAULT_PERIOD_MS`].
fn alsa_period_for(configured: Option<f64>, stream: Option<&Status>) -> f64 {
    configured
        .or(stream.map(|s| alsa_period_ms(s.latency_ns)))
        .unwrap_or(DEFAULT_PERIOD_MS)
}

/// The stand-in for an output this build left out: it never opens.
struct NotBuilt(&'static str);

impl Output for NotBuilt {
    fn open(&mut self, _: u32, _: u8) -> Result<OutputInfo, OutputError> {
        Err(OutputError::NotBuilt(self.0))
    }
    fn wait(&mut self, _: i32) -> Result<bool, OutputError> {
        Err(OutputError::NotOpen)
    }
    fn timing(&mut self) -> Result<DacTiming, OutputError> {
        Err(OutputError::NotOpen)
    }
    fn write(&mut self, _: &[f32], _: &WriteMeta) -> Result<usize, OutputError> {
        Err(OutputError::NotOpen)
    }
    fn recover(&mut self, _: &OutputError) -> Result<(), OutputError> {
        Err(OutputError::NotBuilt(self.0))
    }
    fn close(&mut self) {}
}

/// [`Output::recover`] of a sound-server stream (PipeWire, PulseAudio): an underrun while
/// `is_open` is cured in place (the server plays on; the next [`Output::timing`] already
/// accounts for the silence); anything else closes and reopens with the `shape` it had.
#[cfg(any(feature = "pipewire", feature = "pulse"))]
pub(crate) fn recover_stream<O: Output>(
    out: &mut O,
    is_open: bool,
    shape: Option<(u32, u8)>,
    err: &OutputError,
    server: &str,
) -> Result<(), OutputError> {
    if matches!(err, OutputError::Underrun) && is_open {
        return Ok(());
    }
    let Some((rate, channels)) = shape else {
        return Err(OutputError::NotOpen);
    };
    out.close();
    out.open(rate, channels).map(|_| {
        log::info!("{server} output reconnected");
    })
}

/// Exponential backoff for reopening a failed device: 50 ms, 100 ms, ... up to 1 s, so a device
/// or sound server that comes back (a USB DAC plugged in, a PulseAudio or PipeWire restart) plays
/// again within about a second; a failing open costs next to nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// Records a failure; returns how long to wait before the next attempt, in ms.
    pub fn next_delay_ms(&mut self) -> u64 {
        let d = (50u64 << self.failures.min(7)).min(1_000);
        self.failures = self.failures.saturating_add(1);
        d
    }

    /// Records a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

impl fmt::Display for OutputInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} Hz, {} ch (device {} ch, {}), period {} frames, buffer {} frames",
            self.device,
            self.rate,
            self.channels,
            self.device_channels,
            self.device_format,
            self.period_frames,
            self.buffer_frames
        )
    }
}

/// Frames of `ms` milliseconds at `rate`, at least 1.
pub(crate) fn ms_to_frames(ms: f64, rate: u32) -> usize {
    ((ms * rate as f64 / 1000.0).round() as usize).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(feature = "alsa")]
    fn the_alsa_period_comes_from_the_latency_unless_configured() {
        assert!((alsa_period_ms(150_000_000) - 12.5).abs() < 1e-9);
        assert_eq!(alsa_period_ms(20_000_000), 2.0);
        assert_eq!(alsa_period_ms(2_000_000_000), 20.0);
        use wavesync_common::format::{ClockDomain, StreamFormat};
        let status = Status {
            ssrc: 1,
            format: StreamFormat::DEFAULT,
            clock_domain: ClockDomain::Master,
            frames_per_packet: 361,
            time_port: 45301,
            latency_ns: 150_000_000,
            packets_sent: 0,
            flags: 0,
            name: Default::default(),
            ntp_server: None,
            channel_map: None,
        };
        assert_eq!(alsa_period_for(None, Some(&status)), 12.5);
        assert_eq!(alsa_period_for(Some(5.0), Some(&status)), 5.0);
        // Without a stream (the device check), the old default.
        assert_eq!(alsa_period_for(None, None), DEFAULT_PERIOD_MS);
    }

    #[test]
    fn backoff_doubles_up_to_one_second_and_resets() {
        let mut b = Backoff::default();
        let delays: Vec<u64> = (0..8).map(|_| b.next_delay_ms()).collect();
        assert_eq!(delays, [50, 100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(b.failures(), 8);
        b.reset();
        assert_eq!(b.next_delay_ms(), 50);
    }
}
