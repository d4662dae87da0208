//! The `wavesync-sender` command line and what it means.

use std::net::IpAddr;

use clap::{Parser, ValueEnum};
use wavesync_common::format::{SampleFormat, StreamFormat};
use wavesync_common::packetizer::PacketizerConfig;

use crate::input::{InputOptions, InputSpec, RawFormat};
use wavesync_engine::{EngineClock, EngineConfig, SettingNames};
use wavesync_net::resolve::{resolve, resolve_all};
use wavesync_net::{defaults, NetError, NetOptions};

/// Wire sample format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WireFormat {
    /// 16-bit (RTP L16).
    L16,
    /// 24-bit (RTP L24).
    L24,
}

/// The clock the stamps are on (the stream's clock domain).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ClockArg {
    /// This host's CLOCK_MONOTONIC; receivers ask this sender's time service (the default).
    Master,
    /// The NTP server given with --ntp, read (never set) like the receivers read it; the
    /// receivers are told to ask it too.
    Ntp,
    /// This host's CLOCK_REALTIME as-is, for hosts that all keep theirs with chrony or PTP.
    System,
}

/// Stream audio to WaveSync receivers.
#[derive(Parser, Debug, Clone, PartialEq)]
#[command(
    name = "wavesync-sender",
    version,
    about = "Stream audio to WaveSync receivers, every room in sync.",
    long_about = "Stream audio to WaveSync receivers, every room in sync.\n\n\
        wavesync-sender reads audio from PulseAudio, a unix socket, a pipe, a WAV file or a \
        test tone, stamps every packet with the time it must play, and sends it to a multicast \
        group and/or a list of receivers. It also answers the receivers' time queries and \
        re-sends lost packets, so nothing else (no NTP daemon, no root) is needed.\n\n\
        On a desktop with PipeWire, the WaveSync sink (the PipeWire module) does the same \
        without this program.",
    after_help = "Examples:\n  \
        wavesync-sender --input pulse:wsync.monitor\n  \
        wavesync-sender --input unix:/tmp/music.source --dest laptop:45300 --dest disp:45300\n  \
        sox song.flac -t raw -r 48000 -e signed -b 16 -c 2 - | wavesync-sender --input -\n  \
        wavesync-sender --input wav:song.wav --loop --latency 300\n  \
        wavesync-sender --input tone:440 --dest 127.0.0.1:45300"
)]
pub struct Args {
    /// Where the audio comes from: tone[:HZ], chirp[:SECONDS], wav:FILE, fifo:PATH, - (stdin),
    /// unix:PATH (PulseAudio's module-simple-protocol-unix socket) or pulse[:SOURCE].
    #[arg(short, long, value_name = "SPEC", required_unless_present = "spec")]
    pub input: Option<InputSpec>,
    /// The input may also be given without --input.
    #[arg(value_name = "SPEC", conflicts_with = "input", hide = true)]
    pub spec: Option<InputSpec>,
    /// Where to send the stream: a multicast group or a receiver, HOST:PORT (repeat for
    /// several; names are resolved; IPv4 and IPv6) [default: 239.255.77.77:45300].
    #[arg(short, long = "dest", value_name = "HOST:PORT")]
    pub dest: Vec<String>,
    /// How long after capture every room plays the audio, ms. Larger rides out slower
    /// networks and Wi-Fi; smaller is snappier.
    #[arg(short, long, value_name = "MS", default_value_t = 150.0)]
    pub latency: f64,
    /// Audio per packet, ms (smaller packets for low latency).
    #[arg(long, value_name = "MS", conflicts_with = "payload_size")]
    pub packet_ms: Option<f64>,
    /// Largest UDP payload per packet, bytes [default: 1472, fits a 1500-byte Ethernet MTU].
    #[arg(long, value_name = "BYTES")]
    pub payload_size: Option<usize>,
    /// Multicast TTL (how many routers the stream may cross) [default: 1, this network only].
    #[arg(long, value_name = "N")]
    pub ttl: Option<u32>,
    /// Network interface for multicast, by name (eth0) or address.
    #[arg(long, value_name = "IF")]
    pub interface: Option<String>,
    /// Send the stream from this local address.
    #[arg(long, value_name = "IP")]
    pub source_address: Option<IpAddr>,
    /// Do not deliver multicast to receivers on this machine.
    #[arg(long, visible_alias = "no-loop")]
    pub no_multicast_loop: bool,
    /// Allow broadcast destinations (e.g. 192.168.1.255:45300).
    #[arg(long)]
    pub broadcast: bool,
    /// Sample rate, Hz [default: the WAV file's; 44100 for unix:, else 48000]. The sender does
    /// not resample: this is the input's rate.
    #[arg(long, value_name = "HZ")]
    pub rate: Option<u32>,
    /// Channels [default: the WAV file's, else 2].
    #[arg(long, value_name = "N")]
    pub channels: Option<u8>,
    /// Sample format on the network.
    #[arg(long, value_enum, value_name = "FORMAT", default_value = "l16")]
    pub format: WireFormat,
    /// Sample format of raw input (fifo:, -, unix:): s16le, s16be, s24le, s32le, f32le.
    #[arg(long, value_name = "FORMAT", default_value = "s16le")]
    pub input_format: RawFormat,
    /// Start the WAV file again at its end.
    #[arg(long = "loop")]
    pub looped: bool,
    /// UDP port for time queries and resend requests (announced to the receivers).
    #[arg(long, value_name = "PORT", default_value_t = defaults::CONTROL_PORT)]
    pub control_port: u16,
    /// Name shown by the receivers [default: this host's name].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Pause the stream after this many seconds of digital silence (0: never).
    #[arg(long, value_name = "S", default_value_t = 1.0)]
    pub silence_timeout: f64,
    /// Log a statistics line this often, seconds (0: never).
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    pub stats_interval: f64,
    /// Stop after this many seconds.
    #[arg(long, value_name = "S")]
    pub duration: Option<f64>,
    /// Household key file (`wavesync key new PATH`): every datagram is authenticated, audio
    /// encrypted, and only authentic time requests and NACKs are answered [default: none, an
    /// open stream].
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<std::path::PathBuf>,
    /// With --key-file: leave the audio readable (still authenticated).
    #[arg(long, requires = "key_file")]
    pub no_encrypt: bool,
    /// The clock the stamps are on (the clock domain receivers follow with their default
    /// --clock auto): master (this host's monotonic clock, served to the receivers), ntp (the
    /// --ntp server's clock) or system (this host's CLOCK_REALTIME, kept by chrony or PTP).
    #[arg(long, value_enum, default_value = "master")]
    pub clock: ClockArg,
    /// The NTP server of --clock ntp, as HOST or HOST:PORT (port default 123); receivers are
    /// told to ask it too (one on this host, given as 127.0.0.1:PORT, at this host's address).
    #[arg(long, value_name = "HOST[:PORT]")]
    pub ntp: Option<String>,
}

/// A setting that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    /// A number out of its range.
    #[error("{0}")]
    Range(String),
    /// A destination problem.
    #[error(transparent)]
    Net(#[from] NetError),
}

/// The command line's names for the settings an engine error can blame.
pub const SETTING_NAMES: SettingNames = SettingNames {
    control_port: "--control-port",
    interface: "--interface",
    key_file: "--key-file",
};

/// Everything the run needs, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct RunConfig {
    /// The input.
    pub input: InputSpec,
    /// How to open it.
    pub input_opts: InputOptions,
    /// The engine (its format is set from the input when it opens).
    pub engine: EngineConfig,
    /// Wire sample format.
    pub sample: SampleFormat,
    /// Audio per packet, if asked for by duration.
    pub packet_ns: Option<i64>,
    /// Largest UDP payload.
    pub payload_size: usize,
    /// Stop after this long, ns.
    pub duration_ns: Option<i64>,
}

fn ms_to_ns(what: &str, ms: f64, max_ms: f64) -> Result<i64, ArgsError> {
    if !(ms.is_finite() && (0.0..=max_ms).contains(&ms)) {
        return Err(ArgsError::Range(format!(
            "{what} {ms} is out of range (0-{max_ms})"
        )));
    }
    Ok((ms * 1e6).round() as i64)
}

/// This host's name (for the status message).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "WaveSync".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

impl Args {
    /// Checks the arguments and resolves the destinations.
    pub fn to_config(&self) -> Result<RunConfig, ArgsError> {
        let dests = if self.dest.is_empty() {
            vec![defaults::DESTINATION.to_string()]
        } else {
            self.dest.clone()
        };
        let destinations = resolve_all(&dests, defaults::PORT)?;
        let latency_ns = ms_to_ns("--latency", self.latency, 4_000_000.0)?;
        let packet_ns = match self.packet_ms {
            Some(ms) if ms > 0.0 => Some(ms_to_ns("--packet-ms", ms, 1_000.0)?),
            Some(ms) => {
                return Err(ArgsError::Range(format!(
                    "--packet-ms {ms} must be above 0"
                )))
            }
            None => None,
        };
        let payload_size = self
            .payload_size
            .unwrap_or(wavesync_common::wire::rtp::DEFAULT_MAX_UDP_PAYLOAD);
        if !(64..=65_507).contains(&payload_size) {
            return Err(ArgsError::Range(format!(
                "--payload-size {payload_size} is out of range (64-65507)"
            )));
        }
        let silence = ms_to_ns("--silence-timeout", self.silence_timeout * 1e3, 86_400e3)?;
        let stats = ms_to_ns("--stats-interval", self.stats_interval * 1e3, 86_400e3)?;
        let duration_ns = self
            .duration
            .map(|s| ms_to_ns("--duration", s * 1e3, 1e12))
            .transpose()?;
        if self.control_port == 0 {
            return Err(ArgsError::Range("--control-port must not be 0".into()));
        }
        let sample = match self.format {
            WireFormat::L16 => SampleFormat::L16,
            WireFormat::L24 => SampleFormat::L24,
        };
        let mut engine = EngineConfig::new(StreamFormat::DEFAULT, destinations);
        engine.latency_ns = latency_ns;
        engine.name = self.name.clone().unwrap_or_else(hostname);
        engine.net = NetOptions {
            ttl: self.ttl,
            interface: self.interface.clone(),
            multicast_loop: !self.no_multicast_loop,
            broadcast: self.broadcast,
            source: self.source_address,
        };
        engine.control_port = self.control_port;
        engine.silence_timeout_ns = (silence > 0).then_some(silence);
        engine.stats_interval_ns = (stats > 0).then_some(stats);
        engine.key_file = self.key_file.clone();
        engine.encrypt = !self.no_encrypt;
        engine.clock = match (self.clock, &self.ntp) {
            (ClockArg::Master, None) => EngineClock::Master,
            (ClockArg::System, None) => EngineClock::System,
            (ClockArg::Ntp, Some(n)) => EngineClock::Ntp(resolve(n, defaults::NTP_PORT)?),
            (ClockArg::Ntp, None) => {
                return Err(ArgsError::Range(
                    "--clock ntp needs the NTP server: --ntp HOST[:PORT]".into(),
                ))
            }
            (c, Some(_)) => {
                return Err(ArgsError::Range(format!(
                    "--ntp only makes sense with --clock ntp, not {c:?}"
                )))
            }
        };
        let input = self
            .input
            .clone()
            .or_else(|| self.spec.clone())
            .ok_or_else(|| ArgsError::Range("no input given (--input SPEC)".into()))?;
        Ok(RunConfig {
            input,
            input_opts: InputOptions {
                rate: self.rate,
                channels: self.channels,
                raw_format: self.input_format,
                looped: self.looped,
                ..InputOptions::default()
            },
            engine,
            sample,
            packet_ns,
            payload_size,
            duration_ns,
        })
    }
}

impl RunConfig {
    /// Frames per packet for `format`: from the packet duration if given, else the most
    /// that fit the payload size.
    pub fn frames_per_packet(&self, format: StreamFormat) -> u16 {
        let max = PacketizerConfig::max_frames_for_payload(format, self.payload_size);
        match self.packet_ns {
            Some(ns) => PacketizerConfig::frames_for_duration(format, ns).min(max),
            None => max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("wavesync-sender").chain(line.split_whitespace()))
    }

    #[test]
    fn defaults_are_the_multicast_group_and_150_ms() {
        let c = parse("--input tone").unwrap().to_config().unwrap();
        assert_eq!(
            c.engine.destinations,
            vec!["239.255.77.77:45300".parse().unwrap()]
        );
        assert_eq!(c.engine.latency_ns, 150_000_000);
        assert_eq!(c.engine.control_port, 45301);
        assert!(c.engine.net.multicast_loop);
        assert_eq!(c.sample, SampleFormat::L16);
        assert_eq!(c.frames_per_packet(StreamFormat::DEFAULT), 361);
    }

    #[test]
    fn the_clock_domain_and_its_ntp_server() {
        let clock = |line: &str| parse(line).unwrap().to_config().map(|c| c.engine.clock);
        assert_eq!(clock("-i tone").unwrap(), EngineClock::Master);
        assert_eq!(
            clock("-i tone --clock system").unwrap(),
            EngineClock::System
        );
        assert_eq!(
            clock("-i tone --clock ntp --ntp 127.0.0.1:11123").unwrap(),
            EngineClock::Ntp("127.0.0.1:11123".parse().unwrap())
        );
        assert_eq!(
            clock("-i tone --clock ntp --ntp 192.0.2.1").unwrap(),
            EngineClock::Ntp("192.0.2.1:123".parse().unwrap())
        );
        let e = clock("-i tone --clock ntp").unwrap_err().to_string();
        assert!(e.contains("--ntp HOST"), "{e}");
        let e = clock("-i tone --ntp 192.0.2.1").unwrap_err().to_string();
        assert!(e.contains("only makes sense with --clock ntp"), "{e}");
        assert!(parse("-i tone --clock gps").is_err());
    }

    #[test]
    fn every_option_lands_where_it_should() {
        let c = parse(
            "-i unix:/tmp/music.source -d 127.0.0.1:1111 -d [::1]:1112 --latency 1000 \
             --packet-ms 5 --ttl 4 --interface lo --no-loop --broadcast --rate 44100 \
             --channels 1 --format l24 --input-format s24le --loop --control-port 5000 \
             --name kitchen --silence-timeout 0 --stats-interval 0 --duration 2.5 \
             --source-address 127.0.0.1",
        )
        .unwrap()
        .to_config()
        .unwrap();
        assert_eq!(c.engine.destinations.len(), 2);
        assert_eq!(c.engine.latency_ns, 1_000_000_000);
        assert_eq!(c.engine.net.ttl, Some(4));
        assert_eq!(c.engine.net.interface.as_deref(), Some("lo"));
        assert!(!c.engine.net.multicast_loop && c.engine.net.broadcast);
        assert_eq!(c.engine.net.source, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(c.input_opts.rate, Some(44_100));
        assert_eq!(c.input_opts.channels, Some(1));
        assert_eq!(c.input_opts.raw_format, RawFormat::S24Le);
        assert!(c.input_opts.looped);
        assert_eq!(c.sample, SampleFormat::L24);
        assert_eq!(c.engine.control_port, 5000);
        assert_eq!(c.engine.name, "kitchen");
        assert_eq!(c.engine.silence_timeout_ns, None);
        assert_eq!(c.engine.stats_interval_ns, None);
        assert_eq!(c.duration_ns, Some(2_500_000_000));
        let f = StreamFormat {
            rate: 44_100,
            channels: 1,
            sample: SampleFormat::L24,
        };
        assert_eq!(c.frames_per_packet(f), 221);
    }

    #[test]
    fn the_input_may_be_positional() {
        let c = parse("wav:/a.wav --loop -d 127.0.0.1:5")
            .unwrap()
            .to_config()
            .unwrap();
        assert_eq!(c.input, InputSpec::Wav("/a.wav".into()));
        assert!(parse("tone --input tone").is_err(), "not both");
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        assert!(parse("--dest 127.0.0.1:1").is_err(), "--input is required");
        assert!(parse("-i tone --packet-ms 5 --payload-size 500").is_err());
        assert!(parse("-i mp3:x")
            .unwrap_err()
            .to_string()
            .contains("expected tone"));
        assert!(parse("-i tone --input-format u8").is_err());
        let e = parse("-i tone --latency=-5")
            .unwrap()
            .to_config()
            .unwrap_err();
        assert!(
            e.to_string().contains("--latency -5 is out of range"),
            "{e}"
        );
        let e = parse("-i tone --payload-size 20")
            .unwrap()
            .to_config()
            .unwrap_err();
        assert!(e.to_string().contains("--payload-size 20"), "{e}");
        let e = parse("-i tone -d nohost.invalid:1")
            .unwrap()
            .to_config()
            .unwrap_err();
        assert!(e.to_string().contains("cannot resolve host"), "{e}");
    }
}
