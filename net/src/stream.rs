//! [`StreamSockets`]: a master's sending side. One UDP socket per address family the
//! destinations use, sending every datagram to every destination (multicast groups and unicast
//! receivers, IPv4 and IPv6 mixed), with the multicast TTL, interface and loop, broadcast and
//! source address of [`NetOptions`].

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use wavesync_common::protect::OVERHEAD;

use crate::error::sock_err;
use crate::iface::{interface_of_address, set_multicast_if_v4_index};
use crate::protection::Protection;
use crate::socket::SEAL_STACK;
use crate::{interface_index, NetError};

/// How the stream sockets send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetOptions {
    /// Multicast TTL (IPv4) / hop limit (IPv6); `None` keeps the system's default (1).
    pub ttl: Option<u32>,
    /// Interface for multicast, by name (`eth0`) or address (`192.168.1.10`).
    pub interface: Option<String>,
    /// Deliver our own multicast to receivers on this host too (IP_MULTICAST_LOOP).
    pub multicast_loop: bool,
    /// Allow broadcast destinations (SO_BROADCAST).
    pub broadcast: bool,
    /// Send the stream from this local address.
    pub source: Option<IpAddr>,
}

impl Default for NetOptions {
    fn default() -> Self {
        NetOptions {
            ttl: None,
            interface: None,
            multicast_loop: true,
            broadcast: false,
            source: None,
        }
    }
}

fn stream_socket(v6: bool, opts: &NetOptions) -> Result<UdpSocket, NetError> {
    let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
    let sock = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))
        .map_err(sock_err("creating the stream socket"))?;
    if v6 {
        sock.set_only_v6(true)
            .map_err(sock_err("setting IPV6_V6ONLY"))?;
    }
    let _ = sock.set_send_buffer_size(1 << 20);
    let source = opts.source.filter(|s| s.is_ipv6() == v6);
    let bind_ip = source.unwrap_or(if v6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    });
    let bind = SocketAddr::new(bind_ip, 0);
    sock.bind(&bind.into())
        .map_err(|source| match source.raw_os_error() {
            Some(libc::EADDRNOTAVAIL) => NetError::Source {
                addr: bind_ip,
                why: "not an address of this host",
            },
            _ => NetError::Bind { addr: bind, source },
        })?;
    if let Some(ttl) = opts.ttl {
        if v6 {
            sock.set_multicast_hops_v6(ttl)
                .map_err(sock_err("setting the multicast hop limit"))?;
        } else {
            sock.set_multicast_ttl_v4(ttl)
                .map_err(sock_err("setting the multicast TTL"))?;
        }
    }
    if v6 {
        sock.set_multicast_loop_v6(opts.multicast_loop)
            .map_err(sock_err("setting IPV6_MULTICAST_LOOP"))?;
    } else {
        sock.set_multicast_loop_v4(opts.multicast_loop)
            .map_err(sock_err("setting IP_MULTICAST_LOOP"))?;
    }
    if opts.broadcast && !v6 {
        sock.set_broadcast(true)
            .map_err(sock_err("setting SO_BROADCAST"))?;
    }
    // The multicast interface: the one named, or the source address's.
    let iface = opts
        .interface
        .clone()
        .or_else(|| source.map(|s| s.to_string()));
    if let Some(iface) = iface {
        let as_ip = iface.parse::<IpAddr>().ok();
        if v6 {
            let index = match as_ip {
                Some(ip) => interface_of_address(ip)?,
                None => interface_index(&iface)?,
            };
            sock.set_multicast_if_v6(index)
                .map_err(sock_err("setting IPV6_MULTICAST_IF"))?;
        } else {
            match as_ip {
                Some(IpAddr::V4(a)) => {
                    sock.set_multicast_if_v4(&a)
                        .map_err(|source| match source.raw_os_error() {
                            Some(libc::EADDRNOTAVAIL) => NetError::NoInterface(iface.clone()),
                            _ => NetError::Socket {
                                what: "setting IP_MULTICAST_IF",
                                source,
                            },
                        })?
                }
                Some(ip) => {
                    let index = interface_of_address(ip)?;
                    set_multicast_if_v4_index(&sock, index)
                        .map_err(sock_err("setting IP_MULTICAST_IF"))?
                }
                None => {
                    let index = interface_index(&iface)?;
                    set_multicast_if_v4_index(&sock, index)
                        .map_err(sock_err("setting IP_MULTICAST_IF"))?
                }
            }
        }
    }
    sock.set_nonblocking(true)
        .map_err(sock_err("making the stream socket non-blocking"))?;
    Ok(sock.into())
}

/// What one send to every destination did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendReport {
    /// Destinations the datagram went to.
    pub sent: usize,
    /// Destinations whose socket buffer was full (datagram dropped).
    pub dropped: usize,
    /// Destinations that failed with another error.
    pub failed: usize,
}

/// The stream's sockets and destinations.
#[derive(Debug)]
pub struct StreamSockets {
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
    dests: Vec<SocketAddr>,
    /// Last error per destination (to log a failure once, not per packet).
    last_error: Vec<Option<io::ErrorKind>>,
    /// Set: every datagram is sealed before it goes out.
    protection: Option<Arc<Protection>>,
}

impl StreamSockets {
    /// Opens one socket per address family used by `dests` with `opts`.
    pub fn open(dests: &[SocketAddr], opts: &NetOptions) -> Result<Self, NetError> {
        if let Some(src) = opts.source {
            if !dests.iter().any(|d| d.is_ipv6() == src.is_ipv6()) {
                return Err(NetError::Source {
                    addr: src,
                    why: "no destination of its address family",
                });
            }
        }
        let v4 = if dests.iter().any(|d| d.is_ipv4()) {
            Some(stream_socket(false, opts)?)
        } else {
            None
        };
        let v6 = if dests.iter().any(|d| d.is_ipv6()) {
            Some(stream_socket(true, opts)?)
        } else {
            None
        };
        Ok(StreamSockets {
            v4,
            v6,
            dests: dests.to_vec(),
            last_error: vec![None; dests.len()],
            protection: None,
        })
    }

    /// The destinations.
    pub fn destinations(&self) -> &[SocketAddr] {
        &self.dests
    }

    /// The local address the stream leaves from, per family (IPv4 first).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        [&self.v4, &self.v6]
            .into_iter()
            .flatten()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }

    /// Seals every datagram with the household key from now on (once per datagram, whatever
    /// the number of destinations).
    pub fn protect(&mut self, protection: Arc<Protection>) {
        self.protection = Some(protection);
    }

    /// Sends `bytes` to every destination (sealed when protected). A failure is logged once
    /// per destination until it sends again.
    pub fn send(&mut self, bytes: &[u8]) -> SendReport {
        let mut stack = [0u8; SEAL_STACK];
        let mut heap = Vec::new();
        let bytes = match &self.protection {
            None => bytes,
            Some(p) => {
                let out = if bytes.len() + OVERHEAD <= SEAL_STACK {
                    &mut stack[..]
                } else {
                    heap.resize(bytes.len() + OVERHEAD, 0);
                    &mut heap[..]
                };
                match p.seal(bytes, out) {
                    Ok(sealed) => sealed,
                    Err(e) => {
                        log::warn!("cannot protect a datagram: {e}");
                        return SendReport {
                            failed: self.dests.len(),
                            ..SendReport::default()
                        };
                    }
                }
            }
        };
        let mut r = SendReport::default();
        for (i, d) in self.dests.iter().enumerate() {
            let sock = if d.is_ipv4() { &self.v4 } else { &self.v6 };
            let Some(sock) = sock else { continue };
            match sock.send_to(bytes, d) {
                Ok(_) => {
                    r.sent += 1;
                    if self.last_error[i].take().is_some() {
                        log::info!("sending to {d} works again");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => r.dropped += 1,
                Err(e) => {
                    r.failed += 1;
                    if self.last_error[i] != Some(e.kind()) {
                        self.last_error[i] = Some(e.kind());
                        let hint = if e.raw_os_error() == Some(libc::EACCES) {
                            " (a broadcast address needs broadcast sending enabled)"
                        } else {
                            ""
                        };
                        log::warn!("cannot send to {d}: {e}{hint}");
                    }
                }
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_reach_unicast_and_loopback_multicast_together() {
        let uni = UdpSocket::bind("127.0.0.1:0").unwrap();
        uni.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mc = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        mc.set_reuse_address(true).unwrap();
        mc.bind(&SocketAddr::from(([0, 0, 0, 0], 0)).into())
            .unwrap();
        let group = Ipv4Addr::new(239, 255, 77, 91);
        mc.join_multicast_v4(&group, &Ipv4Addr::LOCALHOST).unwrap();
        let mc: UdpSocket = mc.into();
        mc.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mc_port = mc.local_addr().unwrap().port();
        let dests = vec![
            uni.local_addr().unwrap(),
            SocketAddr::new(IpAddr::V4(group), mc_port),
        ];
        let opts = NetOptions {
            interface: Some("127.0.0.1".into()),
            ttl: Some(1),
            ..NetOptions::default()
        };
        let mut s = StreamSockets::open(&dests, &opts).unwrap();
        let r = s.send(b"audio");
        assert_eq!(r.sent, 2, "{r:?}");
        let mut buf = [0u8; 16];
        assert_eq!(uni.recv(&mut buf).unwrap(), 5);
        assert_eq!(mc.recv(&mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"audio");
    }

    #[test]
    fn unknown_interface_and_foreign_source_are_clear_errors() {
        let dests = vec!["239.255.77.77:45300".parse().unwrap()];
        let opts = NetOptions {
            interface: Some("nosuchif0".into()),
            ..NetOptions::default()
        };
        let e = StreamSockets::open(&dests, &opts).unwrap_err();
        assert_eq!(e.to_string(), "no network interface \"nosuchif0\"");
        let opts = NetOptions {
            source: Some("192.0.2.77".parse().unwrap()),
            ..NetOptions::default()
        };
        let e = StreamSockets::open(&dests, &opts).unwrap_err();
        assert!(e.to_string().contains("not an address of this host"), "{e}");
    }
}
