//! The WaveSync receiver: plays a stream so every frame leaves the DAC at its stamped time.
//!
//! Threads, not async: the network thread ([`network`]: the common `Receiver` state machine, the
//! clock client, on `wavesync-net`'s stamped sockets) and the output thread ([`playback`]: the common `Playout` and one
//! [`output::Output`]) talk through lock-free rings; the audio thread never blocks on the network.

pub mod clock_io;
pub mod config;
pub mod daemon;
pub mod device_delay;
pub mod feed;
pub mod keys;
pub mod network;
pub mod output;
pub mod playback;
pub mod rt;
pub mod settings;
pub mod status;
