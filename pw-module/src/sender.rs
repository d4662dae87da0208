//! Glue to the sending engine (`wavesync_engine`): its network thread runs the common
//! packetizer, the stream sockets, the time service and the resend ring. The module only maps
//! its arguments to the engine's configuration and hands the sink's blocks to
//! [`AudioInput::push`], which is real-time safe (lock-free rings, no allocation, one
//! non-blocking eventfd write).

use wavesync_common::channels::ChannelMap;
use wavesync_common::time::LocalNs;
use wavesync_engine::{AudioInput, Engine, EngineConfig, SettingNames};
use wavesync_net::NetOptions;

use crate::config::ModuleConfig;
use crate::error::StartError;
use crate::pw::log;
use crate::sink::BlockInput;

/// The running sender; dropping it stops the network thread after it sent what it had.
pub struct Sender {
    engine: Option<Engine>,
}

impl BlockInput for AudioInput {
    fn push(&mut self, capture_time: LocalNs, samples: &[f32]) -> bool {
        AudioInput::push(self, capture_time, samples)
    }
}

/// The engine configuration for the module's arguments.
pub fn engine_config(config: &ModuleConfig) -> EngineConfig {
    let mut cfg = EngineConfig::new(config.format, config.destinations.clone());
    cfg.latency_ns = config.latency_ns;
    cfg.frames_per_packet = config.frames_per_packet;
    cfg.name = config.session_name.clone();
    // The sink's positions travel with the stream, so every room plays each channel where
    // the master meant it.
    cfg.channel_map = ChannelMap::from_names(&config.positions);
    cfg.control_port = config.control_port;
    cfg.net = NetOptions {
        ttl: Some(config.ttl),
        interface: config.ifname.clone(),
        multicast_loop: config.multicast_loop,
        broadcast: false,
        source: None,
    };
    cfg.stats_interval_ns = None;
    cfg.key_file = config.key_file.clone();
    cfg.encrypt = config.encrypt;
    cfg.clock = config.clock;
    cfg
}

impl Sender {
    /// Opens the sockets and starts the network thread; returns the sink's input.
    pub fn start(config: &ModuleConfig) -> Result<(Sender, Box<dyn BlockInput>), StartError> {
        crate::pw::log_bridge::install();
        let (engine, input) = Engine::start(engine_config(config)).map_err(StartError::Engine)?;
        Ok((
            Sender {
                engine: Some(engine),
            },
            Box::new(input),
        ))
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let Some(engine) = self.engine.take() else {
            return;
        };
        match engine.stop() {
            Ok(s) => log::info(&format!(
                "sender stopped: {} packets, {} runs, {} resyncs, {} silence stops, \
                 {} resends, {} time replies, {} input pushes refused, {} send drops",
                s.core.packets_sent,
                s.core.runs_started,
                s.core.resyncs,
                s.core.silence_stops,
                s.core.resends_sent,
                s.core.ntp_replies,
                s.input_refused,
                s.send_dropped
            )),
            Err(e) => log::error(&format!("sender stopped badly: {e}")),
        }
    }
}

/// The module's argument names for the settings an engine error can blame.
pub const SETTING_NAMES: SettingNames = SettingNames {
    control_port: "wavesync.control.port",
    interface: "local.ifname",
    key_file: "wavesync.key.file",
};

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn arguments_reach_the_engine() {
        let args: BTreeMap<String, String> = [
            ("destinations", "[ 127.0.0.1:5000 [::1]:5002 ]"),
            ("sess.latency.msec", "80"),
            ("sess.name", "Den"),
            ("wavesync.control.port", "5001"),
            ("wavesync.packet.msec", "5"),
            ("net.ttl", "4"),
            ("net.loop", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let c = ModuleConfig::from_args(&args, "h").unwrap();
        let e = engine_config(&c);
        assert_eq!(e.destinations.len(), 2);
        assert_eq!(e.latency_ns, 80_000_000);
        assert_eq!(e.name, "Den");
        assert_eq!(e.control_port, 5001);
        assert_eq!(e.frames_per_packet, 240);
        assert_eq!(e.net.ttl, Some(4));
        assert!(e.net.multicast_loop);
    }
}
