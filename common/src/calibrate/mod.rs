//! Calibration by ear: where each room's sound reaches a microphone, and the trims that make
//! every room arrive together. Sans-I/O; `wavesync calibrate` (cli/src/calibrate.rs) plays,
//! records and sets the trims; docs/calibrate.md describes the method.
//!
//! - [`probe`]: the measurement signal, an endless periodic flat-spectrum noise;
//! - [`measure`]: the probe's arrival in a stretch of microphone recording (GCC-PHAT, sub-sample)
//!   with the quality checks (clipped, nothing heard, too noisy, unsteady) as typed errors;
//! - [`solve`]: from the rooms' arrivals, the microphone's clock rate and the new trims.

pub mod measure;
pub mod probe;
pub mod solve;
