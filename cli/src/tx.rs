//! `wavesync --tx ...`: the Python tool's sender command line, mapped onto wavesync-sender.
//!
//! `wavesync --tx /tmp/music.source --channel laptop:1111 --channel disp:1111 --latency 1000`
//! reads the unix socket of PulseAudio's module-simple-protocol-unix (as the old tool did) and
//! streams to every channel with the new engine. Every old option is accepted; the ones whose
//! job is now done another way are explained in one line each.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use clap::Parser;
use wavesync_net::defaults::LEGACY_CHANNEL;
use wavesync_sender::args::{Args as SenderArgs, WireFormat};
use wavesync_sender::input::{InputSpec, RawFormat};

/// Environment variable naming the receiver program `--local-play` starts (default:
/// `wavesync-receiver` beside this program, else from PATH).
pub const RECEIVER_BIN_ENV: &str = "WAVESYNC_RECEIVER_BIN";

/// The Python tool's sender options.
#[derive(Parser, Debug, Clone, PartialEq)]
#[command(
    name = "wavesync --tx",
    about = "Send the sound of a PulseAudio unix socket to WaveSync receivers (legacy command line)",
    after_help = "In PulseAudio: load-module module-null-sink sink_name=wsync\n  \
        load-module module-simple-protocol-unix rate=44100 format=s16le channels=2 record=true \
        source=wsync.monitor socket=/tmp/music.source\n\
        wavesync-sender --help shows the sender's full set of options."
)]
pub struct LegacyTx {
    /// Unix socket of module-simple-protocol-unix to read (s16le, or s24le with --24bits).
    #[arg(long, value_name = "INPUT")]
    pub tx: PathBuf,
    /// Multicast group or unicast receiver, ADDRESS:PORT; may be repeated
    /// [default: 224.0.0.57:45300].
    #[arg(long = "channel", value_name = "ADDRESS:PORT")]
    pub channel: Vec<String>,
    /// Time to synchronise the outputs, ms.
    #[arg(long, value_name = "MSEC", default_value_t = 1000)]
    pub latency: u32,
    /// UDP payload size, bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 1472)]
    pub payload_size: usize,
    /// Multicast TTL.
    #[arg(long, value_name = "TTL", default_value_t = 2)]
    pub ttl: u32,
    /// Compression level 1-9 (compression was dropped; accepted and ignored).
    #[arg(long, value_name = "LEVEL")]
    pub compress: Option<u32>,
    /// Do not loop multicast packets back to this machine.
    #[arg(long)]
    pub no_loop: bool,
    /// Allow broadcast channels.
    #[arg(long)]
    pub broadcast: bool,
    /// Sample rate of the socket's audio, Hz.
    #[arg(long, value_name = "Hz", default_value_t = 44_100)]
    pub rate: u32,
    /// Channels of the socket's audio.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub channels: u8,
    /// 24-bit samples (the socket gives s24le; 24-bit on the network).
    #[arg(long = "24bits")]
    pub bits24: bool,
    /// Send from this local address.
    #[arg(long, value_name = "IP")]
    pub source_address: Option<IpAddr>,
    /// Play the sound here too, in sync, through a local wavesync-receiver.
    #[arg(long)]
    pub local_play: bool,
    /// More logging.
    #[arg(long)]
    pub debug: bool,
    /// UDP port for time queries and resend requests (new; the old tool needed an NTP server).
    #[arg(long, value_name = "PORT", default_value_t = wavesync_net::defaults::CONTROL_PORT)]
    pub control_port: u16,
}

impl LegacyTx {
    /// The sender arguments these options mean, and one note per option that changed.
    pub fn to_sender_args(&self) -> (SenderArgs, Vec<String>) {
        let mut notes = Vec::new();
        if let Some(level) = self.compress {
            notes.push(format!(
                "--compress {level}: compression is gone; the stream is plain RTP L16/L24, which \
                 any LAN carries and receivers decode at no cost (lost packets are re-sent \
                 instead); ignored"
            ));
        }
        if self.debug {
            notes.push("--debug: use RUST_LOG=debug for more logging".into());
        }
        let dest = if self.channel.is_empty() {
            vec![LEGACY_CHANNEL.to_string()]
        } else {
            self.channel.clone()
        };
        let args = SenderArgs {
            input: Some(InputSpec::Unix(self.tx.clone())),
            spec: None,
            dest,
            latency: self.latency as f64,
            packet_ms: None,
            payload_size: Some(self.payload_size),
            ttl: Some(self.ttl),
            interface: None,
            source_address: self.source_address,
            no_multicast_loop: self.no_loop,
            broadcast: self.broadcast,
            rate: Some(self.rate),
            channels: Some(self.channels),
            format: if self.bits24 {
                WireFormat::L24
            } else {
                WireFormat::L16
            },
            input_format: if self.bits24 {
                RawFormat::S24Le
            } else {
                RawFormat::S16Le
            },
            looped: false,
            control_port: self.control_port,
            name: None,
            silence_timeout: 1.0,
            stats_interval: 10.0,
            duration: None,
            // The legacy command line has no key (the new wavesync-sender does).
            key_file: None,
            // Nor a clock domain: the master serves its own time.
            clock: wavesync_sender::args::ClockArg::Master,
            ntp: None,
            no_encrypt: false,
        };
        (args, notes)
    }
}

/// A local receiver for `--local-play`, stopped on drop.
struct LocalPlay {
    child: Child,
}

impl LocalPlay {
    fn receiver_bin() -> PathBuf {
        if let Some(p) = std::env::var_os(RECEIVER_BIN_ENV) {
            return PathBuf::from(p);
        }
        std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join("wavesync-receiver")))
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("wavesync-receiver"))
    }

    /// Starts a receiver listening on 127.0.0.1:`port` with this host as its master.
    fn start(port: u16) -> Result<Self, String> {
        let bin = Self::receiver_bin();
        let mut cmd = Command::new(&bin);
        wavesync_sender::signal::die_with_parent(&mut cmd);
        let child = cmd
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--master", "127.0.0.1"])
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "--local-play needs the receiver ({}): {e}; install wavesync-receiver",
                    bin.display()
                )
            })?;
        log::info!("--local-play: playing here too through a local receiver on 127.0.0.1:{port}");
        Ok(LocalPlay { child })
    }
}

impl Drop for LocalPlay {
    fn drop(&mut self) {
        wavesync_sender::signal::terminate(&mut self.child, std::time::Duration::from_secs(3));
    }
}

/// A free UDP port on loopback for the local receiver.
fn free_loopback_port() -> Result<u16, String> {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("--local-play: no free port on 127.0.0.1: {e}"))
}

/// Parses the legacy sender command line (`args` without the program name) and runs until
/// SIGINT/SIGTERM.
pub fn run_tx(args: &[String]) -> Result<(), String> {
    wavesync_sender::signal::install();
    run_tx_until(args, wavesync_sender::signal::stop_requested)
}

/// [`run_tx`] stopping when `stop` returns true.
pub fn run_tx_until(args: &[String], stop: impl Fn() -> bool) -> Result<(), String> {
    let legacy = match LegacyTx::try_parse_from(
        std::iter::once("wavesync").chain(args.iter().map(String::as_str)),
    ) {
        Ok(l) => l,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            let _ = e.print();
            return Ok(());
        }
        Err(e) => return Err(e.to_string()),
    };
    let (mut sender_args, notes) = legacy.to_sender_args();
    for n in notes {
        log::info!("{n}");
    }
    let _local = if legacy.local_play {
        let port = free_loopback_port()?;
        sender_args.dest.push(format!("127.0.0.1:{port}"));
        Some(LocalPlay::start(port)?)
    } else {
        None
    };
    let cfg = sender_args.to_config().map_err(|e| e.to_string())?;
    wavesync_sender::run::run(&cfg, stop)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> LegacyTx {
        LegacyTx::try_parse_from(std::iter::once("wavesync").chain(line.split_whitespace()))
            .unwrap()
    }

    #[test]
    fn the_seed_command_line_maps_onto_the_sender() {
        let l = parse(
            "--tx /tmp/music.source --channel laptop:1111 --channel disp:1111 \
             --channel phone:1111 --latency 1000",
        );
        let (a, notes) = l.to_sender_args();
        assert!(notes.is_empty());
        assert_eq!(a.input, Some(InputSpec::Unix("/tmp/music.source".into())));
        assert_eq!(a.dest, ["laptop:1111", "disp:1111", "phone:1111"]);
        assert_eq!(a.latency, 1000.0);
        assert_eq!(
            (a.rate, a.channels, a.ttl),
            (Some(44_100), Some(2), Some(2))
        );
        assert_eq!(a.payload_size, Some(1472));
        assert_eq!(
            (a.format, a.input_format),
            (WireFormat::L16, RawFormat::S16Le)
        );
    }

    #[test]
    fn old_defaults_and_every_option() {
        let (a, _) = parse("--tx /s").to_sender_args();
        assert_eq!(a.dest, [LEGACY_CHANNEL.to_string()]);
        let (a, notes) = parse(
            "--tx /s --payload-size 1000 --ttl 5 --no-loop --broadcast --rate 48000 \
             --channels 1 --24bits --source-address 127.0.0.1 --compress 6 --debug",
        )
        .to_sender_args();
        assert_eq!(a.payload_size, Some(1000));
        assert_eq!(a.ttl, Some(5));
        assert!(a.no_multicast_loop && a.broadcast);
        assert_eq!((a.rate, a.channels), (Some(48_000), Some(1)));
        assert_eq!(
            (a.format, a.input_format),
            (WireFormat::L24, RawFormat::S24Le)
        );
        assert_eq!(a.source_address, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].starts_with("--compress 6: compression is gone"));
    }
}
