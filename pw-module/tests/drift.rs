//! The module under a graph driver whose clock is off CLOCK_MONOTONIC: a sine from a test
//! driver (`tests/driver`, a `pw_stream` with the DRIVER flag on its own skewed timer) through
//! the WaveSync sink, caught on loopback as L24 and checked against the driver's own clock:
//! no run restarts, every frame's stamp within 1 ms of the time the driver produced it, and
//! the tone undistorted.
//!
//! `cargo test -p pipewire-module-wavesync --test drift -- --nocapture` prints the figures.

mod common;
mod driver;

use std::f64::consts::PI;

use common::*;

const RATE: f64 = 48_000.0;
const LATENCY_NS: i64 = 100_000_000;
const HZ: f64 = 250.0;
const AMP: f64 = 0.5;
const L24_FULL: f64 = 8_388_608.0;
/// THD+N is measured from here on: the loop engages when the error passes 250 µs (2.5 s
/// into a +100 ppm run) and pulls the rate in over a few seconds, a slow glide that a
/// 0.5 s window sees as distortion (-50 to -90 dB while it lasts).
const SETTLED_S: f64 = 10.0;

/// Not a test: the body of the driver process that [`drive`] starts (this binary again).
#[test]
fn skewed_driver_process() {
    if let Ok(args) = std::env::var("WAVESYNC_SKEWED_DRIVER") {
        driver::main(&args);
    }
}

/// Runs the driver `ppm` fast for `seconds` into a fresh daemon's WaveSync sink; returns the
/// driver's frame-0 time and the packets.
fn drive(ppm: f64, seconds: f64) -> (i64, Vec<Packet>) {
    let listener = Listener::start();
    let args = loopback_args(listener.port, "sess.latency.msec = 100 audio.format = L24");
    let verbose = std::env::var("DRIFT_VERBOSE").is_ok();
    let daemon = Daemon::start(&[module_dropin(&args, true)], verbose)
        .unwrap_or_else(|f| panic!("daemon did not start: {f:?}"));
    daemon.wait_node("wavesync").expect("node wavesync");
    let exe = std::env::current_exe().expect("test exe");
    let out = daemon
        .command(exe.to_str().expect("utf-8 path"))
        .args(["--exact", "skewed_driver_process", "--nocapture"])
        .env(
            "WAVESYNC_SKEWED_DRIVER",
            format!("--ppm {ppm} --seconds {seconds} --hz {HZ} --amp {AMP}"),
        )
        .output()
        .expect("run the driver");
    let packets = audio_packets(&listener.finish());
    if verbose {
        for l in daemon
            .log()
            .lines()
            .filter(|l| l.contains("wavesync") || l.contains("xrun"))
        {
            note(&format!("  log: {l}"));
        }
        note(&format!(
            "  driver: {} {}",
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| ["cycles", "missed", "late"]
                    .iter()
                    .any(|k| l.starts_with(k)))
                .collect::<Vec<_>>()
                .join(", "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let t0 = text
        .lines()
        .find_map(|l| l.strip_prefix("t0 "))
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or_else(|| {
            panic!(
                "the driver never drove: {text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    (t0, packets)
}

struct Figures {
    runs: usize,
    /// Stamp minus the driver's capture time of the same audio, per 0.1 s, ns.
    time_errors: Vec<(f64, f64)>,
    /// THD+N of each 0.5 s of the left channel, dB.
    thdn: Vec<(f64, f64)>,
}

/// Left-channel samples with their stamps (the frame's play time minus the latency).
fn frames(packets: &[Packet]) -> Vec<(i64, f64)> {
    let mut out = Vec::new();
    for p in packets {
        for (j, f) in p.samples.chunks_exact(2).enumerate() {
            let s = p.play_time - LATENCY_NS + (j as f64 * 1e9 / RATE).round() as i64;
            out.push((s, f[0] as f64 / L24_FULL));
        }
    }
    out
}

fn analyse(t0: i64, packets: &[Packet], ppm: f64) -> Figures {
    let runs = packets.iter().filter(|p| p.marker).count();
    let fs = frames(packets);
    let w = 2.0 * PI * HZ * (1.0 + ppm * 1e-6) / 1e9; // rad per ns of the timeline
    let start = fs.first().map(|f| f.0).unwrap_or(t0);
    // The phase lag of the received tone against the driver's: a·sinθ + b·cosθ fits.
    let mut time_errors = Vec::new();
    let mut prev: Option<f64> = None;
    for chunk in fs.chunks_exact(4_800) {
        let (mut ss, mut sc, mut cc, mut ys, mut yc) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for &(s, y) in chunk {
            let th = w * (s - t0) as f64;
            let (sn, cs) = th.sin_cos();
            ss += sn * sn;
            sc += sn * cs;
            cc += cs * cs;
            ys += y * sn;
            yc += y * cs;
        }
        let det = ss * cc - sc * sc;
        let a = (ys * cc - yc * sc) / det;
        let b = (yc * ss - ys * sc) / det;
        let mut lag = (-b).atan2(a);
        if let Some(p) = prev {
            while lag - p > PI {
                lag -= 2.0 * PI;
            }
            while lag - p < -PI {
                lag += 2.0 * PI;
            }
        }
        prev = Some(lag);
        let at = (chunk[0].0 - start) as f64 / 1e9;
        time_errors.push((at, lag / w));
    }
    let thdn = fs
        .chunks_exact(24_000)
        .map(|c| {
            let y: Vec<f64> = c.iter().map(|f| f.1).collect();
            ((c[0].0 - start) as f64 / 1e9, thd_n_db(&y, w * 1e9 / RATE))
        })
        .collect();
    Figures {
        runs,
        time_errors,
        thdn,
    }
}

/// THD+N of `y` (one tone near `omega` rad/sample): residual of a four-parameter sine fit
/// (amplitude, phase, offset, frequency) against the fitted tone, in dB.
fn thd_n_db(y: &[f64], omega: f64) -> f64 {
    let mut w = omega;
    let (mut a, mut b, mut c) = (0.0, 0.0, 0.0);
    let mid = y.len() as f64 / 2.0;
    for iter in 0..6 {
        let cols = if iter == 0 { 3 } else { 4 };
        let mut m = [[0.0f64; 5]; 4];
        for (n, &v) in y.iter().enumerate() {
            let t = n as f64 - mid;
            let (sn, cs) = (w * t).sin_cos();
            let row = [sn, cs, 1.0, t * (a * cs - b * sn)];
            for i in 0..cols {
                for j in 0..cols {
                    m[i][j] += row[i] * row[j];
                }
                m[i][4] += row[i] * v;
            }
        }
        let x = solve(&mut m, cols);
        a = x[0];
        b = x[1];
        c = x[2];
        if cols == 4 {
            w += x[3];
        }
    }
    let (mut sig, mut res) = (0.0, 0.0);
    for (n, &v) in y.iter().enumerate() {
        let t = n as f64 - mid;
        let (sn, cs) = (w * t).sin_cos();
        let fit = a * sn + b * cs;
        sig += fit * fit;
        res += (v - fit - c).powi(2);
    }
    10.0 * (res / sig).log10()
}

/// Gauss-Jordan on the first `n` rows/columns of an augmented matrix (column 4 = right side).
fn solve(m: &mut [[f64; 5]; 4], n: usize) -> [f64; 4] {
    for i in 0..n {
        let p = (i..n)
            .max_by(|&x, &y| m[x][i].abs().total_cmp(&m[y][i].abs()))
            .unwrap_or(i);
        m.swap(i, p);
        let d = m[i][i];
        let pivot: [f64; 5] = m[i].map(|v| v / d);
        m[i] = pivot;
        for (r, row) in m.iter_mut().enumerate().take(n) {
            if r != i {
                let f = row[i];
                for (v, pv) in row.iter_mut().zip(pivot) {
                    *v -= f * pv;
                }
            }
        }
    }
    let mut x = [0.0; 4];
    for (xi, row) in x.iter_mut().zip(m.iter()).take(n) {
        *xi = row[4];
    }
    x
}

fn check(ppm: f64, seconds: f64, thdn_limit_db: Option<f64>) {
    let (t0, packets) = drive(ppm, seconds);
    assert!(
        packets.len() as f64 > seconds * 100.0,
        "{ppm} ppm: only {} packets",
        packets.len()
    );
    let f = analyse(t0, &packets, ppm);
    let worst = f
        .time_errors
        .iter()
        .map(|e| e.1.abs())
        .fold(0.0f64, f64::max);
    let last = f.time_errors.last().map(|e| e.1).unwrap_or(f64::NAN);
    let first = f.time_errors.first().map(|e| e.1).unwrap_or(f64::NAN);
    let settled: Vec<f64> = f
        .thdn
        .iter()
        .filter(|t| t.0 >= SETTLED_S)
        .map(|t| t.1)
        .collect();
    let worst_thdn = settled.iter().cloned().fold(f64::MIN, f64::max);
    note(&format!(
        "driver {ppm:+} ppm, {seconds} s: {} packets, runs {}, stamp - capture: first {:.0} µs, \
         last {:.0} µs, worst {:.0} µs; THD+N (250 Hz, 0.5 s windows from {SETTLED_S} s) worst {:.1} dB",
        packets.len(),
        f.runs,
        first / 1e3,
        last / 1e3,
        worst / 1e3,
        worst_thdn
    ));
    if std::env::var("DRIFT_VERBOSE").is_ok() {
        let t_first = packets[0].at;
        for (i, p) in packets.iter().enumerate() {
            if p.marker || (i > 0 && p.seq != packets[i - 1].seq.wrapping_add(1)) {
                note(&format!(
                    "  packet {i} at {:.3} s: marker {} seq {} (prev {})",
                    (p.at - t_first) as f64 / 1e9,
                    p.marker,
                    p.seq,
                    if i > 0 { packets[i - 1].seq } else { 0 }
                ));
            }
        }
        for t in &f.thdn {
            note(&format!("  {:.1} s: THD+N {:.1} dB", t.0, t.1));
        }
    }
    assert_eq!(f.runs, 1, "{ppm} ppm: the run restarted");
    assert!(
        worst < 1e6,
        "{ppm} ppm: a stamp {worst} ns off its capture time"
    );
    if let Some(limit) = thdn_limit_db {
        assert!(worst_thdn < limit, "{ppm} ppm: THD+N {worst_thdn} dB");
    }
}

#[test]
fn a_driver_100_ppm_fast_is_followed_undistorted() {
    check(100.0, 30.0, Some(-90.0));
}

#[test]
fn a_driver_500_ppm_fast_is_followed() {
    check(500.0, 20.0, None);
}

#[test]
fn a_driver_500_ppm_slow_is_followed() {
    check(-500.0, 20.0, None);
}

#[test]
fn a_driver_100_ppm_slow_is_followed() {
    check(-100.0, 20.0, None);
}
