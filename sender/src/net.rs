//! The sender's sockets: destinations (resolved `HOST:PORT`s), one UDP socket per address
//! family for the stream, and the control socket (time service, NACKs, resends) with kernel
//! receive timestamps.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::sys::socket::{
    recvmsg, setsockopt, sockopt::ReceiveTimestampns, ControlMessageOwned, MsgFlags,
    SockaddrStorage,
};
use socket2::{Domain, Protocol, Socket, Type};
use wavesync_common::time::{LocalNs, NS_PER_SEC};

use crate::clock;

/// The stream's default UDP port.
pub const DEFAULT_PORT: u16 = 45300;
/// The default control (time service) port.
pub const DEFAULT_CONTROL_PORT: u16 = 45301;
/// The default destination: an administratively scoped multicast group.
pub const DEFAULT_DESTINATION: &str = "239.255.77.77:45300";

/// A network problem, phrased for the user.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A destination is not of the form `HOST:PORT`.
    #[error("bad destination {spec:?}: {why} (expected HOST:PORT, e.g. 239.255.77.77:45300, kitchen.local:45300 or [ff05::77]:45300)")]
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
    /// The control port is taken by another program.
    #[error("control port {port} is already in use (is another sender running? choose another with --control-port)")]
    PortInUse {
        /// The port.
        port: u16,
    },
    /// Binding a socket failed for another reason.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
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

fn sock_err(what: &'static str) -> impl FnOnce(io::Error) -> NetError {
    move |source| NetError::Socket { what, source }
}

/// Resolves one destination `HOST:PORT` (`HOST` alone takes `default_port`; IPv6 literals in
/// brackets). A name with several addresses gives its first IPv4 address, else its first.
pub fn resolve(spec: &str, default_port: u16) -> Result<SocketAddr, NetError> {
    let bad = |why| NetError::BadAddress {
        spec: spec.to_string(),
        why,
    };
    let spec = spec.trim();
    if spec.is_empty() {
        return Err(bad("empty"));
    }
    if let Ok(a) = spec.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = spec.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    let (host, port) = if let Some(rest) = spec.strip_prefix('[') {
        let (h, tail) = rest.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| bad("port is not a number 0-65535"))?,
            None if tail.is_empty() => default_port,
            None => return Err(bad("text after ']'")),
        };
        let ip = h
            .parse::<Ipv6Addr>()
            .map_err(|_| bad("not an IPv6 address in brackets"))?;
        return Ok(SocketAddr::new(IpAddr::V6(ip), port));
    } else {
        match spec.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| bad("port is not a number 0-65535"))?,
            ),
            None => (spec, default_port),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if port == 0 {
        return Err(bad("port 0"));
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|source| NetError::Resolve {
            host: host.to_string(),
            source,
        })?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| NetError::NoAddress(host.to_string()))
}

/// Resolves every destination, dropping duplicates (order kept).
pub fn resolve_all(specs: &[String], default_port: u16) -> Result<Vec<SocketAddr>, NetError> {
    let mut out: Vec<SocketAddr> = Vec::with_capacity(specs.len());
    for s in specs {
        let a = resolve(s, default_port)?;
        if !out.contains(&a) {
            out.push(a);
        }
    }
    Ok(out)
}

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

fn interface_index(name: &str) -> Result<u32, NetError> {
    nix::net::if_::if_nametoindex(name).map_err(|_| NetError::NoInterface(name.to_string()))
}

/// Index of the interface holding address `ip`.
fn interface_of_address(ip: IpAddr) -> Result<u32, NetError> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| NetError::Socket {
        what: "listing network interfaces",
        source: e.into(),
    })?;
    for ifa in addrs {
        let Some(a) = ifa.address else { continue };
        let found = match ip {
            IpAddr::V4(v4) => a.as_sockaddr_in().map(|s| s.ip() == v4).unwrap_or(false),
            IpAddr::V6(v6) => a.as_sockaddr_in6().map(|s| s.ip() == v6).unwrap_or(false),
        };
        if found {
            return interface_index(&ifa.interface_name);
        }
    }
    Err(NetError::NoInterface(ip.to_string()))
}

/// IP_MULTICAST_IF by interface index (struct ip_mreqn), which socket2 only offers by address.
fn set_multicast_if_v4_index(sock: &Socket, index: u32) -> io::Result<()> {
    let mreqn = libc::ip_mreqn {
        imr_multiaddr: libc::in_addr { s_addr: 0 },
        imr_address: libc::in_addr { s_addr: 0 },
        imr_ifindex: index as libc::c_int,
    };
    // SAFETY: the option value is a valid ip_mreqn of the size passed; the fd is open.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_IF,
            (&mreqn as *const libc::ip_mreqn).cast(),
            std::mem::size_of::<libc::ip_mreqn>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
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

    /// Sends `bytes` to every destination. A failure is logged once per destination until it
    /// sends again.
    pub fn send(&mut self, bytes: &[u8]) -> SendReport {
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
                            " (a broadcast address needs --broadcast)"
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

/// One datagram received on the control socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Datagram {
    /// Bytes received (at the start of the caller's buffer).
    pub len: usize,
    /// Sender.
    pub from: SocketAddr,
    /// Arrival on CLOCK_MONOTONIC: the kernel's receive stamp when there is one, else the time
    /// it was read.
    pub at: LocalNs,
    /// True when `at` is the kernel's stamp.
    pub kernel_stamp: bool,
}

/// The control socket: bound on the time/control port of every address (IPv6 dual stack when
/// the host has IPv6, else IPv4), stamped by the kernel on arrival.
#[derive(Debug)]
pub struct ControlSocket {
    sock: UdpSocket,
    cmsg: Vec<u8>,
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

impl ControlSocket {
    /// Binds the control port (`0`: any free port, for tests).
    pub fn bind(port: u16) -> Result<Self, NetError> {
        let any6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
        let sock = match Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)) {
            Ok(s) if s.set_only_v6(false).is_ok() => {
                Self::bind_one(&s, any6, port)?;
                s
            }
            // No IPv6 on this host: IPv4 only.
            _ => {
                let any4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
                let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
                    .map_err(sock_err("creating the control socket"))?;
                Self::bind_one(&s, any4, port)?;
                s
            }
        };
        // Kernel receive stamps; without them the arrival is read after recvmsg returns.
        let _ = setsockopt(&sock.as_fd(), ReceiveTimestampns, &true);
        sock.set_nonblocking(true)
            .map_err(sock_err("making the control socket non-blocking"))?;
        Ok(ControlSocket {
            sock: sock.into(),
            cmsg: nix::cmsg_space!(nix::sys::time::TimeSpec),
        })
    }

    fn bind_one(s: &Socket, addr: SocketAddr, port: u16) -> Result<(), NetError> {
        s.bind(&addr.into()).map_err(|source| {
            if source.kind() == io::ErrorKind::AddrInUse {
                NetError::PortInUse { port }
            } else {
                NetError::Bind { addr, source }
            }
        })
    }

    /// The bound port.
    pub fn port(&self) -> Result<u16, NetError> {
        self.sock
            .local_addr()
            .map(|a| a.port())
            .map_err(sock_err("reading the control socket's address"))
    }

    /// The descriptor, for poll(2).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// Receives one datagram if one is waiting (`Ok(None)` when none is).
    pub fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<Datagram>> {
        let mut iov = [IoSliceMut::new(buf)];
        let msg = match recvmsg::<SockaddrStorage>(
            self.sock.as_raw_fd(),
            &mut iov,
            Some(&mut self.cmsg),
            MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(m) => m,
            Err(nix::errno::Errno::EAGAIN) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut stamp = None;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmTimestampns(ts) = c {
                    stamp = Some(clock::realtime_to_monotonic(
                        ts.tv_sec() * NS_PER_SEC + ts.tv_nsec(),
                    ));
                }
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

    /// Sends one datagram to `to` (a full socket buffer drops it: `Ok(false)`).
    pub fn send_to(&self, bytes: &[u8], to: SocketAddr) -> io::Result<bool> {
        // A dual-stack socket reaches IPv4 peers through their mapped address.
        let to = match (to, self.sock.local_addr()) {
            (SocketAddr::V4(v4), Ok(SocketAddr::V6(_))) => {
                SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
            }
            _ => to,
        };
        match self.sock.send_to(bytes, to) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse_and_resolve() {
        assert_eq!(
            resolve("239.255.77.77:45300", 1).unwrap(),
            "239.255.77.77:45300".parse().unwrap()
        );
        assert_eq!(
            resolve("127.0.0.1", 45300).unwrap(),
            "127.0.0.1:45300".parse().unwrap()
        );
        assert_eq!(
            resolve("[ff05::77]:1111", 1).unwrap(),
            "[ff05::77]:1111".parse().unwrap()
        );
        assert_eq!(
            resolve("[::1]", 45300).unwrap(),
            "[::1]:45300".parse().unwrap()
        );
        let l = resolve("localhost:1111", 1).unwrap();
        assert!(l.ip().is_loopback() && l.port() == 1111, "{l}");
        let all = resolve_all(&["127.0.0.1:5".to_string(), "127.0.0.1:5".to_string()], 1).unwrap();
        assert_eq!(all.len(), 1);
    }

    #[test]
    fn bad_destinations_say_what_is_wrong() {
        let e = resolve("host:notaport", 1).unwrap_err();
        assert!(e.to_string().contains("port is not a number"), "{e}");
        let e = resolve("", 1).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        let e = resolve("no-such-host.invalid:45300", 1).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot resolve host \"no-such-host.invalid\""),
            "{e}"
        );
    }

    #[test]
    fn control_port_in_use_is_a_clear_error() {
        let first = ControlSocket::bind(0).unwrap();
        let port = first.port().unwrap();
        let e = ControlSocket::bind(port).unwrap_err();
        assert!(
            matches!(e, NetError::PortInUse { port: p } if p == port),
            "{e}"
        );
        assert!(e.to_string().contains("already in use"));
    }

    #[test]
    fn control_datagrams_carry_a_recent_monotonic_stamp_and_plain_ipv4_source() {
        let mut c = ControlSocket::bind(0).unwrap();
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
