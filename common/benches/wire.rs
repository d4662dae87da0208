//! Wire-format throughput: audio packet encode/decode, NACK build/parse, packetizing, and the
//! whole sender core (packetize + ring + poll_transmit).
//! Figures are per packet (criterion's "elem/s" = packets per second).
//!
//! `cargo bench -p wavesync-common --bench wire -- --quick`

use std::hint::black_box;
use wavesync_common::time::TimelineNs;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wavesync_common::format::{SampleFormat, StreamFormat};
use wavesync_common::packetizer::{Packetizer, PacketizerConfig};
use wavesync_common::sender::{SenderConfig, SenderCore};
use wavesync_common::wire::nack::{self, Nack};
use wavesync_common::wire::rtp::AudioPacket;

/// A full default packet: 361 frames of 16-bit stereo, 1472 bytes on the wire.
fn full_packet() -> (Vec<u8>, usize) {
    let payload: Vec<u8> = (0..361 * 4).map(|i| i as u8).collect();
    let p = AudioPacket {
        marker: false,
        format: SampleFormat::L16,
        seq: 1000,
        timestamp: 361_000,
        ssrc: 0xABCD,
        play_time: TimelineNs::from_ns(5_000_000_000_000),
        payload: &payload,
    };
    let mut buf = vec![0u8; 1500];
    let n = p.encode(&mut buf).unwrap();
    (buf, n)
}

fn audio_packet(c: &mut Criterion) {
    let (bytes, n) = full_packet();
    let mut g = c.benchmark_group("audio_packet");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_1472B", |b| {
        let p = AudioPacket::decode(&bytes[..n]).unwrap();
        let mut out = vec![0u8; 1500];
        b.iter(|| black_box(&p).encode(black_box(&mut out)).unwrap())
    });
    g.bench_function("decode_1472B", |b| {
        b.iter(|| AudioPacket::decode(black_box(&bytes[..n])).unwrap().seq)
    });
    g.finish();
}

fn nack_msgs(c: &mut Criterion) {
    // A Wi-Fi-like loss pattern: bursts of 5 lost packets every 20, 100 seqs, across the wrap.
    let lost: Vec<u16> = (0..20u16)
        .flat_map(|b| (0..5u16).map(move |i| 65_000u16.wrapping_add(b * 20 + i)))
        .collect();
    let mut out = [0u8; nack::MAX_LEN];
    let e = nack::encode(1, 2, &lost, &mut out).unwrap();
    let mut g = c.benchmark_group("nack");
    g.throughput(Throughput::Elements(1));
    g.bench_function("build_100_lost", |b| {
        let mut buf = [0u8; nack::MAX_LEN];
        b.iter(|| nack::encode(1, 2, black_box(&lost), &mut buf).unwrap().len)
    });
    g.bench_function("parse_and_iterate_100_lost", |b| {
        b.iter(|| {
            let n = Nack::decode(black_box(&out[..e.len])).unwrap();
            n.lost().fold(0u32, |a, s| a.wrapping_add(s as u32))
        })
    });
    g.finish();
}

fn packetizer(c: &mut Criterion) {
    let cfg = PacketizerConfig::new(StreamFormat::DEFAULT, 150_000_000, 1);
    let samples: Vec<f32> = (0..361 * 2 * 100)
        .map(|i| ((i % 97) as f32 - 48.0) / 97.0)
        .collect();
    let mut g = c.benchmark_group("packetizer");
    g.throughput(Throughput::Elements(100));
    g.bench_function("push_f32_to_L16_packets", |b| {
        let mut p = Packetizer::new(cfg).unwrap();
        let mut t = 0i64;
        b.iter(|| {
            let mut bytes = 0usize;
            p.push(TimelineNs::from_ns(t), black_box(&samples), |pk| {
                bytes += pk.bytes.len()
            });
            t += 752_083_333; // 100 packets of 361 frames at 48 kHz
            bytes
        })
    });
    g.finish();
}

fn sender(c: &mut Criterion) {
    let samples: Vec<f32> = (0..361 * 2 * 100)
        .map(|i| ((i % 97) as f32 - 48.0) / 97.0)
        .collect();
    let mut g = c.benchmark_group("sender");
    g.throughput(Throughput::Elements(100));
    g.bench_function("push_and_poll_transmit", |b| {
        let mut s = SenderCore::new(SenderConfig::new(StreamFormat::DEFAULT, 1)).unwrap();
        let mut buf = vec![0u8; s.max_datagram_len()];
        let mut t = 1_000_000_000i64;
        b.iter(|| {
            s.push_audio(TimelineNs::from_ns(t), black_box(&samples))
                .expect("in range");
            t += 752_083_333;
            let mut bytes = 0;
            while let Some(tx) = s.poll_transmit(TimelineNs::from_ns(t), &mut buf) {
                bytes += tx.len;
            }
            bytes
        })
    });
    g.finish();
}

// criterion_group! defines a public function it does not document.
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, audio_packet, nack_msgs, packetizer, sender);
}
use group::benches;
criterion_main!(benches);
