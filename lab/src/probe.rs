//! Tiny multicast (or unicast) sender and listener to check a topology carries traffic.

use socket2::{Domain, Protocol, Socket, Type};
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

/// Sends `count` datagrams carrying `payload` to `group` (multicast through interface `iface`,
/// or a unicast address, from `iface`), `gap` apart.
pub fn send(
    group: SocketAddrV4,
    iface: Ipv4Addr,
    count: u32,
    payload: &[u8],
    gap: Duration,
) -> io::Result<()> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_multicast_if_v4(&iface)?;
    s.set_multicast_ttl_v4(1)?;
    s.bind(&SocketAddr::from((iface, 0)).into())?;
    let s = UdpSocket::from(s);
    for i in 0..count {
        if i > 0 {
            std::thread::sleep(gap);
        }
        s.send_to(payload, group)?;
    }
    Ok(())
}

/// Binds `group` (a multicast group, joined on `iface`, or a unicast address), writes `ready` to `ready_out` (a line), then counts datagrams equal
/// to `payload` until `count` arrived or `timeout` passed; returns how many arrived.
pub fn receive(
    group: SocketAddrV4,
    iface: Ipv4Addr,
    count: u32,
    payload: &[u8],
    timeout: Duration,
    ready_out: &mut dyn Write,
) -> io::Result<u32> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.bind(&SocketAddr::V4(group).into())?;
    if group.ip().is_multicast() {
        s.join_multicast_v4(group.ip(), &iface)?;
    }
    let s = UdpSocket::from(s);
    writeln!(ready_out, "ready")?;
    ready_out.flush()?;
    let deadline = Instant::now() + timeout;
    let mut got = 0;
    let mut buf = [0u8; 2048];
    while got < count {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        s.set_read_timeout(Some(left))?;
        match s.recv_from(&mut buf) {
            Ok((n, _)) if &buf[..n] == payload => got += 1,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_send_and_receive() {
        let group = SocketAddrV4::new(Ipv4Addr::new(239, 255, 78, 9), 45_391);
        let (tx, rx) = std::sync::mpsc::channel();
        let listener = std::thread::spawn(move || {
            struct Ready(std::sync::mpsc::Sender<()>);
            impl Write for Ready {
                fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                    Ok(b.len())
                }
                fn flush(&mut self) -> io::Result<()> {
                    let _ = self.0.send(());
                    Ok(())
                }
            }
            receive(
                group,
                Ipv4Addr::LOCALHOST,
                3,
                b"probe-test",
                Duration::from_secs(5),
                &mut Ready(tx),
            )
        });
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        send(group, Ipv4Addr::LOCALHOST, 1, b"other", Duration::ZERO).unwrap();
        send(
            group,
            Ipv4Addr::LOCALHOST,
            3,
            b"probe-test",
            Duration::from_millis(1),
        )
        .unwrap();
        assert_eq!(listener.join().unwrap().unwrap(), 3);
    }
}
