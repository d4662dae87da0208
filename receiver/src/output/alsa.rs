//! The real output: an ALSA PCM through alsa-lib (the `alsa` crate).
//!
//! - Device by name (`default`, `hw:1,0`, `plughw:1,0`, `pipewire`, any PCM string) or by the
//!   legacy index: `--device-index N` is the Nth entry (from 0) of [`playback_devices`], which
//!   is the order `aplay -L` prints, without the capture-only entries.
//! - Rate and channels from the stream (exact rate, or the open fails; the nearest channel
//!   count, mapped by [`super::convert`]); sample format the first the device takes of
//!   S32_LE, S24_3LE, S24_LE, S16_LE, FLOAT_LE (or the one configured).
//! - Period (default 5 ms) and buffer (default 4 periods, `--buffer-size FRAMES`).
//! - Non-blocking: writes never block, [`Output::wait`] is `snd_pcm_wait` with a timeout (the
//!   `pipewire` PCM without a session manager never consumes: the loop still runs).
//! - Timing from one `snd_pcm_status` (timestamp and delay read together), timestamps enabled
//!   on CLOCK_MONOTONIC; a missing or frozen timestamp (e.g. the `null` PCM) falls back to
//!   "now"; pointers that move coarsely are fitted by [`PointerTracker`].
//! - EPIPE, ESTRPIPE, ENODEV become [`OutputError::Underrun`], [`OutputError::Suspended`],
//!   [`OutputError::Disconnected`]; [`Output::recover`] prepares, resumes or reopens.

use std::ffi::CString;
use std::time::Duration;

use ::alsa::device_name::HintIter;
use ::alsa::pcm::{Access, Format, HwParams, State, TstampType};
use ::alsa::{Direction, ValueOr, PCM};
use wavesync_common::time::{LocalNs, NS_PER_SEC};

use super::convert::{convert, DeviceFormat};
use super::pointer::{PointerMode, PointerTracker};
use super::{ms_to_frames, DacTiming, Output, OutputError, OutputInfo, WriteMeta};
use crate::clock_io::monotonic_ns;

/// Parameters of an [`AlsaOutput`].
#[derive(Clone, Debug, PartialEq)]
pub struct AlsaConfig {
    /// PCM name, used when `device_index` is `None`.
    pub device: String,
    /// Legacy: the Nth playback device of [`playback_devices`].
    pub device_index: Option<u32>,
    /// Period in ms.
    pub period_ms: f64,
    /// Buffer in frames; default 4 periods.
    pub buffer_frames: Option<u32>,
    /// Force this sample format instead of the first the device takes.
    pub format: Option<DeviceFormat>,
    /// How the delay is turned into a prediction.
    pub pointer: PointerMode,
}

impl Default for AlsaConfig {
    fn default() -> Self {
        AlsaConfig {
            device: "default".into(),
            device_index: None,
            period_ms: 5.0,
            buffer_frames: None,
            format: None,
            pointer: PointerMode::Auto,
        }
    }
}

/// One entry of the ALSA device hint list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceHint {
    /// PCM name to open (e.g. `hw:CARD=PCH,DEV=0`, `pipewire`, `default`).
    pub name: String,
    /// Description, if alsa-lib has one.
    pub description: Option<String>,
}

/// The playback PCMs alsa-lib knows, in hint order (what `aplay -L` lists, minus capture-only
/// entries). `--device-index N` opens entry N.
pub fn playback_devices() -> Result<Vec<DeviceHint>, OutputError> {
    let hints = HintIter::new(None, c"pcm").map_err(|source| OutputError::Alsa {
        op: "snd_device_name_hint",
        source,
    })?;
    Ok(hints
        .filter(|h| h.direction != Some(Direction::Capture))
        .filter_map(|h| {
            h.name.map(|name| DeviceHint {
                name,
                description: h.desc.map(|d| d.replace('\n', " ")),
            })
        })
        .collect())
}

fn alsa_format(f: DeviceFormat) -> Format {
    match f {
        DeviceFormat::S16Le => Format::S16LE,
        DeviceFormat::S24_3Le => Format::S243LE,
        DeviceFormat::S24Le => Format::S24LE,
        DeviceFormat::S32Le => Format::S32LE,
        DeviceFormat::FloatLe => Format::FloatLE,
    }
}

/// Maps an alsa-lib error to the typed errors the playback loop recovers from.
fn classify(op: &'static str, e: ::alsa::Error) -> OutputError {
    match e.errno() {
        libc::EPIPE => OutputError::Underrun,
        libc::ESTRPIPE => OutputError::Suspended,
        libc::ENODEV | libc::EBADFD => OutputError::Disconnected,
        _ => OutputError::Alsa { op, source: e },
    }
}

/// The PCM state without the crate's panic on unknown values.
fn state_of(pcm: &PCM) -> Option<State> {
    let raw = pcm.state_raw();
    [
        State::Open,
        State::Setup,
        State::Prepared,
        State::Running,
        State::XRun,
        State::Draining,
        State::Paused,
        State::Suspended,
        State::Disconnected,
    ]
    .into_iter()
    .find(|s| *s as i32 == raw)
}

fn state_error(s: Option<State>) -> Option<OutputError> {
    match s {
        Some(State::XRun) => Some(OutputError::Underrun),
        Some(State::Suspended) => Some(OutputError::Suspended),
        Some(State::Disconnected) => Some(OutputError::Disconnected),
        _ => None,
    }
}

struct Device {
    pcm: PCM,
    name: String,
    rate: u32,
    channels: usize,
    dev_channels: usize,
    format: DeviceFormat,
    buffer: usize,
    /// Timestamps are on CLOCK_MONOTONIC (the sw_params call took the type).
    monotonic_ts: bool,
    /// Frames written since the last prepare (the application pointer of this run).
    written: i64,
    tracker: PointerTracker,
    bytes: Vec<u8>,
    info: OutputInfo,
}

/// An ALSA playback device; see the module documentation.
pub struct AlsaOutput {
    cfg: AlsaConfig,
    dev: Option<Device>,
    /// (rate, channels) of the last open, for reopening after an unplug.
    shape: Option<(u32, u8)>,
    underruns: u64,
    last_report: Option<LocalNs>,
    reported_underruns: u64,
    /// Underrun recoveries since the last write that went through; past
    /// [`MAX_IN_PLACE_RECOVERIES`] the device is reopened instead (a dead sound server keeps
    /// answering EPIPE to every write after a prepare).
    recoveries_without_write: u32,
}

/// In-place recoveries tried before a reopen.
const MAX_IN_PLACE_RECOVERIES: u32 = 3;

impl std::fmt::Debug for AlsaOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlsaOutput")
            .field("cfg", &self.cfg)
            .field("open", &self.dev.as_ref().map(|d| &d.info))
            .finish()
    }
}

fn open_device(cfg: &AlsaConfig, rate: u32, channels: u8) -> Result<Device, OutputError> {
    let name = match cfg.device_index {
        Some(i) => {
            let list = playback_devices()?;
            match list.get(i as usize) {
                Some(h) => h.name.clone(),
                None => {
                    return Err(OutputError::NoSuchIndex {
                        index: i,
                        found: list.len(),
                    })
                }
            }
        }
        None => cfg.device.clone(),
    };
    let unsupported = |what: String| OutputError::Unsupported {
        device: name.clone(),
        what,
    };
    if rate == 0 || channels == 0 {
        return Err(OutputError::BadParameter {
            name: "rate/channels",
            why: "must be positive",
        });
    }
    if !(0.0..=1000.0).contains(&cfg.period_ms) || cfg.period_ms == 0.0 {
        return Err(OutputError::BadParameter {
            name: "period",
            why: "must be within 0..1000 ms",
        });
    }
    let cname = CString::new(name.as_str()).map_err(|_| OutputError::BadParameter {
        name: "device",
        why: "contains a NUL byte",
    })?;
    let pcm = PCM::open(&cname, Direction::Playback, true).map_err(|source| OutputError::Open {
        device: name.clone(),
        source,
    })?;
    let hw = |op: &'static str| move |source| OutputError::Alsa { op, source };
    let (format, dev_channels, period, buffer) = {
        let hwp = HwParams::any(&pcm).map_err(hw("hw_params_any"))?;
        hwp.set_access(Access::RWInterleaved)
            .map_err(|_| unsupported("interleaved read/write access".into()))?;
        let candidates: &[DeviceFormat] = match &cfg.format {
            Some(f) => std::slice::from_ref(f),
            None => &DeviceFormat::PREFERENCE,
        };
        let format = candidates
            .iter()
            .copied()
            .find(|f| hwp.test_format(alsa_format(*f)).is_ok())
            .ok_or_else(|| {
                let names: Vec<&str> = candidates.iter().map(|f| f.alsa_name()).collect();
                unsupported(format!("any of {}", names.join("/")))
            })?;
        hwp.set_format(alsa_format(format))
            .map_err(hw("hw_params_set_format"))?;
        let dev_channels = match hwp.set_channels(channels as u32) {
            Ok(()) => channels as u32,
            Err(_) => hwp
                .set_channels_near(channels as u32)
                .map_err(|_| unsupported(format!("{channels} channels")))?,
        };
        hwp.set_rate(rate, ValueOr::Nearest)
            .map_err(|_| unsupported(format!("{rate} Hz (try plughw: or default)")))?;
        let want_period = ms_to_frames(cfg.period_ms, rate) as ::alsa::pcm::Frames;
        hwp.set_period_size_near(want_period, ValueOr::Nearest)
            .map_err(hw("hw_params_set_period_size_near"))?;
        let want_buffer = cfg
            .buffer_frames
            .map_or(4 * want_period, |b| b as ::alsa::pcm::Frames);
        hwp.set_buffer_size_near(want_buffer)
            .map_err(hw("hw_params_set_buffer_size_near"))?;
        pcm.hw_params(&hwp).map_err(hw("hw_params"))?;
        let cur = pcm.hw_params_current().map_err(hw("hw_params_current"))?;
        let period = cur.get_period_size().map_err(hw("get_period_size"))? as usize;
        let buffer = cur.get_buffer_size().map_err(hw("get_buffer_size"))? as usize;
        (format, dev_channels as usize, period.max(1), buffer.max(1))
    };
    let monotonic_ts = {
        let swp = pcm.sw_params_current().map_err(hw("sw_params_current"))?;
        swp.set_start_threshold(period.min(buffer) as ::alsa::pcm::Frames)
            .map_err(hw("sw_params_set_start_threshold"))?;
        swp.set_avail_min(period as ::alsa::pcm::Frames)
            .map_err(hw("sw_params_set_avail_min"))?;
        swp.set_tstamp_mode(true)
            .map_err(hw("sw_params_set_tstamp_mode"))?;
        let mono = swp.set_tstamp_type(TstampType::Monotonic).is_ok();
        pcm.sw_params(&swp).map_err(hw("sw_params"))?;
        mono && matches!(
            pcm.sw_params_current().and_then(|s| s.get_tstamp_type()),
            Ok(TstampType::Monotonic)
        )
    };
    if !monotonic_ts {
        log::info!("ALSA {name}: no monotonic timestamps; timing from the delay alone");
    }
    let info = OutputInfo {
        rate,
        channels,
        device_channels: dev_channels as u32,
        period_frames: period,
        buffer_frames: buffer,
        device_format: format,
        device: name.clone(),
        // ALSA's standard order (surround51: FL FR RL RR FC LFE), which `plug`, `default` and
        // the cards' multichannel PCMs follow.
        positions: Some(wavesync_common::channels::ChannelMap::alsa_order(
            channels as usize,
        )),
    };
    Ok(Device {
        pcm,
        name,
        rate,
        channels: channels as usize,
        dev_channels,
        format,
        buffer,
        monotonic_ts,
        written: 0,
        tracker: PointerTracker::new(rate, cfg.pointer),
        bytes: vec![0; buffer * dev_channels * format.bytes()],
        info,
    })
}

impl Device {
    fn ns_of(&self, frames: i64) -> i64 {
        (frames as i128 * NS_PER_SEC as i128 / self.rate as i128) as i64
    }

    fn prepare(&mut self) -> Result<(), OutputError> {
        self.pcm.prepare().map_err(|e| classify("prepare", e))?;
        self.written = 0;
        self.tracker.reset();
        Ok(())
    }
}

impl AlsaOutput {
    /// An ALSA output with these parameters (not open yet).
    pub fn new(cfg: AlsaConfig) -> Self {
        AlsaOutput {
            cfg,
            dev: None,
            shape: None,
            underruns: 0,
            last_report: None,
            reported_underruns: 0,
            recoveries_without_write: 0,
        }
    }

    /// Underruns since this output was created.
    pub fn underruns(&self) -> u64 {
        self.underruns
    }

    /// True once the device pointer was seen to move in coarse steps (batch devices, sound
    /// servers) and the prediction uses the fitted envelope.
    pub fn is_coarse(&self) -> bool {
        self.dev.as_ref().is_some_and(|d| d.tracker.is_coarse())
    }

    /// True when the open device stamps its status on CLOCK_MONOTONIC (otherwise `timing()`
    /// uses the time of the call).
    pub fn has_monotonic_timestamps(&self) -> bool {
        self.dev.as_ref().is_some_and(|d| d.monotonic_ts)
    }

    fn dev(&mut self) -> Result<&mut Device, OutputError> {
        self.dev.as_mut().ok_or(OutputError::NotOpen)
    }

    /// Logs underruns: the first of a series at once, then at most one summary each 10 s.
    fn note_underrun(&mut self) {
        self.underruns += 1;
        let now = monotonic_ns();
        let due = self.last_report.is_none_or(|t| now - t > 10 * NS_PER_SEC);
        if due {
            let name = self.dev.as_ref().map_or("?", |d| d.name.as_str());
            log::warn!(
                "ALSA {name}: underrun ({} since the last report, {} in all); restarting",
                self.underruns - self.reported_underruns,
                self.underruns
            );
            self.last_report = Some(now);
            self.reported_underruns = self.underruns;
        }
    }
}

impl Output for AlsaOutput {
    fn open(&mut self, rate: u32, channels: u8) -> Result<OutputInfo, OutputError> {
        self.close();
        let dev = open_device(&self.cfg, rate, channels)?;
        let info = dev.info.clone();
        self.dev = Some(dev);
        self.shape = Some((rate, channels));
        Ok(info)
    }

    fn wait(&mut self, timeout_ms: i32) -> Result<bool, OutputError> {
        let d = self.dev()?;
        let state = state_of(&d.pcm);
        if let Some(e) = state_error(state) {
            return Err(e);
        }
        if state != Some(State::Running) {
            // Not started: room is what was not written yet; writing starts the device.
            return Ok(d.written < d.buffer as i64);
        }
        let t = (timeout_ms >= 0).then_some(timeout_ms as u32);
        d.pcm.wait(t).map_err(|e| classify("wait", e))
    }

    fn timing(&mut self) -> Result<DacTiming, OutputError> {
        let d = self.dev()?;
        let status = d.pcm.status().map_err(|e| classify("status", e))?;
        let now = monotonic_ns();
        let state = state_of(&d.pcm);
        if let Some(e) = state_error(state) {
            return Err(e);
        }
        #[allow(clippy::unnecessary_cast)] // Frames is a C long: 32 bits on some targets
        let delay = status.get_delay() as i64;
        let avail = status.get_avail().clamp(0, d.buffer as ::alsa::pcm::Frames) as usize;
        if state != Some(State::Running) {
            // Prepared: the device starts on the coming writes; the queued frames go first.
            d.tracker.reset();
            let queued = d.written.max(0);
            return Ok(DacTiming {
                next_frame_local: now + d.ns_of(queued),
                delay_frames: queued,
                avail_frames: d.buffer.saturating_sub(queued as usize),
                settled: false,
            });
        }
        let h = status.get_htstamp();
        #[allow(clippy::unnecessary_cast)] // time_t and long are 32 bits on some targets
        let ts = LocalNs::from_ns(h.tv_sec as i64 * NS_PER_SEC + h.tv_nsec as i64);
        // Trust the stamp only when it is monotonic and recent (the `null` PCM freezes it).
        let stale_limit = (2 * d.ns_of(d.buffer as i64)).max(50_000_000);
        let ts = if d.monotonic_ts
            && ts > LocalNs::from_ns(0)
            && ts <= now + 1_000_000
            && now - ts < stale_limit
        {
            ts
        } else {
            now
        };
        let next = d.tracker.predict(ts, d.written, delay);
        Ok(DacTiming {
            next_frame_local: next,
            delay_frames: delay,
            avail_frames: avail,
            settled: d.tracker.is_moving(),
        })
    }

    fn write(&mut self, samples: &[f32], _meta: &WriteMeta) -> Result<usize, OutputError> {
        let d = self.dev.as_mut().ok_or(OutputError::NotOpen)?;
        let bpf = d.dev_channels * d.format.bytes();
        let frames = convert(samples, d.channels, d.format, d.dev_channels, &mut d.bytes);
        if frames == 0 {
            return Ok(0);
        }
        let io = d.pcm.io_bytes();
        match io.writei(&d.bytes[..frames * bpf]) {
            Ok(n) => {
                d.written += n as i64;
                if n > 0 {
                    self.recoveries_without_write = 0;
                }
                Ok(n)
            }
            Err(e) if e.errno() == libc::EAGAIN => Ok(0),
            Err(e) => Err(classify("writei", e)),
        }
    }

    fn recover(&mut self, err: &OutputError) -> Result<(), OutputError> {
        match err {
            OutputError::Underrun if self.recoveries_without_write < MAX_IN_PLACE_RECOVERIES => {
                self.note_underrun();
                self.recoveries_without_write += 1;
                self.dev()?.prepare()
            }
            OutputError::Suspended => {
                let d = self.dev()?;
                log::warn!("ALSA {}: suspended; resuming", d.name);
                for _ in 0..100 {
                    match d.pcm.resume() {
                        Ok(()) => break,
                        Err(e) if e.errno() == libc::EAGAIN => {
                            std::thread::sleep(Duration::from_millis(10))
                        }
                        Err(_) => break,
                    }
                }
                d.prepare()
            }
            _ => {
                let Some((rate, channels)) = self.shape else {
                    return Err(OutputError::NotOpen);
                };
                let name = self.dev.as_ref().map(|d| d.name.clone());
                if matches!(err, OutputError::Underrun) {
                    log::warn!(
                        "ALSA {}: underruns repeat with nothing played in between; reopening",
                        name.as_deref().unwrap_or("?")
                    );
                }
                self.recoveries_without_write = 0;
                self.close();
                self.shape = Some((rate, channels));
                match self.open(rate, channels) {
                    Ok(_) => {
                        log::info!("ALSA {}: reopened", name.unwrap_or_default());
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    fn close(&mut self) {
        if let Some(d) = self.dev.take() {
            // Drop queued audio at once; the PCM closes when `d` drops.
            let _ = d.pcm.drop();
        }
    }
}

impl Drop for AlsaOutput {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_map_to_recoverable_errors() {
        let e = |errno| classify("writei", ::alsa::Error::new("snd_pcm_writei", errno));
        assert!(matches!(e(libc::EPIPE), OutputError::Underrun));
        assert!(matches!(e(libc::ESTRPIPE), OutputError::Suspended));
        assert!(matches!(e(libc::ENODEV), OutputError::Disconnected));
        let other = e(libc::EIO);
        assert!(matches!(other, OutputError::Alsa { op: "writei", .. }));
        assert!(!other.is_recoverable());
    }
}
