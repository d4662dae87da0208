//! The relay on 127.0.0.1 with a fixed seed: what arrives matches the relay's own figures, and
//! those match the profile.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;
use wavesync_lab::impair::{Jitter, LinkProfile, LossModel};
use wavesync_lab::relay::{wait_for_report, Relay, RelayConfig, RelayReport};

const MS: i64 = 1_000_000;

fn lossy_link() -> LinkProfile {
    LinkProfile {
        base_delay_ns: MS,
        jitter: Jitter {
            median_ns: 200_000,
            sigma: 1.0,
            max_ns: 5 * MS,
        },
        loss: LossModel::random(0.10),
        duplicate: 0.05,
        dup_gap_ns: 200_000,
        reorder: 0.05,
        reorder_hold_ns: (2 * MS, 4 * MS),
    }
}

/// Receives datagrams carrying a u32 sequence number until `stop`; records them in order.
fn collector(sock: UdpSocket, echo: bool, stop: Arc<AtomicBool>) -> thread::JoinHandle<Vec<u32>> {
    thread::spawn(move || {
        sock.set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1500];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                assert_eq!(n, 64);
                got.push(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
                if echo {
                    sock.send_to(&buf[..n], from).unwrap();
                }
            }
        }
        got
    })
}

/// Sends `n` datagrams in steps of 50, each step only after the relay has read the previous
/// ones (so no socket buffer overflows outside the relay's control).
fn send_paced(sock: &UdpSocket, to: SocketAddr, n: u32, handle: &Arc<Mutex<RelayReport>>) {
    for i in 0..n {
        let mut d = [0xa5u8; 64];
        d[..4].copy_from_slice(&i.to_be_bytes());
        sock.send_to(&d, to).unwrap();
        if (i + 1) % 50 == 0 {
            let want = u64::from(i + 1);
            let (_, ok) = wait_for_report(handle, Duration::from_secs(5), |r| {
                r.forward.received >= want
            });
            assert!(ok, "relay did not read datagram {i}");
        }
    }
}

fn out_of_order(seqs: &[u32]) -> u64 {
    let mut seen = HashSet::new();
    let mut max = None;
    let mut count = 0;
    for &s in seqs {
        if !seen.insert(s) {
            continue;
        }
        match max {
            Some(m) if s < m => count += 1,
            _ => max = Some(s),
        }
    }
    count
}

fn within_binomial(k: u64, n: u64, p: f64) -> bool {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    (k as f64 - mean).abs() <= 4.0 * sd
}

#[test]
fn unicast_both_directions_match_reported_stats() {
    let n = 3000u32;
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let server_addr = match server.local_addr().unwrap() {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => unreachable!(),
    };
    let stop_peers = Arc::new(AtomicBool::new(false));
    let server_thread = collector(server, true, Arc::clone(&stop_peers));

    let mut cfg = RelayConfig::new(
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
        server_addr,
        lossy_link(),
    );
    cfg.forward_if = Some(Ipv4Addr::LOCALHOST);
    cfg.seed = 2024;
    let mut relay = Relay::bind(cfg).unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let handle = relay.report_handle();
    let stop_relay = Arc::new(AtomicBool::new(false));
    let relay_thread = {
        let stop = Arc::clone(&stop_relay);
        thread::spawn(move || relay.run(&stop).unwrap())
    };

    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let client_thread = collector(client.try_clone().unwrap(), false, Arc::clone(&stop_peers));
    send_paced(&client, relay_addr, n, &handle);

    // Everything the relay decided to deliver, both ways, has left it.
    let (_, ok) = wait_for_report(&handle, Duration::from_secs(10), |r| {
        r.forward.received == u64::from(n)
            && r.reverse.received == r.sent_forward
            && r.sent_forward == r.forward.delivered
            && r.sent_reverse == r.reverse.delivered
            && r.queued == 0
    });
    assert!(ok, "relay did not settle");
    stop_relay.store(true, Ordering::Relaxed);
    let report = relay_thread.join().unwrap();
    stop_peers.store(true, Ordering::Relaxed);
    let at_server = server_thread.join().unwrap();
    let at_client = client_thread.join().unwrap();

    // What arrived is exactly what the relay says it did.
    let f = &report.forward;
    assert_eq!(f.received, u64::from(n));
    assert_eq!(at_server.len() as u64, f.delivered);
    assert_eq!(f.delivered, f.received - f.dropped + f.duplicated);
    let distinct: HashSet<u32> = at_server.iter().copied().collect();
    assert_eq!(distinct.len() as u64, f.received - f.dropped);
    assert_eq!(at_server.len() - distinct.len(), f.duplicated as usize);
    let ooo = out_of_order(&at_server);
    assert!(
        ooo <= f.reordered && ooo + f.reordered / 4 >= f.reordered,
        "out of order {ooo}, held back {}",
        f.reordered
    );
    let r = &report.reverse;
    assert_eq!(r.received, at_server.len() as u64);
    assert_eq!(at_client.len() as u64, r.delivered);
    assert_eq!(report.overflow + report.send_errors, 0);
    assert_eq!(report.clients, 1);

    // And what it did is what the profile asks for.
    assert!(within_binomial(f.dropped, f.received, 0.10), "{f:?}");
    assert!(
        within_binomial(f.duplicated, f.received - f.dropped, 0.05),
        "{f:?}"
    );
    assert!(
        within_binomial(f.reordered, f.received - f.dropped, 0.05),
        "{f:?}"
    );
    assert!(within_binomial(r.dropped, r.received, 0.10), "{r:?}");
    // Delay: at least 1 ms + the 0.2 ms jitter median; the datagrams come in bursts of 50, so
    // each queues behind the slowest before it, but nothing waits beyond the 5 ms jitter cap +
    // 4 ms hold.
    assert!(f.delay_p50_us >= 1180.0, "{f:?}");
    assert!(
        f.delay_max_us <= 10_000.0 && r.delay_max_us <= 10_000.0,
        "{f:?} {r:?}"
    );
}

#[test]
fn multicast_in_multicast_out_on_loopback() {
    let n = 1000u32;
    // Receivers' side: a listener on group B, joined on loopback.
    let out_group = Ipv4Addr::new(239, 255, 78, 2);
    let in_group = Ipv4Addr::new(239, 255, 78, 1);
    let listener = {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        s.set_reuse_address(true).unwrap();
        s.bind(&SocketAddr::V4(SocketAddrV4::new(out_group, 0)).into())
            .unwrap();
        s.join_multicast_v4(&out_group, &Ipv4Addr::LOCALHOST)
            .unwrap();
        UdpSocket::from(s)
    };
    let out_port = listener.local_addr().unwrap().port();
    let stop_peers = Arc::new(AtomicBool::new(false));
    let listener_thread = collector(listener, false, Arc::clone(&stop_peers));

    let mut cfg = RelayConfig::new(
        SocketAddrV4::new(in_group, 0),
        SocketAddrV4::new(out_group, out_port),
        LinkProfile {
            reorder: 0.0,
            ..lossy_link()
        },
    );
    cfg.listen_if = Some(Ipv4Addr::LOCALHOST);
    cfg.forward_if = Some(Ipv4Addr::LOCALHOST);
    cfg.seed = 77;
    let mut relay = Relay::bind(cfg).unwrap();
    let in_port = relay.local_addr().unwrap().port();
    let handle = relay.report_handle();
    let stop_relay = Arc::new(AtomicBool::new(false));
    let relay_thread = {
        let stop = Arc::clone(&stop_relay);
        thread::spawn(move || relay.run(&stop).unwrap())
    };

    let master = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    master.set_multicast_if_v4(&Ipv4Addr::LOCALHOST).unwrap();
    master
        .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
        .unwrap();
    let master = UdpSocket::from(master);
    send_paced(&master, SocketAddr::from((in_group, in_port)), n, &handle);
    let (_, ok) = wait_for_report(&handle, Duration::from_secs(10), |r| {
        r.forward.received == u64::from(n) && r.sent_forward == r.forward.delivered && r.queued == 0
    });
    assert!(ok, "relay did not settle");
    stop_relay.store(true, Ordering::Relaxed);
    let report = relay_thread.join().unwrap();
    stop_peers.store(true, Ordering::Relaxed);
    let got = listener_thread.join().unwrap();

    let f = &report.forward;
    assert_eq!(got.len() as u64, f.delivered, "{report:?}");
    let distinct: HashSet<u32> = got.iter().copied().collect();
    assert_eq!(distinct.len() as u64, f.received - f.dropped);
    assert!(within_binomial(f.dropped, f.received, 0.10), "{f:?}");
    assert_eq!(report.reverse.received, 0);
}
