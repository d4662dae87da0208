//! Thin wrappers around the few PipeWire C APIs the module uses.
//!
//! Everything here is plain FFI glue with the `unsafe` kept small and explained; the module's
//! logic lives in `module.rs` and `sink.rs`.

pub mod hook;
pub mod log;
pub mod log_bridge;
pub mod props;
