//! What went wrong with an address or a socket.

use std::io;
use std::net::{IpAddr, SocketAddr};

/// An address or socket problem, phrased for the user. It names no command-line option or
/// module argument: the front ends add those (`--control-port`, `wavesync.control.port`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// An address is not of the form `HOST[:PORT]`.
    #[error("bad address {spec:?}: {why} (expected HOST:PORT, e.g. 239.255.77.77:45300, kitchen.local:45300 or [ff05::77]:45300)")]
    BadAddress {
        /// What the user wrote.
        spec: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The host name could not be resolved.
    #[error("cannot resolve host {host:?}: {source}")]
    Resolve {
        /// The host name.
        host: String,
        /// What the resolver said.
        source: io::Error,
    },
    /// The host name resolved to no address.
    #[error("host {0:?} has no address")]
    NoAddress(String),
    /// A fixed port to listen on is taken by another program.
    #[error("port {port} is already in use")]
    PortInUse {
        /// The port.
        port: u16,
    },
    /// A socket to receive on could not be bound (port in use, address not on this host).
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// A socket to send from could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// Joining a multicast group failed.
    #[error("cannot join multicast group {group} on {interface}: {source}")]
    Join {
        /// The group.
        group: IpAddr,
        /// The interface as given (`default` when none was).
        interface: String,
        /// The OS error.
        source: io::Error,
    },
    /// The interface named does not exist (or has no address of the needed family).
    #[error("no network interface {0:?}")]
    NoInterface(String),
    /// The source address is of the other family than every destination, or not on this host.
    #[error("source address {addr}: {why}")]
    Source {
        /// The address.
        addr: IpAddr,
        /// What is wrong.
        why: &'static str,
    },
    /// A socket option or call failed.
    #[error("{what}: {source}")]
    Socket {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

/// Maps an OS error to [`NetError::Socket`] saying what was being done.
pub(crate) fn sock_err(what: &'static str) -> impl FnOnce(io::Error) -> NetError {
    move |source| NetError::Socket { what, source }
}
