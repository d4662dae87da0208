//! The receiver's configuration: `/etc/wavesync/receiver.toml`, overridden by the command line.
//!
//! Every option can be set in the file (`key = value`, names as below) or on the command line
//! (`--key value`); the command line wins. [`Config::load`] resolves both into one [`Config`] and
//! reports a bad value with the option's name and what was expected.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use clap::{Parser, ValueEnum};
use serde::Deserialize;
// The sink latency's range (+-5 s) is the trim's (report::MAX_TRIM_US).
use wavesync_common::wire::report::{Channels, Settings, MAX_VOLUME};
use wavesync_net::defaults;

/// Where the system service reads its configuration.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/wavesync/receiver.toml";

/// Where the receiver's estimate of the master's clock comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClockChoice {
    /// Follow the clock domain the stream names (the default): the master's time service, the
    /// NTP server the master names, or this host's clock.
    Auto,
    /// Query the master's own time service (streams in clock domain `master` only).
    Master,
    /// Query an NTP server (`ntp = "host"`, else the one the master names), as master and
    /// receivers all do (streams in clock domain `ntp` only).
    Ntp,
    /// Trust this host's clock as-is, already disciplined by PTP or chrony (streams in clock
    /// domain `system` only).
    System,
}

/// Which output plays the audio.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputChoice {
    /// A sound card through ALSA (the default).
    Alsa,
    /// A simulated DAC on the system clock, for tests and the lab.
    Virtual,
    /// A native PipeWire stream (exact timing on a PipeWire desktop; --device names the sink).
    Pipewire,
    /// A native PulseAudio stream (PulseAudio desktops, Termux on Android; --device names the
    /// sink).
    Pulse,
}

impl OutputChoice {
    /// The default: ALSA, or where this build has no ALSA output, PipeWire, then PulseAudio
    /// (Termux builds only that one).
    pub const DEFAULT: OutputChoice = if cfg!(feature = "alsa") {
        OutputChoice::Alsa
    } else if cfg!(feature = "pipewire") {
        OutputChoice::Pipewire
    } else if cfg!(feature = "pulse") {
        OutputChoice::Pulse
    } else {
        OutputChoice::Virtual
    };
}

/// `wavesync-receiver`: plays a WaveSync stream so every frame leaves the loudspeaker at its
/// stamped time, in sync with every other room.
#[derive(Parser, Debug, Default)]
#[command(name = "wavesync-receiver", version, about, long_about = None)]
pub struct Args {
    /// Configuration file (every option below can be set there too; the command line wins).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Address and port to listen on: a multicast group (joined) or a local address
    /// [default: 239.255.77.77:45300].
    #[arg(long, value_name = "ADDRESS:PORT")]
    pub listen: Option<String>,
    /// Network interface to join the multicast group on (name or IPv4 address)
    /// [default: the system's choice].
    #[arg(long, value_name = "IF")]
    pub interface: Option<String>,
    /// Accept the stream of this host only (and ask it for the time) [default: the first stream
    /// heard, then stick to it].
    #[arg(long, value_name = "HOST")]
    pub master: Option<String>,
    /// Where the stream's clock is read. auto: as the stream's clock domain says (the master's
    /// time service, the NTP server the master names, or this host's clock); master, ntp,
    /// system: only that, and a stream in another domain is refused (logged, shown in the
    /// status, nothing played) [default: auto].
    #[arg(long, value_enum)]
    pub clock: Option<ClockChoice>,
    /// NTP server to read the time from (implies --clock ntp: streams in clock domain ntp
    /// only), as HOST or HOST:PORT [default: the one the master names].
    #[arg(long, value_name = "HOST[:PORT]")]
    pub ntp: Option<String>,
    /// Output: a sound card (alsa), a PipeWire sink (pipewire: exact timing where PipeWire
    /// runs; better than ALSA's `pipewire` device), a PulseAudio sink (pulse: PulseAudio
    /// desktops, Termux on Android) or a simulated DAC (virtual) [default: alsa; in a build
    /// without ALSA, pipewire, then pulse].
    #[arg(long, value_enum)]
    pub output: Option<OutputChoice>,
    /// ALSA device name, e.g. default, hw:1,0, plughw:1,0 [default: default]; with
    /// --output pipewire the sink's node name [default: the session manager's choice]; with
    /// --output pulse the sink's name (`pactl list short sinks`) [default: the server's].
    #[arg(long, value_name = "NAME")]
    pub device: Option<String>,
    /// ALSA device by its position in the list of playback devices (as the old tool did).
    #[arg(long, value_name = "N")]
    pub device_index: Option<u32>,
    /// Device period in milliseconds: smaller reacts faster, costs more wake-ups [default:
    /// from the stream's latency: ALSA a twelfth of it within 2-20 ms; PipeWire the graph's
    /// own quantum unless the latency needs a smaller one; virtual 5].
    #[arg(long, value_name = "MS")]
    pub period_ms: Option<f64>,
    /// Device buffer in frames [default: 4 periods].
    #[arg(long, value_name = "FRAMES")]
    pub buffer_size: Option<u32>,
    /// Play this many milliseconds earlier than stamped, e.g. for a loudspeaker far from the
    /// listener (0.3 ms per 10 cm); negative plays later [default: 0].
    #[arg(long, value_name = "MS", allow_hyphen_values = true)]
    pub sink_latency: Option<f64>,
    /// Errors larger than this are fixed at once by skipping or inserting audio; smaller ones
    /// by inaudibly adjusting the speed [default: 2].
    #[arg(long, value_name = "MS")]
    pub tolerance: Option<f64>,
    /// Do not adjust the playback speed (crystal drift then accumulates until --tolerance).
    #[arg(long)]
    pub no_drift_correction: bool,
    /// Do not ask the master to resend lost packets.
    #[arg(long)]
    pub no_resend: bool,
    /// Unix socket serving the status as JSON (read by `wavesync status`)
    /// [default: $RUNTIME_DIRECTORY or $XDG_RUNTIME_DIR or /tmp, file wavesync-receiver.sock].
    #[arg(long, value_name = "PATH")]
    pub status_socket: Option<PathBuf>,
    /// Seconds between status lines in the log; 0 turns them off [default: 10].
    #[arg(long, value_name = "S")]
    pub status_interval: Option<f64>,
    /// Virtual DAC: crystal error in ppm (positive runs fast) [default: 0].
    #[arg(long, value_name = "PPM", allow_hyphen_values = true)]
    pub virtual_ppm: Option<f64>,
    /// Virtual DAC: its fixed output latency in milliseconds [default: 2].
    #[arg(long, value_name = "MS")]
    pub virtual_latency_ms: Option<f64>,
    /// Virtual DAC: report the delay only per period, like coarse (batch) devices.
    #[arg(long)]
    pub virtual_coarse: bool,
    /// Virtual DAC: write a log of when each stream frame played to this file.
    #[arg(long, value_name = "PATH")]
    pub virtual_log: Option<PathBuf>,
    /// Virtual DAC: write the audio it plays to this file (interleaved f32, little-endian).
    #[arg(long, value_name = "PATH")]
    pub virtual_audio: Option<PathBuf>,
    /// This room's name, shown by `wavesync rooms` [default: the host name]. A rename from
    /// the master is kept in the state file and wins over it.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Where the receiver keeps its id and the settings made from the master (volume, mute,
    /// trim, channels, on/off, name) [default: $STATE_DIRECTORY/state.toml for the service,
    /// else $XDG_STATE_HOME/wavesync/state.toml (~/.local/state/wavesync/state.toml)].
    #[arg(long, value_name = "PATH")]
    pub state_file: Option<PathBuf>,
    /// First volume, 0..=100, until the master sets one (kept in the state file) [default: 100].
    #[arg(long, value_name = "0..100")]
    pub volume: Option<u8>,
    /// First channel selection: all, left, right or mono [default: all].
    #[arg(long, value_name = "all|left|right|mono")]
    pub channels: Option<String>,
    /// Stop after this many seconds (for tests and measurements) [default: run until stopped].
    #[arg(long, value_name = "S")]
    pub duration: Option<f64>,
    /// Household key file (`wavesync key new PATH`): only authenticated datagrams are played,
    /// move the clock or are answered [default: /etc/wavesync/key when it exists, else none:
    /// an open stream].
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
}

/// The same options as they appear in the configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileConfig {
    listen: Option<String>,
    interface: Option<String>,
    master: Option<String>,
    clock: Option<ClockChoice>,
    ntp: Option<String>,
    output: Option<OutputChoice>,
    device: Option<String>,
    device_index: Option<u32>,
    period_ms: Option<f64>,
    buffer_size: Option<u32>,
    sink_latency: Option<f64>,
    tolerance: Option<f64>,
    drift_correction: Option<bool>,
    resend: Option<bool>,
    status_socket: Option<PathBuf>,
    status_interval: Option<f64>,
    virtual_ppm: Option<f64>,
    virtual_latency_ms: Option<f64>,
    virtual_coarse: Option<bool>,
    virtual_log: Option<PathBuf>,
    key_file: Option<PathBuf>,
    virtual_audio: Option<PathBuf>,
    name: Option<String>,
    state_file: Option<PathBuf>,
    volume: Option<u8>,
    channels: Option<String>,
}

/// Where the clock comes from, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClockSource {
    /// Whatever the stream's clock domain asks for.
    Auto,
    /// The master's time service, at the port its status message announces.
    Master,
    /// An NTP server: this one, or the one the stream names.
    Ntp(Option<SocketAddr>),
    /// This host's CLOCK_REALTIME as-is.
    System,
}

/// The output device, resolved.
#[derive(Clone, Debug, PartialEq)]
pub enum OutputConfig {
    /// ALSA device by name, or by index in the hint list.
    Alsa {
        device: String,
        device_index: Option<u32>,
        /// `None`: from the stream's latency (see [`crate::output::alsa_period_ms`]).
        period_ms: Option<f64>,
        buffer_frames: Option<u32>,
    },
    /// A native PipeWire stream into `target` (node name), or the default sink.
    PipeWire {
        target: Option<String>,
        /// `None`: the graph's quantum is left alone unless the stream's latency needs a
        /// smaller one.
        period_ms: Option<f64>,
        buffer_frames: Option<u32>,
    },
    /// A native PulseAudio stream into `sink` (sink name), or the server's default sink.
    Pulse {
        sink: Option<String>,
        period_ms: f64,
        buffer_frames: Option<u32>,
    },
    /// The simulated DAC.
    Virtual {
        ppm: f64,
        latency_ms: f64,
        coarse: bool,
        log: Option<PathBuf>,
        /// Where to write the played audio (f32 LE), if anywhere.
        audio: Option<PathBuf>,
        period_ms: f64,
        buffer_frames: Option<u32>,
    },
}

impl OutputConfig {
    /// The output's name as `--output` spells it.
    pub fn name(&self) -> &'static str {
        match self {
            OutputConfig::Alsa { .. } => "alsa",
            OutputConfig::PipeWire { .. } => "pipewire",
            OutputConfig::Pulse { .. } => "pulse",
            OutputConfig::Virtual { .. } => "virtual",
        }
    }

    /// Whether this build has the output (each sound system's is a cargo feature).
    pub fn is_built(&self) -> bool {
        match self {
            OutputConfig::Alsa { .. } => cfg!(feature = "alsa"),
            OutputConfig::PipeWire { .. } => cfg!(feature = "pipewire"),
            OutputConfig::Pulse { .. } => cfg!(feature = "pulse"),
            OutputConfig::Virtual { .. } => true,
        }
    }
}

/// The receiver's resolved configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Address to bind (and the group to join when it is multicast).
    pub listen: SocketAddr,
    /// Interface for the multicast join.
    pub interface: Option<String>,
    /// The only master accepted, if set.
    pub master: Option<IpAddr>,
    /// Clock source.
    pub clock: ClockSource,
    /// Output device.
    pub output: OutputConfig,
    /// Trim: play this much earlier, in ns.
    pub sink_latency_ns: i64,
    /// Hard-resync threshold, in ns.
    pub tolerance_ns: i64,
    /// Steer the playback speed to cancel drift.
    pub drift_correction: bool,
    /// Ask for resends of lost packets.
    pub resend: bool,
    /// Status socket path.
    pub status_socket: PathBuf,
    /// Seconds between status log lines (0 = off).
    pub status_interval_s: f64,
    /// Stop after this long.
    pub duration_s: Option<f64>,
    /// The household key file, if any.
    pub key_file: Option<PathBuf>,
    /// The room's name (before any rename from the master).
    pub name: String,
    /// The state file (id and settings).
    pub state_file: PathBuf,
    /// First settings, until the state file has some (trim = the sink latency).
    pub settings: Settings,
}

/// A configuration problem, phrased for the user.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown key or a wrong type.
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// One option has a bad value.
    #[error("bad {option} {value:?}: {why}")]
    Value {
        option: &'static str,
        value: String,
        why: String,
    },
}

fn bad(option: &'static str, value: impl ToString, why: impl ToString) -> ConfigError {
    ConfigError::Value {
        option,
        value: value.to_string(),
        why: why.to_string(),
    }
}

fn ms_to_ns(option: &'static str, ms: f64, min: f64, max: f64) -> Result<i64, ConfigError> {
    if !ms.is_finite() || ms < min || ms > max {
        return Err(bad(
            option,
            ms,
            format!("must be between {min} and {max} ms"),
        ));
    }
    Ok((ms * 1e6).round() as i64)
}

/// Resolves `host[:port]` (IPv6 as `[addr]:port`) with `default_port` when none is given, by
/// `wavesync_net::resolve`'s rule (a name's first IPv4 address, else its first); an error
/// names `option`.
pub fn resolve_host_port(
    option: &'static str,
    s: &str,
    default_port: u16,
) -> Result<SocketAddr, ConfigError> {
    wavesync_net::resolve::resolve(s, default_port).map_err(|e| bad(option, s, e))
}

fn default_status_socket() -> PathBuf {
    let dir = std::env::var_os("RUNTIME_DIRECTORY")
        .or_else(|| std::env::var_os("XDG_RUNTIME_DIR"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    dir.join("wavesync-receiver.sock")
}

impl Config {
    /// Reads the file named by `--config` (or the default path, if it exists) and applies the
    /// command line over it.
    pub fn load(args: &Args) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(p) => read_file(p)?,
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                read_file(Path::new(DEFAULT_CONFIG_PATH))?
            }
            None => FileConfig::default(),
        };
        let mut cfg = Config::resolve(args, file)?;
        // The packages' key file, when nothing else is configured.
        let default_key = Path::new(wavesync_net::protection::DEFAULT_KEY_PATH);
        if cfg.key_file.is_none() && default_key.exists() {
            cfg.key_file = Some(default_key.to_path_buf());
        }
        Ok(cfg)
    }

    /// Parses a configuration file's text and applies the command line over it.
    pub fn from_toml(args: &Args, text: &str) -> Result<Config, ConfigError> {
        let file = parse_file(Path::new("<config>"), text)?;
        Config::resolve(args, file)
    }

    fn resolve(a: &Args, f: FileConfig) -> Result<Config, ConfigError> {
        let listen_s = a
            .listen
            .clone()
            .or(f.listen)
            .unwrap_or_else(|| defaults::DESTINATION.to_string());
        let listen = resolve_host_port("listen", &listen_s, defaults::PORT)?;
        let master = match a.master.clone().or(f.master) {
            Some(m) => Some(resolve_host_port("master", &m, defaults::CONTROL_PORT)?.ip()),
            None => None,
        };
        let ntp = a.ntp.clone().or(f.ntp);
        let clock_choice = a.clock.or(f.clock);
        let clock = match (clock_choice, ntp) {
            (Some(ClockChoice::Ntp), None) => ClockSource::Ntp(None),
            (Some(ClockChoice::Ntp) | None, Some(n)) => {
                ClockSource::Ntp(Some(resolve_host_port("ntp", &n, defaults::NTP_PORT)?))
            }
            (
                Some(c @ (ClockChoice::Master | ClockChoice::System | ClockChoice::Auto)),
                Some(n),
            ) => {
                return Err(bad(
                    "ntp",
                    n,
                    format!(
                        "an NTP server only makes sense with --clock ntp, not {c:?} (with \
                         --clock auto the server is the one the master names)"
                    ),
                ))
            }
            (Some(ClockChoice::System), None) => ClockSource::System,
            (Some(ClockChoice::Master), None) => ClockSource::Master,
            (Some(ClockChoice::Auto) | None, None) => ClockSource::Auto,
        };
        let period_given = a.period_ms.or(f.period_ms);
        let period_ms = period_given.unwrap_or(5.0);
        ms_to_ns("period-ms", period_ms, 0.5, 200.0)?;
        let buffer_frames = a.buffer_size.or(f.buffer_size);
        if let Some(b) = buffer_frames {
            if !(64..=1 << 20).contains(&b) {
                return Err(bad(
                    "buffer-size",
                    b,
                    "must be between 64 and 1048576 frames",
                ));
            }
        }
        let output = match a.output.or(f.output).unwrap_or(OutputChoice::DEFAULT) {
            OutputChoice::Alsa => OutputConfig::Alsa {
                device: a
                    .device
                    .clone()
                    .or(f.device)
                    .unwrap_or_else(|| "default".to_string()),
                device_index: a.device_index.or(f.device_index),
                period_ms: period_given,
                buffer_frames,
            },
            OutputChoice::Pipewire => OutputConfig::PipeWire {
                target: a.device.clone().or(f.device),
                period_ms: period_given,
                buffer_frames,
            },
            OutputChoice::Pulse => OutputConfig::Pulse {
                sink: a.device.clone().or(f.device),
                period_ms,
                buffer_frames,
            },
            OutputChoice::Virtual => {
                let ppm = a.virtual_ppm.or(f.virtual_ppm).unwrap_or(0.0);
                if !ppm.is_finite() || ppm.abs() > 10_000.0 {
                    return Err(bad("virtual-ppm", ppm, "must be within +-10000"));
                }
                let latency_ms = a.virtual_latency_ms.or(f.virtual_latency_ms).unwrap_or(2.0);
                ms_to_ns("virtual-latency-ms", latency_ms, 0.0, 1000.0)?;
                OutputConfig::Virtual {
                    ppm,
                    latency_ms,
                    coarse: a.virtual_coarse || f.virtual_coarse.unwrap_or(false),
                    log: a.virtual_log.clone().or(f.virtual_log),
                    audio: a.virtual_audio.clone().or(f.virtual_audio),
                    period_ms,
                    buffer_frames,
                }
            }
        };
        if !output.is_built() {
            return Err(bad(
                "output",
                output.name(),
                format!(
                    "this receiver was built without it (cargo feature {:?})",
                    output.name()
                ),
            ));
        }
        let sink_latency_ns = ms_to_ns(
            "sink-latency",
            a.sink_latency.or(f.sink_latency).unwrap_or(0.0),
            -5000.0,
            5000.0,
        )?;
        let tolerance_ns = ms_to_ns(
            "tolerance",
            a.tolerance.or(f.tolerance).unwrap_or(2.0),
            0.05,
            10_000.0,
        )?;
        let status_interval_s = a.status_interval.or(f.status_interval).unwrap_or(10.0);
        if !status_interval_s.is_finite() || status_interval_s < 0.0 {
            return Err(bad("status-interval", status_interval_s, "must be >= 0"));
        }
        if let Some(d) = a.duration {
            if !d.is_finite() || d <= 0.0 {
                return Err(bad("duration", d, "must be > 0 seconds"));
            }
        }
        let volume = a.volume.or(f.volume).unwrap_or(MAX_VOLUME);
        if volume > MAX_VOLUME {
            return Err(bad("volume", volume, "must be between 0 and 100"));
        }
        let channels = match a.channels.clone().or(f.channels) {
            Some(c) => Channels::from_name(&c)
                .ok_or_else(|| bad("channels", &c, "must be all, left, right or mono"))?,
            None => Channels::All,
        };
        let settings = Settings {
            volume,
            channels,
            trim_us: (sink_latency_ns / 1000) as i32,
            ..Settings::default()
        };
        let name = match a.name.clone().or(f.name) {
            Some(n) if n.trim().is_empty() || n.len() > 64 => {
                return Err(bad("name", n, "must be 1 to 64 bytes"))
            }
            Some(n) => n,
            None => crate::settings::host_name(),
        };
        Ok(Config {
            name,
            state_file: a
                .state_file
                .clone()
                .or(f.state_file)
                .unwrap_or_else(crate::settings::default_state_file),
            settings,
            listen,
            interface: a.interface.clone().or(f.interface),
            master,
            clock,
            output,
            sink_latency_ns,
            tolerance_ns,
            drift_correction: !a.no_drift_correction && f.drift_correction.unwrap_or(true),
            resend: !a.no_resend && f.resend.unwrap_or(true),
            status_socket: a
                .status_socket
                .clone()
                .or(f.status_socket)
                .unwrap_or_else(default_status_socket),
            status_interval_s,
            duration_s: a.duration,
            key_file: a.key_file.clone().or(f.key_file),
        })
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_file(path, &text)
}

fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.message().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("wavesync-receiver").chain(v.iter().copied()))
            .expect("test arguments parse")
    }

    #[test]
    #[cfg(feature = "alsa")]
    fn defaults_are_multicast_auto_clock_alsa() {
        let c = Config::from_toml(&args(&[]), "").unwrap();
        assert_eq!(c.listen, "239.255.77.77:45300".parse().unwrap());
        assert_eq!(c.clock, ClockSource::Auto);
        assert!(matches!(c.output, OutputConfig::Alsa { ref device, .. } if device == "default"));
        assert_eq!(c.tolerance_ns, 2_000_000);
        assert!(c.drift_correction && c.resend);
    }

    #[test]
    #[cfg(feature = "alsa")]
    fn command_line_wins_over_file() {
        let file = "listen = \"127.0.0.1:5000\"\nsink_latency = 1.5\ndevice = \"hw:1,0\"\n";
        let c = Config::from_toml(&args(&["--sink-latency", "-2"]), file).unwrap();
        assert_eq!(c.listen, "127.0.0.1:5000".parse().unwrap());
        assert_eq!(c.sink_latency_ns, -2_000_000);
        assert!(matches!(c.output, OutputConfig::Alsa { ref device, .. } if device == "hw:1,0"));
    }

    #[test]
    fn ntp_implies_ntp_clock_with_default_port() {
        let c = Config::from_toml(&args(&["--ntp", "127.0.0.1"]), "").unwrap();
        assert_eq!(
            c.clock,
            ClockSource::Ntp(Some("127.0.0.1:123".parse().unwrap()))
        );
        let c = Config::from_toml(&args(&["--clock", "ntp"]), "").unwrap();
        assert_eq!(
            c.clock,
            ClockSource::Ntp(None),
            "the server the stream names"
        );
        let e = Config::from_toml(&args(&["--clock", "master", "--ntp", "h"]), "").unwrap_err();
        assert!(
            e.to_string().contains("only makes sense with --clock ntp"),
            "{e}"
        );
    }

    #[test]
    fn the_clock_choice_comes_from_the_file_too() {
        for (text, want) in [
            ("clock = \"system\"", ClockSource::System),
            ("clock = \"master\"", ClockSource::Master),
            ("clock = \"auto\"", ClockSource::Auto),
            (
                "clock = \"ntp\"\nntp = \"127.0.0.1:11123\"",
                ClockSource::Ntp(Some("127.0.0.1:11123".parse().unwrap())),
            ),
        ] {
            assert_eq!(
                Config::from_toml(&args(&[]), text).unwrap().clock,
                want,
                "{text}"
            );
        }
        let c = Config::from_toml(&args(&["--clock", "auto"]), "clock = \"system\"").unwrap();
        assert_eq!(c.clock, ClockSource::Auto, "the command line wins");
        let e = Config::from_toml(&args(&[]), "clock = \"gps\"").unwrap_err();
        assert!(e.to_string().contains("unknown variant"), "{e}");
    }

    #[test]
    fn bad_values_name_the_option() {
        let e = Config::from_toml(&args(&["--tolerance", "0"]), "").unwrap_err();
        assert!(e.to_string().starts_with("bad tolerance"), "{e}");
        let e = Config::from_toml(&args(&["--listen", "not a host"]), "").unwrap_err();
        assert!(e.to_string().starts_with("bad listen"), "{e}");
        let e = Config::from_toml(&args(&[]), "lisen = \"x\"").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        let e = Config::from_toml(&args(&[]), "period_ms = \"fast\"").unwrap_err();
        assert!(e.to_string().contains("invalid type"), "{e}");
    }

    #[test]
    #[cfg(not(feature = "alsa"))]
    fn a_build_without_alsa_refuses_it_and_defaults_to_another() {
        let e = Config::from_toml(&args(&["--output", "alsa"]), "").unwrap_err();
        assert!(e.to_string().contains("built without it"), "{e}");
        let c = Config::from_toml(&args(&[]), "").unwrap();
        assert_ne!(c.output.name(), "alsa");
        assert!(c.output.is_built());
    }

    #[test]
    #[cfg(feature = "pulse")]
    fn pulse_output_takes_the_sink_from_device() {
        let c =
            Config::from_toml(&args(&["--output", "pulse", "--device", "kitchen"]), "").unwrap();
        assert_eq!(
            c.output,
            OutputConfig::Pulse {
                sink: Some("kitchen".into()),
                period_ms: 5.0,
                buffer_frames: None,
            }
        );
        let c = Config::from_toml(&args(&[]), "output = \"pulse\"\nbuffer_size = 960").unwrap();
        assert!(
            matches!(
                c.output,
                OutputConfig::Pulse {
                    sink: None,
                    buffer_frames: Some(960),
                    ..
                }
            ),
            "{:?}",
            c.output
        );
    }

    #[test]
    #[cfg(feature = "pipewire")]
    fn pipewire_output_takes_the_sink_from_device() {
        let c =
            Config::from_toml(&args(&["--output", "pipewire", "--device", "kitchen"]), "").unwrap();
        assert_eq!(
            c.output,
            OutputConfig::PipeWire {
                target: Some("kitchen".into()),
                period_ms: None,
                buffer_frames: None
            }
        );
        let c = Config::from_toml(&args(&[]), "output = \"pipewire\"\nperiod_ms = 2.0").unwrap();
        assert!(matches!(
            c.output,
            OutputConfig::PipeWire { target: None, period_ms: Some(p), .. } if p == 2.0
        ));
    }

    #[test]
    fn virtual_output_options() {
        let c = Config::from_toml(
            &args(&[
                "--output",
                "virtual",
                "--virtual-ppm",
                "-80",
                "--virtual-coarse",
            ]),
            "",
        )
        .unwrap();
        match c.output {
            OutputConfig::Virtual { ppm, coarse, .. } => {
                assert_eq!(ppm, -80.0);
                assert!(coarse);
            }
            other => panic!("expected virtual output, got {other:?}"),
        }
    }

    #[test]
    fn key_file_from_file_or_command_line() {
        let c = Config::from_toml(&args(&[]), "").unwrap();
        assert_eq!(c.key_file, None);
        let c = Config::from_toml(&args(&[]), "key_file = \"/etc/wavesync/key\"").unwrap();
        assert_eq!(c.key_file, Some(PathBuf::from("/etc/wavesync/key")));
        let c = Config::from_toml(&args(&["--key-file", "/k"]), "key_file = \"/x\"").unwrap();
        assert_eq!(c.key_file, Some(PathBuf::from("/k")));
    }
}
