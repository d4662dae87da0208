//! The rate-match loop (`wavesync_common::follow`) against simulated graph drivers whose
//! clocks run off CLOCK_MONOTONIC, for hours of stream time, through the real packetizer.
//!
//! The simulation is the PipeWire module's loop: each graph cycle the driver hands over a
//! quantum of 1024 frames of its own clock at a cycle time stamped on CLOCK_MONOTONIC (with a
//! few µs of jitter, as an ALSA driver's smoothed clock has); the module's `Retimer` asks the
//! `Follower` for the ratio and resamples the block with it (modelled here by exact
//! fractional accounting of the output position: the resampler itself is tested in
//! `follow.rs` and, in the real graph, by `pw-module/tests/drift.rs`); the module stamps the
//! block with the cycle time and the packetizer counts runs and departures.
//!
//! `cargo test -p wavesync-common --test follow_sim -- --nocapture` prints the figures.

use rand::{Rng, SeedableRng};
use wavesync_common::follow::{FollowConfig, Follower};
use wavesync_common::format::{SampleFormat, StreamFormat};
use wavesync_common::packetizer::{Packetizer, PacketizerConfig};
use wavesync_common::time::{LocalNs, TimelineNs};

const RATE: f64 = 48_000.0;
const QUANTUM: f64 = 1024.0;

struct Outcome {
    worst_error_ns: f64,
    worst_error_after_60s_ns: f64,
    worst_departure_ns: i64,
    resyncs: u64,
    runs: u64,
    reanchors: u64,
    rate_ppm: f64,
}

/// `ppm(t_s)`: the driver's rate error at stream time `t_s`. `follow`: with the loop (else
/// the module as it was: no resampling). `packetize`: through the packetizer (slow in debug
/// builds; without it, runs, resyncs and departures stay 0).
fn simulate(
    seconds: f64,
    ppm: impl Fn(f64) -> f64,
    follow: bool,
    packetize: bool,
    seed: u64,
) -> Outcome {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let format = StreamFormat {
        rate: 48_000,
        channels: 1,
        sample: SampleFormat::L16,
    };
    let mut pk = Packetizer::new(PacketizerConfig::new(format, 100_000_000, 7)).unwrap();
    let mut f = Follower::new(48_000, FollowConfig::GRAPH);
    let block = vec![0.25f32; 1100];
    let t0 = 3.0 * 3600.0 * 1e9; // CLOCK_MONOTONIC three hours after boot
    let mut t = 0.0f64; // driver time since start, ns (on CLOCK_MONOTONIC)
    let mut out_pos = 0.0f64;
    let mut emitted = 0u64;
    let mut out = Outcome {
        worst_error_ns: 0.0,
        worst_error_after_60s_ns: 0.0,
        worst_departure_ns: 0,
        resyncs: 0,
        runs: 0,
        reanchors: 0,
        rate_ppm: 0.0,
    };
    while t < seconds * 1e9 {
        let jitter = rng.gen_range(-5_000.0..5_000.0);
        let now = (t0 + t + jitter) as i64;
        // The module's process callback: the loop's ratio (input frames per output frame),
        // then the block resampled with it (or copied in pass-through).
        let ratio = if follow {
            f.observe(LocalNs::from_ns(now))
        } else {
            None
        };
        out_pos += QUANTUM / ratio.unwrap_or(1.0);
        let n = out_pos as u64 - emitted;
        emitted += n;
        let n = n as usize;
        if follow {
            f.produced(n);
            let e = f.stats().error_ns.abs();
            out.worst_error_ns = out.worst_error_ns.max(e);
            if t > 60e9 {
                out.worst_error_after_60s_ns = out.worst_error_after_60s_ns.max(e);
            }
        }
        if packetize {
            pk.push(TimelineNs::from_ns(now), &block[..n], |_| {});
            out.worst_departure_ns = out
                .worst_departure_ns
                .max(pk.stats().last_departure_ns.abs());
        }
        t += QUANTUM / (RATE * (1.0 + ppm(t / 1e9) * 1e-6)) * 1e9;
    }
    out.resyncs = pk.stats().resyncs;
    out.runs = pk.stats().runs_started;
    out.reanchors = f.stats().reanchors;
    out.rate_ppm = f.stats().rate_ppm;
    out
}

#[test]
fn skewed_drivers_for_twelve_minutes_through_the_packetizer() {
    for (i, ppm) in [-500.0, -100.0, 100.0, 500.0].into_iter().enumerate() {
        let o = simulate(720.0, |_| ppm, true, true, i as u64);
        println!(
            "driver {ppm:+} ppm, 12 min: runs {}, resyncs {}, worst departure {:.0} µs, \
             worst error {:.0} µs (after 60 s {:.1} µs), followed {:+.2} ppm",
            o.runs,
            o.resyncs,
            o.worst_departure_ns as f64 / 1e3,
            o.worst_error_ns / 1e3,
            o.worst_error_after_60s_ns / 1e3,
            o.rate_ppm
        );
        assert_eq!((o.runs, o.resyncs, o.reanchors), (1, 0, 0), "{ppm} ppm");
        assert!(o.worst_departure_ns < 1_000_000, "{ppm} ppm");
        assert!(o.worst_error_after_60s_ns < 50_000.0, "{ppm} ppm");
        assert!((o.rate_ppm - ppm).abs() < 5.0, "{ppm} ppm: {}", o.rate_ppm);
    }
}

#[test]
fn without_the_loop_a_skewed_driver_restarts_the_run() {
    // The module before the loop: +100 ppm reaches the 20 ms threshold every 200 s.
    let o = simulate(720.0, |_| 100.0, false, true, 9);
    println!(
        "driver +100 ppm, 12 min, no loop: runs {}, resyncs {}",
        o.runs, o.resyncs
    );
    assert!(o.resyncs >= 3, "{}", o.resyncs);
}

#[test]
fn three_hours_of_a_drifting_driver_stay_within_a_millisecond() {
    // A crystal warming up: -300 ppm to +300 ppm and back over three hours, and a driver at
    // a steady +500 ppm: the error stays under 1 ms throughout (no packetizer: it is slow).
    let wander = |t: f64| 300.0 * (2.0 * std::f64::consts::PI * t / 10_800.0 - 1.5).sin();
    for (name, o) in [
        (
            "wandering ±300 ppm",
            simulate(10_800.0, wander, true, false, 11),
        ),
        (
            "steady +500 ppm",
            simulate(10_800.0, |_| 500.0, true, false, 12),
        ),
    ] {
        println!(
            "{name}, 3 h: reanchors {}, worst error {:.0} µs (after 60 s {:.1} µs)",
            o.reanchors,
            o.worst_error_ns / 1e3,
            o.worst_error_after_60s_ns / 1e3
        );
        assert_eq!(o.reanchors, 0, "{name}");
        assert!(o.worst_error_ns < 1e6, "{name}");
    }
}

#[global_allocator]
static ALLOC: alloc_count::Counting = alloc_count::Counting;

#[path = "../../test-support/alloc_count.rs"]
mod alloc_count;

#[test]
fn the_retimer_never_allocates_after_construction() {
    use wavesync_common::follow::Retimer;
    use wavesync_common::resample::Quality;
    // What the module's real-time process callback does every cycle, in pass-through and
    // after the loop engaged on a driver 500 ppm fast.
    let mut rt = Retimer::new(48_000, 2, FollowConfig::GRAPH, Quality::Sinc32);
    let input = vec![0.1f32; 2 * 1024];
    let mut out = vec![0.0f32; 2 * rt.max_output_frames(1024)];
    let ((), allocs) = alloc_count::count(|| {
        let mut t = 1_000_000_000i64;
        for _ in 0..2_000 {
            let r = rt.process(LocalNs::from_ns(t), &input, &mut out);
            assert_eq!(r.consumed, 1024);
            t += (1024.0 * 1e9 / (48_000.0 * 1.0005)) as i64;
        }
    });
    assert!(rt.is_resampling());
    assert_eq!(allocs, 0);
}
