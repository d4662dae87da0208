//! Skew between receivers from their virtual-DAC logs.
//!
//! A log has one line per write: `<stream_position or -1> <frames> <played_realtime_ns>
//! <played_monotonic_ns>` (see CONTRACTS.md): the stream frame index of the write's first frame
//! (fractional; -1 for silence), how many frames, and when that first frame left the virtual DAC
//! on CLOCK_REALTIME (shared by every time namespace) and on the receiver's CLOCK_MONOTONIC.
//!
//! Frame `p` of a write starting at position `p0` and time `t0` played at
//! `t0 + (p - p0) / rate`. For each write of receiver A (one sample per write), the lab finds
//! the write of receiver B holding the same stream position — the one nearest in time, so a
//! restarted stream whose positions start again is not confused with the old one — and the skew
//! is `t_B(p) - t_A(p)`. Time to lock is from the later of the two logs' first lines to the
//! first sample after which |skew| stays under the threshold.

use serde::Serialize;
use std::path::{Path, PathBuf};

/// What went wrong reading a log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A line is not four numbers of the right kinds.
    #[error("line {line}: {reason}: {text:?}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
        /// The line.
        text: String,
    },
}

/// One write to the virtual DAC.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Write {
    /// Stream position of the first frame, `None` for silence.
    pub position: Option<f64>,
    /// Frames written.
    pub frames: u32,
    /// When the first frame played, CLOCK_REALTIME ns.
    pub realtime_ns: i64,
    /// When the first frame played, the receiver's CLOCK_MONOTONIC ns.
    pub monotonic_ns: i64,
}

/// A parsed log with an index by stream position.
#[derive(Clone, Debug)]
pub struct DacLog {
    /// Every write, in file order.
    pub writes: Vec<Write>,
    /// (position, index into `writes`) of the non-silent writes, sorted by position.
    by_position: Vec<(f64, usize)>,
    max_frames: u32,
}

impl DacLog {
    /// Parses a log's text.
    pub fn parse(text: &str) -> Result<DacLog, LogError> {
        let mut writes = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason| LogError::Parse {
                line: i + 1,
                reason,
                text: raw.to_string(),
            };
            let mut f = line.split_ascii_whitespace();
            let (Some(pos), Some(frames), Some(rt), Some(mono), None) =
                (f.next(), f.next(), f.next(), f.next(), f.next())
            else {
                return Err(err("expected 4 fields"));
            };
            let pos: f64 = pos.parse().map_err(|_| err("bad stream position"))?;
            if !pos.is_finite() || (pos < 0.0 && pos != -1.0) {
                return Err(err("stream position must be >= 0 or -1"));
            }
            writes.push(Write {
                position: (pos >= 0.0).then_some(pos),
                frames: frames.parse().map_err(|_| err("bad frame count"))?,
                realtime_ns: rt.parse().map_err(|_| err("bad realtime ns"))?,
                monotonic_ns: mono.parse().map_err(|_| err("bad monotonic ns"))?,
            });
        }
        Ok(DacLog::from_writes(writes))
    }

    /// Reads and parses a log file.
    pub fn read(path: &Path) -> Result<DacLog, LogError> {
        let text = std::fs::read_to_string(path).map_err(|source| LogError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        DacLog::parse(&text)
    }

    /// A log from writes already parsed.
    pub fn from_writes(writes: Vec<Write>) -> DacLog {
        let mut by_position: Vec<(f64, usize)> = writes
            .iter()
            .enumerate()
            .filter_map(|(i, w)| w.position.map(|p| (p, i)))
            .collect();
        by_position.sort_by(|a, b| a.0.total_cmp(&b.0));
        let max_frames = writes.iter().map(|w| w.frames).max().unwrap_or(0);
        DacLog {
            writes,
            by_position,
            max_frames,
        }
    }

    /// CLOCK_REALTIME of the first line, if any.
    pub fn start_ns(&self) -> Option<i64> {
        self.writes.first().map(|w| w.realtime_ns)
    }

    /// Frames written with audio and with silence.
    pub fn frame_counts(&self) -> (u64, u64) {
        let mut audio = 0;
        let mut silence = 0;
        for w in &self.writes {
            match w.position {
                Some(_) => audio += u64::from(w.frames),
                None => silence += u64::from(w.frames),
            }
        }
        (audio, silence)
    }

    /// When stream position `p` played relative to `near_ns` (CLOCK_REALTIME; the result is in
    /// ns, fractional, kept relative so that f64 keeps sub-ns precision): among the writes that
    /// hold it, the one nearest to `near_ns`, if within `max_distance_ns`.
    pub fn time_of(&self, p: f64, rate: u32, near_ns: i64, max_distance_ns: f64) -> Option<f64> {
        let end = self.by_position.partition_point(|&(pos, _)| pos <= p);
        let lowest = p - f64::from(self.max_frames) - 1.0;
        let mut best: Option<f64> = None;
        for &(pos, i) in self.by_position[..end].iter().rev() {
            if pos < lowest {
                break;
            }
            let w = &self.writes[i];
            // Allow the end of the last frame (a write's positions may advance at a corrected
            // rate, a few hundred ppm off nominal).
            if p > pos + f64::from(w.frames) {
                continue;
            }
            let t = (w.realtime_ns - near_ns) as f64 + (p - pos) * 1e9 / f64::from(rate);
            if t.abs() <= max_distance_ns && !matches!(best, Some(b) if b.abs() <= t.abs()) {
                best = Some(t);
            }
        }
        best
    }
}

/// Parameters of the skew analysis.
#[derive(Clone, Copy, Debug)]
pub struct SkewConfig {
    /// Nominal stream rate, Hz.
    pub rate: u32,
    /// |skew| under this counts as locked, ns.
    pub lock_threshold_ns: f64,
    /// A position is matched only within this time of the other receiver's play, ns.
    pub max_match_ns: f64,
}

impl Default for SkewConfig {
    fn default() -> Self {
        SkewConfig {
            rate: 48_000,
            lock_threshold_ns: 100_000.0,
            max_match_ns: 2e9,
        }
    }
}

/// The skew at one stream position.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SkewSample {
    /// When A played it, CLOCK_REALTIME ns.
    pub realtime_ns: i64,
    /// Stream position.
    pub position: f64,
    /// B's play time minus A's, ns (positive: B late).
    pub skew_ns: f64,
}

/// Skew samples of receiver B against receiver A, one per non-silent write of A.
pub fn pair_skew(a: &DacLog, b: &DacLog, cfg: &SkewConfig) -> Vec<SkewSample> {
    let mut out = Vec::new();
    for w in &a.writes {
        let Some(p) = w.position else { continue };
        if let Some(skew_ns) = b.time_of(p, cfg.rate, w.realtime_ns, cfg.max_match_ns) {
            out.push(SkewSample {
                realtime_ns: w.realtime_ns,
                position: p,
                skew_ns,
            });
        }
    }
    out
}

/// Figures of a series of skew samples.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SkewSummary {
    /// Samples in total.
    pub samples: usize,
    /// Time from start to lock (|skew| under the threshold from then on), ms; None if the
    /// series does not end locked.
    pub lock_ms: Option<f64>,
    /// Samples from lock on (all samples if never locked).
    pub steady_samples: usize,
    /// Median |skew| from lock on, us.
    pub p50_us: f64,
    /// 99th percentile |skew| from lock on, us.
    pub p99_us: f64,
    /// Largest |skew| from lock on, us.
    pub max_us: f64,
    /// Mean signed skew from lock on, us (a constant offset between the two).
    pub mean_us: f64,
    /// 99th percentile |skew| over all samples, us.
    pub all_p99_us: f64,
    /// Largest |skew| over all samples, us.
    pub all_max_us: f64,
}

/// The `q` quantile (nearest rank) of `sorted`, or 0.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn abs_sorted_us(s: &[SkewSample]) -> Vec<f64> {
    let mut v: Vec<f64> = s.iter().map(|s| s.skew_ns.abs() / 1e3).collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Summarizes `samples` (in time order); `start_ns` is when the run started.
pub fn summarize(samples: &[SkewSample], start_ns: i64, threshold_ns: f64) -> SkewSummary {
    let lock_index = match samples
        .iter()
        .rposition(|s| s.skew_ns.abs() >= threshold_ns)
    {
        None if !samples.is_empty() => Some(0),
        Some(i) if i + 1 < samples.len() => Some(i + 1),
        _ => None,
    };
    let steady = &samples[lock_index.unwrap_or(0)..];
    let sorted = abs_sorted_us(steady);
    let all = abs_sorted_us(samples);
    SkewSummary {
        samples: samples.len(),
        lock_ms: lock_index.map(|i| (samples[i].realtime_ns - start_ns).max(0) as f64 / 1e6),
        steady_samples: steady.len(),
        p50_us: quantile(&sorted, 0.5),
        p99_us: quantile(&sorted, 0.99),
        max_us: sorted.last().copied().unwrap_or(0.0),
        mean_us: if steady.is_empty() {
            0.0
        } else {
            steady.iter().map(|s| s.skew_ns).sum::<f64>() / steady.len() as f64 / 1e3
        },
        all_p99_us: quantile(&all, 0.99),
        all_max_us: all.last().copied().unwrap_or(0.0),
    }
}

/// The skew of one pair of receivers.
#[derive(Clone, Debug, Serialize)]
pub struct PairSkew {
    /// Index of receiver A (the reference).
    pub a: usize,
    /// Index of receiver B.
    pub b: usize,
    /// Its figures.
    pub summary: SkewSummary,
    /// The samples.
    #[serde(skip)]
    pub samples: Vec<SkewSample>,
}

/// Every pair's skew and the figures over all of them.
#[derive(Clone, Debug, Serialize)]
pub struct SkewAnalysis {
    /// One entry per pair (a < b).
    pub pairs: Vec<PairSkew>,
    /// Steady-state |skew| over every pair: median, us.
    pub skew_p50_us: f64,
    /// Steady-state |skew| over every pair: 99th percentile, us.
    pub skew_p99_us: f64,
    /// Steady-state |skew| over every pair: largest, us.
    pub skew_max_us: f64,
    /// Slowest pair's time to lock, ms (None if a pair never locked).
    pub lock_ms: Option<f64>,
}

/// Analyzes every pair of `logs`.
pub fn analyze(logs: &[DacLog], cfg: &SkewConfig) -> SkewAnalysis {
    let mut pairs = Vec::new();
    let mut steady_all = Vec::new();
    let mut lock_ms = Some(0.0f64);
    for a in 0..logs.len() {
        for b in a + 1..logs.len() {
            let samples = pair_skew(&logs[a], &logs[b], cfg);
            let start = logs[a]
                .start_ns()
                .max(logs[b].start_ns())
                .unwrap_or_default();
            let summary = summarize(&samples, start, cfg.lock_threshold_ns);
            let from = samples.len() - summary.steady_samples;
            steady_all.extend_from_slice(&samples[from..]);
            lock_ms = match (lock_ms, summary.lock_ms) {
                (Some(x), Some(y)) => Some(x.max(y)),
                _ => None,
            };
            pairs.push(PairSkew {
                a,
                b,
                summary,
                samples,
            });
        }
    }
    let sorted = abs_sorted_us(&steady_all);
    SkewAnalysis {
        pairs,
        skew_p50_us: quantile(&sorted, 0.5),
        skew_p99_us: quantile(&sorted, 0.99),
        skew_max_us: sorted.last().copied().unwrap_or(0.0),
        lock_ms: if steady_all.is_empty() { None } else { lock_ms },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 48_000;
    const T0: i64 = 1_700_000_000_000_000_000;

    /// A receiver writing `period` frames at a time from `first_pos`, frame `p` (at the start of
    /// each write) playing at `T0 + offset(p_s) + p / rate` where `p_s` is seconds of stream.
    fn synth(first_pos: f64, period: u32, n: usize, offset_ns: impl Fn(f64) -> f64) -> String {
        let mut s = String::new();
        for i in 0..n {
            let p = first_pos + (i as u64 * u64::from(period)) as f64;
            let secs = p / f64::from(RATE);
            let t = T0 + (secs * 1e9 + offset_ns(secs)).round() as i64;
            s += &format!("{p} {period} {t} {}\n", 5_000 + i as i64);
        }
        s
    }

    #[test]
    fn constant_skew_is_recovered_to_the_nanosecond() {
        let a = DacLog::parse(&synth(0.0, 480, 1000, |_| 0.0)).unwrap();
        // B writes other period sizes at fractional positions, 37 us late.
        let b = DacLog::parse(&synth(100.25, 441, 1100, |_| 37_000.0)).unwrap();
        let s = pair_skew(&a, &b, &SkewConfig::default());
        assert!(s.len() >= 995, "{}", s.len());
        for x in &s {
            assert!((x.skew_ns - 37_000.0).abs() <= 1.0, "{x:?}");
        }
        let an = analyze(&[a, b], &SkewConfig::default());
        assert!((an.skew_p50_us - 37.0).abs() < 0.002);
        assert!((an.skew_max_us - 37.0).abs() < 0.002);
        // Locked from the first common position (A's write at 480, 10 ms), counted from B's first
        // line (100.25 frames + 37 us).
        let lock = an.pairs[0].summary.lock_ms.unwrap();
        assert!(
            (lock - (10.0 - 100.25 / 48.0 - 0.037)).abs() < 1e-6,
            "{lock}"
        );
        assert!((an.pairs[0].summary.mean_us - 37.0).abs() < 0.002);
    }

    #[test]
    fn skew_with_drift_is_recovered() {
        // B is 37 us late and its clock runs 20 ppm slow: skew grows 20 us per second.
        let drift = |secs: f64| 37_000.0 + secs * 20e-6 * 1e9;
        let a = DacLog::parse(&synth(0.0, 480, 1000, |_| 0.0)).unwrap();
        let b = DacLog::parse(&synth(7.5, 256, 1900, drift)).unwrap();
        let s = pair_skew(&a, &b, &SkewConfig::default());
        assert!(s.len() >= 1000 - 1);
        // Inside one of B's writes frames are at the nominal rate: the drift within a write
        // (256 frames = 5.3 ms -> 107 ns) is the most the samples can differ from the truth.
        for x in &s {
            let want = drift(x.position / f64::from(RATE));
            assert!((x.skew_ns - want).abs() <= 108.0, "{x:?} want {want}");
        }
        let last = s.last().unwrap();
        assert!(last.skew_ns > 37_000.0 + 190.0);
    }

    #[test]
    fn lock_time_is_when_skew_stays_under_threshold() {
        // 2 ms apart for 1.5 s, then 30 us.
        let a = DacLog::parse(&synth(0.0, 480, 500, |_| 0.0)).unwrap();
        let b = DacLog::parse(&synth(0.0, 480, 500, |s| if s < 1.5 { 2e6 } else { 30e3 })).unwrap();
        let an = analyze(&[a, b], &SkewConfig::default());
        let p = &an.pairs[0].summary;
        // Counted from the later first line: B's, 2 ms late.
        assert_eq!(p.lock_ms, Some(1498.0));
        assert!((p.p99_us - 30.0).abs() < 0.01 && (p.max_us - 30.0).abs() < 0.01);
        assert!((p.all_max_us - 2000.0).abs() < 0.01);
        assert_eq!(an.lock_ms, Some(1498.0));
    }

    #[test]
    fn never_locked_is_none() {
        let a = DacLog::parse(&synth(0.0, 480, 100, |_| 0.0)).unwrap();
        let b = DacLog::parse(&synth(0.0, 480, 100, |_| 150e3)).unwrap();
        let an = analyze(&[a, b], &SkewConfig::default());
        assert_eq!(an.lock_ms, None);
        assert!((an.skew_p50_us - 150.0).abs() < 0.01);
    }

    #[test]
    fn silence_is_skipped_and_restarted_streams_match_by_time() {
        // Two runs of the same positions 10 s apart (a restarted stream), silence between.
        let mut a = synth(0.0, 480, 200, |_| 0.0);
        let mut b = synth(0.0, 480, 200, |_| 12_000.0);
        a += &format!("-1 480 {} 1\n", T0 + 5_000_000_000);
        b += &format!("-1 480 {} 1\n", T0 + 5_000_000_000);
        a += &synth(0.0, 480, 200, |_| 10e9);
        b += &synth(0.0, 480, 200, |_| 10e9 - 25_000.0);
        let a = DacLog::parse(&a).unwrap();
        let b = DacLog::parse(&b).unwrap();
        assert_eq!(a.frame_counts(), (400 * 480, 480));
        let s = pair_skew(&a, &b, &SkewConfig::default());
        assert_eq!(s.len(), 400);
        assert!(s[..200].iter().all(|x| (x.skew_ns - 12_000.0).abs() <= 1.0));
        assert!(s[200..].iter().all(|x| (x.skew_ns + 25_000.0).abs() <= 1.0));
    }

    #[test]
    fn three_receivers_make_three_pairs() {
        let logs: Vec<DacLog> = [0.0, 10e3, -20e3]
            .iter()
            .map(|&o| DacLog::parse(&synth(0.0, 480, 300, move |_| o)).unwrap())
            .collect();
        let an = analyze(&logs, &SkewConfig::default());
        let means: Vec<(usize, usize, i64)> = an
            .pairs
            .iter()
            .map(|p| (p.a, p.b, p.summary.mean_us.round() as i64))
            .collect();
        assert_eq!(means, vec![(0, 1, 10), (0, 2, -20), (1, 2, -30)]);
        assert!((an.skew_max_us - 30.0).abs() < 0.01);
    }

    #[test]
    fn bad_lines_are_typed_errors() {
        let e = DacLog::parse("0 480 1 2\nx 480 1 2\n").unwrap_err();
        assert!(matches!(e, LogError::Parse { line: 2, .. }), "{e}");
        let e = DacLog::parse("0 480 1\n").unwrap_err();
        assert!(matches!(
            e,
            LogError::Parse {
                line: 1,
                reason: "expected 4 fields",
                ..
            }
        ));
        let e = DacLog::parse("-2 480 1 2\n").unwrap_err();
        assert!(matches!(e, LogError::Parse { line: 1, .. }));
        let e = DacLog::parse("5 -480 1 2\n").unwrap_err();
        assert!(matches!(
            e,
            LogError::Parse {
                reason: "bad frame count",
                ..
            }
        ));
        assert!(DacLog::parse("# comment\n\n").unwrap().writes.is_empty());
    }
}
