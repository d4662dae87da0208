//! The WaveSync sync lab: impairment, network namespaces, and measurement of how well rooms
//! play in sync. The binary `wavesync-lab` wraps each module in a subcommand; see
//! `docs/lab.md`.

pub mod analyze;
pub mod attack;
pub mod feed;
pub mod histogram;
pub mod impair;
pub mod probe;
pub mod relay;
pub mod report;
pub mod signal;
pub mod stamps;
pub mod topology;
pub mod xcorr;
