//! WaveSync's network layer: the one place where this host's sockets and clocks are touched
//! (quinn-udp's role in quinn). The receiver, the sender engine, the PipeWire module and the lab
//! all use it; nothing else opens a socket its own way or reads a clock.
//!
//! - [`socket`]: [`StampedSocket`], a UDP socket that reports when each datagram arrived
//!   (SO_TIMESTAMPNS kernel stamps mapped to CLOCK_MONOTONIC): a receiver's stream and
//!   query sockets, a master's control port;
//! - [`stream`]: [`StreamSockets`], the master's sending side (one socket per address family,
//!   every destination, multicast TTL / interface / loop, broadcast, source address);
//! - [`clock`]: CLOCK_MONOTONIC and CLOCK_REALTIME reads and absolute sleeps;
//! - [`resolve`]: `HOST[:PORT]` to one socket address, by one documented rule;
//! - [`protection`]: key files, random salts, and [`Protection`], the household key's state
//!   shared by a program's sockets (they seal what they send and drop what does not open);
//! - [`defaults`]: the project's default group, ports and the legacy channel;
//! - [`NetError`]: what went wrong, typed; it names no command-line option or module
//!   argument (each front end says those in its own words).
//!
//! Logic (packets, clocks models, buffers) stays in `wavesync-common`, which has no sockets.

pub mod clock;
pub mod defaults;
mod error;
mod iface;
pub mod protection;
pub mod resolve;
pub mod socket;
pub mod stream;

pub use error::NetError;
pub use iface::interface_index;
pub use protection::{KeyFileError, KeySet, Protection, ProtectionStatus};
pub use socket::{Datagram, StampedSocket};
pub use stream::{NetOptions, SendReport, StreamSockets};
