//! `wavesync-sender`: streams audio from PulseAudio, a unix socket, a pipe, a WAV file or a
//! test tone to WaveSync receivers, with the same engine as the PipeWire module.
//!
//! - [`engine`]: the common sender core on real sockets in a network thread, fed through a
//!   real-time safe [`engine::AudioInput`] (used by the PipeWire module too);
//! - [`net`]: destinations and sockets;
//! - [`input`]: where the audio comes from, and how it is stamped;
//! - [`args`] and [`run`]: the command line and the main loop of the `wavesync-sender` binary.

pub mod args;
pub mod clock;
pub mod engine;
pub mod input;
pub mod net;
pub mod run;
pub mod signal;
