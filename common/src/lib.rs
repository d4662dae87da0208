//! WaveSync's core: everything that is logic and no I/O.
//!
//! Sans-I/O throughout: no sockets, devices, threads or sleeps. Functions and state machines
//! take the current time and bytes and return decisions; the daemons in `receiver/`, `sender/`
//! and `pw-module/` only move bytes and time in and out. Times are `i64` nanoseconds, see
//! [`time`].

#![forbid(unsafe_code)]

pub mod calibrate;
pub mod channels;
pub mod clock;
pub mod correlate;
pub mod dll;
pub mod follow;
pub mod format;
pub mod jitter;
pub mod loss;
pub mod packetizer;
pub mod playout;
pub mod protect;
pub mod receiver;
pub mod resample;
pub mod resend;
pub mod rooms;
pub mod sample;
pub mod sender;
pub mod time;
pub mod time_client;
pub mod wire;
