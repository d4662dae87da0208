//! This host's clocks, as the receiver's threads and output backends read them: the readers
//! themselves live in `wavesync_net::clock`, the one place every WaveSync program reads clocks
//! from; this module only re-exports the ones the receiver uses, so its modules keep one short
//! import path.

pub use wavesync_net::clock::{
    monotonic_ns, parse_monotonic_offset_ns, realtime_ns, timens_monotonic_offset_ns,
};
