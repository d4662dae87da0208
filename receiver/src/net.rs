//! The receiver's sockets: the stream socket (multicast or unicast) and the control socket
//! (time queries, NACKs, resends), both with kernel receive timestamps.

use std::io::IoSliceMut;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};

use nix::sys::socket::{
    recvmsg, setsockopt, sockopt::ReceiveTimestampns, ControlMessageOwned, MsgFlags,
    SockaddrStorage,
};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use wavesync_common::time::{LocalNs, NS_PER_SEC};

use crate::clock_io;

/// A socket problem, phrased for the user.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Binding failed (port in use, address not on this host).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// Joining the multicast group failed.
    #[error("cannot join multicast group {group} on {interface}: {source}")]
    Join {
        group: IpAddr,
        interface: String,
        source: std::io::Error,
    },
    /// The interface named does not exist.
    #[error("no network interface {0:?}")]
    NoInterface(String),
    /// Any other socket error.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

/// One received datagram.
pub struct Datagram {
    /// Bytes received.
    pub len: usize,
    /// Sender.
    pub from: SocketAddr,
    /// When it arrived, on CLOCK_MONOTONIC (the kernel's stamp when available).
    pub at: LocalNs,
}

/// A UDP socket that reports when each datagram arrived.
pub struct StampedSocket {
    sock: UdpSocket,
    cmsg: Vec<u8>,
}

fn interface_index(name: &str) -> Result<u32, NetError> {
    nix::net::if_::if_nametoindex(name).map_err(|_| NetError::NoInterface(name.to_string()))
}

impl StampedSocket {
    fn new(sock: Socket) -> Result<Self, NetError> {
        // Kernel receive stamps; without them the arrival is read after recvmsg returns.
        let _ = setsockopt(&sock.as_fd(), ReceiveTimestampns, &true);
        sock.set_nonblocking(true)?;
        Ok(StampedSocket {
            sock: sock.into(),
            cmsg: nix::cmsg_space!(nix::sys::time::TimeSpec),
        })
    }

    /// The stream socket: binds `listen`'s port; joins the group when `listen` is multicast
    /// (several receivers on one host may share it: SO_REUSEADDR/SO_REUSEPORT).
    pub fn stream(listen: SocketAddr, interface: Option<&str>) -> Result<Self, NetError> {
        let domain = Domain::for_address(listen);
        let sock = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        sock.set_reuse_address(true)?;
        let multicast = listen.ip().is_multicast();
        if multicast {
            sock.set_reuse_port(true)?;
        }
        if listen.is_ipv6() {
            sock.set_only_v6(true)?;
        }
        let _ = sock.set_recv_buffer_size(1 << 20);
        sock.bind(&listen.into()).map_err(|source| NetError::Bind {
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
        Self::new(sock)
    }

    /// The control socket: an ephemeral port of the stream's address family, from which time
    /// queries and NACKs go out and to which answers and resends come back.
    pub fn control(ipv6: bool) -> Result<Self, NetError> {
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
        let sock = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        sock.bind(&any.into())
            .map_err(|source| NetError::Bind { addr: any, source })?;
        Self::new(sock)
    }

    /// A socket bound to `addr` (e.g. a master's control port); an IPv6 unspecified address
    /// also accepts IPv4 (dual stack).
    pub fn bound(addr: SocketAddr) -> Result<Self, NetError> {
        let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() {
            let _ = sock.set_only_v6(false);
        }
        sock.bind(&addr.into())
            .map_err(|source| NetError::Bind { addr, source })?;
        Self::new(sock)
    }

    /// The raw descriptor, for poll(2).
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// Receives one datagram if one is waiting (`Ok(None)` when none is).
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<Option<Datagram>, NetError> {
        let mut iov = [IoSliceMut::new(buf)];
        let msg = match recvmsg::<SockaddrStorage>(
            self.sock.as_raw_fd(),
            &mut iov,
            Some(&mut self.cmsg),
            MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(m) => m,
            Err(nix::errno::Errno::EAGAIN) => return Ok(None),
            Err(e) => return Err(NetError::Io(e.into())),
        };
        let mut at = None;
        for c in msg.cmsgs().into_iter().flatten() {
            if let ControlMessageOwned::ScmTimestampns(ts) = c {
                at = Some(clock_io::realtime_to_monotonic(
                    ts.tv_sec() * NS_PER_SEC + ts.tv_nsec(),
                ));
            }
        }
        let from = msg.address.as_ref().and_then(|a: &SockaddrStorage| {
            if let Some(v4) = a.as_sockaddr_in() {
                Some(SocketAddr::V4((*v4).into()))
            } else {
                a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
            }
        });
        let len = msg.bytes;
        match from {
            Some(from) => Ok(Some(Datagram {
                len,
                from,
                at: at.unwrap_or_else(clock_io::monotonic_ns),
            })),
            None => Ok(None),
        }
    }

    /// Sends one datagram; a full socket buffer drops it (counted by the caller).
    pub fn send_to(&self, bytes: &[u8], to: SocketAddr) -> Result<(), NetError> {
        match self.sock.send_to(bytes, to) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(NetError::Io(e)),
        }
    }

    /// The bound local address.
    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        Ok(self.sock.local_addr()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_datagrams_carry_a_recent_monotonic_stamp() {
        let mut rx = StampedSocket::stream("127.0.0.1:0".parse().unwrap(), None).unwrap();
        let addr = rx.local_addr().unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let before = clock_io::monotonic_ns();
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
        let after = clock_io::monotonic_ns();
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
            .err()
            .expect("binding a taken unicast port fails");
        assert!(
            e.to_string().starts_with("cannot listen on 127.0.0.1:"),
            "{e}"
        );
        let e = StampedSocket::stream("239.255.77.77:0".parse().unwrap(), Some("nosuchif0"))
            .err()
            .expect("an unknown interface fails");
        assert_eq!(e.to_string(), "no network interface \"nosuchif0\"");
    }
}
