//! [`StampedSocket`]: a non-blocking UDP socket that reports when each datagram arrived, on
//! CLOCK_MONOTONIC, from the kernel's receive stamp (SO_TIMESTAMPNS) when there is one.
//!
//! Its constructors are the three ways WaveSync listens: a receiver's stream socket (a
//! multicast group joined, or a unicast port), a receiver's ephemeral socket for time queries
//! and NACKs, and a master's control port (time service, NACKs) on every address.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Arc;

use nix::sys::socket::{
    recvmsg, setsockopt, sockopt::ReceiveTimestampns, ControlMessageOwned, MsgFlags,
    SockaddrStorage,
};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use wavesync_common::protect::OVERHEAD;
use wavesync_common::time::LocalNs;

use crate::error::sock_err;
use crate::protection::Protection;
use crate::{clock, interface_index, NetError};

/// Datagrams up to this size are sealed in a buffer on the stack (no allocation).
pub(crate) const SEAL_STACK: usize = 2048;

/// One received datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Datagram {
    /// Bytes received (at the start of the caller's buffer).
    pub len: usize,
    /// Sender (an IPv4 peer of a dual-stack socket as plain IPv4).
    pub from: SocketAddr,
    /// Arrival on CLOCK_MONOTONIC: the kernel's receive stamp when there is one, else the time
    /// it was read.
    pub at: LocalNs,
    /// True when `at` is the kernel's stamp.
    pub kernel_stamp: bool,
}

/// A UDP socket that reports when each datagram arrived; see the module doc.
#[derive(Debug)]
pub struct StampedSocket {
    sock: UdpSocket,
    cmsg: Vec<u8>,
    /// An IPv6 socket: IPv4 peers are reached through their mapped address.
    v6: bool,
    /// Set: everything sent is sealed, everything received opened (see [`Self::protect`]).
    protection: Option<Arc<Protection>>,
}

/// Maps an IPv4-mapped IPv6 address (from a dual-stack socket) back to IPv4.
fn unmap(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => a,
        },
        a => a,
    }
}

fn udp(domain: Domain) -> Result<Socket, NetError> {
    Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).map_err(sock_err("creating a socket"))
}

impl StampedSocket {
    fn new(sock: Socket, v6: bool) -> Result<Self, NetError> {
        // Kernel receive stamps; without them the arrival is read after recvmsg returns.
        let _ = setsockopt(&sock.as_fd(), ReceiveTimestampns, &true);
        sock.set_nonblocking(true)
            .map_err(sock_err("making a socket non-blocking"))?;
        Ok(StampedSocket {
            sock: sock.into(),
            cmsg: nix::cmsg_space!(nix::sys::time::TimeSpec),
            v6,
            protection: None,
        })
    }

    /// Protects this socket with the household key: [`Self::send_to`] seals every datagram,
    /// and [`Self::recv`] returns only datagrams that open (authentic, not replayed), decrypted;
    /// the others are counted by `protection` and skipped.
    pub fn protect(&mut self, protection: Arc<Protection>) {
        self.protection = Some(protection);
    }

    /// A receiver's stream socket: binds `listen`'s port; joins the group when `listen` is
    /// multicast (several receivers on one host may share it: SO_REUSEADDR/SO_REUSEPORT), on
    /// `interface` (a name, or an IPv4 address) or the system's choice.
    pub fn stream(listen: SocketAddr, interface: Option<&str>) -> Result<Self, NetError> {
        let sock = udp(Domain::for_address(listen))?;
        sock.set_reuse_address(true)
            .map_err(sock_err("setting SO_REUSEADDR"))?;
        let multicast = listen.ip().is_multicast();
        if multicast {
            sock.set_reuse_port(true)
                .map_err(sock_err("setting SO_REUSEPORT"))?;
        }
        if listen.is_ipv6() {
            sock.set_only_v6(true)
                .map_err(sock_err("setting IPV6_V6ONLY"))?;
        }
        let _ = sock.set_recv_buffer_size(1 << 20);
        sock.bind(&listen.into())
            .map_err(|source| NetError::Listen {
                addr: listen,
                source,
            })?;
        if multicast {
            let ifname = interface.unwrap_or("default").to_string();
            let join_err = |source| NetError::Join {
                group: listen.ip(),
                interface: ifname.clone(),
                source,
            };
            match listen.ip() {
                IpAddr::V4(group) => {
                    let iface = match interface {
                        None => InterfaceIndexOrAddress::Address(Ipv4Addr::UNSPECIFIED),
                        Some(s) => match s.parse::<Ipv4Addr>() {
                            Ok(a) => InterfaceIndexOrAddress::Address(a),
                            Err(_) => InterfaceIndexOrAddress::Index(interface_index(s)?),
                        },
                    };
                    sock.join_multicast_v4_n(&group, &iface).map_err(join_err)?;
                }
                IpAddr::V6(group) => {
                    let index = match interface {
                        None => 0,
                        Some(s) => interface_index(s)?,
                    };
                    sock.join_multicast_v6(&group, index).map_err(join_err)?;
                }
            }
        }
        Self::new(sock, listen.is_ipv6())
    }

    /// A receiver's query socket: an ephemeral port of the stream's address family, from which
    /// time queries and NACKs go out and to which answers and resends come back.
    pub fn ephemeral(ipv6: bool) -> Result<Self, NetError> {
        let (domain, any) = if ipv6 {
            (
                Domain::IPV6,
                SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
            )
        } else {
            (
                Domain::IPV4,
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            )
        };
        let sock = udp(domain)?;
        sock.bind(&any.into())
            .map_err(|source| NetError::Listen { addr: any, source })?;
        Self::new(sock, ipv6)
    }

    /// A master's control port (`0`: any free port, for tests) on every address: IPv6 dual
    /// stack when the host has IPv6, else IPv4. A port taken by another program is
    /// [`NetError::PortInUse`].
    pub fn control_port(port: u16) -> Result<Self, NetError> {
        let bind = |s: &Socket, addr: SocketAddr| {
            s.bind(&addr.into()).map_err(|source| {
                if source.kind() == io::ErrorKind::AddrInUse {
                    NetError::PortInUse { port }
                } else {
                    NetError::Listen { addr, source }
                }
            })
        };
        match Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)) {
            Ok(s) if s.set_only_v6(false).is_ok() => {
                bind(&s, SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port))?;
                Self::new(s, true)
            }
            // No IPv6 on this host: IPv4 only.
            _ => {
                let s = udp(Domain::IPV4)?;
                bind(&s, SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))?;
                Self::new(s, false)
            }
        }
    }

    /// The descriptor, for poll(2).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// The bound local address.
    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        self.sock
            .local_addr()
            .map_err(sock_err("reading a socket's address"))
    }

    /// The bound port.
    pub fn port(&self) -> Result<u16, NetError> {
        self.local_addr().map(|a| a.port())
    }

    /// Receives one datagram if one is waiting (`Ok(None)` when none is). Errors are the
    /// socket's (e.g. an ICMP error reported on the next read); the caller may go on. On a
    /// protected socket only datagrams that open are returned (their message, decrypted).
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<Option<Datagram>, NetError> {
        loop {
            let Some(mut d) = self.recv_raw(buf)? else {
                return Ok(None);
            };
            let Some(p) = &self.protection else {
                return Ok(Some(d));
            };
            if let Ok(len) = p.open(d.at, d.from, &mut buf[..d.len]) {
                d.len = len;
                return Ok(Some(d));
            }
        }
    }

    fn recv_raw(&mut self, buf: &mut [u8]) -> Result<Option<Datagram>, NetError> {
        let mut iov = [IoSliceMut::new(buf)];
        let msg = match recvmsg::<SockaddrStorage>(
            self.sock.as_raw_fd(),
            &mut iov,
            Some(&mut self.cmsg),
            MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(m) => m,
            Err(nix::errno::Errno::EAGAIN) => return Ok(None),
            Err(e) => {
                return Err(NetError::Socket {
                    what: "receiving",
                    source: e.into(),
                })
            }
        };
        let mut stamp = None;
        for c in msg.cmsgs().into_iter().flatten() {
            if let ControlMessageOwned::ScmTimestampns(ts) = c {
                stamp = Some(clock::realtime_to_monotonic(clock::timespec_ns(&ts)));
            }
        }
        let from = msg.address.as_ref().and_then(|a| {
            if let Some(v4) = a.as_sockaddr_in() {
                Some(SocketAddr::V4((*v4).into()))
            } else {
                a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
            }
        });
        let len = msg.bytes;
        Ok(from.map(|from| Datagram {
            len,
            from: unmap(from),
            at: stamp.unwrap_or_else(clock::monotonic_ns),
            kernel_stamp: stamp.is_some(),
        }))
    }

    /// Sends one datagram to `to`: `Ok(true)` sent, `Ok(false)` dropped because the socket
    /// buffer was full (the caller counts it). A protected socket sends it sealed.
    pub fn send_to(&self, bytes: &[u8], to: SocketAddr) -> Result<bool, NetError> {
        let Some(p) = &self.protection else {
            return self.send_raw(bytes, to);
        };
        let mut stack = [0u8; SEAL_STACK];
        let mut heap = Vec::new();
        let out = if bytes.len() + OVERHEAD <= SEAL_STACK {
            &mut stack[..]
        } else {
            heap.resize(bytes.len() + OVERHEAD, 0);
            &mut heap[..]
        };
        let sealed = p.seal(bytes, out).map_err(|e| NetError::Socket {
            what: "protecting a datagram",
            source: io::Error::other(e),
        })?;
        self.send_raw(sealed, to)
    }

    fn send_raw(&self, bytes: &[u8], to: SocketAddr) -> Result<bool, NetError> {
        // A dual-stack socket reaches IPv4 peers through their mapped address.
        let to = match to {
            SocketAddr::V4(v4) if self.v6 => {
                SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
            }
            _ => to,
        };
        match self.sock.send_to(bytes, to) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(source) => Err(NetError::Socket {
                what: "sending",
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wavesync_common::time::NS_PER_SEC;

    #[test]
    fn loopback_datagrams_carry_a_recent_monotonic_stamp() {
        let mut rx = StampedSocket::stream("127.0.0.1:0".parse().unwrap(), None).unwrap();
        let addr = rx.local_addr().unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let before = clock::monotonic_ns();
        tx.send_to(b"hello", addr).unwrap();
        let mut buf = [0u8; 64];
        let mut got = None;
        for _ in 0..1000 {
            if let Some(d) = rx.recv(&mut buf).unwrap() {
                got = Some(d);
                break;
            }
            std::thread::yield_now();
        }
        let d = got.expect("a datagram on loopback");
        let after = clock::monotonic_ns();
        assert_eq!(&buf[..d.len], b"hello");
        assert_eq!(d.from, tx.local_addr().unwrap());
        // The stamp lies between the send and the read (1 ms slack for the clock mapping).
        assert!(
            d.at >= before - 1_000_000 && d.at <= after,
            "{before} {} {after}",
            d.at
        );
    }

    #[test]
    fn port_in_use_and_missing_interface_are_clear_errors() {
        let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
        let e = StampedSocket::stream(taken.local_addr().unwrap(), None)
            .expect_err("binding a taken unicast port fails");
        assert!(
            e.to_string().starts_with("cannot listen on 127.0.0.1:"),
            "{e}"
        );
        let e = StampedSocket::stream("239.255.77.77:0".parse().unwrap(), Some("nosuchif0"))
            .expect_err("an unknown interface fails");
        assert_eq!(e.to_string(), "no network interface \"nosuchif0\"");
    }

    #[test]
    fn control_port_in_use_is_a_clear_error() {
        let first = StampedSocket::control_port(0).unwrap();
        let port = first.port().unwrap();
        let e = StampedSocket::control_port(port).unwrap_err();
        assert!(
            matches!(e, NetError::PortInUse { port: p } if p == port),
            "{e}"
        );
        assert!(e.to_string().contains("already in use"));
    }

    #[test]
    fn control_datagrams_carry_a_recent_monotonic_stamp_and_plain_ipv4_source() {
        let mut c = StampedSocket::control_port(0).unwrap();
        let port = c.port().unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let before = clock::monotonic_ns();
        tx.send_to(b"ping", ("127.0.0.1", port)).unwrap();
        let mut buf = [0u8; 64];
        let mut got = None;
        let deadline = before + 2 * NS_PER_SEC;
        while got.is_none() && clock::monotonic_ns() < deadline {
            got = c.recv(&mut buf).unwrap();
            std::thread::yield_now();
        }
        let d = got.expect("a datagram on loopback");
        let after = clock::monotonic_ns();
        assert_eq!(&buf[..d.len], b"ping");
        assert_eq!(d.from, tx.local_addr().unwrap());
        assert!(
            d.at >= before - 1_000_000 && d.at <= after,
            "{before} {} {after}",
            d.at
        );
        // Replies reach the IPv4 peer from the (possibly dual-stack) socket.
        assert!(c.send_to(b"pong", d.from).unwrap());
        tx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let (n, from) = tx.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"pong");
        assert_eq!(from.port(), port);
    }

    #[test]
    fn a_protected_socket_skips_what_does_not_open_and_returns_the_message() {
        use wavesync_common::protect::Key;
        let key = Key::from_bytes(&[9; 32]);
        let p = Arc::new(Protection::new(key.clone(), true).unwrap());
        let mut rx = StampedSocket::stream("127.0.0.1:0".parse().unwrap(), None).unwrap();
        rx.protect(p.clone());
        let addr = rx.local_addr().unwrap();
        let mut tx = StampedSocket::ephemeral(false).unwrap();
        let plain = UdpSocket::bind("127.0.0.1:0").unwrap();
        plain.send_to(b"forged, unprotected", addr).unwrap();
        tx.protect(Arc::new(Protection::new(key, true).unwrap()));
        assert!(tx.send_to(b"genuine", addr).unwrap());
        let mut buf = [0u8; 128];
        let deadline = clock::monotonic_ns() + 2 * NS_PER_SEC;
        let mut got = None;
        while got.is_none() && clock::monotonic_ns() < deadline {
            got = rx.recv(&mut buf).unwrap();
            std::thread::yield_now();
        }
        let d = got.expect("the genuine datagram");
        assert_eq!(&buf[..d.len], b"genuine");
        let st = p.status();
        assert_eq!((st.stats.opened, st.stats.unprotected), (1, 1));
    }
}
