//! Each receiver's error against the master's stamps, from what crossed the wire.
//!
//! The data relay sees every audio packet before impairing it. An [`AnchorLog`] records, for
//! every run of the stream (the first packet heard, a marker bit, a new stream id, or stamps that
//! depart from the run's prediction), one anchor line:
//! `<ssrc> <rtp_ts> <play_time_ns> <realtime_minus_monotonic_ns>`: stream frame `rtp_ts` must
//! leave the DAC at `play_time` on the master's timeline. In the lab the master and the relay
//! both run in the root time namespace, so the timeline (the master's CLOCK_MONOTONIC) maps to
//! CLOCK_REALTIME with the offset the relay reads from its own clocks; inside a run, frame `p`
//! is due `(p - rtp_ts) / rate` after the anchor. A receiver's error at a write of its virtual
//! DAC is then `played_realtime - due_realtime` (positive: late): the whole chain, clock sync
//! included, judged against the sender's intent, independent of what the receiver reports.

use crate::analyze::{quantile, DacLog};
use serde::Serialize;
use std::io::Write;
use wavesync_common::wire::rtp::AudioPacket;

use wavesync_net::clock::realtime_minus_monotonic_ns;

/// One run's anchor; see the module doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Anchor {
    /// Stream id.
    pub ssrc: u32,
    /// RTP timestamp (stream frame index) of the anchored frame.
    pub ts: u32,
    /// When that frame must leave the DAC, master's timeline (CLOCK_MONOTONIC), ns.
    pub play_time_ns: i64,
    /// CLOCK_REALTIME - CLOCK_MONOTONIC on the master's host, ns.
    pub realtime_offset_ns: i64,
}

/// Writes anchors for the audio packets it is shown; see the module doc.
pub struct AnchorLog<W: Write> {
    out: W,
    rate: u32,
    last: Option<Anchor>,
    offset_ns: i64,
}

impl<W: Write> AnchorLog<W> {
    /// Anchors of a stream at `rate` Hz go to `out`, one line each (flushed at once).
    pub fn new(out: W, rate: u32) -> Self {
        AnchorLog {
            out,
            rate,
            last: None,
            offset_ns: realtime_minus_monotonic_ns(),
        }
    }

    /// For a stream whose timeline is CLOCK_REALTIME itself (clock domains `system` and
    /// `ntp` in the lab, where the NTP server serves this host's clock): no offset to add.
    pub fn on_realtime_timeline(mut self) -> Self {
        self.offset_ns = 0;
        self
    }

    /// Looks at one datagram; non-audio datagrams are ignored. Returns the anchor written, if
    /// one was.
    pub fn observe(&mut self, datagram: &[u8]) -> std::io::Result<Option<Anchor>> {
        let Ok(p) = AudioPacket::decode(datagram) else {
            return Ok(None);
        };
        let new_run = match self.last {
            None => true,
            Some(a) if a.ssrc != p.ssrc || p.marker => true,
            Some(a) => {
                let rel = p.timestamp.wrapping_sub(a.ts) as i32 as i64;
                let predicted = a.play_time_ns + rel * 1_000_000_000 / i64::from(self.rate);
                (p.play_time.ns() - predicted).abs() > 1_000
            }
        };
        if !new_run {
            return Ok(None);
        }
        let a = Anchor {
            ssrc: p.ssrc,
            ts: p.timestamp,
            play_time_ns: p.play_time.ns(),
            realtime_offset_ns: self.offset_ns,
        };
        writeln!(
            self.out,
            "{:08x} {} {} {}",
            a.ssrc, a.ts, a.play_time_ns, a.realtime_offset_ns
        )?;
        self.out.flush()?;
        self.last = Some(a);
        Ok(Some(a))
    }
}

/// A line of an anchors file that is not four numbers.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("anchors line {line}: {text:?}")]
pub struct AnchorParseError {
    /// 1-based line number.
    pub line: usize,
    /// The line.
    pub text: String,
}

/// Parses an anchors file.
pub fn parse_anchors(text: &str) -> Result<Vec<Anchor>, AnchorParseError> {
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let err = || AnchorParseError {
            line: i + 1,
            text: l.to_string(),
        };
        let f: Vec<&str> = l.split_whitespace().collect();
        let [ssrc, ts, play, off] = f.as_slice() else {
            return Err(err());
        };
        out.push(Anchor {
            ssrc: u32::from_str_radix(ssrc, 16).map_err(|_| err())?,
            ts: ts.parse().map_err(|_| err())?,
            play_time_ns: play.parse().map_err(|_| err())?,
            realtime_offset_ns: off.parse().map_err(|_| err())?,
        });
    }
    Ok(out)
}

/// A receiver's error at one write: played minus due, ns (positive: late).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct StampError {
    /// When it played, CLOCK_REALTIME ns.
    pub realtime_ns: i64,
    /// Played minus due, ns.
    pub error_ns: f64,
}

/// The error of every non-silent write of `log` against the anchor that explains it best (the
/// one whose due time is nearest the play time; runs are far apart, errors small).
pub fn stamp_errors(log: &DacLog, anchors: &[Anchor], rate: u32) -> Vec<StampError> {
    let mut out = Vec::new();
    for w in &log.writes {
        let Some(p) = w.position else { continue };
        let whole = p.floor();
        let best = anchors
            .iter()
            .map(|a| {
                let rel = (whole as i64 as u32).wrapping_sub(a.ts) as i32 as f64 + (p - whole);
                let due_rel_ns = (a.play_time_ns + a.realtime_offset_ns - w.realtime_ns) as f64
                    + rel * 1e9 / f64::from(rate);
                // played - due
                -due_rel_ns
            })
            .min_by(|x, y| x.abs().total_cmp(&y.abs()));
        if let Some(e) = best {
            out.push(StampError {
                realtime_ns: w.realtime_ns,
                error_ns: e,
            });
        }
    }
    out
}

/// Figures of one receiver's errors.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StampSummary {
    /// Writes judged.
    pub samples: usize,
    /// Mean signed error, us (positive: late).
    pub mean_us: f64,
    /// Median |error|, us.
    pub p50_us: f64,
    /// 99th percentile |error|, us.
    pub p99_us: f64,
    /// Largest |error|, us.
    pub max_us: f64,
}

/// Summarizes the errors from `skip_ns` after the first one on (the start-up is lock time's
/// business).
pub fn summarize(errors: &[StampError], skip_ns: i64) -> StampSummary {
    let Some(first) = errors.first() else {
        return StampSummary::default();
    };
    let kept: Vec<f64> = errors
        .iter()
        .filter(|e| e.realtime_ns - first.realtime_ns >= skip_ns)
        .map(|e| e.error_ns / 1e3)
        .collect();
    let mut abs: Vec<f64> = kept.iter().map(|e| e.abs()).collect();
    abs.sort_by(f64::total_cmp);
    StampSummary {
        samples: kept.len(),
        mean_us: if kept.is_empty() {
            0.0
        } else {
            kept.iter().sum::<f64>() / kept.len() as f64
        },
        p50_us: quantile(&abs, 0.5),
        p99_us: quantile(&abs, 0.99),
        max_us: abs.last().copied().unwrap_or(0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wavesync_common::format::SampleFormat;
    use wavesync_common::time::TimelineNs;

    fn packet(marker: bool, ssrc: u32, ts: u32, play_time: i64) -> Vec<u8> {
        let payload = [0u8; 16];
        let p = AudioPacket {
            marker,
            format: SampleFormat::L16,
            seq: 1,
            timestamp: ts,
            ssrc,
            play_time: TimelineNs::from_ns(play_time),
            payload: &payload,
        };
        let mut buf = vec![0u8; 100];
        let n = p.encode(&mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn a_realtime_timeline_needs_no_offset() {
        let mut log = AnchorLog::new(Vec::new(), 48_000).on_realtime_timeline();
        let a = log
            .observe(&packet(true, 7, 0, 5_000_000_000))
            .unwrap()
            .expect("an anchor");
        assert_eq!(a.realtime_offset_ns, 0);
        assert_eq!(a.play_time_ns, 5_000_000_000);
    }

    #[test]
    fn anchors_are_written_per_run_only() {
        let mut log = AnchorLog::new(Vec::new(), 48_000);
        log.offset_ns = 1_000;
        assert!(log.observe(b"not audio").unwrap().is_none());
        // First packet: anchor. Same run, consistent stamps: none.
        assert!(log
            .observe(&packet(true, 7, 0, 5_000_000_000))
            .unwrap()
            .is_some());
        assert!(log
            .observe(&packet(false, 7, 480, 5_010_000_000))
            .unwrap()
            .is_none());
        // Stamps depart from the run (a resync without the marker seen): anchor.
        assert!(log
            .observe(&packet(false, 7, 960, 5_030_000_000))
            .unwrap()
            .is_some());
        // New stream id: anchor.
        assert!(log
            .observe(&packet(false, 8, 0, 9_000_000_000))
            .unwrap()
            .is_some());
        let text = String::from_utf8(log.out.clone()).unwrap();
        let anchors = parse_anchors(&text).unwrap();
        assert_eq!(anchors.len(), 3);
        assert_eq!(
            anchors[1],
            Anchor {
                ssrc: 7,
                ts: 960,
                play_time_ns: 5_030_000_000,
                realtime_offset_ns: 1_000
            }
        );
        assert!(parse_anchors("1 2 3\n").is_err());
    }

    #[test]
    fn errors_against_stamps_are_recovered() {
        // Frame 0 due at monotonic 5 s = realtime 5 s + 1e18 ns; a receiver playing 30 us late
        // with 480-frame writes from position 240.
        let off = 1_000_000_000_000_000_000;
        let anchors = [Anchor {
            ssrc: 1,
            ts: 0,
            play_time_ns: 5_000_000_000,
            realtime_offset_ns: off,
        }];
        let mut text = String::new();
        for i in 0..100i64 {
            let p = 240 + i * 480;
            let rt = off + 5_000_000_000 + p * 1_000_000_000 / 48_000 + 30_000;
            text += &format!("{p} 480 {rt} 0\n");
        }
        let log = DacLog::parse(&text).unwrap();
        let e = stamp_errors(&log, &anchors, 48_000);
        assert_eq!(e.len(), 100);
        assert!(
            e.iter().all(|x| (x.error_ns - 30_000.0).abs() < 1.0),
            "{e:?}"
        );
        let s = summarize(&e, 0);
        assert!((s.mean_us - 30.0).abs() < 0.001 && (s.max_us - 30.0).abs() < 0.001);
        // A second run 2 s later with other stamps: each write is judged by its own run.
        let anchors2 = [
            anchors[0],
            Anchor {
                ssrc: 2,
                ts: 0,
                play_time_ns: 20_000_000_000,
                realtime_offset_ns: off,
            },
        ];
        let late = DacLog::parse(&format!("480 480 {} 0\n", off + 20_010_000_000 - 5_000)).unwrap();
        let e = stamp_errors(&late, &anchors2, 48_000);
        assert!((e[0].error_ns + 5_000.0).abs() < 1.0, "{e:?}");
    }
}
