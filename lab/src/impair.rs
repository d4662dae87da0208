//! Network impairment, sans-I/O: what a link does to each packet.
//!
//! An [`Impairment`] is one direction of one link. For every packet the caller says when it
//! arrived (`now`, nanoseconds on any monotonic clock) and gets a [`Verdict`]: drop it, or
//! deliver it at an instant (and maybe a second copy). It owns a seeded RNG, so a run is
//! reproducible from its seed and the packets' arrival times.
//!
//! The model, per direction ([`LinkProfile`]):
//! - **delay**: a fixed one-way delay plus a heavy-tailed jitter (log-normal with a given median
//!   and shape, capped). Like a real queue the link keeps order: a packet never overtakes the one
//!   before it because of jitter alone (its delivery is pushed to the previous one's instant);
//! - **reordering**: with probability `reorder`, a packet leaving the queue is held back by an
//!   extra `reorder_hold` delay, so the packets after it overtake it (and it overtakes none);
//! - **duplication**: with probability `duplicate`, a second copy follows within `dup_gap`;
//! - **loss**: a Gilbert-Elliott model in continuous time: the link alternates between a good
//!   and a bad state (exponentially distributed stays with the given means) and loses packets
//!   with a per-state probability. With no bad state it is plain random loss.

use crate::histogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use serde::Serialize;

/// Nanoseconds in one millisecond.
const MS: i64 = 1_000_000;
/// Nanoseconds in one microsecond.
const US: i64 = 1_000;
/// The standard normal quantile at 0.99.
const Z99: f64 = 2.326_347_874;

/// What went wrong building a profile.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ImpairError {
    /// The profile name is not one of `wired`, `wifi`, `bad`, `none`.
    #[error("unknown profile {0:?} (known: none, wired, wifi, bad)")]
    UnknownProfile(String),
    /// A probability or percentage is outside its range.
    #[error("{what} = {value} is out of range {range}")]
    OutOfRange {
        /// Which parameter.
        what: &'static str,
        /// The value given.
        value: f64,
        /// The allowed range, for the message.
        range: &'static str,
    },
}

/// Heavy-tailed jitter: log-normal with median `median_ns` and shape `sigma`, capped at
/// `max_ns`. `median_ns == 0` means no jitter.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Jitter {
    /// Median of the jitter added to the base delay, ns.
    pub median_ns: i64,
    /// Shape of the log-normal (standard deviation of the log); 1.0 gives p99 ~ 10 x median.
    pub sigma: f64,
    /// Cap on one packet's jitter, ns.
    pub max_ns: i64,
}

impl Jitter {
    /// The jitter's 99th percentile before the cap, ns.
    pub fn p99_ns(&self) -> f64 {
        self.median_ns as f64 * (Z99 * self.sigma).exp()
    }
}

/// Gilbert-Elliott loss in continuous time; see the module doc.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LossModel {
    /// Probability of losing a packet in the good state.
    pub loss_good: f64,
    /// Probability of losing a packet in the bad state.
    pub loss_bad: f64,
    /// Mean stay in the good state, ns.
    pub mean_good_ns: i64,
    /// Mean stay in the bad state, ns; 0 = no bad state (random loss only).
    pub mean_bad_ns: i64,
}

impl LossModel {
    /// No loss at all.
    pub const NONE: LossModel = LossModel {
        loss_good: 0.0,
        loss_bad: 0.0,
        mean_good_ns: 0,
        mean_bad_ns: 0,
    };

    /// Independent random loss with probability `p`.
    pub fn random(p: f64) -> LossModel {
        LossModel {
            loss_good: p,
            ..LossModel::NONE
        }
    }

    /// Bursts only: a fraction `p` of the time the link is in a bad state that loses
    /// everything, for `mean_burst_ns` on average; nothing is lost outside bursts.
    pub fn bursts(p: f64, mean_burst_ns: i64) -> LossModel {
        if p <= 0.0 || mean_burst_ns <= 0 {
            return LossModel::random(p.max(0.0));
        }
        let p = p.min(0.999);
        LossModel {
            loss_good: 0.0,
            loss_bad: 1.0,
            mean_good_ns: (mean_burst_ns as f64 * (1.0 - p) / p).round() as i64,
            mean_bad_ns: mean_burst_ns,
        }
    }

    /// Long-run fraction of time in the bad state.
    pub fn bad_fraction(&self) -> f64 {
        if self.mean_bad_ns <= 0 {
            return 0.0;
        }
        self.mean_bad_ns as f64 / (self.mean_bad_ns + self.mean_good_ns.max(0)) as f64
    }

    /// Long-run fraction of packets lost.
    pub fn mean_loss(&self) -> f64 {
        let b = self.bad_fraction();
        b * self.loss_bad + (1.0 - b) * self.loss_good
    }
}

/// What one direction of a link does; see the module doc.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LinkProfile {
    /// Fixed one-way delay, ns.
    pub base_delay_ns: i64,
    /// Jitter on top of it.
    pub jitter: Jitter,
    /// Loss model.
    pub loss: LossModel,
    /// Probability that a packet is duplicated.
    pub duplicate: f64,
    /// Largest gap between a packet and its duplicate, ns (uniform in 0..=dup_gap_ns).
    pub dup_gap_ns: i64,
    /// Probability that a packet is held back (reordered).
    pub reorder: f64,
    /// Range of the extra hold of a reordered packet, ns (uniform).
    pub reorder_hold_ns: (i64, i64),
}

impl LinkProfile {
    /// A perfect link: no delay, no loss.
    pub const PERFECT: LinkProfile = LinkProfile {
        base_delay_ns: 0,
        jitter: Jitter {
            median_ns: 0,
            sigma: 0.0,
            max_ns: 0,
        },
        loss: LossModel::NONE,
        duplicate: 0.0,
        dup_gap_ns: 0,
        reorder: 0.0,
        reorder_hold_ns: (0, 0),
    };
}

/// Explicit changes to a named profile, applied to both directions (command-line options).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Overrides {
    /// Long-run loss in percent (random, or in bursts with `burst_ms`).
    pub loss_pct: Option<f64>,
    /// Mean burst length in ms: losses come in bursts that lose everything.
    pub burst_ms: Option<f64>,
    /// Jitter p99 in ms (the shape of the profile's tail is kept).
    pub jitter_ms: Option<f64>,
    /// Fixed one-way delay in ms.
    pub delay_ms: Option<f64>,
    /// Percent of packets held back (reordered).
    pub reorder_pct: Option<f64>,
    /// Percent of packets duplicated.
    pub duplicate_pct: Option<f64>,
}

/// A named pair of link profiles: `forward` (client -> server, or master -> receivers) and
/// `reverse` (the replies).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Profile {
    /// Name for reports (`wired`, `wifi`, `bad`, `none`, with `+overrides` when changed).
    pub name: String,
    /// Client -> server direction.
    pub forward: LinkProfile,
    /// Server -> client direction.
    pub reverse: LinkProfile,
}

fn pct(what: &'static str, v: f64) -> Result<f64, ImpairError> {
    if (0.0..=100.0).contains(&v) {
        Ok(v / 100.0)
    } else {
        Err(ImpairError::OutOfRange {
            what,
            value: v,
            range: "0..=100",
        })
    }
}

fn non_negative(what: &'static str, v: f64) -> Result<f64, ImpairError> {
    if v >= 0.0 && v.is_finite() {
        Ok(v)
    } else {
        Err(ImpairError::OutOfRange {
            what,
            value: v,
            range: ">= 0",
        })
    }
}

impl Profile {
    /// The named profiles:
    /// - `none`: a perfect link;
    /// - `wired`: 0.18 ms each way + log-normal jitter (median 15 us, p99 ~ 48 us): RTT ~ 0.4 ms;
    /// - `wifi`: asymmetric, 1 ms + jitter median 1.5 ms (p99 ~ 15 ms, cap 25 ms) downstream,
    ///   0.6 ms + median 0.8 ms (p99 ~ 8 ms, cap 15 ms) upstream: RTT ~ 4 ms typical, ~ 2-40 ms
    ///   overall; ~ 2 % loss (1.5 % random + 20 ms bad spells losing half); 0.5 % of packets held
    ///   back 1-6 ms; 0.2 % duplicated;
    /// - `bad`: `wifi`'s delays plus ~ 14 % loss: 5 % random and bad spells of 50 ms mean
    ///   losing 90 %, 11 % of the time; 1 % reordered; 0.5 % duplicated.
    pub fn named(name: &str) -> Result<Profile, ImpairError> {
        let wired = LinkProfile {
            base_delay_ns: 180 * US,
            jitter: Jitter {
                median_ns: 15 * US,
                sigma: 0.5,
                max_ns: MS,
            },
            ..LinkProfile::PERFECT
        };
        let wifi_down = LinkProfile {
            base_delay_ns: MS,
            jitter: Jitter {
                median_ns: 1500 * US,
                sigma: 1.0,
                max_ns: 25 * MS,
            },
            loss: LossModel {
                loss_good: 0.015,
                loss_bad: 0.5,
                mean_good_ns: 2000 * MS,
                mean_bad_ns: 20 * MS,
            },
            duplicate: 0.002,
            dup_gap_ns: 500 * US,
            reorder: 0.005,
            reorder_hold_ns: (MS, 6 * MS),
        };
        let wifi_up = LinkProfile {
            base_delay_ns: 600 * US,
            jitter: Jitter {
                median_ns: 800 * US,
                sigma: 1.0,
                max_ns: 15 * MS,
            },
            ..wifi_down
        };
        let bad_loss = LossModel {
            loss_good: 0.05,
            loss_bad: 0.9,
            mean_good_ns: 400 * MS,
            mean_bad_ns: 50 * MS,
        };
        let bad = |l: LinkProfile| LinkProfile {
            loss: bad_loss,
            reorder: 0.01,
            duplicate: 0.005,
            ..l
        };
        let (forward, reverse) = match name {
            "none" => (LinkProfile::PERFECT, LinkProfile::PERFECT),
            "wired" => (wired, wired),
            "wifi" => (wifi_down, wifi_up),
            "bad" => (bad(wifi_down), bad(wifi_up)),
            other => return Err(ImpairError::UnknownProfile(other.to_string())),
        };
        Ok(Profile {
            name: name.to_string(),
            forward,
            reverse,
        })
    }

    /// Applies explicit overrides to both directions; the name gets a `+` suffix.
    pub fn apply(&mut self, o: &Overrides) -> Result<(), ImpairError> {
        if *o == Overrides::default() {
            return Ok(());
        }
        for link in [&mut self.forward, &mut self.reverse] {
            if let Some(l) = o.loss_pct {
                let p = pct("loss", l)?;
                link.loss = match o.burst_ms {
                    Some(b) => {
                        LossModel::bursts(p, (non_negative("burst-ms", b)? * MS as f64) as i64)
                    }
                    None => LossModel::random(p),
                };
            }
            if let Some(j) = o.jitter_ms {
                let j = non_negative("jitter-ms", j)?;
                let sigma = if link.jitter.sigma > 0.0 {
                    link.jitter.sigma
                } else {
                    1.0
                };
                let p99 = j * MS as f64;
                link.jitter = Jitter {
                    median_ns: (p99 / (Z99 * sigma).exp()).round() as i64,
                    sigma,
                    max_ns: link.jitter.max_ns.max((3.0 * p99) as i64),
                };
            }
            if let Some(d) = o.delay_ms {
                link.base_delay_ns = (non_negative("delay-ms", d)? * MS as f64) as i64;
            }
            if let Some(r) = o.reorder_pct {
                link.reorder = pct("reorder", r)?;
                if link.reorder_hold_ns.1 == 0 {
                    link.reorder_hold_ns = (MS, 5 * MS);
                }
            }
            if let Some(d) = o.duplicate_pct {
                link.duplicate = pct("duplicate", d)?;
                if link.dup_gap_ns == 0 {
                    link.dup_gap_ns = 200 * US;
                }
            }
        }
        self.name.push('+');
        Ok(())
    }
}

/// What happens to one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Lost.
    Drop,
    /// Delivered at `at` (same clock as `now`), and a copy at `duplicate_at` if duplicated.
    Deliver {
        /// When to deliver it.
        at: i64,
        /// When to deliver the duplicate, if any.
        duplicate_at: Option<i64>,
        /// Whether it was held back (so later packets overtake it).
        held_back: bool,
    },
}

/// Counters of what an [`Impairment`] did.
#[derive(Clone, Debug, Default)]
pub struct ImpairStats {
    /// Packets offered.
    pub received: u64,
    /// Packets dropped.
    pub dropped: u64,
    /// Packets dropped while the link was in its bad (burst) state.
    pub dropped_in_burst: u64,
    /// Packets duplicated (each adds one extra delivery).
    pub duplicated: u64,
    /// Packets held back (reordered).
    pub reordered: u64,
    /// Delay given to each delivered packet (first copy), ns.
    pub delay: Histogram,
}

/// Serializable summary of [`ImpairStats`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct ImpairReport {
    /// Packets offered.
    pub received: u64,
    /// Packets dropped.
    pub dropped: u64,
    /// Packets dropped in bursts.
    pub dropped_in_burst: u64,
    /// Packets duplicated.
    pub duplicated: u64,
    /// Packets held back (reordered).
    pub reordered: u64,
    /// Datagrams to deliver: received - dropped + duplicated.
    pub delivered: u64,
    /// Loss in percent.
    pub loss_pct: f64,
    /// Median delay, us.
    pub delay_p50_us: f64,
    /// 99th percentile delay, us.
    pub delay_p99_us: f64,
    /// Largest delay, us.
    pub delay_max_us: f64,
}

impl ImpairStats {
    /// Datagrams to deliver so far (first copies and duplicates).
    pub fn delivered(&self) -> u64 {
        self.received - self.dropped + self.duplicated
    }

    /// The summary for reports.
    pub fn report(&self) -> ImpairReport {
        ImpairReport {
            received: self.received,
            dropped: self.dropped,
            dropped_in_burst: self.dropped_in_burst,
            duplicated: self.duplicated,
            reordered: self.reordered,
            delivered: self.delivered(),
            loss_pct: if self.received == 0 {
                0.0
            } else {
                100.0 * self.dropped as f64 / self.received as f64
            },
            delay_p50_us: self.delay.quantile(0.5) as f64 / 1e3,
            delay_p99_us: self.delay.quantile(0.99) as f64 / 1e3,
            delay_max_us: self.delay.max() as f64 / 1e3,
        }
    }
}

/// One direction of one impaired link; see the module doc.
#[derive(Debug)]
pub struct Impairment {
    profile: LinkProfile,
    rng: StdRng,
    jitter: Option<LogNormal<f64>>,
    bad: bool,
    last_ns: Option<i64>,
    fifo_ns: i64,
    stats: ImpairStats,
}

impl Impairment {
    /// A link with `profile`, its randomness drawn from `seed`.
    pub fn new(profile: LinkProfile, seed: u64) -> Self {
        let jitter = if profile.jitter.median_ns > 0 {
            LogNormal::new(
                (profile.jitter.median_ns as f64).ln(),
                profile.jitter.sigma.max(0.0),
            )
            .ok()
        } else {
            None
        };
        Impairment {
            profile,
            rng: StdRng::seed_from_u64(seed),
            jitter,
            bad: false,
            last_ns: None,
            fifo_ns: i64::MIN,
            stats: ImpairStats::default(),
        }
    }

    /// The profile in use.
    pub fn profile(&self) -> &LinkProfile {
        &self.profile
    }

    /// Counters so far.
    pub fn stats(&self) -> &ImpairStats {
        &self.stats
    }

    /// Moves the loss state from the last packet's instant to `now`.
    fn step_loss_state(&mut self, now: i64, u: f64) {
        let m = &self.profile.loss;
        if m.mean_bad_ns <= 0 {
            self.bad = false;
            return;
        }
        let pi_bad = m.bad_fraction();
        let p_bad = match self.last_ns {
            None => pi_bad,
            Some(last) => {
                let dt = (now - last).max(0) as f64;
                let rate = 1.0 / m.mean_bad_ns as f64 + 1.0 / m.mean_good_ns.max(1) as f64;
                let e = (-rate * dt).exp();
                if self.bad {
                    pi_bad + (1.0 - pi_bad) * e
                } else {
                    pi_bad * (1.0 - e)
                }
            }
        };
        self.bad = u < p_bad;
    }

    /// Decides the fate of a packet arriving at `now` (ns). The same number of random draws is
    /// made for every packet, so verdicts depend only on the seed and the arrival times.
    pub fn decide(&mut self, now: i64) -> Verdict {
        let u_state: f64 = self.rng.gen();
        let u_loss: f64 = self.rng.gen();
        let u_dup: f64 = self.rng.gen();
        let u_dup_gap: f64 = self.rng.gen();
        let u_reorder: f64 = self.rng.gen();
        let u_hold: f64 = self.rng.gen();
        let jitter = match &self.jitter {
            Some(d) => (d.sample(&mut self.rng) as i64).min(self.profile.jitter.max_ns),
            None => 0,
        };
        self.step_loss_state(now, u_state);
        self.last_ns = Some(now);
        self.stats.received += 1;
        let p = &self.profile;
        let p_loss = if self.bad {
            p.loss.loss_bad
        } else {
            p.loss.loss_good
        };
        if u_loss < p_loss {
            self.stats.dropped += 1;
            if self.bad {
                self.stats.dropped_in_burst += 1;
            }
            return Verdict::Drop;
        }
        // Through the queue: never before the packet ahead of it.
        let queued = (now + p.base_delay_ns + jitter).max(self.fifo_ns);
        let held_back = u_reorder < p.reorder;
        let at = if held_back {
            // Held back on top of that, outside the queue: later packets overtake it.
            self.stats.reordered += 1;
            let (lo, hi) = p.reorder_hold_ns;
            queued + lo + ((hi - lo).max(0) as f64 * u_hold) as i64
        } else {
            self.fifo_ns = queued;
            queued
        };
        let duplicate_at = if u_dup < p.duplicate {
            self.stats.duplicated += 1;
            Some(at + (p.dup_gap_ns as f64 * u_dup_gap) as i64)
        } else {
            None
        };
        self.stats.delay.record((at - now).max(0) as u64);
        Verdict::Deliver {
            at,
            duplicate_at,
            held_back,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `n` packets spaced `spacing_ns` through a link; returns the verdicts.
    fn run(link: LinkProfile, seed: u64, n: usize, spacing_ns: i64) -> (Impairment, Vec<Verdict>) {
        let mut imp = Impairment::new(link, seed);
        let v = (0..n).map(|i| imp.decide(i as i64 * spacing_ns)).collect();
        (imp, v)
    }

    fn within(got: f64, want: f64, rel: f64) -> bool {
        (got - want).abs() <= rel * want.abs()
    }

    #[test]
    fn perfect_link_delivers_everything_at_once() {
        let (imp, v) = run(LinkProfile::PERFECT, 1, 1000, 1000);
        for (i, v) in v.iter().enumerate() {
            assert_eq!(
                *v,
                Verdict::Deliver {
                    at: i as i64 * 1000,
                    duplicate_at: None,
                    held_back: false
                }
            );
        }
        assert_eq!(imp.stats().delivered(), 1000);
    }

    #[test]
    fn same_seed_same_verdicts() {
        let p = Profile::named("bad").unwrap().forward;
        assert_eq!(run(p, 7, 5000, 1_000_000).1, run(p, 7, 5000, 1_000_000).1);
        assert_ne!(run(p, 7, 5000, 1_000_000).1, run(p, 8, 5000, 1_000_000).1);
    }

    #[test]
    fn wired_delay_matches_profile() {
        let p = Profile::named("wired").unwrap();
        // Packets 5 ms apart: the queue never holds one back behind another.
        let (imp, _) = run(p.forward, 42, 100_000, 5 * MS);
        let s = imp.stats();
        assert_eq!(s.dropped + s.duplicated + s.reordered, 0);
        let p50 = s.delay.quantile(0.5) as f64;
        let p99 = s.delay.quantile(0.99) as f64;
        let j = p.forward.jitter;
        assert!(
            within(p50, (p.forward.base_delay_ns + j.median_ns) as f64, 0.01),
            "{p50}"
        );
        assert!(
            within(p99, p.forward.base_delay_ns as f64 + j.p99_ns(), 0.02),
            "{p99}"
        );
        // RTT ~ 0.4 ms.
        let rtt = 2.0 * p50;
        assert!((350_000.0..450_000.0).contains(&rtt), "rtt {rtt}");
    }

    #[test]
    fn wifi_matches_profile_both_directions() {
        let p = Profile::named("wifi").unwrap();
        let n = 100_000;
        let (down, _) = run(p.forward, 1, n, 20 * MS);
        let (up, _) = run(p.reverse, 2, n, 20 * MS);
        for (imp, link) in [(&down, &p.forward), (&up, &p.reverse)] {
            let s = imp.stats();
            let loss = s.dropped as f64 / n as f64;
            assert!(within(loss, link.loss.mean_loss(), 0.15), "loss {loss}");
            assert!((0.01..=0.03).contains(&loss), "loss {loss}");
            let dup = s.duplicated as f64 / (n as f64 - s.dropped as f64);
            assert!(within(dup, link.duplicate, 0.25), "dup {dup}");
            let re = s.reordered as f64 / (n as f64 - s.dropped as f64);
            assert!(within(re, link.reorder, 0.15), "reorder {re}");
            // Median: base + jitter median (reordering holds back only 0.5 %).
            let p50 = s.delay.quantile(0.5) as f64;
            let want = (link.base_delay_ns + link.jitter.median_ns) as f64;
            assert!(within(p50, want, 0.03), "p50 {p50} want {want}");
            let p99 = s.delay.quantile(0.99) as f64;
            let want = link.base_delay_ns as f64 + link.jitter.p99_ns();
            assert!(within(p99, want, 0.05), "p99 {p99} want {want}");
            assert!(s.delay.max() as i64 <= link.base_delay_ns + link.jitter.max_ns + 6 * MS);
        }
        // Asymmetric, heavy tail: RTT median and p99 between 2 and 40 ms.
        let rtt50 = (down.stats().delay.quantile(0.5) + up.stats().delay.quantile(0.5)) as f64;
        let rtt99 = (down.stats().delay.quantile(0.99) + up.stats().delay.quantile(0.99)) as f64;
        assert!(
            (2.0 * MS as f64..40.0 * MS as f64).contains(&rtt50),
            "{rtt50}"
        );
        assert!(
            (2.0 * MS as f64..40.0 * MS as f64).contains(&rtt99),
            "{rtt99}"
        );
        assert!(down.stats().delay.quantile(0.5) > up.stats().delay.quantile(0.5));
    }

    #[test]
    fn bad_profile_loses_in_long_bursts() {
        let p = Profile::named("bad").unwrap().forward;
        let n = 200_000;
        let spacing = 5 * MS; // 200 packets/s: 1000 s of traffic
        let (imp, v) = run(p, 3, n, spacing);
        let s = imp.stats();
        let loss = s.dropped as f64 / n as f64;
        assert!((0.10..=0.20).contains(&loss), "loss {loss}");
        assert!(
            within(loss, p.loss.mean_loss(), 0.1),
            "{loss} {}",
            p.loss.mean_loss()
        );
        // Bursts: most losses happen in the bad state, and the longest run of consecutive
        // losses is far longer than independent 14 % loss would give (~7 in 200k).
        assert!(s.dropped_in_burst as f64 > 0.6 * s.dropped as f64);
        let mut longest = 0;
        let mut cur = 0;
        for v in &v {
            cur = if *v == Verdict::Drop { cur + 1 } else { 0 };
            longest = longest.max(cur);
        }
        assert!(longest >= 30, "longest burst {longest}");
    }

    #[test]
    fn burst_override_gives_loss_and_mean_burst_length() {
        let mut prof = Profile::named("none").unwrap();
        prof.apply(&Overrides {
            loss_pct: Some(20.0),
            burst_ms: Some(50.0),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(prof.name, "none+");
        let spacing = MS;
        let (imp, v) = run(prof.forward, 9, 400_000, spacing);
        let loss = imp.stats().dropped as f64 / 400_000.0;
        assert!(within(loss, 0.20, 0.1), "loss {loss}");
        // Every loss is in a burst; mean run of consecutive losses: bursts last 50 ms on
        // average and packets are 1 ms apart, so runs of ~50 packets.
        let mut runs = Vec::new();
        let mut cur = 0;
        for v in &v {
            if *v == Verdict::Drop {
                cur += 1;
            } else if cur > 0 {
                runs.push(cur);
                cur = 0;
            }
        }
        let mean = runs.iter().sum::<usize>() as f64 / runs.len() as f64;
        // Continuous time, sampled each ms: continue probability exp(-(1/50+1/200)) -> 1/(1-q).
        let q = (-(1.0f64 / 50.0 + 1.0 / 200.0)).exp() + 0.2 * (1.0 - (-0.025f64).exp());
        let want = 1.0 / (1.0 - q);
        assert!(within(mean, want, 0.1), "mean run {mean} want {want}");
    }

    #[test]
    fn overrides_set_loss_jitter_reorder_duplicate() {
        let mut prof = Profile::named("wired").unwrap();
        prof.apply(&Overrides {
            loss_pct: Some(5.0),
            jitter_ms: Some(20.0),
            reorder_pct: Some(2.0),
            duplicate_pct: Some(1.0),
            delay_ms: Some(2.0),
            ..Default::default()
        })
        .unwrap();
        let link = prof.reverse;
        assert_eq!(link.base_delay_ns, 2 * MS);
        assert!(within(link.jitter.p99_ns(), 20.0 * MS as f64, 0.001));
        let n = 100_000;
        let (imp, _) = run(link, 11, n, 50 * MS);
        let s = imp.stats();
        let kept = (n as u64 - s.dropped) as f64;
        assert!(within(s.dropped as f64 / n as f64, 0.05, 0.05));
        assert!(within(s.reordered as f64 / kept, 0.02, 0.1));
        assert!(within(s.duplicated as f64 / kept, 0.01, 0.15));
        let p99 = s.delay.quantile(0.99) as f64;
        // p99 of the delay: base + jitter p99, nudged up a little by the 2 % held back.
        assert!(within(p99, 22.0 * MS as f64, 0.06), "p99 {p99}");
    }

    #[test]
    fn jitter_keeps_order_and_hold_back_reorders() {
        let mut prof = Profile::named("wifi").unwrap();
        prof.apply(&Overrides {
            loss_pct: Some(0.0),
            ..Default::default()
        })
        .unwrap();
        let mut link = prof.forward;
        link.duplicate = 0.0;
        // 1 ms apart with ms of jitter: the queue must still keep order, except held-back ones.
        let (imp, v) = run(link, 5, 50_000, MS);
        let mut last_in_order = i64::MIN;
        let mut overtaken = 0;
        for v in &v {
            if let Verdict::Deliver { at, held_back, .. } = *v {
                if held_back {
                    overtaken += 1;
                } else {
                    assert!(at >= last_in_order);
                    last_in_order = at;
                }
            }
        }
        assert_eq!(overtaken, imp.stats().reordered);
        assert!(overtaken > 100);
    }

    #[test]
    fn out_of_range_overrides_are_errors() {
        let mut p = Profile::named("wired").unwrap();
        let e = p.apply(&Overrides {
            loss_pct: Some(120.0),
            ..Default::default()
        });
        assert!(matches!(
            e,
            Err(ImpairError::OutOfRange { what: "loss", .. })
        ));
        assert_eq!(
            Profile::named("lan"),
            Err(ImpairError::UnknownProfile("lan".into()))
        );
    }
}
