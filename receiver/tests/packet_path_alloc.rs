//! The audio packet's path through the receiver never allocates in steady state: decoded once
//! by the common `Receiver` on the network thread, copied into a typed [`Packet`], through the
//! feed ring, and into the playout on the output thread.

use std::net::SocketAddr;
use wavesync_common::time::{LocalNs, TimelineNs};

use wavesync_common::clock::ClockEstimate;
use wavesync_common::format::{ClockDomain, SampleFormat, StreamFormat};
use wavesync_common::playout::{Playout, PlayoutConfig};
use wavesync_common::receiver::{ClockSource, Receiver, ReceiverConfig};
use wavesync_common::wire::rtp::AudioPacket;
use wavesync_common::wire::status::{Status, StatusName};
use wavesync_receiver::feed::{self, Feed, Packet};

#[path = "../../test-support/alloc_count.rs"]
mod alloc_count;

#[global_allocator]
static ALLOC: alloc_count::Counting = alloc_count::Counting;

const MS: i64 = 1_000_000;
const FPP: usize = 240;

#[test]
fn decode_feed_and_push_never_allocate() {
    assert_eq!(alloc_count::count(|| vec![0u8; 10].len()).1, 1);
    let master: SocketAddr = "10.0.0.1:40000".parse().expect("address");
    let mut rx = Receiver::new(ReceiverConfig {
        clock: ClockSource::System,
        ..ReceiverConfig::default()
    });
    let mut b = vec![0u8; 1500];
    let status = Status {
        ssrc: 7,
        format: StreamFormat::DEFAULT,
        clock_domain: ClockDomain::System,
        frames_per_packet: FPP as u16,
        time_port: 45301,
        latency_ns: 100 * MS,
        packets_sent: 0,
        flags: 0,
        name: StatusName::truncated("test"),
        ntp_server: None,
        channel_map: None,
    };
    let n = status.encode(&mut b).expect("status fits");
    rx.handle_datagram(LocalNs::from_ns(0), master, &b[..n]);
    while rx.poll_event().is_some() {}
    rx.set_external_clock(ClockEstimate {
        ref_local: LocalNs::from_ns(0),
        ref_timeline: TimelineNs::from_ns(0),
        rate: 1.0,
        uncertainty_ns: 0,
    });

    let (mut tx, mut ring) = feed::channel();
    let mut playout: Playout = Playout::new(PlayoutConfig::new(48_000, 2));
    playout.set_clock(rx.clock());
    let payload: Vec<u8> = (0..FPP * 4).map(|i| (i * 7) as u8).collect();
    let mut datagram = vec![0u8; 1500];
    let mut out = vec![0.0f32; FPP * 2];
    let mut allocs = 0;
    let mut pushed = 0;
    for k in 0..500u16 {
        // Every 10th packet lost (the loss tracker opens a gap), pairs swapped.
        let seq = k ^ 1;
        if seq % 10 == 3 {
            continue;
        }
        let now = k as i64 * 5 * MS;
        let len = AudioPacket {
            marker: seq == 0,
            format: SampleFormat::L16,
            seq,
            timestamp: seq as u32 * FPP as u32,
            ssrc: 7,
            play_time: TimelineNs::from_ns(seq as i64 * 5 * MS + 100 * MS),
            payload: &payload,
        }
        .encode(&mut datagram)
        .expect("packet fits");
        // The network thread.
        allocs += alloc_count::count(|| {
            let p = rx
                .handle_datagram(LocalNs::from_ns(now), master, &datagram[..len])
                .and_then(|p| Packet::new(LocalNs::from_ns(now), &p));
            if let Some(p) = p {
                assert!(tx.push(Feed::Packet(p)).is_ok(), "ring full");
            }
        })
        .1;
        // The output thread.
        allocs += alloc_count::count(|| {
            while let Ok(Feed::Packet(p)) = ring.pop() {
                playout.push(p.at, &p.audio(), 2);
                pushed += 1;
            }
            playout.fill(LocalNs::from_ns(now), &mut out);
        })
        .1;
    }
    assert!(pushed > 400, "{pushed} packets reached the playout");
    assert!(rx.stats().loss.missing > 10, "{:?}", rx.stats());
    assert_eq!(allocs, 0, "allocations on the packet path");
}
