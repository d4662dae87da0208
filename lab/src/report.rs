//! The lab run's result: one Markdown table for people, one JSON line for machines (keys as in
//! issue 6).

use crate::analyze::SkewAnalysis;
use crate::relay::RelayReport;
use serde::Serialize;
use std::collections::BTreeMap;

/// A peer's figures, measured the same black-box way.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PeerFigures {
    /// Black-box skew p99 between its two receivers, us.
    pub blackbox_skew_p99_us: Option<f64>,
    /// Mean receiver CPU, percent of a core.
    pub rx_cpu_pct: Option<f64>,
    /// Largest receiver peak RSS, KiB.
    pub rx_rss_kib: Option<u64>,
    /// Its configured latency (buffer), ms.
    pub latency_ms: Option<f64>,
    /// Black-box skew median, us.
    pub blackbox_skew_p50_us: Option<f64>,
    /// Black-box skew, largest, us.
    pub blackbox_skew_max_us: Option<f64>,
    /// Its server's (master's) CPU, percent of a core.
    pub tx_cpu_pct: Option<f64>,
    /// Its server's (master's) peak RSS, KiB.
    pub tx_rss_kib: Option<u64>,
}

fn num<T: std::str::FromStr>(x: &str) -> Option<Option<T>> {
    if x == "-" || x.is_empty() {
        Some(None)
    } else {
        x.parse().ok().map(Some)
    }
}

impl PeerFigures {
    /// Parses `P99:CPU:RSS:LATENCY[:P50:MAX:TX_CPU:TX_RSS]` (each a number or `-`).
    pub fn parse(s: &str) -> Option<PeerFigures> {
        let f: Vec<&str> = s.split(':').collect();
        let (p, c, r, l, rest) = match f.as_slice() {
            [p, c, r, l] => (p, c, r, l, None),
            [p, c, r, l, p50, max, tc, tr] => (p, c, r, l, Some((p50, max, tc, tr))),
            _ => return None,
        };
        let mut figs = PeerFigures {
            blackbox_skew_p99_us: num(p)?,
            rx_cpu_pct: num(c)?,
            rx_rss_kib: num(r)?,
            latency_ms: num(l)?,
            ..Default::default()
        };
        if let Some((p50, max, tc, tr)) = rest {
            figs.blackbox_skew_p50_us = num(p50)?;
            figs.blackbox_skew_max_us = num(max)?;
            figs.tx_cpu_pct = num(tc)?;
            figs.tx_rss_kib = num(tr)?;
        }
        Some(figs)
    }
}

/// Parses `CPU_PCT:RSS_KIB`.
pub fn parse_usage(s: &str) -> Option<Usage> {
    let (c, r) = s.split_once(':')?;
    Some(Usage {
        cpu_pct: c.parse().ok()?,
        rss_kib: r.parse().ok()?,
    })
}

/// CPU and memory of one process over the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Usage {
    /// CPU time / wall time, percent of one core.
    pub cpu_pct: f64,
    /// Peak resident set, KiB.
    pub rss_kib: u64,
}

/// Figures of one run of our system.
#[derive(Clone, Debug, Serialize)]
pub struct LabReport {
    /// Impairment profile.
    pub profile: String,
    /// Receivers.
    pub receivers: usize,
    /// Steady-state inter-receiver |skew|, median, us.
    pub skew_p50_us: Option<f64>,
    /// Steady-state inter-receiver |skew|, 99th percentile, us.
    pub skew_p99_us: Option<f64>,
    /// Steady-state inter-receiver |skew|, largest, us.
    pub skew_max_us: Option<f64>,
    /// Slowest pair's time to lock, ms.
    pub lock_ms: Option<f64>,
    /// End-to-end latency, ms (the configured latency unless measured).
    pub latency_ms: Option<f64>,
    /// Frames concealed, all receivers.
    pub concealed_frames: Option<u64>,
    /// Mean receiver CPU, percent of a core.
    pub rx_cpu_pct: Option<f64>,
    /// Largest receiver peak RSS, KiB.
    pub rx_rss_kib: Option<u64>,
    /// Black-box (recorded audio) skew p99, us.
    pub blackbox_skew_p99_us: Option<f64>,
    /// The master's (wavesync-sender's, or the stand-in's) CPU, percent of a core.
    pub tx_cpu_pct: Option<f64>,
    /// The master's peak RSS, KiB.
    pub tx_rss_kib: Option<u64>,
    /// Packets the receivers found missing, all receivers.
    pub lost_packets: Option<u64>,
    /// Missing packets that arrived after all (resent or reordered), all receivers.
    pub recovered_packets: Option<u64>,
    /// Packets that came too late to play, all receivers.
    pub late_packets: Option<u64>,
    /// Which master played: `sender` (wavesync-sender; reports from before it had a WAV input
    /// may say `lab`, the stand-in master since removed).
    pub master: Option<String>,
    /// Receivers' error against the master's stamps, worst receiver's p99 |error|, us.
    pub stamp_error_p99_us: Option<f64>,
    /// Receivers' error against the master's stamps, largest |error|, us.
    pub stamp_error_max_us: Option<f64>,
    /// Peers measured in the same run (only with `--peers`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers: Option<BTreeMap<String, PeerFigures>>,
}

/// Counters read from the receivers' status sockets (JSON, see `receiver/src/status.rs`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RxCounters {
    /// Frames concealed.
    pub concealed_frames: u64,
    /// Packets found missing.
    pub lost: u64,
    /// Missing packets that arrived after all.
    pub recovered: u64,
    /// Packets too late to play.
    pub late: u64,
}

impl RxCounters {
    /// Reads the counters from a receiver's status JSON; absent fields count as 0.
    pub fn from_status_json(text: &str) -> Result<RxCounters, serde_json::Error> {
        let v: serde_json::Value = serde_json::from_str(text)?;
        let n = |k: &str| v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
        Ok(RxCounters {
            concealed_frames: n("concealed_frames"),
            lost: n("lost"),
            recovered: n("recovered"),
            late: n("late"),
        })
    }
}

impl LabReport {
    /// Puts the figures together. `skew` is None when there were fewer than two logs.
    pub fn new(
        profile: &str,
        receivers: usize,
        skew: Option<&SkewAnalysis>,
        usage: &[Usage],
        latency_ms: Option<f64>,
    ) -> Self {
        let has_samples = skew.is_some_and(|s| s.pairs.iter().any(|p| p.summary.samples > 0));
        let sk = skew.filter(|_| has_samples);
        LabReport {
            profile: profile.to_string(),
            receivers,
            skew_p50_us: sk.map(|s| s.skew_p50_us),
            skew_p99_us: sk.map(|s| s.skew_p99_us),
            skew_max_us: sk.map(|s| s.skew_max_us),
            lock_ms: sk.and_then(|s| s.lock_ms),
            latency_ms,
            concealed_frames: None,
            rx_cpu_pct: (!usage.is_empty())
                .then(|| usage.iter().map(|u| u.cpu_pct).sum::<f64>() / usage.len() as f64),
            rx_rss_kib: usage.iter().map(|u| u.rss_kib).max(),
            blackbox_skew_p99_us: None,
            tx_cpu_pct: None,
            tx_rss_kib: None,
            lost_packets: None,
            recovered_packets: None,
            late_packets: None,
            master: None,
            stamp_error_p99_us: None,
            stamp_error_max_us: None,
            peers: None,
        }
    }

    /// Adds the receivers' errors against the stamps; the latency becomes the measured one
    /// (configured latency + mean error over the receivers).
    pub fn set_stamp_errors(&mut self, rx: &[crate::stamps::StampSummary]) {
        let judged: Vec<_> = rx.iter().filter(|s| s.samples > 0).collect();
        if judged.is_empty() {
            return;
        }
        self.stamp_error_p99_us = judged.iter().map(|s| s.p99_us).reduce(f64::max);
        self.stamp_error_max_us = judged.iter().map(|s| s.max_us).reduce(f64::max);
        let mean_ms = judged.iter().map(|s| s.mean_us).sum::<f64>() / judged.len() as f64 / 1e3;
        self.latency_ms = self.latency_ms.map(|l| l + mean_ms);
    }

    /// Adds the receivers' counters (summed).
    pub fn set_counters(&mut self, rx: &[RxCounters]) {
        if rx.is_empty() {
            return;
        }
        self.concealed_frames = Some(rx.iter().map(|r| r.concealed_frames).sum());
        self.lost_packets = Some(rx.iter().map(|r| r.lost).sum());
        self.recovered_packets = Some(rx.iter().map(|r| r.recovered).sum());
        self.late_packets = Some(rx.iter().map(|r| r.late).sum());
    }

    /// The table: one row per system.
    pub fn markdown(&self) -> String {
        let f = |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |v| format!("{v:.prec$}"));
        let mut s = String::new();
        let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        s += "| system | profile | receivers | skew p50 us | skew p99 us | skew max us | lock ms | latency ms | concealed frames | lost / recovered / late packets | rx CPU % | rx RSS KiB | black-box skew p99 us | master CPU % | master RSS KiB |\n";
        s += "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
        let system = match self.master.as_deref() {
            Some("lab") => "WaveSync (lab master)",
            _ => "WaveSync",
        };
        s += &format!(
            "| {system} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} / {} | {} | {} | {} | {} | {} |\n",
            self.profile,
            self.receivers,
            f(self.skew_p50_us, 1),
            f(self.skew_p99_us, 1),
            f(self.skew_max_us, 1),
            f(self.lock_ms, 0),
            f(self.latency_ms, 1),
            opt(self.concealed_frames),
            opt(self.lost_packets),
            opt(self.recovered_packets),
            opt(self.late_packets),
            f(self.rx_cpu_pct, 2),
            self.rx_rss_kib.map_or("-".into(), |r| r.to_string()),
            f(self.blackbox_skew_p99_us, 1),
            f(self.tx_cpu_pct, 2),
            opt(self.tx_rss_kib),
        );
        // A peer's skew columns are black-box (recorded audio): it has no logs of ours.
        for (name, p) in self.peers.iter().flatten() {
            s += &format!(
                "| {name} (black-box) | {} | 2 | {} | {} | {} | - | {} | - | - | {} | {} | {} | {} | {} |\n",
                self.profile,
                f(p.blackbox_skew_p50_us, 1),
                f(p.blackbox_skew_p99_us, 1),
                f(p.blackbox_skew_max_us, 1),
                f(p.latency_ms, 1),
                f(p.rx_cpu_pct, 2),
                opt(p.rx_rss_kib),
                f(p.blackbox_skew_p99_us, 1),
                f(p.tx_cpu_pct, 2),
                opt(p.tx_rss_kib),
            );
        }
        s
    }
}

/// A table of what the relays did, one row per relay and direction.
pub fn relay_markdown(relays: &[(String, RelayReport)]) -> String {
    let mut s = String::new();
    s += "| relay | direction | packets | lost % | burst losses | reordered | duplicated | delay p50 us | delay p99 us | late p99 us |\n";
    s += "|---|---|---|---|---|---|---|---|---|---|\n";
    for (name, r) in relays {
        for (dir, d) in [("forward", &r.forward), ("reverse", &r.reverse)] {
            if d.received == 0 {
                continue;
            }
            s += &format!(
                "| {name} | {dir} | {} | {:.2} | {} | {} | {} | {:.0} | {:.0} | {:.0} |\n",
                d.received,
                d.loss_pct,
                d.dropped_in_burst,
                d.reordered,
                d.duplicated,
                d.delay_p50_us,
                d.delay_p99_us,
                r.lateness_p99_us
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::{analyze, DacLog, SkewConfig};

    #[test]
    fn json_has_the_issue_keys_and_nulls_for_unknowns() {
        let a = DacLog::parse("0 480 1000000000 1\n480 480 1010000000 2\n").unwrap();
        let b = DacLog::parse("0 480 1000020000 1\n480 480 1010020000 2\n").unwrap();
        let an = analyze(&[a, b], &SkewConfig::default());
        let usage = [
            Usage {
                cpu_pct: 1.0,
                rss_kib: 3000,
            },
            Usage {
                cpu_pct: 3.0,
                rss_kib: 4000,
            },
        ];
        let r = LabReport::new("wired", 2, Some(&an), &usage, Some(20.0));
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        for k in [
            "profile",
            "receivers",
            "skew_p50_us",
            "skew_p99_us",
            "skew_max_us",
            "lock_ms",
            "latency_ms",
            "concealed_frames",
            "rx_cpu_pct",
            "rx_rss_kib",
            "blackbox_skew_p99_us",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        assert_eq!(v["skew_p99_us"], 20.0);
        assert_eq!(v["rx_cpu_pct"], 2.0);
        assert_eq!(v["rx_rss_kib"], 4000);
        assert!(v["concealed_frames"].is_null());
        assert!(r.markdown().contains("| WaveSync | wired | 2 | 20.0 |"));
        let mut r = r;
        let c = RxCounters::from_status_json(
            r#"{"state":"playing","concealed_frames":480,"lost":3,"recovered":2,"late":1}"#,
        )
        .unwrap();
        r.set_counters(&[c, RxCounters::default()]);
        assert_eq!(r.concealed_frames, Some(480));
        assert!(
            r.markdown().contains("| 480 | 3 / 2 / 1 |"),
            "{}",
            r.markdown()
        );
        assert!(RxCounters::from_status_json("not json").is_err());
        assert!(serde_json::to_value(&r).unwrap().get("peers").is_none());
        let snap = PeerFigures::parse("812.5:3.1:-:1000").unwrap();
        assert_eq!(snap.rx_rss_kib, None);
        assert_eq!(snap.latency_ms, Some(1000.0));
        assert!(PeerFigures::parse("1:2:3").is_none() && PeerFigures::parse("x:1:2:3").is_none());
        let py = PeerFigures::parse("9000:4.5:30000:150:4000:12000:2.5:20000").unwrap();
        assert_eq!(py.blackbox_skew_p50_us, Some(4000.0));
        assert_eq!(py.blackbox_skew_max_us, Some(12000.0));
        assert_eq!(py.tx_cpu_pct, Some(2.5));
        assert_eq!(py.tx_rss_kib, Some(20000));
        assert!(PeerFigures::parse("1:2:3:4:5").is_none());
        assert!(PeerFigures::parse("1:2:3:4:5:6:x:8").is_none());
        r.peers = Some(
            [
                ("snapcast".to_string(), snap),
                ("wavesync-py".to_string(), py),
            ]
            .into_iter()
            .collect(),
        );
        r.tx_cpu_pct = Some(1.25);
        r.tx_rss_kib = Some(5000);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["peers"]["snapcast"]["blackbox_skew_p99_us"], 812.5);
        assert_eq!(v["peers"]["wavesync-py"]["rx_rss_kib"], 30000);
        assert_eq!(v["tx_cpu_pct"], 1.25);
        let md = r.markdown();
        assert!(
            md.contains("| snapcast (black-box) | wired | 2 | - | 812.5 | - |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| wavesync-py (black-box) | wired | 2 | 4000.0 | 9000.0 | 12000.0 | - | 150.0 |"
            ),
            "{md}"
        );
        assert!(md.contains("| 1.25 | 5000 |\n"), "{md}");
        assert_eq!(
            parse_usage("3.5:6000"),
            Some(Usage {
                cpu_pct: 3.5,
                rss_kib: 6000
            })
        );
        assert_eq!(parse_usage("3.5"), None);
        let none = LabReport::new("wifi", 2, None, &[], None);
        assert!(serde_json::to_value(&none).unwrap()["skew_p99_us"].is_null());
    }
}
