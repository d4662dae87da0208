//! `wavesync --rx ...`: the Python tool's receiver command line, mapped onto wavesync-receiver.
//!
//! Every old option is accepted. Those whose job is now done another way are explained in one
//! line each instead of failing: the master serves its own time (no NTP server needed), clock
//! outliers are filtered by round trip, the output always has its own thread.

use clap::Parser;
use wavesync_net::defaults::LEGACY_CHANNEL;
use wavesync_receiver::config::{Args as RxArgs, Config};

/// The Python tool's receiver options.
#[derive(Parser, Debug)]
#[command(
    name = "wavesync --rx",
    about = "Receive and play (legacy command line)"
)]
pub struct LegacyRx {
    /// Receive mode (required).
    #[arg(long)]
    pub rx: bool,
    /// Address:port to listen on (a multicast group is joined) [default: 224.0.0.57:45300].
    #[arg(long, value_name = "ADDRESS:PORT")]
    pub channel: Option<String>,
    /// Errors larger than this (ms) are fixed at once; smaller ones by adjusting the speed.
    #[arg(long, value_name = "MS")]
    pub tolerance: Option<f64>,
    /// Play this many ms earlier (per-room trim).
    #[arg(long, value_name = "MS", allow_hyphen_values = true)]
    pub sink_latency: Option<f64>,
    /// Device buffer in frames.
    #[arg(long, value_name = "FRAMES")]
    pub buffer_size: Option<u32>,
    /// Output device by index.
    #[arg(long, value_name = "N")]
    pub device_index: Option<u32>,
    /// NTP server (no longer needed: the master serves its own time).
    #[arg(long, value_name = "HOST")]
    pub ntp: Option<String>,
    /// NTP tolerance (replaced by round-trip filtering).
    #[arg(long, value_name = "MS")]
    pub ntptol: Option<f64>,
    /// Callback output (the output always has its own thread now).
    #[arg(long)]
    pub callback: bool,
    /// Configuration file for every other option.
    #[arg(long, value_name = "PATH")]
    pub config: Option<std::path::PathBuf>,
}

impl LegacyRx {
    /// The receiver arguments these options mean, and one note per option that changed.
    pub fn to_receiver_args(&self) -> (RxArgs, Vec<String>) {
        let mut notes = Vec::new();
        if let Some(n) = &self.ntp {
            notes.push(format!(
                "--ntp {n}: not needed any more, the master serves its own time; reading the \
                 master's clock (wavesync-receiver --ntp HOST reads an NTP server)"
            ));
        }
        if self.ntptol.is_some() {
            notes.push(
                "--ntptol: clock readings are now filtered by their round trip; ignored".into(),
            );
        }
        if self.callback {
            notes.push("--callback: the output always runs on its own thread; ignored".into());
        }
        let args = RxArgs {
            config: self.config.clone(),
            listen: Some(
                self.channel
                    .clone()
                    .unwrap_or_else(|| LEGACY_CHANNEL.to_string()),
            ),
            tolerance: self.tolerance,
            sink_latency: self.sink_latency,
            buffer_size: self.buffer_size,
            device_index: self.device_index,
            ..RxArgs::default()
        };
        (args, notes)
    }
}

/// Parses the legacy receiver command line (`args` without the program name) and runs.
pub fn run_rx(args: &[String]) -> Result<(), String> {
    let legacy = LegacyRx::try_parse_from(
        std::iter::once("wavesync").chain(args.iter().map(String::as_str)),
    )
    .map_err(|e| e.to_string())?;
    let (rx_args, notes) = legacy.to_receiver_args();
    for n in notes {
        log::info!("{n}");
    }
    let cfg = Config::load(&rx_args).map_err(|e| e.to_string())?;
    wavesync_receiver::daemon::run(cfg).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_command_line_maps_with_notes() {
        let line = "--rx --channel 0.0.0.0:1111 --tolerance 200 --sink-latency 90 \
                    --buffer-size 2000 --device-index 0 --ntp 10.0.0.100 --ntptol 15 --callback";
        let legacy =
            LegacyRx::try_parse_from(std::iter::once("wavesync").chain(line.split_whitespace()))
                .unwrap();
        let (args, notes) = legacy.to_receiver_args();
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert!(notes[0].starts_with("--ntp 10.0.0.100: not needed"));
        let cfg = Config::from_toml(&args, "").unwrap();
        assert_eq!(cfg.listen, "0.0.0.0:1111".parse().unwrap());
        assert_eq!(cfg.tolerance_ns, 200_000_000);
        assert_eq!(cfg.sink_latency_ns, 90_000_000);
        assert_eq!(cfg.clock, wavesync_receiver::config::ClockSource::Auto);
        match cfg.output {
            wavesync_receiver::config::OutputConfig::Alsa {
                device_index,
                buffer_frames,
                ..
            } => {
                assert_eq!(device_index, Some(0));
                assert_eq!(buffer_frames, Some(2000));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_channel_means_the_old_default_group() {
        let legacy = LegacyRx::try_parse_from(["wavesync", "--rx"]).unwrap();
        let cfg = Config::from_toml(&legacy.to_receiver_args().0, "").unwrap();
        assert_eq!(cfg.listen, LEGACY_CHANNEL.into());
    }
}
