//! The room's settings on the receiver: kept in a state file, changed by the master it follows,
//! handed to the output thread lock-free, applied there without a click.
//!
//! - [`State`]: the receiver's stable id, its name after a rename, and its settings, in a small
//!   TOML file (`--state-file`); the configuration only gives the first values.
//! - [`RoomControl`]: the network thread's side: builds the report sent to the master about
//!   once a second from the status snapshot, takes the master's commands (only from the
//!   address its reports go to: until keys exist that is the whole authentication), answers
//!   them, saves the state and publishes the settings.
//! - [`SettingsCell`]: the settings packed in one atomic word, read by the output thread each
//!   cycle (no lock, no allocation on the audio path).
//! - [`Mixer`]: the output thread's side: channel map (sample-exact, from the next buffer) and
//!   gain (volume, mute, off), the gain ramped over [`RAMP_MS`] so nothing clicks.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use log::{info, warn};
use serde::{Deserialize, Serialize};
use wavesync_common::time::LocalNs;
use wavesync_common::wire::control::{self, Answer, Command, Envelope, Message, Outcome};
use wavesync_common::wire::report::{
    Channels, Report, RoomState, Settings, MAX_TRIM_US, MAX_VOLUME,
};
use wavesync_common::wire::status::StatusName;

use crate::status::StatusReport;

/// The gain ramp's length.
pub const RAMP_MS: f64 = 20.0;
/// Reports go out this often.
pub const REPORT_INTERVAL_NS: i64 = 1_000_000_000;

/// This host's name (for the default room name).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "wavesync".to_string())
}

/// Where the state lives by default: `$STATE_DIRECTORY/state.toml` under systemd (the unit's
/// `StateDirectory=wavesync`, i.e. /var/lib/wavesync), else `$XDG_STATE_HOME/wavesync/state.toml`
/// (`~/.local/state/wavesync/state.toml`), else /var/lib/wavesync/state.toml.
pub fn default_state_file() -> PathBuf {
    if let Some(d) = std::env::var_os("STATE_DIRECTORY") {
        return PathBuf::from(d).join("state.toml");
    }
    let xdg = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")));
    match xdg {
        Some(d) => d.join("wavesync/state.toml"),
        None => PathBuf::from("/var/lib/wavesync/state.toml"),
    }
}

fn random_id() -> u64 {
    use std::io::Read;
    let mut b = [0u8; 8];
    let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if ok.is_ok() && b != [0; 8] {
        return u64::from_ne_bytes(b);
    }
    let t = crate::clock_io::realtime_ns() as u64;
    t.rotate_left(17) ^ (std::process::id() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1
}

/// The state file's keys.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct StateFile {
    /// The receiver's id, 16 hex digits (TOML integers are signed).
    id: Option<String>,
    name: Option<String>,
    volume: Option<u8>,
    muted: Option<bool>,
    off: Option<bool>,
    channels: Option<String>,
    trim_ms: Option<f64>,
}

/// What the receiver keeps across restarts.
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    /// The stable receiver id.
    pub id: u64,
    /// The name given by a rename from the master, if any.
    pub name: Option<String>,
    /// The settings.
    pub settings: Settings,
}

impl State {
    /// Reads `path`; what is missing or invalid comes from `first` (the configuration) or is
    /// new (the id). Problems are returned as one line each for the log, never fatal.
    pub fn load(path: &Path, first: Settings) -> (State, Vec<String>) {
        let mut notes = Vec::new();
        let file: StateFile = match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).unwrap_or_else(|e| {
                notes.push(format!(
                    "state file {}: {e}; starting afresh",
                    path.display()
                ));
                StateFile::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StateFile::default(),
            Err(e) => {
                notes.push(format!("cannot read state file {}: {e}", path.display()));
                StateFile::default()
            }
        };
        let id = match file.id.as_deref().map(|s| u64::from_str_radix(s, 16)) {
            Some(Ok(id)) => id,
            Some(Err(_)) => {
                notes.push("state file: bad id; choosing a new one".into());
                random_id()
            }
            None => random_id(),
        };
        let mut s = first;
        if let Some(v) = file.volume {
            match v {
                v if v <= MAX_VOLUME => s.volume = v,
                v => notes.push(format!("state file: volume {v} out of range, ignored")),
            }
        }
        s.muted = file.muted.unwrap_or(s.muted);
        s.off = file.off.unwrap_or(s.off);
        if let Some(c) = file.channels {
            match Channels::from_name(&c) {
                Some(c) => s.channels = c,
                None => notes.push(format!("state file: channels {c:?} unknown, ignored")),
            }
        }
        if let Some(t) = file.trim_ms {
            let us = t * 1000.0;
            if us.is_finite() && us.abs() <= MAX_TRIM_US as f64 {
                s.trim_us = us.round() as i32;
            } else {
                notes.push(format!("state file: trim {t} ms out of range, ignored"));
            }
        }
        let name = file
            .name
            .filter(|n| !n.trim().is_empty() && n.len() <= StatusName::MAX);
        (
            State {
                id,
                name,
                settings: s,
            },
            notes,
        )
    }

    /// Writes the state to `path` (a temporary file renamed over it: never half written).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let s = &self.settings;
        let file = StateFile {
            id: Some(format!("{:016x}", self.id)),
            name: self.name.clone(),
            volume: Some(s.volume),
            muted: Some(s.muted),
            off: Some(s.off),
            channels: Some(s.channels.name().to_string()),
            trim_ms: Some(s.trim_us as f64 / 1000.0),
        };
        let text = toml::to_string(&file).map_err(std::io::Error::other)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(
            &tmp,
            format!(
                "# wavesync-receiver's state: id and the settings made from the master.\n{text}"
            ),
        )?;
        std::fs::rename(&tmp, path)
    }
}

/// The settings shared with the output thread: one atomic word.
#[derive(Clone, Debug, Default)]
pub struct SettingsCell(Arc<AtomicU64>);

impl SettingsCell {
    /// A cell holding `s`.
    pub fn new(s: Settings) -> Self {
        let c = SettingsCell::default();
        c.store(s);
        c
    }

    fn pack(s: Settings) -> u64 {
        let mut b = [0u8; 8];
        s.write(&mut b);
        u64::from_be_bytes(b)
    }

    /// Publishes `s`.
    pub fn store(&self, s: Settings) {
        self.0.store(Self::pack(s), Ordering::Release);
    }

    /// The current settings (wait-free).
    pub fn load(&self) -> Settings {
        let b = self.0.load(Ordering::Acquire).to_be_bytes();
        // Only ever stored from valid settings.
        Settings {
            volume: b[0].min(MAX_VOLUME),
            muted: b[1] & 1 != 0,
            off: b[1] & 2 != 0,
            channels: Channels::from_code(b[2]).unwrap_or_default(),
            trim_us: i32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

/// The gain of `s`: `(volume / 100)^2`, 0 when muted or off.
pub fn gain_of(s: &Settings) -> f32 {
    if s.muted || s.off {
        0.0
    } else {
        let v = s.volume as f32 / MAX_VOLUME as f32;
        v * v
    }
}

/// Applies the channel map and the gain to the output thread's buffers. No allocation.
#[derive(Clone, Copy, Debug)]
pub struct Mixer {
    channels: Channels,
    gain: f32,
    target: f32,
    step: f32,
    ramp_frames: f32,
}

impl Mixer {
    /// A mixer at `s` (no ramp from the start) for `rate` Hz.
    pub fn new(s: &Settings, rate: u32) -> Self {
        let g = gain_of(s);
        Mixer {
            channels: s.channels,
            gain: g,
            target: g,
            step: 0.0,
            ramp_frames: (rate as f64 * RAMP_MS / 1000.0).max(1.0) as f32,
        }
    }

    /// New settings: the channel map applies from the next frame, the gain ramps to its new
    /// value over [`RAMP_MS`].
    pub fn set(&mut self, s: &Settings) {
        self.channels = s.channels;
        let t = gain_of(s);
        if t != self.target {
            self.target = t;
            self.step = (t - self.gain) / self.ramp_frames;
        }
    }

    /// The gain now (during a ramp, the one of the next frame).
    pub fn gain(&self) -> f32 {
        self.gain
    }

    /// Processes interleaved `buf` of `channels` channels in place.
    pub fn process(&mut self, buf: &mut [f32], channels: usize) {
        let channels = channels.max(1);
        if channels >= 2 && self.channels != Channels::All {
            for f in buf.chunks_exact_mut(channels) {
                let v = match self.channels {
                    Channels::Left => f[0],
                    Channels::Right => f[1],
                    Channels::Mono | Channels::All => 0.5 * (f[0] + f[1]),
                };
                f[0] = v;
                f[1] = v;
            }
        }
        if self.gain == self.target {
            if self.gain != 1.0 {
                for x in buf.iter_mut() {
                    *x *= self.gain;
                }
            }
            return;
        }
        for f in buf.chunks_exact_mut(channels) {
            if self.gain != self.target {
                let next = self.gain + self.step;
                let past = (self.step > 0.0 && next >= self.target)
                    || (self.step < 0.0 && next <= self.target)
                    || self.step == 0.0;
                self.gain = if past { self.target } else { next };
            }
            for x in f.iter_mut() {
                *x *= self.gain;
            }
        }
    }
}

/// Counters of the control path on the receiver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ControlStats {
    /// Reports sent.
    pub reports: u64,
    /// Commands applied (repeats included).
    pub commands: u64,
    /// Commands from another address than the followed master's, dropped.
    pub refused: u64,
    /// Control messages that did not decode.
    pub malformed: u64,
}

/// The network thread's side of the room. See the module documentation.
pub struct RoomControl {
    state: State,
    default_name: StatusName,
    path: PathBuf,
    cell: SettingsCell,
    next_report: LocalNs,
    save_failed: bool,
    stats: ControlStats,
}

/// The report's state from the status snapshot's state name.
fn room_state(snapshot: &StatusReport) -> RoomState {
    match snapshot.state.as_str() {
        "waiting for the clock" => RoomState::NoClock,
        "waiting for audio" => RoomState::WaitingForAudio,
        "starting" => RoomState::Starting,
        "playing" => RoomState::Playing,
        "device unavailable" => RoomState::DeviceUnavailable,
        _ => RoomState::WaitingForStream,
    }
}

impl RoomControl {
    /// Loads the state from `path` (first values `first`), logs what was wrong with it, and
    /// saves it back so the id is kept from now on.
    pub fn open(path: &Path, first: Settings, name: &str) -> Self {
        let (state, notes) = State::load(path, first);
        for n in notes {
            warn!("{n}");
        }
        let mut c = RoomControl {
            cell: SettingsCell::new(state.settings),
            state,
            default_name: StatusName::truncated(name),
            path: path.to_path_buf(),
            next_report: LocalNs::MIN,
            save_failed: false,
            stats: ControlStats::default(),
        };
        c.save();
        info!(
            "room {:?} (id {:016x}): {}",
            c.name().as_str(),
            c.state.id,
            describe(&c.state.settings)
        );
        c
    }

    fn save(&mut self) {
        match self.state.save(&self.path) {
            Ok(()) => self.save_failed = false,
            Err(e) if !self.save_failed => {
                self.save_failed = true;
                warn!(
                    "cannot write the state file {}: {e} (settings will not survive a restart; \
                     see --state-file)",
                    self.path.display()
                );
            }
            Err(_) => {}
        }
    }

    /// The cell the output thread reads the settings from.
    pub fn cell(&self) -> SettingsCell {
        self.cell.clone()
    }

    /// The current settings.
    pub fn settings(&self) -> Settings {
        self.state.settings
    }

    /// The room's name.
    pub fn name(&self) -> StatusName {
        self.state
            .name
            .as_deref()
            .map(StatusName::truncated)
            .unwrap_or(self.default_name)
    }

    /// The receiver's id.
    pub fn id(&self) -> u64 {
        self.state.id
    }

    /// Counters.
    pub fn stats(&self) -> ControlStats {
        self.stats
    }

    /// Whether a report is due at `now`.
    pub fn report_due(&self, now: LocalNs) -> bool {
        now >= self.next_report
    }

    /// The report to send at `now`, if one is due (rate-limited to one per
    /// [`REPORT_INTERVAL_NS`]), written to `buf`.
    pub fn poll_report(
        &mut self,
        now: LocalNs,
        snapshot: &StatusReport,
        stream_ssrc: u32,
        buf: &mut [u8],
    ) -> Option<usize> {
        if now < self.next_report {
            return None;
        }
        self.next_report = now + REPORT_INTERVAL_NS;
        let sat_u32 = |x: f64| x.clamp(0.0, u32::MAX as f64) as u32;
        let version = env!("CARGO_PKG_VERSION");
        let mut v = version.split('.').map(|p| p.parse::<u16>().unwrap_or(0));
        let r = Report {
            id: self.state.id,
            name: self.name(),
            version: (
                v.next().unwrap_or(0).min(255) as u8,
                v.next().unwrap_or(0).min(255) as u8,
                v.next().unwrap_or(0),
            ),
            state: room_state(snapshot),
            stream_ssrc,
            clock_locked: snapshot.clock_locked,
            clock_offset_ns: (snapshot.clock_offset_s * 1e9) as i64,
            clock_uncertainty_ns: sat_u32(snapshot.clock_uncertainty_us * 1e3),
            sync_error_ns: snapshot
                .sync_error_us
                .map(|e| (e * 1e3).clamp(i32::MIN as f64, i32::MAX as f64) as i32),
            buffer_us: sat_u32(snapshot.buffer_ms * 1e3),
            device_delay_us: sat_u32(snapshot.device_delay_ms * 1e3),
            lost: snapshot.lost,
            recovered: snapshot.recovered,
            concealed_frames: snapshot.concealed_frames,
            settings: self.state.settings,
        };
        let n = r.encode(buf).ok()?;
        self.stats.reports += 1;
        Some(n)
    }

    /// Handles a control message from `from`; `master` is the address the reports go to (the
    /// only one whose commands are taken). Returns the length of the answer written to `buf`.
    pub fn handle(
        &mut self,
        from: SocketAddr,
        master: Option<SocketAddr>,
        bytes: &[u8],
        buf: &mut [u8],
    ) -> Option<usize> {
        let env = match Envelope::decode(bytes) {
            Ok(e) => e,
            Err(_) => {
                self.stats.malformed += 1;
                return None;
            }
        };
        let Message::Command(command) = env.message else {
            self.stats.malformed += 1;
            return None;
        };
        if master != Some(from) {
            // Until keys exist, the address is all there is to trust: no answer either, so a
            // forged command cannot be used to make this host send to a third party.
            self.stats.refused += 1;
            return None;
        }
        self.stats.commands += 1;
        let before = (self.state.settings, self.name());
        match command {
            Command::Rename(n) => self.state.name = Some(n.as_str().to_string()),
            c => self.state.settings = c.apply(self.state.settings),
        }
        if (self.state.settings, self.name()) != before {
            self.cell.store(self.state.settings);
            self.save();
            info!(
                "the master set {}: now {:?}, {}",
                command,
                self.name().as_str(),
                describe(&self.state.settings)
            );
        }
        let answer = Answer {
            outcome: Outcome::Done,
            settings: self.state.settings,
            name: self.name(),
        };
        control::encode_answer(
            wavesync_common::wire::report::ssrc_of(self.state.id),
            env.request,
            false,
            &answer,
            buf,
        )
        .ok()
    }
}

/// One line for the log.
pub fn describe(s: &Settings) -> String {
    format!(
        "volume {}{}{}, channels {}, trim {:+.3} ms",
        s.volume,
        if s.muted { " (muted)" } else { "" },
        if s.off { ", off" } else { "" },
        s.channels.name(),
        s.trim_us as f64 / 1000.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use wavesync_common::wire::control::encode_command;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("wsstate-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d.join("sub/state.toml")
    }

    #[test]
    fn the_state_survives_a_restart_and_bad_files_do_not_stop_the_receiver() {
        let path = scratch("restart");
        let first = Settings {
            volume: 70,
            ..Settings::default()
        };
        let (s, notes) = State::load(&path, first);
        assert!(notes.is_empty());
        assert_eq!(s.settings.volume, 70);
        let mut s2 = s.clone();
        s2.settings.volume = 30;
        s2.settings.channels = Channels::Right;
        s2.settings.trim_us = -1500;
        s2.name = Some("bath".into());
        s2.save(&path).unwrap();
        let (back, notes) = State::load(&path, first);
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(back, s2);
        std::fs::write(
            &path,
            "id = \"zz\"\nvolume = 250\nchannels = \"sideways\"\n",
        )
        .unwrap();
        let (bad, notes) = State::load(&path, first);
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert_eq!(bad.settings, first);
        std::fs::write(&path, "not toml [").unwrap();
        assert_eq!(State::load(&path, first).1.len(), 1);
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
    }

    #[test]
    fn the_cell_carries_every_setting() {
        let s = Settings {
            volume: 42,
            muted: true,
            off: true,
            channels: Channels::Mono,
            trim_us: -4_999_999,
        };
        assert_eq!(SettingsCell::new(s).load(), s);
    }

    #[test]
    fn volume_ramps_and_channels_map_exactly() {
        let mut m = Mixer::new(&Settings::default(), 48_000);
        let mut buf: Vec<f32> = (0..2000).flat_map(|_| [0.5f32, -0.25]).collect();
        m.process(&mut buf, 2);
        assert_eq!(buf[0], 0.5);
        m.set(&Settings {
            volume: 50,
            channels: Channels::Left,
            ..Settings::default()
        });
        let mut buf: Vec<f32> = (0..2000).flat_map(|_| [0.5f32, -0.25]).collect();
        m.process(&mut buf, 2);
        // Left on both, from the first frame; the gain falls over 960 frames, never jumps.
        assert_eq!(buf[0], buf[1]);
        let gains: Vec<f32> = buf.chunks(2).map(|f| f[0] / 0.5).collect();
        assert!(gains
            .windows(2)
            .all(|w| w[1] <= w[0] && w[0] - w[1] < 0.001));
        assert!((gains[958] - 0.25).abs() > 1e-4 && (gains[960] - 0.25).abs() < 1e-6);
        assert!((gains[1999] - 0.25).abs() < 1e-6);
        m.set(&Settings {
            channels: Channels::Mono,
            off: true,
            ..Settings::default()
        });
        let mut buf: Vec<f32> = (0..2000).flat_map(|_| [0.5f32, -0.25]).collect();
        m.process(&mut buf, 2);
        assert!(
            (buf[0] / 0.125 - 0.25).abs() < 0.001,
            "mono (L+R)/2, ramp starts at 0.25"
        );
        assert!(
            buf[1920..].iter().all(|x| *x == 0.0),
            "off: silence after the ramp"
        );
    }

    #[test]
    fn commands_are_taken_from_the_master_only_and_persisted() {
        let path = scratch("commands");
        let mut c = RoomControl::open(&path, Settings::default(), "kitchen");
        let master: SocketAddr = "10.0.0.1:45301".parse().unwrap();
        let other: SocketAddr = "10.0.0.2:45301".parse().unwrap();
        let mut b = [0u8; 128];
        let mut out = [0u8; 128];
        let n = encode_command(1, 5, None, &Command::Volume(20), &mut b).unwrap();
        assert_eq!(c.handle(other, Some(master), &b[..n], &mut out), None);
        assert_eq!(c.stats().refused, 1);
        assert_eq!(c.settings().volume, 100);
        let len = c.handle(master, Some(master), &b[..n], &mut out).unwrap();
        let e = Envelope::decode(&out[..len]).unwrap();
        assert_eq!(e.request, 5);
        let Message::Ack(a) = e.message else {
            panic!("not an ack")
        };
        assert_eq!((a.outcome, a.settings.volume), (Outcome::Done, 20));
        assert_eq!(c.cell().load().volume, 20);
        // Idempotent: again, same answer.
        assert!(c.handle(master, Some(master), &b[..n], &mut out).is_some());
        let rename = Command::Rename(StatusName::truncated("bath"));
        let n = encode_command(1, 6, None, &rename, &mut b).unwrap();
        c.handle(master, Some(master), &b[..n], &mut out).unwrap();
        let again = RoomControl::open(&path, Settings::default(), "kitchen");
        assert_eq!(again.id(), c.id());
        assert_eq!(again.name().as_str(), "bath");
        assert_eq!(again.settings().volume, 20);
        assert_eq!(c.handle(master, Some(master), &[1, 2, 3], &mut out), None);
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
    }
}
