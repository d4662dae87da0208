//! Network interfaces by name or address, and the one socket option socket2 lacks.

use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use socket2::Socket;

use crate::NetError;

/// The index of the interface named `name` (`eth0`).
pub fn interface_index(name: &str) -> Result<u32, NetError> {
    nix::net::if_::if_nametoindex(name).map_err(|_| NetError::NoInterface(name.to_string()))
}

/// The index of the interface holding address `ip`.
pub(crate) fn interface_of_address(ip: IpAddr) -> Result<u32, NetError> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| NetError::Socket {
        what: "listing network interfaces",
        source: e.into(),
    })?;
    for ifa in addrs {
        let Some(a) = ifa.address else { continue };
        let found = match ip {
            IpAddr::V4(v4) => a.as_sockaddr_in().is_some_and(|s| s.ip() == v4),
            IpAddr::V6(v6) => a.as_sockaddr_in6().is_some_and(|s| s.ip() == v6),
        };
        if found {
            return interface_index(&ifa.interface_name);
        }
    }
    Err(NetError::NoInterface(ip.to_string()))
}

/// IP_MULTICAST_IF by interface index (struct ip_mreqn), which socket2 only offers by address.
pub(crate) fn set_multicast_if_v4_index(sock: &Socket, index: u32) -> io::Result<()> {
    let mreqn = libc::ip_mreqn {
        imr_multiaddr: libc::in_addr { s_addr: 0 },
        imr_address: libc::in_addr { s_addr: 0 },
        imr_ifindex: index as libc::c_int,
    };
    // SAFETY: the option value is a valid ip_mreqn of the size passed; the fd is open for the
    // duration of the call (borrowed from `sock`).
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
