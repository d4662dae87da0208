//! A deterministic simulated world for the playout: a sender stamping packets on the master's
//! timeline, a network that delays, reorders, loses and duplicates them, a receiver clock
//! offset and skewed from the master's, a clock model (exact or noisy), and a DAC that consumes
//! frames at its own rate with ALSA-like period writes.
//!
//! The error is measured independently of the controller: the test signal encodes the stream
//! frame index in every sample (ramps that cubic interpolation reproduces exactly), so each
//! output frame says which input position it carries; comparing that position's due time with
//! the instant the simulated DAC played it gives the real error.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp, Normal};
use wavesync_common::clock::ClockEstimate;
use wavesync_common::format::SampleFormat;
use wavesync_common::jitter::{PacketIn, PushOutcome};
use wavesync_common::playout::{FillReport, Playout, PlayoutConfig, PlayoutStats};
use wavesync_common::time::NS_PER_SEC;
use wavesync_common::time::{LocalNs, TimelineNs};

/// Channels of the test signal: a coarse ramp (1 LSB/frame) and two fine ramps.
pub const CH: u8 = 3;
/// (slope in LSB per frame, offset in LSB) of each channel's ramp.
const RAMPS: [(f64, f64); 3] = [(1.0, 0.0), (64.0, 6400.0), (48.0, 1234.0)];

/// The test signal's sample (16-bit value) of channel `c` at stream frame `n`.
pub fn ramp_i16(c: usize, n: i64) -> i16 {
    let (s, o) = RAMPS[c];
    let v = ((n as f64 * s + o) as i64).rem_euclid(65_536) - 32_768;
    v as i16
}

/// Recovers the stream frame index (fractional) from one output frame, or `None` if the
/// channels disagree (silence, concealment, a ramp's wrap under the interpolator).
pub fn decode_position(frame: &[f32], near: f64) -> Option<f64> {
    let lsb = |c: usize| frame[c] as f64 * 32_768.0 + 32_768.0;
    // Coarse: period 65536 frames, unwrapped around `near`.
    let u = lsb(0);
    if !(4.0..65_532.0).contains(&u) {
        return None;
    }
    let coarse = u + 65_536.0 * ((near - u) / 65_536.0).round();
    let mut fine = None;
    for (c, &(s, o)) in RAMPS.iter().enumerate().skip(1) {
        let v = lsb(c);
        if !(4.0 * s..65_536.0 - 4.0 * s).contains(&v) {
            return None;
        }
        let u = (v - o) / s;
        let period = 65_536.0 / s;
        let n = u + period * ((coarse - u) / period).round();
        if (n - coarse).abs() > 0.05 {
            return None;
        }
        fine.get_or_insert(n);
    }
    fine
}

/// Network impairments.
#[derive(Clone, Copy, Debug)]
pub struct Net {
    /// Fixed one-way delay.
    pub base_ns: f64,
    /// Mean of the exponential extra delay (reorders packets when larger than a packet).
    pub jitter_mean_ns: f64,
    /// Probability a packet is lost.
    pub loss: f64,
    /// Probability a packet is delivered twice.
    pub dup: f64,
}

impl Net {
    /// A clean wired LAN.
    pub const CLEAN: Net = Net {
        base_ns: 500_000.0,
        jitter_mean_ns: 0.0,
        loss: 0.0,
        dup: 0.0,
    };
}

/// A scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub rate: u32,
    pub fpp: usize,
    /// DAC crystal error against the receiver's local clock.
    pub dac_ppm: f64,
    /// Receiver local clock against the master's timeline (timeline ns per local ns - 1, ppm).
    pub clock_ppm: f64,
    /// timeline - local at the start.
    pub offset_ns: i64,
    /// Sender latency (play time - capture time).
    pub latency_ns: i64,
    pub sink_latency_ns: i64,
    pub period: usize,
    pub periods: usize,
    pub duration_s: f64,
    pub net: Net,
    /// Clock model noise: (offset sigma ns, rate sigma ppm), a new estimate every second.
    pub clock_noise: Option<(f64, f64)>,
    /// Noise on the DAC's reported next-frame time (sigma, ns).
    pub timing_noise_ns: f64,
    pub drift_correction: bool,
    pub tolerance_ns: i64,
    pub seed: u64,
    /// Packets (by index) never delivered.
    pub drop: Vec<std::ops::Range<usize>>,
    /// From this packet index on, play times jump by this many ns (no marker).
    pub play_jump: Option<(usize, i64)>,
    /// At this simulated time (s after the DAC start) the clock estimate steps by this much.
    pub clock_step: Option<(f64, i64)>,
    /// Stop sending after this many packets.
    pub stop_after: Option<usize>,
    /// At this simulated time (s) the DAC stalls (an underrun) for this many ns: every later
    /// frame plays that much later.
    pub dac_stall: Option<(f64, f64)>,
    /// Packets (by index) delivered this many ns late.
    pub late: Vec<usize>,
    pub late_by_ns: f64,
    /// With every real packet, also push junk: far-future sequence numbers, absurd play times.
    pub flood: bool,
    /// First sequence number and RTP timestamp (to cross wraparounds).
    pub seq0: u16,
    pub ts0: u32,
}

impl Scenario {
    /// 48 kHz, 5 ms packets, 256-frame periods x 4, exact clock, clean network, 10 s.
    pub fn new(dac_ppm: f64) -> Self {
        Scenario {
            rate: 48_000,
            fpp: 240,
            dac_ppm,
            clock_ppm: 37.0,
            offset_ns: 3 * 3_600 * NS_PER_SEC + 123_456_789,
            latency_ns: 150_000_000,
            sink_latency_ns: 0,
            period: 256,
            periods: 4,
            duration_s: 10.0,
            net: Net::CLEAN,
            clock_noise: None,
            timing_noise_ns: 0.0,
            drift_correction: true,
            tolerance_ns: 2_000_000,
            seed: 1,
            drop: vec![],
            play_jump: None,
            clock_step: None,
            stop_after: None,
            dac_stall: None,
            late: vec![],
            late_by_ns: 0.0,
            flood: false,
            seq0: 65_000,
            ts0: u32::MAX - 100_000,
        }
    }
}

/// One output frame as played.
#[derive(Clone, Copy, Debug)]
pub struct Played {
    /// Seconds since the DAC started.
    pub t_s: f64,
    /// Stream frame index it carried, if recoverable.
    pub pos: Option<f64>,
    /// Played minus due, ns (positive: late), if the position was recoverable.
    pub err_ns: Option<f64>,
}

/// Everything a run produced.
pub struct Outcome {
    pub played: Vec<Played>,
    pub output: Vec<f32>,
    pub reports: Vec<FillReport>,
    pub stats: PlayoutStats,
    /// Outcomes of every push, in order.
    pub pushes: Vec<PushOutcome>,
    /// Largest number of packets the buffer held.
    pub max_buffered: usize,
}

struct Packet {
    arrival: f64,
    index: usize,
    play: i64,
}

/// Runs a scenario.
pub fn run(sc: &Scenario) -> Outcome {
    let mut rng = StdRng::seed_from_u64(sc.seed);
    let rate = sc.rate as f64;
    let c = sc.clock_ppm * 1e-6;
    // True maps: timeline = TL0 + (local - L0) * (1 + c).
    let l0: i64 = 1_000 * NS_PER_SEC;
    let tl0: i64 = l0 + sc.offset_ns;
    let to_local = |tl: f64| l0 as f64 + (tl - tl0 as f64) / (1.0 + c);
    let to_timeline = |l: f64| tl0 as f64 + (l - l0 as f64) * (1.0 + c);
    let exact = ClockEstimate {
        ref_local: LocalNs::from_ns(l0),
        ref_timeline: TimelineNs::from_ns(tl0),
        rate: 1.0 + c,
        uncertainty_ns: 0,
    };

    // DAC starts at local D0; the stream's frame 0 is captured so that it is due 0.3 s later.
    let dac_start = l0 as f64 + 0.5e9;
    let capture0 = to_timeline(dac_start) + 0.3e9 - sc.latency_ns as f64;
    let n_packets = ((sc.duration_s + 1.0) * rate / sc.fpp as f64) as usize;
    let n_packets = sc.stop_after.map_or(n_packets, |s| s.min(n_packets));
    let jitter =
        (sc.net.jitter_mean_ns > 0.0).then(|| Exp::new(1.0 / sc.net.jitter_mean_ns).unwrap());
    let mut packets = Vec::new();
    let play_of = |k: usize| -> i64 {
        let n = (k * sc.fpp) as f64;
        let mut p = (capture0 + n * 1e9 / rate).round() as i64 + sc.latency_ns;
        if let Some((at, jump)) = sc.play_jump {
            if k >= at {
                p += jump;
            }
        }
        p
    };
    for k in 0..n_packets {
        let sent_tl = capture0 + ((k + 1) * sc.fpp) as f64 * 1e9 / rate;
        let sent = to_local(sent_tl);
        let lost = rng.gen::<f64>() < sc.net.loss || sc.drop.iter().any(|r| r.contains(&k));
        let copies = if rng.gen::<f64>() < sc.net.dup { 2 } else { 1 };
        for _ in 0..copies {
            let mut extra = jitter.map_or(0.0, |j| j.sample(&mut rng).min(40e6));
            if sc.late.contains(&k) {
                extra += sc.late_by_ns;
            }
            if !lost {
                packets.push(Packet {
                    arrival: sent + sc.net.base_ns + extra,
                    index: k,
                    play: play_of(k),
                });
            }
        }
    }
    packets.sort_by(|a, b| a.arrival.total_cmp(&b.arrival));

    let ch = CH as usize;
    let mut cfg = PlayoutConfig::new(sc.rate, CH);
    cfg.sink_latency_ns = sc.sink_latency_ns;
    cfg.drift_correction = sc.drift_correction;
    cfg.tolerance_ns = sc.tolerance_ns;
    cfg.capacity_packets = 128;
    cfg.max_frames_per_packet = sc.fpp;
    let mut playout: Playout = Playout::new(cfg);

    let dac_rate = rate * (1.0 + sc.dac_ppm * 1e-6);
    let frame_ns = 1e9 / dac_rate;
    let writes = (sc.duration_s * dac_rate / sc.period as f64) as usize;
    let mut output = vec![0.0f32; writes * sc.period * ch];
    let mut played = Vec::with_capacity(writes * sc.period);
    let mut reports = Vec::with_capacity(writes);
    let mut pushes = Vec::new();
    let mut payload = vec![0u8; sc.fpp * ch * 2];
    let mut next_packet = 0;
    let noise = sc.clock_noise.map(|(o, r)| {
        (
            Normal::new(0.0, o.max(1e-9)).unwrap(),
            Normal::new(0.0, r.max(1e-12)).unwrap(),
        )
    });
    let timing = Normal::new(0.0, sc.timing_noise_ns.max(1e-9)).unwrap();
    let mut next_clock_update = f64::NEG_INFINITY;
    let mut clock = exact;
    let mut max_buffered = 0;
    let mut stepped = false;
    for k in 0..writes {
        let mut t_k = dac_start + (k * sc.period) as f64 * frame_ns;
        if let Some((at, stall)) = sc.dac_stall {
            if t_k - dac_start >= at * 1e9 {
                t_k += stall;
            }
        }
        let now = t_k - ((sc.periods - 1) * sc.period) as f64 * frame_ns;
        // Clock estimates.
        if now >= next_clock_update {
            next_clock_update = now.max(next_clock_update) + 1e9;
            if let Some((on, rn)) = &noise {
                let rate_err = rn.sample(&mut rng) * 1e-6;
                clock = ClockEstimate {
                    ref_local: LocalNs::from_ns(now as i64),
                    ref_timeline: TimelineNs::from_ns(
                        (to_timeline(now) + on.sample(&mut rng)).round() as i64,
                    ),
                    rate: 1.0 + c + rate_err,
                    uncertainty_ns: 0,
                };
            }
            playout.set_clock(Some(clock));
        }
        if let Some((at, step)) = sc.clock_step {
            if !stepped && now - dac_start >= at * 1e9 {
                stepped = true;
                clock.ref_timeline += step;
                playout.set_clock(Some(clock));
            }
        }
        // Packets that have arrived.
        while next_packet < packets.len() && packets[next_packet].arrival <= now {
            let p = &packets[next_packet];
            let n0 = (p.index * sc.fpp) as i64;
            for f in 0..sc.fpp {
                for c in 0..ch {
                    let v = ramp_i16(c, n0 + f as i64).to_be_bytes();
                    let at = (f * ch + c) * 2;
                    payload[at..at + 2].copy_from_slice(&v);
                }
            }
            let o = playout.push_parts(
                LocalNs::from_ns(now as i64),
                &PacketIn {
                    seq: sc.seq0.wrapping_add(p.index as u16),
                    timestamp: sc.ts0.wrapping_add((p.index * sc.fpp) as u32),
                    play_time: TimelineNs::from_ns(p.play),
                    marker: p.index == 0,
                    format: SampleFormat::L16,
                    payload: &payload,
                },
            );
            pushes.push(o);
            if sc.flood {
                let seq = sc.seq0.wrapping_add(p.index as u16);
                let junk = [
                    (seq.wrapping_add(5_000), p.play),
                    (seq.wrapping_add(3), p.play + 3 * 3_600 * NS_PER_SEC),
                    (seq.wrapping_add(2), p.play - 3 * 3_600 * NS_PER_SEC),
                    (
                        rng.gen::<u16>(),
                        p.play
                            + rng.gen_range(1i64..1000)
                                * 3_600
                                * NS_PER_SEC
                                * if rng.gen::<bool>() { 1 } else { -1 },
                    ),
                ];
                for (seq, play_time) in junk {
                    let o = playout.push_parts(
                        LocalNs::from_ns(now as i64),
                        &PacketIn {
                            seq,
                            timestamp: rng.gen(),
                            play_time: TimelineNs::from_ns(play_time),
                            marker: false,
                            format: SampleFormat::L16,
                            payload: &payload,
                        },
                    );
                    pushes.push(o);
                }
            }
            next_packet += 1;
        }
        max_buffered = max_buffered.max(playout.buffer().len());
        let measured = t_k
            + if sc.timing_noise_ns > 0.0 {
                timing.sample(&mut rng)
            } else {
                0.0
            };
        let out = &mut output[k * sc.period * ch..(k + 1) * sc.period * ch];
        let rep = playout.fill(LocalNs::from_ns(measured.round() as i64), out);
        reports.push(rep);
        // What actually played, and when.
        for i in 0..sc.period {
            let t = t_k + i as f64 * frame_ns;
            // Expected stream position at t (for unwrapping the coarse ramp).
            let due0 = capture0 + sc.latency_ns as f64 - sc.sink_latency_ns as f64;
            let near = (to_timeline(t) - due0) * rate / 1e9;
            let pos = decode_position(&out[i * ch..(i + 1) * ch], near);
            let err_ns = pos.map(|n| {
                let mut due_tl = due0 + n * 1e9 / rate;
                if let Some((at, jump)) = sc.play_jump {
                    if n >= (at * sc.fpp) as f64 {
                        due_tl += jump as f64;
                    }
                }
                t - to_local(due_tl)
            });
            played.push(Played {
                t_s: (t - dac_start) / 1e9,
                pos: pos.map(|n| n + sc.ts0 as f64),
                err_ns,
            });
        }
    }
    Outcome {
        played,
        output,
        reports,
        stats: playout.stats(),
        pushes,
        max_buffered,
    }
}

/// Percentiles of |error| over played frames after `from_s` seconds: (p50, p99, max, count).
pub fn error_stats(o: &Outcome, from_s: f64) -> (f64, f64, f64, usize) {
    let mut e: Vec<f64> = o
        .played
        .iter()
        .filter(|p| p.t_s >= from_s)
        .filter_map(|p| p.err_ns.map(f64::abs))
        .collect();
    e.sort_by(f64::total_cmp);
    if e.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN, 0);
    }
    let q = |f: f64| e[((e.len() - 1) as f64 * f).round() as usize];
    (q(0.5), q(0.99), e[e.len() - 1], e.len())
}

/// Seconds after which |error| stays within `bound_ns` for the rest of the run.
pub fn lock_time(o: &Outcome, bound_ns: f64) -> f64 {
    let mut last_bad = 0.0;
    for p in &o.played {
        if let Some(e) = p.err_ns {
            if e.abs() > bound_ns {
                last_bad = p.t_s;
            }
        }
    }
    last_bad
}
