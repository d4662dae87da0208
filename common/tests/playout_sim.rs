//! Playout in a simulated world (see `playout_sim/sim.rs`): the real timing error of every
//! played frame, measured from the signal itself, not from the controller's own report.
//!
//! Run with `cargo test -p wavesync-common --test playout_sim -- --nocapture` to see figures.

#[path = "playout_sim/sim.rs"]
mod sim;

use sim::{error_stats, lock_time, run, Net, Scenario, CH};
use wavesync_common::clock::ClockEstimate;
use wavesync_common::format::SampleFormat;
use wavesync_common::jitter::{PacketIn, PushOutcome};
use wavesync_common::playout::{Playout, PlayoutConfig, PlayoutState};
use wavesync_common::time::{LocalNs, TimelineNs};

/// A LAN with some jitter (reordering), duplication and loss.
const LAN: Net = Net {
    base_ns: 700_000.0,
    jitter_mean_ns: 3_000_000.0,
    loss: 0.005,
    dup: 0.01,
};

fn report(name: &str, o: &sim::Outcome, from_s: f64) -> (f64, f64, f64) {
    let (p50, p99, max, n) = error_stats(o, from_s);
    let (_, _, peak, _) = error_stats(o, 0.0);
    println!(
        "{name}: largest |error| over the whole run {:.2} us",
        peak / 1e3
    );
    println!(
        "{name}: |error| after {from_s} s over {n} frames: p50 {:.2} us, p99 {:.2} us, max {:.2} us; \
         within 20 us from {:.3} s, within 5 us from {:.3} s; stats {:?}",
        p50 / 1e3,
        p99 / 1e3,
        max / 1e3,
        lock_time(o, 20_000.0),
        lock_time(o, 5_000.0),
        o.stats
    );
    (p50, p99, max)
}

fn assert_locked(name: &str, o: &sim::Outcome) {
    let (_, p99, max) = report(name, o, 2.0);
    assert!(max <= 20_000.0, "{name}: max |error| {max} ns after 2 s");
    assert!(p99 <= 5_000.0, "{name}: p99 |error| {p99} ns after 2 s");
    assert_eq!(o.stats.resyncs, 0, "{name}");
    // Enough frames were measured for the figure to mean something.
    let (_, _, _, n) = error_stats(o, 2.0);
    assert!(n > 300_000, "{name}: only {n} frames measured");
}

#[test]
fn dac_at_plus_100_ppm_stays_within_20_us_once_locked() {
    let mut sc = Scenario::new(100.0);
    sc.net = LAN;
    assert_locked("+100 ppm", &run(&sc));
}

#[test]
fn dac_at_minus_100_ppm_stays_within_20_us_once_locked() {
    let mut sc = Scenario::new(-100.0);
    sc.net = LAN;
    sc.seed = 2;
    assert_locked("-100 ppm", &run(&sc));
}

#[test]
fn noisy_clock_and_dac_timing_stay_within_20_us() {
    for (ppm, seed) in [(100.0, 3), (-100.0, 4)] {
        let mut sc = Scenario::new(ppm);
        sc.net = LAN;
        sc.seed = seed;
        // A new clock estimate every second, 2 us offset error, 0.05 ppm rate error; 2 us of
        // noise on each measured DAC time.
        sc.clock_noise = Some((2_000.0, 0.05));
        sc.timing_noise_ns = 2_000.0;
        assert_locked(&format!("noisy {ppm:+} ppm"), &run(&sc));
    }
}

#[test]
fn first_frame_lands_on_its_due_time() {
    // Before the controller has measured the DAC's rate, the silence is counted in nominal
    // frames: at +100 ppm a 256-frame period is 0.53 us short. Rounding (drift correction
    // off) adds up to half a frame.
    for (drift, bound_ns) in [(true, 600.0), (false, 10_417.0 + 600.0)] {
        let mut sc = Scenario::new(100.0);
        sc.duration_s = 1.0;
        sc.drift_correction = drift;
        let o = run(&sc);
        let first = o
            .reports
            .iter()
            .position(|r| r.audio_start.is_some())
            .expect("audio started");
        let (start_frame, pos) = o.reports[first].audio_start.unwrap();
        let idx = first * sc.period + start_frame;
        // Frame 0 of the stream is interpolated against the silent history; the next ones
        // are pure stream.
        let p = o.played[idx..idx + 8]
            .iter()
            .find(|p| p.err_ns.is_some())
            .expect("a decodable frame right after the start");
        let err = p.err_ns.unwrap();
        println!("drift {drift}: start position {pos}, first decodable frame error {err:.1} ns");
        assert!(err.abs() <= bound_ns, "drift {drift}: start error {err} ns");
        assert_eq!(pos.floor() as u32, sc.ts0, "starts at the first frame");
    }
}

#[test]
fn sink_latency_shifts_output_by_exactly_its_value() {
    let mean_offset = |sink: i64| {
        let mut sc = Scenario::new(50.0);
        sc.duration_s = 4.0;
        sc.sink_latency_ns = sink;
        let o = run(&sc);
        // err_ns is measured against the due time *including* the trim; add it back to get
        // the offset against the stamps.
        let errs: Vec<f64> = o
            .played
            .iter()
            .filter(|p| p.t_s > 2.0)
            .filter_map(|p| p.err_ns)
            .collect();
        errs.iter().sum::<f64>() / errs.len() as f64 - sink as f64
    };
    let base = mean_offset(0);
    let trimmed = mean_offset(1_234_567);
    let shift = trimmed - base;
    println!("sink latency 1.234567 ms shifted playout by {shift:.1} ns");
    assert!(
        (shift + 1_234_567.0).abs() < 1_000.0,
        "shift {shift} ns, expected -1234567"
    );
}

#[test]
fn drift_correction_off_and_no_loss_passes_samples_bit_exact() {
    let mut sc = Scenario::new(0.0);
    sc.clock_ppm = 0.0;
    sc.drift_correction = false;
    sc.duration_s = 3.0;
    sc.net = Net { loss: 0.0, ..LAN };
    let o = run(&sc);
    let ch = CH as usize;
    assert_eq!(o.stats.resyncs, 0);
    assert_eq!(o.stats.concealed_frames, 0);
    assert!(o.stats.duplicate > 0, "duplicates exercised");
    let first = o
        .output
        .chunks_exact(ch)
        .position(|f| f.iter().any(|s| *s != 0.0))
        .expect("audio");
    let frames = o.output.len() / ch - first;
    assert!(frames > 100_000);
    for (i, f) in o.output[first * ch..].chunks_exact(ch).enumerate() {
        for (c, s) in f.iter().enumerate() {
            let expect = sim::ramp_i16(c, i as i64) as f32 / 32_768.0;
            assert_eq!(
                s.to_bits(),
                expect.to_bits(),
                "frame {i} channel {c}: {s} vs {expect}"
            );
        }
    }
}

#[test]
fn dac_stall_beyond_tolerance_resyncs_by_dropping_frames() {
    let mut sc = Scenario::new(100.0);
    sc.net = LAN;
    sc.dac_stall = Some((3.0, 10_000_000.0));
    let o = run(&sc);
    report("stall 10 ms", &o, 3.05);
    assert_eq!(o.stats.resyncs, 1);
    // 10 ms at 48 kHz = 480 frames, give or take the sub-frame remainder.
    assert!(
        (479..=481).contains(&o.stats.dropped_frames),
        "{:?}",
        o.stats
    );
    let (_, _, max, _) = error_stats(&o, 3.05);
    assert!(max <= 20_000.0, "max error {max} ns after the resync");
}

#[test]
fn clock_step_resyncs_at_once_in_both_directions() {
    for (step, early) in [(5_000_000i64, false), (-5_000_000, true)] {
        let mut sc = Scenario::new(-100.0);
        sc.clock_step = Some((3.0, step));
        sc.duration_s = 4.0;
        let o = run(&sc);
        let s = o.stats;
        println!("clock step {step} ns: {s:?}");
        assert_eq!(s.resyncs, 1, "step {step}");
        // 5 ms = 240 frames, dropped (timeline ahead: we are late) or inserted as silence.
        let moved = if early {
            s.inserted_frames
        } else {
            s.dropped_frames
        };
        assert!((239..=241).contains(&moved), "step {step}: {s:?}");
        // The cause is kept for the log: the error of the resync, its sign saying which way.
        assert_eq!(s.last_resync_error_ns > 0, early, "step {step}: {s:?}");
        assert!(
            (4_000_000..6_000_000).contains(&s.last_resync_error_ns.abs()),
            "{s:?}"
        );
        if early {
            assert_eq!(s.dropped_frames, 0, "an early resync loses nothing");
        }
        // After the resync the controller's own error is back near zero.
        let after: Vec<i64> = o.reports[o.reports.len() - 50..]
            .iter()
            .filter_map(|r| r.error_ns)
            .collect();
        assert!(after.iter().all(|e| e.abs() < 20_000), "{after:?}");
    }
}

#[test]
fn discontinuous_stream_reanchors_like_a_start() {
    let mut sc = Scenario::new(100.0);
    // From packet 800 (4 s) on, play times jump 30 ms later without a marker bit.
    sc.play_jump = Some((800, 30_000_000));
    sc.duration_s = 6.0;
    let o = run(&sc);
    report("play time jump", &o, 4.2);
    assert_eq!(o.stats.starts, 2, "{:?}", o.stats);
    assert_eq!(o.stats.resyncs, 0);
    let (_, _, max, n) = error_stats(&o, 4.0);
    assert!(n > 50_000);
    assert!(max <= 20_000.0, "max error {max} ns around the new run");
}

#[test]
fn lost_packets_are_concealed_without_moving_the_timeline() {
    let mut sc = Scenario::new(100.0);
    sc.drop = vec![600..603, 900..901];
    sc.duration_s = 6.0;
    let o = run(&sc);
    report("loss", &o, 2.0);
    let s = o.stats;
    assert_eq!(s.concealments, 2, "{s:?}");
    assert_eq!(s.concealed_frames, 4 * 240, "{s:?}");
    assert_eq!(s.lost, 4);
    assert_eq!(s.resyncs, 0);
    assert_eq!(s.starts, 1);
    // Frames after each gap play at their own stamps: the timeline did not move.
    let (_, _, max, _) = error_stats(&o, 2.0);
    assert!(max <= 20_000.0, "max error {max} ns across the gaps");
    // And the gaps themselves are not audio of the wrong time: no decodable frame carries a
    // position inside a gap.
    let gap = |n: f64| {
        let n = n - sc.ts0 as f64;
        (600.0 * 240.0..603.0 * 240.0).contains(&n) || (900.0 * 240.0..901.0 * 240.0).contains(&n)
    };
    assert!(!o.played.iter().any(|p| p.pos.is_some_and(gap)));
}

#[test]
fn duplicates_late_packets_and_junk_are_counted_and_memory_stays_bounded() {
    let mut sc = Scenario::new(-100.0);
    sc.net = Net {
        loss: 0.0,
        dup: 0.05,
        ..LAN
    };
    sc.late = vec![500, 501, 1000];
    sc.late_by_ns = 400_000_000.0;
    sc.flood = true;
    sc.duration_s = 8.0;
    let o = run(&sc);
    report("junk flood", &o, 2.0);
    let s = o.stats;
    assert!(s.duplicate > 50, "{s:?}");
    // Each real packet came with 4 junk ones; every junk packet is rejected, none stored.
    let junk = 4 * (o.pushes.len() / 5);
    let rejected = o
        .pushes
        .iter()
        .filter(|p| !matches!(p, PushOutcome::Stored | PushOutcome::Rebased))
        .count();
    assert!(rejected >= junk, "rejected {rejected} of {junk} junk");
    assert!(s.out_of_window as usize >= junk / 2, "{s:?}");
    // The three late packets: counted late, their frames concealed.
    assert!(s.late >= 3, "{s:?}");
    assert_eq!(s.concealed_frames, 3 * 240, "{s:?}");
    assert!(o.max_buffered <= 128);
    let (_, _, max, _) = error_stats(&o, 2.0);
    assert!(max <= 20_000.0, "max error {max} ns under the flood");
}

#[test]
fn stream_that_stops_drains_to_silence() {
    let mut sc = Scenario::new(100.0);
    sc.stop_after = Some(400); // 2 s of audio
    sc.duration_s = 4.0;
    let o = run(&sc);
    let ch = CH as usize;
    assert_eq!(o.stats.drains, 1, "{:?}", o.stats);
    let last = o.reports.last().unwrap();
    assert_eq!(last.state, PlayoutState::Waiting);
    assert_eq!(last.first_position, None);
    // Audio up to its end at 0.3 + 2 s, a short fade, then exact silence.
    let played_end = o
        .played
        .iter()
        .rposition(|p| p.pos.is_some())
        .expect("audio played");
    let t_end = o.played[played_end].t_s;
    assert!((t_end - 2.3).abs() < 0.001, "last audio at {t_end} s");
    let after = ((t_end + 0.01) * 48_000.0 * (1.0 + 100e-6)) as usize;
    assert!(o.output[after * ch..].iter().all(|s| *s == 0.0));
}

#[test]
fn no_clock_means_silence_and_clock_loss_stops_playback() {
    let mut cfg = PlayoutConfig::new(48_000, 2);
    cfg.drift_correction = false;
    let mut p: Playout = Playout::new(cfg);
    let mut payload = [0u8; 240 * 4];
    for s in payload.chunks_exact_mut(2) {
        s[0] = 0x40; // 0x4000 = 0.5
    }
    for k in 0..20u16 {
        let o = p.push_parts(
            LocalNs::from_ns(0),
            &PacketIn {
                seq: k,
                timestamp: k as u32 * 240,
                play_time: TimelineNs::from_ns(10_000_000 + k as i64 * 5_000_000),
                marker: k == 0,
                format: SampleFormat::L16,
                payload: &payload,
            },
        );
        assert_eq!(o, PushOutcome::Stored);
    }
    let mut out = [1.0f32; 512];
    let r = p.fill(LocalNs::from_ns(0), &mut out);
    assert_eq!(r.state, PlayoutState::NoClock);
    assert_eq!(r.silence_frames, 256);
    assert!(out.iter().all(|s| *s == 0.0));
    // With a clock (timeline = local), the first frame is due at 10 ms: 480 frames of silence.
    let clock = ClockEstimate {
        ref_local: LocalNs::from_ns(0),
        ref_timeline: TimelineNs::from_ns(0),
        rate: 1.0,
        uncertainty_ns: 0,
    };
    p.set_clock(Some(clock));
    let r = p.fill(LocalNs::from_ns(0), &mut out);
    assert_eq!((r.state, r.silence_frames), (PlayoutState::Starting, 256));
    let r = p.fill(LocalNs::from_ns(5_333_334), &mut out);
    assert_eq!(r.silence_frames, 480 - 256);
    assert_eq!(r.state, PlayoutState::Playing);
    assert!(out[(480 - 256) * 2..].iter().all(|s| *s == 0.5));
    // Clock lost: silence again, not garbage.
    p.set_clock(None);
    out.fill(1.0);
    let r = p.fill(LocalNs::from_ns(512 * 20_833), &mut out);
    assert_eq!(r.state, PlayoutState::NoClock);
    assert!(out.iter().all(|s| *s == 0.0));
}

#[path = "../../test-support/alloc_count.rs"]
mod alloc_count;

#[global_allocator]
static ALLOC: alloc_count::Counting = alloc_count::Counting;

#[test]
fn push_and_fill_never_allocate_after_construction() {
    // The counter itself works.
    assert_eq!(alloc_count::count(|| vec![0u8; 10].len()).1, 1);
    let mut p: Playout = Playout::new(PlayoutConfig::new(48_000, 2));
    p.set_clock(Some(ClockEstimate {
        ref_local: LocalNs::from_ns(0),
        ref_timeline: TimelineNs::from_ns(0),
        rate: 1.0,
        uncertainty_ns: 0,
    }));
    let payload: Vec<u8> = (0..240 * 4).map(|i| (i * 7) as u8).collect();
    let mut out = vec![0.0f32; 256 * 2];
    let period_ns = 256.0 * 1e9 / 48_000.0 * (1.0 - 100e-6);
    let mut next_packet = 0u64;
    let mut allocs = 0;
    let mut states = std::collections::HashSet::new();
    for w in 0..2_000u64 {
        let t = (w as f64 * period_ns) as i64;
        let now = t - 3 * period_ns as i64;
        // Packets 5 ms apart, 100 ms latency, pairs swapped, every 50th lost, every 30th twice,
        // and a 300 ms outage (drain, then a fresh start).
        while (next_packet as i64 + 1) * 5_000_000 <= now + 100_000_000 {
            let k = next_packet ^ 1;
            next_packet += 1;
            if k % 50 == 7 || (1_000..1_060).contains(&k) {
                continue;
            }
            let copies = if k % 30 == 0 { 2 } else { 1 };
            for _ in 0..copies {
                let pkt = PacketIn {
                    seq: k as u16,
                    timestamp: (k * 240) as u32,
                    play_time: TimelineNs::from_ns(k as i64 * 5_000_000 + 100_000_000),
                    marker: k == 0,
                    format: SampleFormat::L16,
                    payload: &payload,
                };
                allocs += alloc_count::count(|| p.push_parts(LocalNs::from_ns(now), &pkt)).1;
            }
        }
        // What the output thread reads for its status each cycle.
        allocs += alloc_count::count(|| (p.stats(), p.buffered_ns(), p.ratio_ppm())).1;
        let (rep, n) = alloc_count::count(|| p.fill(LocalNs::from_ns(t), &mut out));
        allocs += n;
        states.insert(format!("{:?}", rep.state));
    }
    let s = p.stats();
    assert!(
        s.concealments > 10 && s.duplicate > 10 && s.drains >= 1,
        "{s:?}"
    );
    assert!(states.len() >= 3, "exercised states: {states:?}");
    assert_eq!(allocs, 0, "allocations in push/fill/status");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Arbitrary packets, clocks and DAC times (including time going backwards): no panic,
    /// every output sample finite and bounded, every fill writes the whole buffer.
    #[test]
    fn playout_survives_arbitrary_input(
        ops in proptest::collection::vec(
            (0u8..8, proptest::prelude::any::<u16>(), -50i64..50, 0usize..1000, proptest::prelude::any::<bool>()),
            1..300,
        ),
        drift in proptest::prelude::any::<bool>(),
    ) {
        let mut cfg = PlayoutConfig::new(48_000, 2);
        cfg.drift_correction = drift;
        cfg.capacity_packets = 32;
        cfg.max_frames_per_packet = 240;
        let mut p: Playout = Playout::new(cfg);
        // Full-scale square-ish payload: the worst case for overshoot.
        let payload: Vec<u8> = (0..240 * 4)
            .map(|i| if (i / 40) % 2 == 0 { 0x7f } else { 0x80 })
            .collect();
        let mut now: i64 = 1_000_000_000;
        let mut out = vec![0.0f32; 1024];
        for (op, seq, t, len, flag) in ops {
            match op {
                0..=3 => {
                    let len = (len % 241) * 4 + if flag { 0 } else { (seq % 3) as usize };
                    p.push_parts(LocalNs::from_ns(now), &PacketIn {
                        seq: seq % 64,
                        timestamp: (seq % 64) as u32 * 240 + if flag { 0 } else { seq as u32 },
                        play_time: TimelineNs::from_ns(now + t * 5_000_000),
                        marker: flag && seq % 7 == 0,
                        format: if seq % 5 == 0 { SampleFormat::L24 } else { SampleFormat::L16 },
                        payload: &payload[..len.min(payload.len())],
                    });
                }
                4 => p.set_clock(if flag {
                    Some(ClockEstimate {
                        ref_local: LocalNs::from_ns(0),
                        ref_timeline: TimelineNs::from_ns(t * 1_000_000),
                        rate: 1.0 + t as f64 * 1e-5,
                        uncertainty_ns: 0,
                    })
                } else {
                    None
                }),
                5 => p.reset(),
                _ => {
                    now += t * 1_000_000;
                    let n = (len % 512) * 2 + (seq % 2) as usize;
                    let r = p.fill(LocalNs::from_ns(now), &mut out[..n]);
                    proptest::prop_assert_eq!(r.frames, n / 2);
                    for s in &out[..n] {
                        proptest::prop_assert!(s.is_finite() && s.abs() <= 2.0, "sample {}", s);
                    }
                }
            }
        }
    }
}

#[test]
fn noisy_dac_timestamps_are_filtered() {
    // 50 us rms of noise on every measured DAC time (a poorly fitted coarse pointer).
    for (ppm, seed) in [(-100.0, 5), (100.0, 6)] {
        let mut sc = Scenario::new(ppm);
        sc.net = LAN;
        sc.seed = seed;
        sc.timing_noise_ns = 50_000.0;
        let o = run(&sc);
        let (_, p99, max) = report(&format!("50 us timestamp noise, {ppm:+} ppm"), &o, 3.0);
        assert_eq!(o.stats.resyncs, 0);
        assert!(p99 <= 20_000.0, "p99 {p99} ns");
        assert!(max <= 30_000.0, "max {max} ns");
    }
}

#[test]
fn zero_sizes_from_a_bad_status_do_not_panic() {
    let mut cfg = PlayoutConfig::new(0, 0);
    cfg.capacity_packets = 0;
    cfg.max_frames_per_packet = 0;
    let mut p: Playout = Playout::new(cfg);
    let o = p.push_parts(
        LocalNs::from_ns(0),
        &PacketIn {
            seq: 1,
            timestamp: 0,
            play_time: TimelineNs::from_ns(0),
            marker: true,
            format: SampleFormat::L16,
            payload: &[0; 64],
        },
    );
    assert_eq!(o, PushOutcome::Malformed);
    let mut out = [1.0f32; 8];
    let r = p.fill(LocalNs::from_ns(0), &mut out);
    assert_eq!(r.frames, 8);
    assert!(out.iter().all(|s| *s == 0.0));
}

#[test]
fn packets_that_always_come_too_late_count_as_concealed_not_as_playing() {
    // The sender's latency (8 ms) is shorter than the device's lead (4 periods of 256 frames,
    // 21 ms): every packet arrives after its frames had to be written. What plays is silence,
    // and the counters must say so (the status otherwise reads "playing, 0 concealed").
    let mut sc = Scenario::new(0.0);
    sc.latency_ns = 8_000_000;
    sc.duration_s = 3.0;
    let o = run(&sc);
    let s = o.stats;
    let sent_frames = o.pushes.len() as u64 * sc.fpp as u64;
    assert!(
        s.late * 2 > o.pushes.len() as u64,
        "most packets late: {s:?}"
    );
    assert!(
        s.concealed_frames * 2 > sent_frames,
        "the lost audio is counted as concealed: {} of {sent_frames} frames, {s:?}",
        s.concealed_frames
    );
    assert!(
        !o.played.iter().any(|p| p.pos.is_some()),
        "no frame of the stream was played late"
    );
}
