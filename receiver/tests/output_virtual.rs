//! The virtual DAC in real time: its own prediction against the true play instants in its
//! log, its rate error, underrun and recovery, and its audio file. Runs are short (1-2 s).

#[path = "../../test-support/skip.rs"]
mod skip;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use wavesync_receiver::clock_io::monotonic_ns;
use wavesync_receiver::output::virtual_dac::{AudioFileFormat, VirtualConfig, VirtualDac};
use wavesync_receiver::output::{Output, OutputError, PointerMode, WriteMeta};

const RATE: u32 = 48_000;

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "wavesync-output-test-{}-{name}",
        std::process::id()
    ))
}

/// Removes the files it holds when dropped (also when a test fails).
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// One log line: (stream position or None, frames, played realtime, played monotonic).
fn read_log(path: &PathBuf) -> Vec<(Option<f64>, usize, i64, i64)> {
    let text = std::fs::read_to_string(path).expect("read the log");
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 4, "log line {l:?}");
            let pos: f64 = f[0].parse().expect("position");
            (
                (pos >= 0.0).then_some(pos),
                f[1].parse().expect("frames"),
                f[2].parse().expect("realtime"),
                f[3].parse().expect("monotonic"),
            )
        })
        .collect()
}

fn percentile(v: &mut [i64], p: f64) -> i64 {
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Plays `secs` of silence a period at a time (reading the status `phase_ms` after each wake), each write tagged with its frame index as
/// the stream position; returns |predicted - true| for every write after the first
/// `warmup` of a run, in ns. An underrun (a descheduled test thread on a loaded host) starts
/// a new run instead of failing the test.
fn prediction_errors(cfg: VirtualConfig, secs: f64, warmup: usize, phase_ms: u64) -> Vec<i64> {
    let log = cfg.log.clone().expect("a log path");
    let _cleanup = Cleanup(vec![log.clone()]);
    let mut dac = VirtualDac::new(cfg);
    let info = dac.open(RATE, 2).expect("open");
    let chunk = info.period_frames;
    let buf = vec![0.0f32; chunk * 2];
    // (stream position, predicted instant, counts)
    let mut predicted: Vec<(usize, i64, bool)> = Vec::new();
    let mut pos = 0usize;
    let mut in_run = 0usize;
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        let step = dac
            .wait(100)
            .and_then(|_| {
                if phase_ms > 0 {
                    std::thread::sleep(Duration::from_millis(phase_ms));
                }
                dac.timing()
            })
            .and_then(|t| {
                let n = t.avail_frames.min(chunk);
                let meta = WriteMeta {
                    stream_position: Some(pos as f64),
                    audio_start: None,
                };
                dac.write(&buf[..n * 2], &meta).map(|w| (t, w))
            });
        match step {
            Ok((t, w)) => {
                predicted.push((pos, t.next_frame_local.ns(), in_run >= warmup));
                pos += w;
                in_run += 1;
            }
            Err(OutputError::Underrun) => {
                dac.recover(&OutputError::Underrun).expect("recover");
                in_run = 0;
            }
            Err(e) => panic!("virtual DAC failed: {e}"),
        }
    }
    if dac.underruns() > 0 {
        eprintln!("(the test thread was late: {} underruns)", dac.underruns());
    }
    dac.close();
    let lines = read_log(&log);
    assert_eq!(lines.len(), predicted.len());
    predicted
        .iter()
        .zip(&lines)
        .filter(|((_, _, counts), _)| *counts)
        .map(|((p, next, _), (lp, _, _, mono))| {
            assert_eq!(Some(*p as f64), *lp);
            (next - mono).abs()
        })
        .collect()
}

fn check_prediction(name: &str, cfg: VirtualConfig, median_bound_ns: i64, max_bound_ns: i64) {
    let mut err = prediction_errors(cfg, 1.5, 20, 0);
    let p50 = percentile(&mut err, 0.5);
    let p99 = percentile(&mut err, 0.99);
    let max = *err.last().expect("some writes");
    eprintln!(
        "{name}: prediction vs true play instant over {} writes: p50 {:.1} us, p99 {:.1} us, max {:.1} us",
        err.len(),
        p50 as f64 / 1e3,
        p99 as f64 / 1e3,
        max as f64 / 1e3
    );
    // The model error is < 1 frame plus ppm * delay; the bounds leave room for a loaded host.
    assert!(p50 < median_bound_ns, "{name}: median error {p50} ns");
    assert!(max < max_bound_ns, "{name}: worst error {max} ns");
}

#[test]
fn output_virtual_prediction_matches_log() {
    check_prediction(
        "fine +80 ppm",
        VirtualConfig {
            ppm: 80.0,
            latency_ms: 3.0,
            log: Some(temp_path("fine.log")),
            ..VirtualConfig::default()
        },
        50_000,
        500_000,
    );
}

#[test]
fn output_virtual_coarse_prediction_matches_log() {
    // The pointer moves per period only: the prediction must come from the fitted envelope
    // (raw snapshots would be up to a period, 5 ms, late). The loop wakes at each pointer step
    // and reads the status a wake-up latency later, so the envelope lags by that latency
    // (~0.1 ms here, more when other builds load the host): nothing in the snapshots can
    // reveal it. Hence looser bounds than for a smooth device.
    check_prediction(
        "coarse -500 ppm",
        VirtualConfig {
            ppm: -500.0,
            coarse: true,
            log: Some(temp_path("coarse.log")),
            ..VirtualConfig::default()
        },
        250_000,
        1_000_000,
    );
    // The same device taken at its word is late by up to a period: read the status 2 ms after
    // each step, and the raw reading is 2 ms late.
    let mut raw = prediction_errors(
        VirtualConfig {
            ppm: -500.0,
            coarse: true,
            pointer: PointerMode::Raw,
            log: Some(temp_path("coarse-raw.log")),
            ..VirtualConfig::default()
        },
        1.0,
        1,
        2,
    );
    let raw_max = percentile(&mut raw, 1.0);
    eprintln!(
        "coarse, raw snapshots: max error {:.1} us",
        raw_max as f64 / 1e3
    );
    assert!(
        raw_max > 1_000_000,
        "raw snapshots should lag: {raw_max} ns"
    );
}

/// Keeps the ring full for `secs` and measures the consumption rate error in ppm from the
/// frames written and the delay the DAC reports at the end.
fn measured_ppm(ppm: f64, secs: f64) -> f64 {
    // A 200 ms ring: a descheduled test thread must not starve it.
    let mut dac = VirtualDac::new(VirtualConfig {
        ppm,
        latency_ms: 0.0,
        period_ms: 20.0,
        buffer_frames: Some(9600),
        ..VirtualConfig::default()
    });
    let info = dac.open(RATE, 1).expect("open");
    let buf = vec![0.0f32; info.buffer_frames];
    let before = monotonic_ns().ns();
    let mut written = dac.write(&buf, &WriteMeta::default()).expect("write") as i64;
    let start = (before + monotonic_ns().ns()) / 2;
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        dac.wait(100).expect("wait");
        let t = dac.timing().expect("timing");
        written += dac
            .write(&buf[..t.avail_frames], &WriteMeta::default())
            .expect("write") as i64;
    }
    let before = monotonic_ns().ns();
    let t = dac.timing().expect("timing");
    let now = (before + monotonic_ns().ns()) / 2;
    let consumed = written - t.delay_frames;
    let rate = consumed as f64 / ((now - start) as f64 / 1e9);
    (rate / RATE as f64 - 1.0) * 1e6
}

#[test]
fn output_virtual_ppm_sets_the_consumption_rate() {
    let fast = measured_ppm(500.0, 2.0);
    let exact = measured_ppm(0.0, 2.0);
    eprintln!("measured consumption: +500 ppm DAC {fast:.1} ppm, 0 ppm DAC {exact:.1} ppm");
    // One frame in 2 s is 10 ppm; the start instant is known to a few us.
    assert!(
        (fast - 500.0).abs() < 30.0,
        "+500 ppm DAC ran at {fast} ppm"
    );
    assert!(exact.abs() < 30.0, "0 ppm DAC ran at {exact} ppm");
    assert!(fast - exact > 450.0);
}

#[test]
fn output_virtual_underrun_is_reported_then_recovers() {
    let log = temp_path("underrun.log");
    let _cleanup = Cleanup(vec![log.clone()]);
    let mut dac = VirtualDac::new(VirtualConfig {
        log: Some(log.clone()),
        ..VirtualConfig::default()
    });
    let info = dac.open(RATE, 2).expect("open");
    let buf = vec![0.0f32; info.period_frames * 2];
    let meta = WriteMeta {
        stream_position: Some(0.0),
        audio_start: None,
    };
    assert_eq!(dac.write(&buf, &meta).expect("write"), info.period_frames);
    // Starve it: one period (5 ms) drains; poll until the underrun shows, at most 1 s.
    let deadline = Instant::now() + Duration::from_secs(1);
    let err = loop {
        match dac.timing() {
            Err(e) => break e,
            Ok(_) => {
                assert!(
                    Instant::now() < deadline,
                    "no underrun after 1 s of starvation"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    };
    assert!(matches!(err, OutputError::Underrun), "got {err}");
    assert!(err.is_recoverable());
    assert_eq!(dac.underruns(), 1);
    // Reported once; the DAC is stopped and ready.
    let t = dac.timing().expect("timing after the underrun");
    assert_eq!(t.avail_frames, info.buffer_frames);
    assert!(!t.settled);
    dac.recover(&err).expect("recover");
    let before = monotonic_ns().ns();
    let meta2 = WriteMeta {
        stream_position: Some(1000.0),
        audio_start: None,
    };
    assert_eq!(dac.write(&buf, &meta2).expect("write"), info.period_frames);
    let t = dac.timing().expect("timing");
    assert!(
        t.delay_frames > 96,
        "running again: delay {}",
        t.delay_frames
    );
    dac.close();
    let lines = read_log(&log);
    assert_eq!(lines.len(), 2);
    // The second run restarted at the write, not where the first left off.
    assert!(
        lines[1].3 >= before + 2_000_000,
        "restart instant {}",
        lines[1].3 - before
    );
    assert!(lines[1].3 - lines[0].3 > 5_000_000);
}

#[test]
fn output_virtual_write_error_while_starved() {
    let mut dac = VirtualDac::new(VirtualConfig::default());
    let info = dac.open(RATE, 1).expect("open");
    let buf = vec![0.0f32; info.period_frames];
    dac.write(&buf, &WriteMeta::default()).expect("write");
    // Wait (by the DAC's own clock) past the drain instant, then write: EPIPE-like.
    let t = dac.timing().expect("timing");
    let drained = t.next_frame_local + 1_000_000;
    while monotonic_ns() < drained {
        std::thread::sleep(Duration::from_millis(1));
    }
    let r = dac.write(&buf, &WriteMeta::default());
    assert!(matches!(r, Err(OutputError::Underrun)), "got {r:?}");
    assert_eq!(
        dac.write(&buf, &WriteMeta::default()).expect("restarts"),
        buf.len()
    );
}

#[test]
fn output_virtual_audio_file_and_split_log_lines() {
    let log = temp_path("split.log");
    let audio = temp_path("audio.s16");
    let _cleanup = Cleanup(vec![log.clone(), audio.clone()]);
    let mut dac = VirtualDac::new(VirtualConfig {
        log: Some(log.clone()),
        audio: Some(audio.clone()),
        audio_format: AudioFileFormat::S16Le,
        ..VirtualConfig::default()
    });
    dac.open(RATE, 2).expect("open");
    let samples: Vec<f32> = (0..200).map(|i| (i as f32 - 100.0) / 128.0).collect();
    // 100 frames: 40 of silence, then the stream from position 5000.
    let meta = WriteMeta {
        stream_position: None,
        audio_start: Some((40, 5000.0)),
    };
    assert_eq!(dac.write(&samples, &meta).expect("write"), 100);
    dac.close();
    let lines = read_log(&log);
    assert_eq!(lines.len(), 2);
    assert_eq!((lines[0].0, lines[0].1), (None, 40));
    assert_eq!((lines[1].0, lines[1].1), (Some(5000.0), 60));
    let dt = lines[1].3 - lines[0].3;
    assert!((dt - 833_333).abs() < 2, "40 frames later: {dt} ns");
    // Realtime and monotonic of one line differ by the clocks' offset, the same for both.
    assert!(((lines[1].2 - lines[1].3) - (lines[0].2 - lines[0].3)).abs() < 1_000);
    let bytes = std::fs::read(&audio).expect("audio file");
    let expect: Vec<u8> = samples
        .iter()
        .flat_map(|s| ((s * 32_768.0).round() as i16).to_le_bytes())
        .collect();
    assert_eq!(bytes, expect);
}

/// Not a test on its own: the body of `output_virtual_log_realtime_ignores_time_namespaces`,
/// run by that test in a child process inside a shifted time namespace.
#[test]
fn helper_play_into_log_from_env() {
    let Some(log) = std::env::var_os("WAVESYNC_VDAC_HELPER_LOG") else {
        return;
    };
    // A ring that holds all 20 writes: nothing can underrun, however late this process runs.
    let mut dac = VirtualDac::new(VirtualConfig {
        log: Some(PathBuf::from(log)),
        buffer_frames: Some(9600),
        ..VirtualConfig::default()
    });
    let info = dac.open(RATE, 2).expect("open");
    let buf = vec![0.0f32; info.period_frames * 2];
    for i in 0..20 {
        let meta = WriteMeta {
            stream_position: Some((i * info.period_frames) as f64),
            audio_start: None,
        };
        dac.write(&buf, &meta).expect("write");
    }
    dac.close();
}

#[test]
fn output_virtual_log_realtime_ignores_time_namespaces() {
    // A receiver in a time namespace (CLOCK_MONOTONIC shifted by 10^6 s) logs the shifted
    // monotonic instants, but realtime instants the lab can compare across namespaces.
    const SHIFT_S: i64 = 1_000_000;
    let log = temp_path("timens.log");
    let _cleanup = Cleanup(vec![log.clone()]);
    let exe = std::env::current_exe().expect("test executable");
    let real0 = wavesync_receiver::clock_io::realtime_ns();
    let mono0 = monotonic_ns().ns();
    let can = std::process::Command::new("unshare")
        .args(["--time", "--monotonic", "1", "true"])
        .output();
    match can {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            let why = String::from_utf8_lossy(&o.stderr);
            skip::skip_or_fail(&format!("no time namespaces here: {why}"));
            return;
        }
        Err(e) => {
            skip::skip_or_fail(&format!("no unshare: {e}"));
            return;
        }
    }
    let out = std::process::Command::new("unshare")
        .args([
            "--time",
            "--monotonic",
            &SHIFT_S.to_string(),
            "--boottime",
            "0",
        ])
        .arg(&exe)
        .args([
            "--exact",
            "helper_play_into_log_from_env",
            "--test-threads=1",
        ])
        .env("WAVESYNC_VDAC_HELPER_LOG", &log)
        .output()
        .expect("run the helper in a time namespace");
    assert!(
        out.status.success(),
        "the helper failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let real1 = wavesync_receiver::clock_io::realtime_ns();
    let lines = read_log(&log);
    assert_eq!(lines.len(), 20);
    for (_, _, real, mono) in &lines {
        // Realtime: within the run, plus the 100 ms of audio queued at its end.
        assert!(
            *real > real0 && *real < real1 + 200_000_000,
            "realtime {real}"
        );
        // Monotonic: the namespace's, 10^6 s ahead of the initial one's (offsets are given
        // against the initial namespace, whichever this test runs in).
        let ours = wavesync_receiver::clock_io::timens_monotonic_offset_ns(None)
            .expect("our time namespace offsets");
        let shift = SHIFT_S * 1_000_000_000 - ours;
        let ahead = mono - mono0;
        assert!(
            ahead > shift - 1_000_000_000 && ahead < shift + 60_000_000_000,
            "monotonic {ahead} ns ahead of ours"
        );
    }
    // Both columns advance together.
    let (a, b) = (lines[0], lines[19]);
    assert!(((b.2 - a.2) - (b.3 - a.3)).abs() < 100_000);
}
