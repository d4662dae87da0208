//! The binary's network side on loopback: the control port answers time requests (IPv4 and
//! IPv6), a NACK gets the lost packet resent by unicast, multicast/unicast/IPv6 destinations
//! all get the same stream, and SIGTERM stops it cleanly.

mod util;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use util::*;
use wavesync_common::time::{ntp64_from_ns, timeline_from_ntp64, TimelineNs};
use wavesync_common::wire::ntp::NtpPacket;
use wavesync_common::wire::{classify, nack, Kind};
use wavesync_net::clock::monotonic_ns;

fn tone_sender(dest: &str, control: u16, seconds: &str) -> Running {
    let mut cmd = sender();
    cmd.args(["--input", "tone", "--dest", dest, "--duration", seconds])
        .args([
            "--control-port",
            &control.to_string(),
            "--stats-interval",
            "0",
        ]);
    Running::spawn(cmd)
}

/// Receives on `s` until `f` accepts a datagram or `max` passes.
fn recv_until(s: &UdpSocket, max: Duration, mut f: impl FnMut(&[u8], SocketAddr) -> bool) -> bool {
    let end = monotonic_ns() + max.as_nanos() as i64;
    let mut buf = [0u8; 2048];
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    while monotonic_ns() < end {
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            if f(&buf[..n], from) {
                return true;
            }
        }
    }
    false
}

#[test]
fn the_control_port_answers_ntp_requests_on_ipv4_and_ipv6() {
    let rx = listener();
    let port = free_port();
    let run = tone_sender(&rx.local_addr().unwrap().to_string(), port, "3");
    let mut targets = vec![(
        "127.0.0.1".to_string(),
        UdpSocket::bind("127.0.0.1:0").unwrap(),
    )];
    if let Ok(s6) = UdpSocket::bind("[::1]:0") {
        targets.push(("::1".to_string(), s6));
    }
    for (host, client) in &targets {
        let to: SocketAddr = SocketAddr::new(host.parse().unwrap(), port);
        let t1 = ntp64_from_ns(777_000_000);
        let mut answered = false;
        // The sender may still be starting: ask a few times.
        for _ in 0..20 {
            let before = monotonic_ns();
            client
                .send_to(&NtpPacket::client_request(t1).encode(), to)
                .unwrap();
            answered = recv_until(client, Duration::from_millis(100), |b, from| {
                let Ok(r) = NtpPacket::decode(b) else {
                    return false;
                };
                let after = monotonic_ns();
                let (t2, t3) = (
                    timeline_from_ntp64(r.receive_ts),
                    timeline_from_ntp64(r.transmit_ts),
                );
                // Clock domain `master`: the sender's timeline is its monotonic clock.
                let (before, after) = (
                    TimelineNs::from_master_monotonic(before),
                    TimelineNs::from_master_monotonic(after),
                );
                assert_eq!(from, to, "the reply comes from the control port");
                assert_eq!(r.origin_ts, t1);
                assert!(
                    before - 1_000_000 <= t2 && t2 <= t3 && t3 <= after,
                    "{before} {t2} {t3} {after}"
                );
                true
            });
            if answered {
                break;
            }
        }
        assert!(answered, "no time reply over {host}");
    }
    let (status, err) = run.wait(Duration::from_secs(10));
    assert!(status.success(), "{err}");
    assert!(err.contains("time replies"), "{err}");
}

#[test]
fn a_nack_gets_the_packet_resent_by_unicast_from_the_control_port() {
    let rx = listener();
    let port = free_port();
    let run = tone_sender(&rx.local_addr().unwrap().to_string(), port, "3");
    let mut originals: Vec<Vec<u8>> = Vec::new();
    assert!(recv_until(&rx, Duration::from_secs(3), |b, _| {
        if classify(b) == Kind::Audio {
            originals.push(b.to_vec());
        }
        originals.len() >= 10
    }));
    // "Lose" the newest packet: it still has ~140 ms before its play time.
    let lost = wavesync_common::wire::rtp::AudioPacket::decode(originals.last().unwrap()).unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut msg = vec![0u8; nack::MAX_LEN];
    let e = nack::encode(0x1234_5678, lost.ssrc, &[lost.seq], &mut msg).unwrap();
    client.send_to(&msg[..e.len], ("127.0.0.1", port)).unwrap();
    let mut resent = None;
    assert!(
        recv_until(&client, Duration::from_secs(1), |b, from| {
            resent = Some((b.to_vec(), from));
            true
        }),
        "no resend"
    );
    let (bytes, from) = resent.unwrap();
    assert_eq!(from.port(), port);
    assert_eq!(
        &bytes,
        originals.last().unwrap(),
        "the very packet, byte for byte"
    );
    let (status, err) = run.wait(Duration::from_secs(10));
    assert!(status.success(), "{err}");
    assert!(err.contains("1 resends"), "{err}");
}

#[test]
fn multicast_unicast_and_ipv6_destinations_get_the_same_stream() {
    let uni = listener();
    let mc = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    mc.set_reuse_address(true).unwrap();
    mc.bind(&SocketAddr::from(([0, 0, 0, 0], 0)).into())
        .unwrap();
    let group = Ipv4Addr::new(239, 255, 77, 93);
    mc.join_multicast_v4(&group, &Ipv4Addr::LOCALHOST).unwrap();
    let mc: UdpSocket = mc.into();
    let mc_dest = format!("{group}:{}", mc.local_addr().unwrap().port());
    let v6 = UdpSocket::bind("[::1]:0").ok();
    let mut cmd = sender();
    cmd.args([
        "--input",
        "tone",
        "--duration",
        "0.6",
        "--stats-interval",
        "0",
    ])
    .args(["--control-port", &free_port().to_string()])
    // Multicast stays on loopback.
    .args(["--interface", "127.0.0.1", "--ttl", "1"])
    .args([
        "--dest",
        &mc_dest,
        "--dest",
        &uni.local_addr().unwrap().to_string(),
    ]);
    if let Some(v6) = &v6 {
        cmd.args(["--dest", &v6.local_addr().unwrap().to_string()]);
    } else {
        // The rest runs; only the IPv6 destination is left out.
        skip_or_fail("no IPv6 on loopback here: the IPv6 destination is not tested");
    }
    let mut socks = vec![&uni, &mc];
    if let Some(v6) = &v6 {
        socks.push(v6);
    }
    let (got, status, err) = Running::spawn(cmd).collect(&socks, Duration::from_secs(10));
    assert!(status.success(), "{err}");
    let reference: Vec<Vec<u8>> = got[0].iter().map(|c| c.bytes.clone()).collect();
    assert!(audio(&got[0]).len() > 50);
    for (i, g) in got.iter().enumerate().skip(1) {
        let bytes: Vec<Vec<u8>> = g.iter().map(|c| c.bytes.clone()).collect();
        assert_eq!(bytes, reference, "destination {i} got the same datagrams");
    }
}

#[test]
fn sigterm_stops_the_sender_cleanly() {
    let rx = listener();
    let mut cmd = sender();
    cmd.args([
        "--input",
        "tone",
        "--dest",
        &rx.local_addr().unwrap().to_string(),
    ])
    .args(["--control-port", &free_port().to_string()]);
    let run = Running::spawn(cmd);
    assert!(recv_until(&rx, Duration::from_secs(3), |b, _| classify(b)
        == Kind::Audio));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(run.child.id() as i32, libc::SIGTERM) };
    let t = monotonic_ns();
    let (status, err) = run.wait(Duration::from_secs(3));
    assert!(status.success(), "{err}");
    assert!(monotonic_ns() - t < 1_000_000_000);
    assert!(
        err.contains("stopping") && err.contains("stopped:"),
        "{err}"
    );
}
