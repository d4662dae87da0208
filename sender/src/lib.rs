//! `wavesync-sender`: streams audio from PulseAudio, a unix socket, a pipe, a WAV file or a
//! test tone to WaveSync receivers, with the same engine as the PipeWire module.
//!
//! The engine (the common sender core on real sockets in a network thread, fed through a
//! real-time safe `AudioInput`) is the `wavesync-engine` library, which the PipeWire module
//! runs too; sockets, clocks, address resolution and default ports are `wavesync-net`'s.
//!
//! - [`input`]: where the audio comes from, and how it is stamped;
//! - [`args`] and [`run`]: the command line and the main loop of the `wavesync-sender` binary.

pub mod args;
pub mod input;
pub mod run;
pub mod signal;
