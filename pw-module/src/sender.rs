//! Glue to the sender engine (sockets, packetizer, time service). Placeholder until
//! `wavesync_sender::engine` lands: counts what the sink receives.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use wavesync_common::time::TimelineNs;

use crate::config::ModuleConfig;
use crate::error::StartError;
use crate::sink::BlockInput;

/// The running sender; stopping it is dropping it.
pub struct Sender {
    frames: Arc<AtomicU64>,
}

struct CountingInput {
    frames: Arc<AtomicU64>,
    channels: usize,
}

impl BlockInput for CountingInput {
    fn push(&mut self, _capture_time: TimelineNs, samples: &[f32]) -> bool {
        self.frames
            .fetch_add((samples.len() / self.channels) as u64, Ordering::Relaxed);
        true
    }
}

impl Sender {
    /// Starts the sender for `config`; returns it and the real-time input for the sink.
    pub fn start(config: &ModuleConfig) -> Result<(Sender, Box<dyn BlockInput>), StartError> {
        let frames = Arc::new(AtomicU64::new(0));
        let input = CountingInput {
            frames: frames.clone(),
            channels: config.format.channels.max(1) as usize,
        };
        Ok((Sender { frames }, Box::new(input)))
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        crate::pw::log::info(&format!(
            "sender stopped after {} frames",
            self.frames.load(Ordering::Relaxed)
        ));
    }
}
