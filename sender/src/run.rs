//! The main loop of `wavesync-sender`: input -> engine, until the input ends, the duration is
//! up or a signal asks to stop.

use wavesync_common::format::StreamFormat;

use crate::args::RunConfig;
use crate::input::{self, Block, InputError};
use crate::signal;
use wavesync_engine::{Engine, EngineError, EngineStats};
use wavesync_net::clock;

/// Why the sender stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The input failed.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The engine failed (said in the command line's words).
    #[error("{}", .0.describe(&crate::args::SETTING_NAMES))]
    Engine(#[from] EngineError),
}

/// Runs the sender until the input ends, `cfg.duration_ns` passes or `stop()` returns true;
/// returns the engine's final counters.
pub fn run(cfg: &RunConfig, stop: impl Fn() -> bool) -> Result<EngineStats, RunError> {
    let mut input = input::open(&cfg.input, &cfg.input_opts)?;
    let f = input.format();
    let format = StreamFormat {
        rate: f.rate,
        channels: f.channels,
        sample: cfg.sample,
    };
    let mut ecfg = cfg.engine.clone();
    ecfg.format = format;
    ecfg.frames_per_packet = cfg.frames_per_packet(format);
    let (engine, mut audio) = Engine::start(ecfg)?;
    log::info!("input: {}", input.describe());
    let dests: Vec<String> = engine
        .destinations()
        .iter()
        .map(|d| d.to_string())
        .collect();
    log::info!("sending to {}", dests.join(", "));

    let ch = f.channels as usize;
    let mut buf = vec![0f32; ch * cfg.input_opts.block_frames(f.rate).max(1) * 2];
    let end = cfg.duration_ns.map(|d| clock::monotonic_ns() + d);
    let mut refused_logged = 0u64;
    let result = loop {
        if stop() {
            log::info!("stopping");
            break Ok(());
        }
        if end.is_some_and(|e| clock::monotonic_ns() >= e) {
            log::info!("duration reached; stopping");
            break Ok(());
        }
        match input.next_block(&mut buf) {
            Ok(Block::Audio { capture, frames }) => {
                // On CLOCK_MONOTONIC: the engine maps it to its clock domain's timeline.
                if !audio.push(capture, &buf[..frames * ch]) {
                    let refused = engine.stats().input_refused;
                    if refused > refused_logged * 2 {
                        refused_logged = refused;
                        log::warn!(
                            "the network thread fell behind: {refused} blocks of input dropped so far"
                        );
                    }
                }
            }
            Ok(Block::Idle) => {}
            Ok(Block::End) => {
                log::info!("input ended");
                break Ok(());
            }
            Err(e) => break Err(e),
        }
    };
    let stats = engine.stop()?;
    let c = stats.core;
    log::info!(
        "stopped: {} packets, {} runs ({} resyncs), {} time replies, {} NACKs, {} resends, \
         {} control datagrams refused by the key",
        c.packets_sent,
        c.runs_started,
        c.resyncs,
        c.ntp_replies,
        c.nacks_received,
        c.resends_sent,
        stats.refused.refused()
    );
    result.map(|()| stats).map_err(RunError::from)
}

/// [`run`] stopping on SIGINT/SIGTERM.
pub fn run_until_signal(cfg: &RunConfig) -> Result<EngineStats, RunError> {
    signal::install();
    run(cfg, signal::stop_requested)
}
