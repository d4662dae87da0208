//! Receiver hot path: jitter buffer throughput, `Playout` cost per second of audio, and the
//! fine resampler against rubato's asynchronous sinc resampler (CPU and distortion).
//!
//! `cargo bench -p wavesync-common --bench jitter -- --quick`
//!
//! Before the timings it prints a distortion table: THD+N of a 1 kHz and a 10 kHz sine
//! resampled at +100 ppm (what the drift controller does at most on a typical crystal).

use criterion::{black_box, BenchmarkId, Criterion, Throughput};
use rubato::{
    Resampler as _, SincFixedIn, SincInterpolationParameters, SincInterpolationType, WindowFunction,
};
use std::time::Duration;
use wavesync_common::clock::ClockEstimate;
use wavesync_common::format::SampleFormat;
use wavesync_common::jitter::{JitterBuffer, JitterConfig, PacketIn};
use wavesync_common::playout::{Playout, PlayoutConfig};
use wavesync_common::resample::{Quality, Resampler};
use wavesync_common::time::{LocalNs, TimelineNs};

const RATE: u32 = 48_000;
const FPP: usize = 240;
const CH: usize = 2;

fn payload() -> Vec<u8> {
    (0..FPP * CH)
        .flat_map(|i| ((i as i16).wrapping_mul(97)).to_be_bytes())
        .collect()
}

/// Pushes `n` packets (in order, or swapped in pairs) and reads each one out, keeping a few
/// packets of look-ahead like a playout would.
fn jitter_cycle(b: &mut JitterBuffer, next: &mut u64, n: usize, reorder: bool, pl: &[u8]) -> f32 {
    let mut acc = 0.0;
    for i in 0..n {
        let k = *next + i as u64;
        let k = if reorder { k ^ 1 } else { k };
        b.push(&PacketIn {
            seq: k as u16,
            timestamp: (k as u32).wrapping_mul(FPP as u32),
            play_time: TimelineNs::from_ns((k * 5_000_000) as i64),
            marker: false,
            format: SampleFormat::L16,
            payload: pl,
        });
        if i >= 8 {
            if let Some(p) = b.peek() {
                acc += b.samples(p.seq)[0];
            }
            b.advance();
        }
    }
    for _ in 0..8 {
        b.advance();
    }
    *next += n as u64;
    acc
}

fn bench_jitter(c: &mut Criterion) {
    let pl = payload();
    let mut g = c.benchmark_group("jitter_buffer");
    const N: usize = 1024;
    g.throughput(Throughput::Elements(N as u64));
    for reorder in [false, true] {
        let mut b = JitterBuffer::new(JitterConfig {
            capacity_packets: 256,
            max_frames_per_packet: FPP,
            channels: CH as u8,
            max_span_ns: 30_000_000_000,
        });
        let mut next = 0u64;
        let name = if reorder { "reordered" } else { "in_order" };
        g.bench_function(BenchmarkId::new("push_read_packets", name), |bch| {
            bch.iter(|| black_box(jitter_cycle(&mut b, &mut next, N, reorder, &pl)))
        });
    }
    g.finish();
}

/// A stream feeding a playout through a DAC at +100 ppm, one second at a time.
struct Stream {
    playout: Playout,
    pl: Vec<u8>,
    packet: u64,
    write: u64,
    out: Vec<f32>,
}

impl Stream {
    fn new() -> Self {
        let mut playout: Playout = Playout::new(PlayoutConfig::new(RATE, CH as u8));
        playout.set_clock(Some(ClockEstimate {
            ref_local: LocalNs::from_ns(0),
            ref_timeline: TimelineNs::from_ns(0),
            rate: 1.0,
            uncertainty_ns: 0,
        }));
        Stream {
            playout,
            pl: payload(),
            packet: 0,
            write: 0,
            out: vec![0.0; 256 * CH],
        }
    }

    fn one_second(&mut self) -> usize {
        let period_ns = 256.0 * 1e9 / (RATE as f64 * (1.0 + 100e-6));
        let latency = 150_000_000i64;
        let end = (self.write as f64 * period_ns) as i64 + 1_000_000_000;
        let mut frames = 0;
        loop {
            let t = (self.write as f64 * period_ns) as i64;
            if t >= end {
                break;
            }
            let now = t - 3 * period_ns as i64;
            while (self.packet as i64 + 1) * 5_000_000 <= now + latency {
                let k = self.packet;
                self.playout.push_parts(
                    LocalNs::from_ns(now),
                    &PacketIn {
                        seq: k as u16,
                        timestamp: (k as u32).wrapping_mul(FPP as u32),
                        play_time: TimelineNs::from_ns(k as i64 * 5_000_000 + latency),
                        marker: k == 0,
                        format: SampleFormat::L16,
                        payload: &self.pl,
                    },
                );
                self.packet += 1;
            }
            frames += self.playout.fill(LocalNs::from_ns(t), &mut self.out).frames;
            self.write += 1;
        }
        frames
    }
}

fn bench_playout(c: &mut Criterion) {
    let mut g = c.benchmark_group("playout");
    g.throughput(Throughput::Elements(RATE as u64));
    let mut s = Stream::new();
    s.one_second();
    g.bench_function("push_and_fill_one_second_48k_stereo", |b| {
        b.iter(|| black_box(s.one_second()))
    });
    g.finish();
}

fn sine(freq: f64, frames: usize) -> Vec<f32> {
    (0..frames)
        .flat_map(|n| {
            let v =
                (0.5 * (2.0 * std::f64::consts::PI * freq * n as f64 / RATE as f64).sin()) as f32;
            [v; CH]
        })
        .collect()
}

/// Ours: interleaved in, interleaved out, 256-frame output blocks.
fn run_ours(input: &[f32], ratio: f64, q: Quality) -> Vec<f32> {
    let mut r = Resampler::with_quality(CH, q);
    let frames_out = ((input.len() / CH) as f64 / ratio) as usize - 8;
    let mut out = vec![0.0f32; frames_out * CH];
    let (mut i, mut o) = (0, 0);
    while o < frames_out {
        let end = (o + 256).min(frames_out);
        let p = r.process(&input[i * CH..], &mut out[o * CH..end * CH], ratio);
        i += p.consumed;
        o += p.produced;
        if p.produced == 0 {
            break;
        }
    }
    out.truncate(o * CH);
    out
}

fn sinc_params(len: usize, interp: SincInterpolationType) -> SincInterpolationParameters {
    SincInterpolationParameters {
        sinc_len: len,
        f_cutoff: 0.95,
        oversampling_factor: 256,
        interpolation: interp,
        window: WindowFunction::BlackmanHarris2,
    }
}

/// rubato's asynchronous sinc resampler: planar in and out, 256-frame input chunks.
struct Rubato {
    r: SincFixedIn<f32>,
    out: Vec<Vec<f32>>,
}

impl Rubato {
    fn new(ratio: f64, len: usize, interp: SincInterpolationType) -> Self {
        let r = SincFixedIn::<f32>::new(1.0 / ratio, 1.01, sinc_params(len, interp), 256, CH)
            .expect("valid rubato parameters");
        let out = vec![vec![0.0; r.output_frames_max()]; CH];
        Rubato { r, out }
    }

    /// Resamples planar `input`; returns planar output (channel 0 only, for analysis) length.
    fn run(&mut self, input: &[Vec<f32>], keep: Option<&mut Vec<f32>>) -> usize {
        let mut total = 0;
        let mut keep = keep;
        let frames = input[0].len();
        let mut i = 0;
        while i + 256 <= frames {
            let chunk: [&[f32]; CH] = [&input[0][i..i + 256], &input[1][i..i + 256]];
            let (used, written) = self
                .r
                .process_into_buffer(&chunk, &mut self.out, None)
                .expect("rubato process");
            if let Some(k) = keep.as_deref_mut() {
                k.extend_from_slice(&self.out[0][..written]);
            }
            i += used;
            total += written;
        }
        total
    }
}

/// THD+N in dB: residual after a least-squares fit of a sinusoid of the known frequency
/// (`cycles_per_sample`) plus DC; and the fitted amplitude.
fn thd_n_db(y: &[f32], cycles_per_sample: f64) -> (f64, f64) {
    let w = 2.0 * std::f64::consts::PI * cycles_per_sample;
    // Normal equations for [sin, cos, 1].
    let mut m = [[0.0f64; 3]; 3];
    let mut v = [0.0f64; 3];
    for (k, &s) in y.iter().enumerate() {
        let b = [(w * k as f64).sin(), (w * k as f64).cos(), 1.0];
        for r in 0..3 {
            for c in 0..3 {
                m[r][c] += b[r] * b[c];
            }
            v[r] += b[r] * s as f64;
        }
    }
    let x = solve3(m, v);
    let (mut sig, mut res) = (0.0, 0.0);
    for (k, &s) in y.iter().enumerate() {
        let fit = x[0] * (w * k as f64).sin() + x[1] * (w * k as f64).cos() + x[2];
        sig += fit * fit;
        res += (s as f64 - fit).powi(2);
    }
    (10.0 * (res / sig).log10(), x[0].hypot(x[1]))
}

fn solve3(mut m: [[f64; 3]; 3], mut v: [f64; 3]) -> [f64; 3] {
    // Gauss-Jordan; the matrix is symmetric positive definite, no pivoting needed.
    for i in 0..3 {
        let p = m[i][i];
        let row_i = m[i].map(|x| x / p);
        m[i] = row_i;
        v[i] /= p;
        for r in (0..3).filter(|r| *r != i) {
            let f = m[r][i];
            m[r] = [
                m[r][0] - f * row_i[0],
                m[r][1] - f * row_i[1],
                m[r][2] - f * row_i[2],
            ];
            v[r] -= f * v[i];
        }
    }
    v
}

fn print_distortion() {
    let ratio = 1.0 + 100e-6;
    let frames = RATE as usize * 2;
    println!("THD+N at +100 ppm (ratio {ratio}), 0.5 FS sine, 48 kHz, f32:");
    for freq in [1_000.0, 10_000.0, 18_000.0] {
        let input = sine(freq, frames);
        let cyc = freq * ratio / RATE as f64;
        let skip = 4_800;
        let ours = |q| {
            let y: Vec<f32> = run_ours(&input, ratio, q)
                .iter()
                .step_by(CH)
                .copied()
                .collect();
            let (db, amp) = thd_n_db(&y[skip..y.len() - skip], cyc);
            (db, 20.0 * (amp / 0.5).log10())
        };
        let cubic_db = ours(Quality::Cubic);
        let sinc_db = ours(Quality::Sinc16);
        let sinc32_db = ours(Quality::Sinc32);
        let planar: Vec<Vec<f32>> = (0..CH)
            .map(|c| input.iter().skip(c).step_by(CH).copied().collect())
            .collect();
        let mut line = format!(
            "  {:>6} Hz: cubic {:6.1} dB ({:+.2} dB gain), sinc16 {:6.1} dB ({:+.2}), \
             sinc32 {:6.1} dB ({:+.2})",
            freq, cubic_db.0, cubic_db.1, sinc_db.0, sinc_db.1, sinc32_db.0, sinc32_db.1
        );
        for (name, len, interp) in [
            ("sinc128/cubic", 128, SincInterpolationType::Cubic),
            ("sinc64/linear", 64, SincInterpolationType::Linear),
        ] {
            let mut r = Rubato::new(ratio, len, interp);
            let mut out = Vec::new();
            r.run(&planar, Some(&mut out));
            let (db, _) = thd_n_db(&out[skip..out.len() - skip], cyc);
            line += &format!(", rubato {name} {db:7.1} dB");
        }
        println!("{line}");
    }
}

fn bench_resamplers(c: &mut Criterion) {
    let ratio = 1.0 + 100e-6;
    let input = sine(1_000.0, RATE as usize + 1024);
    let planar: Vec<Vec<f32>> = (0..CH)
        .map(|c| input.iter().skip(c).step_by(CH).copied().collect())
        .collect();
    let mut g = c.benchmark_group("resample_one_second_48k_stereo");
    g.throughput(Throughput::Elements(RATE as u64));
    for (name, q) in [
        ("cubic", Quality::Cubic),
        ("sinc16", Quality::Sinc16),
        ("sinc32", Quality::Sinc32),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| black_box(run_ours(black_box(&input), ratio, q).len()))
        });
    }
    for (name, len, interp) in [
        ("rubato_sinc128_cubic", 128, SincInterpolationType::Cubic),
        ("rubato_sinc64_linear", 64, SincInterpolationType::Linear),
    ] {
        let mut r = Rubato::new(ratio, len, interp);
        g.bench_function(name, |b| {
            b.iter(|| black_box(r.run(black_box(&planar), None)))
        });
    }
    g.finish();
}

fn main() {
    print_distortion();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .configure_from_args();
    bench_jitter(&mut c);
    bench_playout(&mut c);
    bench_resamplers(&mut c);
    c.final_summary();
}
