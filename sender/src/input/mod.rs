//! Where the audio comes from, and when each block of it was captured.
//!
//! Every input gives blocks of interleaved `f32` frames with the capture time of the block's
//! first frame on this host's CLOCK_MONOTONIC (a [`LocalNs`]: the sender's timeline in clock
//! domain `master`, where `run` puts it on the timeline), and never hands a block out before its
//! last frame's capture time has come: the stream time never runs ahead of real time.
//! - file and generated inputs (`wav:`, `tone`, `chirp`) are paced by the sender: frame `n` is
//!   captured at `start + n / rate` exactly ([`paced`]);
//! - live inputs (`fifo:`, `-`, `unix:`, `pulse`) are stamped by their arrival, smoothed by a
//!   delay-locked loop ([`live`]), and resampled to CLOCK_MONOTONIC when their clock drifts
//!   ([`retime`]); a backlog is read at real-time pace and left in the input's own buffer, a
//!   stall is logged once and restarts the stream's run when audio resumes.

pub mod fifo;
pub mod live;
pub mod paced;
pub mod pcm;
pub mod pulse;
pub mod retime;
pub mod stream;
pub mod tone;
pub mod unix;
pub mod wav;

use std::path::PathBuf;
use std::str::FromStr;

use wavesync_common::time::LocalNs;

pub use pcm::RawFormat;

/// Rate and channels of what an input delivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputFormat {
    /// Frames per second.
    pub rate: u32,
    /// Interleaved channels.
    pub channels: u8,
}

/// What [`Input::next_block`] got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Block {
    /// `frames` frames at the start of the buffer; the first was captured at `capture`.
    Audio {
        /// Capture time of the first frame (this host's CLOCK_MONOTONIC).
        capture: LocalNs,
        /// Frames written.
        frames: usize,
    },
    /// Nothing yet (ask again; lets the caller check for a stop request).
    Idle,
    /// The input ended (end of file, stdin closed).
    End,
}

/// An audio source.
pub trait Input: Send {
    /// What it is, for the log (`wav:/music/a.wav, 44100 Hz, 2 ch`).
    fn describe(&self) -> String;
    /// Rate and channels of the frames it delivers.
    fn format(&self) -> InputFormat;
    /// Waits (at most about 100 ms) for the next block and writes its frames to the start of
    /// `buf` (whole frames, at most `buf.len() / channels`).
    fn next_block(&mut self, buf: &mut [f32]) -> Result<Block, InputError>;
}

/// A problem with the input, phrased for the user.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The `--input` text is not understood.
    #[error("bad input {spec:?}: {why}")]
    BadSpec {
        /// What the user wrote.
        spec: String,
        /// What is wrong.
        why: String,
    },
    /// The file, pipe or socket could not be opened.
    #[error("{what}: {source}{hint}")]
    Open {
        /// The input (`fifo:/tmp/x`).
        what: String,
        /// The OS error.
        source: std::io::Error,
        /// What to check, or empty.
        hint: &'static str,
    },
    /// The audio is not in a format the sender takes, or not the one asked for.
    #[error("{what}: {why}")]
    Format {
        /// The input.
        what: String,
        /// What is wrong.
        why: String,
    },
    /// Reading failed.
    #[error("{what}: read error: {source}")]
    Read {
        /// The input.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The PulseAudio server refused or failed.
    #[error("pulse{}: {why}", source_suffix(.name))]
    Pulse {
        /// The source asked for.
        name: Option<String>,
        /// What PulseAudio said.
        why: String,
    },
}

fn source_suffix(s: &Option<String>) -> String {
    s.as_ref().map(|s| format!(":{s}")).unwrap_or_default()
}

/// Which input, as written after `--input`.
#[derive(Clone, Debug, PartialEq)]
pub enum InputSpec {
    /// `tone[:HZ]`: a sine (440 Hz by default) at -6 dBFS on every channel.
    Tone {
        /// Frequency, Hz.
        hz: f64,
    },
    /// `chirp[:SECONDS]`: a repeating logarithmic sweep from 100 Hz to 10 kHz (2 s default).
    Chirp {
        /// Duration of one sweep, s.
        seconds: f64,
    },
    /// `wav:FILE`: a WAV file, played in real time.
    Wav(PathBuf),
    /// `fifo:PATH`: raw PCM from a named pipe (or a plain file).
    Fifo(PathBuf),
    /// `-`: raw PCM from standard input.
    Stdin,
    /// `unix:PATH`: raw PCM from a unix socket (PulseAudio's module-simple-protocol-unix).
    Unix(PathBuf),
    /// `pulse[:SOURCE]`: record from a PulseAudio source (default source if none).
    Pulse(Option<String>),
}

impl FromStr for InputSpec {
    type Err = InputError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| InputError::BadSpec {
            spec: s.to_string(),
            why: why.to_string(),
        };
        if s == "-" {
            return Ok(InputSpec::Stdin);
        }
        let (kind, arg) = match s.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (s, None),
        };
        let path = |a: Option<&str>| match a {
            Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
            _ => Err(bad("a path is needed after the colon")),
        };
        match kind {
            "tone" => {
                let hz = match arg {
                    None => 440.0,
                    Some(a) => a.parse::<f64>().map_err(|_| bad("HZ must be a number"))?,
                };
                if !(hz > 0.0 && hz < 1e6) {
                    return Err(bad("HZ must be above 0"));
                }
                Ok(InputSpec::Tone { hz })
            }
            "chirp" => {
                let seconds = match arg {
                    None => 2.0,
                    Some(a) => a.parse::<f64>().map_err(|_| bad("SECONDS must be a number"))?,
                };
                if !(0.05..=3600.0).contains(&seconds) {
                    return Err(bad("SECONDS must be between 0.05 and 3600"));
                }
                Ok(InputSpec::Chirp { seconds })
            }
            "wav" => Ok(InputSpec::Wav(path(arg)?)),
            "fifo" => Ok(InputSpec::Fifo(path(arg)?)),
            "unix" => Ok(InputSpec::Unix(path(arg)?)),
            "pulse" => Ok(InputSpec::Pulse(arg.filter(|a| !a.is_empty()).map(str::to_string))),
            _ => Err(bad(
                "expected tone[:HZ], chirp[:SECONDS], wav:FILE, fifo:PATH, -, unix:PATH or pulse[:SOURCE]",
            )),
        }
    }
}

/// How to open an input.
#[derive(Clone, Debug, PartialEq)]
pub struct InputOptions {
    /// Rate; `None`: the input's own (a WAV file's), else 44100 for `unix:`, 48000 otherwise.
    pub rate: Option<u32>,
    /// Channels; `None`: the input's own (a WAV file's), else 2.
    pub channels: Option<u8>,
    /// Sample format of raw PCM inputs (`fifo:`, `-`, `unix:`).
    pub raw_format: RawFormat,
    /// Start a file again at its end.
    pub looped: bool,
    /// Frames per block of paced inputs, and the most frames read at once from live ones, as
    /// a duration (ns).
    pub block_ns: i64,
    /// Resample live inputs to CLOCK_MONOTONIC when their clock departs from it ([`retime`]).
    /// The sender does; a measurement (calibration's microphone) needs every sample as it was
    /// captured, and fits the clock itself.
    pub retime: bool,
}

impl Default for InputOptions {
    fn default() -> Self {
        InputOptions {
            rate: None,
            channels: None,
            raw_format: RawFormat::S16Le,
            looped: false,
            block_ns: 5_000_000,
            retime: true,
        }
    }
}

impl InputOptions {
    /// The format for an input without one of its own, whose usual rate is `default_rate`.
    pub fn format_or(&self, default_rate: u32) -> InputFormat {
        InputFormat {
            rate: self.rate.unwrap_or(default_rate),
            channels: self.channels.unwrap_or(2),
        }
    }

    /// Frames in one block at `rate`.
    pub fn block_frames(&self, rate: u32) -> usize {
        ((self.block_ns.max(1_000_000) as i128 * rate as i128 / 1_000_000_000) as usize).max(1)
    }
}

/// Opens the input `spec`.
pub fn open(spec: &InputSpec, opts: &InputOptions) -> Result<Box<dyn Input>, InputError> {
    Ok(match spec {
        InputSpec::Tone { hz } => Box::new(tone::Generator::tone(*hz, opts)),
        InputSpec::Chirp { seconds } => Box::new(tone::Generator::chirp(*seconds, opts)),
        InputSpec::Wav(p) => Box::new(wav::WavInput::open(p, opts)?),
        InputSpec::Fifo(p) => Box::new(stream::RawStream::new(
            fifo::PipeSource::open(p)?,
            opts,
            48_000,
        )?),
        InputSpec::Stdin => Box::new(stream::RawStream::new(
            fifo::PipeSource::stdin(),
            opts,
            48_000,
        )?),
        InputSpec::Unix(p) => Box::new(stream::RawStream::new(
            unix::UnixSource::connect(p)?,
            opts,
            44_100,
        )?),
        InputSpec::Pulse(source) => Box::new(pulse::PulseInput::open(source.clone(), opts)?),
    })
}

/// Checks a requested rate/channels count is usable.
pub fn check_format(what: &str, f: InputFormat) -> Result<InputFormat, InputError> {
    if !(1_000..=384_000).contains(&f.rate) {
        return Err(InputError::Format {
            what: what.to_string(),
            why: format!("rate {} Hz is out of range (1000-384000)", f.rate),
        });
    }
    if f.channels == 0 || f.channels > 32 {
        return Err(InputError::Format {
            what: what.to_string(),
            why: format!("{} channels is out of range (1-32)", f.channels),
        });
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!(
            "tone".parse::<InputSpec>().unwrap(),
            InputSpec::Tone { hz: 440.0 }
        );
        assert_eq!(
            "tone:1000".parse::<InputSpec>().unwrap(),
            InputSpec::Tone { hz: 1000.0 }
        );
        assert_eq!(
            "chirp".parse::<InputSpec>().unwrap(),
            InputSpec::Chirp { seconds: 2.0 }
        );
        assert_eq!("-".parse::<InputSpec>().unwrap(), InputSpec::Stdin);
        assert_eq!(
            "wav:/a b.wav".parse::<InputSpec>().unwrap(),
            InputSpec::Wav("/a b.wav".into())
        );
        assert_eq!(
            "unix:/tmp/music.source".parse::<InputSpec>().unwrap(),
            InputSpec::Unix("/tmp/music.source".into())
        );
        assert_eq!(
            "pulse".parse::<InputSpec>().unwrap(),
            InputSpec::Pulse(None)
        );
        assert_eq!(
            "pulse:wsync.monitor".parse::<InputSpec>().unwrap(),
            InputSpec::Pulse(Some("wsync.monitor".into()))
        );
    }

    #[test]
    fn bad_specs_say_why() {
        for (s, why) in [
            ("tone:abc", "HZ must be a number"),
            ("tone:-5", "HZ must be above 0"),
            ("wav:", "a path is needed"),
            ("mp3:x", "expected tone"),
        ] {
            let e = s.parse::<InputSpec>().unwrap_err().to_string();
            assert!(e.contains(why), "{s}: {e}");
        }
    }
}
