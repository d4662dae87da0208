//! `pulse[:SOURCE]`: records from a PulseAudio source (or PipeWire's pipewire-pulse), e.g.
//! the monitor of a null sink, through libpulse-simple. Stamped by arrival like every live
//! input.

use libpulse_binding::def::BufferAttr;
use libpulse_binding::sample::{Format, Spec};
use libpulse_binding::stream::Direction;
use libpulse_simple_binding::Simple;

use super::live::LiveClock;
use super::retime::LiveRetimer;
use super::{check_format, Block, Input, InputError, InputFormat, InputOptions, RawFormat};
use wavesync_net::clock;

/// A recording stream on a PulseAudio server.
pub struct PulseInput {
    simple: Simple,
    source: Option<String>,
    format: InputFormat,
    block: usize,
    bytes: Vec<u8>,
    clock: LiveClock,
    retimer: LiveRetimer,
}

impl PulseInput {
    /// Connects to the default server and records `source` (the default source if `None`) as
    /// 32-bit float at `opts.rate` (else 48000) and `opts.channels` (else 2).
    pub fn open(source: Option<String>, opts: &InputOptions) -> Result<Self, InputError> {
        let what = match &source {
            Some(s) => format!("pulse:{s}"),
            None => "pulse".to_string(),
        };
        let err = |why: String| InputError::Pulse {
            name: source.clone(),
            why,
        };
        if source.as_deref().is_some_and(|s| s.contains('\0')) {
            return Err(err("the source name contains a NUL byte".into()));
        }
        let format = check_format(&what, opts.format_or(48_000))?;
        let spec = Spec {
            format: Format::F32le,
            rate: format.rate,
            channels: format.channels,
        };
        if !spec.is_valid() {
            return Err(InputError::Format {
                what,
                why: format!(
                    "PulseAudio does not take {} Hz with {} channels",
                    format.rate, format.channels
                ),
            });
        }
        let block = opts.block_frames(format.rate);
        let frame_bytes = 4 * format.channels as usize;
        let fragsize = (block * frame_bytes) as u32;
        let attr = BufferAttr {
            maxlength: u32::MAX,
            tlength: u32::MAX,
            prebuf: u32::MAX,
            minreq: u32::MAX,
            fragsize,
        };
        let simple = Simple::new(
            None,
            "wavesync-sender",
            Direction::Record,
            source.as_deref(),
            "WaveSync capture",
            &spec,
            None,
            Some(&attr),
        )
        .map_err(|e| {
            err(format!(
                "{e} (is a PulseAudio or pipewire-pulse server running?)"
            ))
        })?;
        Ok(PulseInput {
            clock: LiveClock::new(&what, format.rate),
            retimer: LiveRetimer::new(&what, format.rate, format.channels as usize, block)
                .enabled(opts.retime),
            simple,
            source,
            format,
            block,
            bytes: vec![0; block * frame_bytes],
        })
    }
}

impl Input for PulseInput {
    fn describe(&self) -> String {
        format!(
            "pulse:{}, {} Hz, {} ch",
            self.source.as_deref().unwrap_or("(default source)"),
            self.format.rate,
            self.format.channels
        )
    }

    fn format(&self) -> InputFormat {
        self.format
    }

    fn next_block(&mut self, buf: &mut [f32]) -> Result<Block, InputError> {
        let ch = self.format.channels as usize;
        let frames = self
            .block
            .min(self.retimer.input_frames_for(buf.len() / ch));
        let bytes = &mut self.bytes[..frames * ch * 4];
        // Blocks until the block is full (one fragment, a few ms).
        self.simple.read(bytes).map_err(|e| InputError::Pulse {
            name: self.source.clone(),
            why: format!("recording failed: {e}"),
        })?;
        let arrival = clock::monotonic_ns();
        RawFormat::F32Le.decode(bytes, self.retimer.input(frames));
        let capture = self.clock.stamp(arrival, frames);
        let (capture, frames) = self.retimer.finish(capture, frames, buf);
        if frames == 0 {
            return Ok(Block::Idle);
        }
        Ok(Block::Audio { capture, frames })
    }
}
