//! Cost of the household key per packet: sealing and opening a full audio packet (encrypted and
//! authenticate-only), a time request, and refusing a forged packet. Criterion's time per
//! iteration is the cost per packet; at the end one line puts it against the stream's packet
//! rate.
//!
//! `cargo bench -p wavesync-common --bench protect -- --quick`

use std::hint::black_box;

use criterion::{criterion_group, Criterion, Throughput};
use wavesync_common::format::SampleFormat;
use wavesync_common::protect::{Key, Opener, Sealer, OVERHEAD};
use wavesync_common::time::{LocalNs, TimelineNs};
use wavesync_common::wire::ntp::NtpPacket;
use wavesync_common::wire::rtp::AudioPacket;

/// A full keyed packet: 352 frames of 16-bit stereo, 1436 bytes, 1472 sealed.
fn full_packet() -> (Vec<u8>, usize) {
    let payload: Vec<u8> = (0..352 * 4).map(|i| i as u8).collect();
    let p = AudioPacket {
        marker: false,
        format: SampleFormat::L16,
        seq: 1000,
        timestamp: 352_000,
        ssrc: 0xABCD,
        play_time: TimelineNs::from_ns(5_000_000_000_000),
        payload: &payload,
    };
    let mut buf = vec![0u8; 1600];
    let n = p.encode(&mut buf).unwrap();
    (buf, n)
}

fn key() -> Key {
    Key::from_bytes(&[0x5a; 32])
}

/// Seals `n` bytes of `plain` `count` times with fresh counters and returns the datagrams.
fn sealed(plain: &[u8], n: usize, encrypt: bool, count: usize) -> Vec<Vec<u8>> {
    let mut s = Sealer::new(key(), 1, encrypt);
    (0..count)
        .map(|_| {
            let mut b = plain.to_vec();
            b.resize(n + OVERHEAD, 0);
            let m = s.seal(&mut b, n).unwrap();
            b.truncate(m);
            b
        })
        .collect()
}

fn audio(c: &mut Criterion) {
    let (plain, n) = full_packet();
    let mut g = c.benchmark_group("protect_audio_1472B");
    g.throughput(Throughput::Elements(1));
    for encrypt in [true, false] {
        let what = if encrypt {
            "encrypted"
        } else {
            "authenticated"
        };
        g.bench_function(format!("seal_{what}"), |b| {
            let mut s = Sealer::new(key(), 1, encrypt);
            let mut buf = plain.clone();
            buf.resize(n + OVERHEAD, 0);
            b.iter(|| s.seal(black_box(&mut buf), n).unwrap())
        });
        g.bench_function(format!("open_{what}"), |b| {
            // Fresh counters each time (a replay would be refused before the tag check).
            let packets = sealed(&plain[..n], n, encrypt, 1 << 16);
            let mut o = Opener::new(key());
            let mut i = 0;
            let mut buf = packets[0].clone();
            b.iter(|| {
                if i == packets.len() {
                    o = Opener::new(key());
                    i = 0;
                }
                buf.copy_from_slice(&packets[i]);
                i += 1;
                o.open(LocalNs::from_ns(0), black_box(&mut buf)).unwrap()
            })
        });
    }
    g.bench_function("refuse_forged", |b| {
        let mut forged = sealed(&plain[..n], n, true, 1).remove(0);
        forged[40] ^= 1;
        let mut o = Opener::new(key());
        let mut buf = forged.clone();
        b.iter(|| {
            buf.copy_from_slice(&forged);
            o.open(LocalNs::from_ns(0), black_box(&mut buf))
                .unwrap_err()
        })
    });
    g.finish();
}

fn time_request(c: &mut Criterion) {
    let req = NtpPacket::client_request(5).encode();
    let mut g = c.benchmark_group("protect_ntp_48B");
    g.throughput(Throughput::Elements(1));
    g.bench_function("seal", |b| {
        let mut s = Sealer::new(key(), 1, true);
        let mut buf = [0u8; 48 + OVERHEAD];
        buf[..48].copy_from_slice(&req);
        b.iter(|| s.seal(black_box(&mut buf), 48).unwrap())
    });
    g.finish();
}

// criterion_group! defines a public function it does not document.
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, audio, time_request);
}
use group::benches;

/// This thread's CPU time, ns: unlike wall time, not inflated when other processes share the
/// cores. (The library forbids unsafe code; this benchmark reads a clock std does not offer.)
#[allow(unsafe_code)]
fn cpu_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// One line for the README: seal + open of a full packet against a 48 kHz stream's packet rate,
/// in CPU time.
fn summary() {
    let (plain, n) = full_packet();
    let count = 20_000;
    let packets = sealed(&plain[..n], n, true, count);
    let mut s = Sealer::new(key(), 2, true);
    let mut buf = plain.clone();
    buf.resize(n + OVERHEAD, 0);
    let t = cpu_ns();
    for _ in 0..count {
        black_box(s.seal(&mut buf, n).unwrap());
    }
    let seal_ns = (cpu_ns() - t) as f64 / count as f64;
    let mut o = Opener::new(key());
    let mut b = packets[0].clone();
    let t = cpu_ns();
    for p in &packets {
        b.copy_from_slice(p);
        black_box(o.open(LocalNs::from_ns(0), &mut b).unwrap());
    }
    let open_ns = (cpu_ns() - t) as f64 / count as f64;
    let rate = 48_000.0 / 352.0;
    println!(
        "protection of a full 16-bit stereo packet (1472 B), CPU time: seal {seal_ns:.0} ns, \
         open {open_ns:.0} ns; at {rate:.0} packets/s: master {:.3} %, receiver {:.3} % of one core",
        seal_ns * rate / 1e7,
        open_ns * rate / 1e7
    );
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
