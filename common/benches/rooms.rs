//! The master's room table with 200 simulated receivers reporting once a second: the cost of
//! one report (decode and table update through `SenderCore::handle_control`), of a full
//! `wavesync rooms` listing, and the table's memory. Prints the share of one core that 200
//! rooms cost (target: under 1 %).
//!
//! `cargo bench -p wavesync-common --bench rooms -- --quick`

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use criterion::{Criterion, Throughput};
use wavesync_common::format::StreamFormat;
use wavesync_common::sender::{SenderConfig, SenderCore};
use wavesync_common::time::TimelineNs;
use wavesync_common::wire::control::encode_list;
use wavesync_common::wire::report::{Channels, Report, RoomState, Settings, MAX_LEN};
use wavesync_common::wire::status::StatusName;

const ROOMS: usize = 200;
const S: i64 = 1_000_000_000;

/// The reports of 200 receivers, each from its own host.
fn reports() -> Vec<(SocketAddr, Vec<u8>)> {
    (0..ROOMS)
        .map(|i| {
            let r = Report {
                id: 0x5eed_0000_0000_0000 + i as u64 * 7919,
                name: StatusName::truncated(&format!("room number {i}")),
                version: (0, 1, 0),
                state: RoomState::Playing,
                stream_ssrc: 0xABCD,
                clock_locked: true,
                clock_offset_ns: 123_456_789,
                clock_uncertainty_ns: 20_000,
                sync_error_ns: Some(-1500),
                buffer_us: 140_000,
                device_delay_us: 10_000,
                lost: 12,
                recovered: 11,
                concealed_frames: 0,
                settings: Settings {
                    volume: 80,
                    channels: Channels::All,
                    ..Settings::default()
                },
            };
            let mut b = vec![0u8; MAX_LEN];
            let n = r.encode(&mut b).expect("fits");
            b.truncate(n);
            let ip = Ipv4Addr::from(0x0a00_0000 + i as u32 + 1);
            (SocketAddr::from((ip, 40_000)), b)
        })
        .collect()
}

fn core_with_rooms(reports: &[(SocketAddr, Vec<u8>)]) -> SenderCore {
    let mut core = SenderCore::new(SenderConfig::new(StreamFormat::DEFAULT, 0xABCD)).expect("cfg");
    for (from, bytes) in reports {
        core.handle_control(TimelineNs::from_ns(S), *from, bytes);
    }
    core
}

fn list_all(core: &mut SenderCore, now: i64, out: &mut [u8]) -> usize {
    let now = TimelineNs::from_ns(now);
    let client = SocketAddr::from(([127, 0, 0, 1], 50_000));
    let mut req = [0u8; 32];
    let mut got = 0;
    let mut start = 0u16;
    loop {
        let n = encode_list(1, 1, start, &mut req).expect("fits");
        core.handle_control(now, client, &req[..n]);
        let mut page_rooms = 0;
        while let Some(t) = core.poll_transmit(now, out) {
            if t.len > 24 {
                page_rooms = out[20] as usize;
            }
        }
        got += page_rooms;
        if page_rooms == 0 || got >= ROOMS {
            return got;
        }
        start += page_rooms as u16;
    }
}

fn bench(c: &mut Criterion) {
    let reports = reports();
    let mut core = core_with_rooms(&reports);
    assert_eq!(core.rooms().len(), ROOMS);
    let mut g = c.benchmark_group("rooms");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    let mut now = 2 * S;
    g.bench_function("report_200_rooms", |b| {
        b.iter(|| {
            let (from, bytes) = &reports[i % ROOMS];
            i += 1;
            now += 5_000_000;
            core.handle_control(black_box(TimelineNs::from_ns(now)), *from, black_box(bytes));
        })
    });
    let mut out = vec![0u8; core.max_datagram_len()];
    g.bench_function("list_200_rooms", |b| {
        b.iter(|| black_box(list_all(&mut core, now, &mut out)))
    });
    g.finish();

    // The figures users care about, measured directly.
    let mut core = core_with_rooms(&reports);
    let n = 200_000;
    let t = Instant::now();
    for k in 0..n {
        let (from, bytes) = &reports[k % ROOMS];
        core.handle_control(
            TimelineNs::from_ns(2 * S + k as i64 * 5_000_000),
            *from,
            bytes,
        );
    }
    let per_report_ns = t.elapsed().as_nanos() as f64 / n as f64;
    let share = per_report_ns * ROOMS as f64 / 1e9 * 100.0;
    let mem = core.rooms().memory_bytes();
    println!(
        "\nroom table: {ROOMS} rooms reporting 1/s: {per_report_ns:.0} ns per report, {:.4} % of one \
         core; table memory {} KiB (allocated once, for up to 256 rooms), listed in {} pages\n",
        share,
        mem / 1024,
        ROOMS.div_ceil(wavesync_common::wire::control::MAX_PAGE),
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
