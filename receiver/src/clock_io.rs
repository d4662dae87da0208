//! This host's clocks, as the receiver's threads and output backends read them: the readers
//! themselves live in `wavesync_net::clock`, the one place every WaveSync program reads clocks
//! from; this module only re-exports the two the receiver uses, so its modules (and the code
//! of others working on the output backends) keep one short import path.

pub use wavesync_net::clock::{monotonic_ns, realtime_ns};
