//! The lab's Wi-Fi path, as `lab/src/impair.rs` builds it, for the clock simulations: per
//! direction a fixed delay plus capped log-normal jitter through a FIFO (a packet never leaves
//! before the one ahead of it), Gilbert-Elliott loss, a few packets held back (reordered) and
//! duplicated. Unlike `sim::Profile`, both directions are *shared*: two receivers' time queries
//! and answers go through the same two queues, with the other control traffic (NACKs up,
//! resends down) as Poisson bursts, as through the lab's control relay. The two receivers run
//! side by side on one seeded RNG, so the figures include their skew, as the lab measures it.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use wavesync_common::time::LocalNs;
use wavesync_common::time::{ns_from_ntp64, ntp64_from_ns};
use wavesync_common::time_client::{TimeClient, TimeClientConfig};
use wavesync_common::wire::ntp::NtpPacket;

use crate::sim::{Clocks, Run, MS, US};

/// One direction of the path (the fields of the lab's `LinkProfile`).
#[derive(Clone, Copy, Debug)]
pub struct Link {
    /// Fixed one-way delay.
    pub base: i64,
    /// Log-normal jitter: median, sigma, cap.
    pub jitter: (i64, f64, i64),
    /// Loss: (probability in the good state, in the bad state, mean good stay, mean bad stay).
    pub loss: (f64, f64, i64, i64),
    /// Probability of a duplicate, and the largest gap to it.
    pub duplicate: (f64, i64),
    /// Probability of a hold-back (reordering), and the range of the hold.
    pub reorder: (f64, i64, i64),
}

/// The lab's `wifi` profile, downstream (master to receivers).
pub fn lab_wifi_down() -> Link {
    Link {
        base: MS,
        jitter: (1500 * US, 1.0, 25 * MS),
        loss: (0.015, 0.5, 2000 * MS, 20 * MS),
        duplicate: (0.002, 500 * US),
        reorder: (0.005, MS, 6 * MS),
    }
}

/// The lab's `wifi` profile, upstream (receivers to master).
pub fn lab_wifi_up() -> Link {
    Link {
        base: 600 * US,
        jitter: (800 * US, 1.0, 15 * MS),
        ..lab_wifi_down()
    }
}

/// The lab's `wired` profile (both directions).
pub fn lab_wired() -> Link {
    Link {
        base: 180 * US,
        jitter: (15 * US, 0.5, MS),
        loss: (0.0, 0.0, 0, 0),
        duplicate: (0.0, 0),
        reorder: (0.0, 0, 0),
    }
}

/// A shared path: both links and the cross traffic through them.
#[derive(Clone, Copy, Debug)]
pub struct Path {
    /// Name printed with the figures.
    pub name: &'static str,
    /// Receivers to master.
    pub up: Link,
    /// Master to receivers.
    pub down: Link,
    /// Other traffic up (NACKs): bursts per second, packets per burst.
    pub cross_up: (f64, u32),
    /// Other traffic down (resends): bursts per second, packets per burst.
    pub cross_down: (f64, u32),
    /// Master's time between T2 and T3: uniform in this range.
    pub server_proc: (i64, i64),
}

/// The lab's `wifi` run through its control relay: queries and NACKs of both receivers up,
/// answers and resends down (in the lab's 60 s run: ~10 datagrams/s up, ~7.5/s down, about
/// half of them time traffic).
pub fn lab_wifi() -> Path {
    Path {
        name: "lab wifi",
        up: lab_wifi_up(),
        down: lab_wifi_down(),
        cross_up: (3.0, 2),
        cross_down: (2.0, 2),
        server_proc: (20 * US, 200 * US),
    }
}

/// The lab's `wired` run (no loss, so no NACK traffic).
pub fn lab_wired_path() -> Path {
    Path {
        name: "lab wired",
        up: lab_wired(),
        down: lab_wired(),
        cross_up: (0.0, 0),
        cross_down: (0.0, 0),
        server_proc: (10 * US, 60 * US),
    }
}

/// One direction in motion (the lab's `Impairment::decide`).
struct Queue {
    link: Link,
    jitter: Option<LogNormal<f64>>,
    bad: bool,
    last: Option<i64>,
    fifo: i64,
}

impl Queue {
    fn new(link: Link) -> Self {
        let (median, sigma, _) = link.jitter;
        Queue {
            link,
            jitter: (median > 0)
                .then(|| LogNormal::new((median as f64).ln(), sigma).ok())
                .flatten(),
            bad: false,
            last: None,
            fifo: i64::MIN,
        }
    }

    /// Delivery instants (first copy, duplicate) of a packet offered at `now`, or `None`.
    fn decide(&mut self, now: i64, rng: &mut StdRng) -> Option<(i64, Option<i64>)> {
        let (u_state, u_loss, u_dup, u_gap, u_re, u_hold): (f64, f64, f64, f64, f64, f64) = (
            rng.gen(),
            rng.gen(),
            rng.gen(),
            rng.gen(),
            rng.gen(),
            rng.gen(),
        );
        let jitter = match &self.jitter {
            Some(d) => (d.sample(rng) as i64).min(self.link.jitter.2),
            None => 0,
        };
        let (p_good, p_bad, mean_good, mean_bad) = self.link.loss;
        if mean_bad > 0 {
            let pi = mean_bad as f64 / (mean_bad + mean_good.max(0)) as f64;
            let p = match self.last {
                None => pi,
                Some(last) => {
                    let rate = 1.0 / mean_bad as f64 + 1.0 / mean_good.max(1) as f64;
                    let e = (-rate * (now - last).max(0) as f64).exp();
                    if self.bad {
                        pi + (1.0 - pi) * e
                    } else {
                        pi * (1.0 - e)
                    }
                }
            };
            self.bad = u_state < p;
        }
        self.last = Some(now);
        if u_loss < if self.bad { p_bad } else { p_good } {
            return None;
        }
        let queued = (now + self.link.base + jitter).max(self.fifo);
        let (p_re, lo, hi) = self.link.reorder;
        let at = if u_re < p_re {
            queued + lo + ((hi - lo).max(0) as f64 * u_hold) as i64
        } else {
            self.fifo = queued;
            queued
        };
        let (p_dup, gap) = self.link.duplicate;
        Some((
            at,
            (u_dup < p_dup).then(|| at + (gap as f64 * u_gap) as i64),
        ))
    }
}

enum Flight {
    /// A query from receiver `k` reaching the master.
    ToServer(usize, [u8; 48]),
    /// An answer reaching receiver `k`.
    ToClient(usize, [u8; 48]),
}

/// Two receivers on one shared path.
#[derive(Debug, Default)]
pub struct PairRun {
    /// Each receiver's run (errors against the true master clock every tick).
    pub runs: [Run; 2],
    /// (true time, error of receiver 0 - error of receiver 1) at every tick where both have
    /// an estimate: the skew their clocks alone would put between them.
    pub skew: Vec<(i64, i64)>,
}

/// Runs two [`TimeClient`]s (default configuration) with `clocks` over the shared `path`,
/// the master's clock being the one `clocks[0]` describes, for `duration`, recording every
/// 10 ms.
pub fn run_pair(path: &Path, clocks: [&Clocks; 2], seed: u64, duration: i64) -> PairRun {
    let cfg = TimeClientConfig::default();
    const TICK: i64 = 10 * MS;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut up = Queue::new(path.up);
    let mut down = Queue::new(path.down);
    let mut clients = [TimeClient::new(cfg), TimeClient::new(cfg)];
    // Master's clock: the first receiver's scenario says what it is.
    let master = clocks[0];
    let mut flights: Vec<(i64, Flight)> = Vec::new();
    let mut out = PairRun::default();
    let exp = |rng: &mut StdRng, hz: f64| -> i64 {
        if hz <= 0.0 {
            i64::MAX
        } else {
            (-(1.0 - rng.gen::<f64>()).ln() / hz * 1e9) as i64 + 1
        }
    };
    let mut next_cross_up = exp(&mut rng, path.cross_up.0);
    let mut next_cross_down = exp(&mut rng, path.cross_down.0);
    let mut next_tick = 0i64;
    let mut t = 0i64;
    while t <= duration {
        // Cross traffic only moves the queues.
        while next_cross_up <= t {
            for _ in 0..path.cross_up.1 {
                let _ = up.decide(next_cross_up, &mut rng);
            }
            next_cross_up = next_cross_up.saturating_add(exp(&mut rng, path.cross_up.0));
        }
        while next_cross_down <= t {
            for _ in 0..path.cross_down.1 {
                let _ = down.decide(next_cross_down, &mut rng);
            }
            next_cross_down = next_cross_down.saturating_add(exp(&mut rng, path.cross_down.0));
        }
        for (k, c) in clients.iter_mut().enumerate() {
            while let Some(req) = c.poll_transmit(LocalNs::from_ns(clocks[k].local(t))) {
                if let Some((at, dup)) = up.decide(t, &mut rng) {
                    flights.push((at, Flight::ToServer(k, req)));
                    if let Some(d) = dup {
                        flights.push((d, Flight::ToServer(k, req)));
                    }
                }
            }
        }
        // Datagrams due now, in order of arrival.
        loop {
            let due = flights
                .iter()
                .enumerate()
                .filter(|(_, f)| f.0 <= t)
                .min_by_key(|(_, f)| f.0)
                .map(|(i, _)| i);
            let Some(i) = due else { break };
            match flights.swap_remove(i).1 {
                Flight::ToServer(k, bytes) => {
                    let Ok(req) = NtpPacket::decode(&bytes) else {
                        continue;
                    };
                    let proc_ns = rng.gen_range(path.server_proc.0..=path.server_proc.1);
                    let reply = NtpPacket::server_reply(
                        &req,
                        ntp64_from_ns(master.master(t)),
                        ntp64_from_ns(master.master(t + proc_ns)),
                    );
                    if let Some((at, dup)) = down.decide(t + proc_ns, &mut rng) {
                        flights.push((at, Flight::ToClient(k, reply.encode())));
                        if let Some(d) = dup {
                            flights.push((d, Flight::ToClient(k, reply.encode())));
                        }
                    }
                }
                Flight::ToClient(k, bytes) => {
                    let now = clocks[k].local(t);
                    if let Ok(ev) = clients[k].handle_response(LocalNs::from_ns(now), &bytes) {
                        out.runs[k].events.push((t, ev));
                        if let Ok(p) = NtpPacket::decode(&bytes) {
                            let (t1, t2, t3) = (
                                ns_from_ntp64(p.origin_ts),
                                ns_from_ntp64(p.receive_ts),
                                ns_from_ntp64(p.transmit_ts),
                            );
                            out.runs[k].rtts.push((now - t1) - (t3 - t2));
                        }
                    }
                }
            }
        }
        while next_tick <= t {
            let mut errs = [None, None];
            for k in 0..2 {
                if let Some(est) = clients[k].estimate() {
                    let c = clocks[k];
                    let err = est.to_timeline(LocalNs::from_ns(c.local(next_tick)))
                        - master.master(next_tick);
                    let r = &mut out.runs[k];
                    r.errors.push((next_tick, err.ns()));
                    r.rate_errors
                        .push((next_tick, (est.rate - c.true_rate()) * 1e6));
                    r.uncertainty.push((next_tick, est.uncertainty_ns));
                    errs[k] = Some(err);
                }
            }
            if let [Some(a), Some(b)] = errs {
                out.skew.push((next_tick, a - b));
            }
            next_tick += TICK;
        }
        let mut wake = next_tick
            .min(next_cross_up)
            .min(next_cross_down)
            .min(flights.iter().map(|f| f.0).min().unwrap_or(i64::MAX));
        for (k, c) in clients.iter().enumerate() {
            wake = wake.min(clocks[k].true_at_local(c.poll_timeout().ns()));
        }
        t = wake.max(t + 1);
    }
    for (run, c) in out.runs.iter_mut().zip(&clients) {
        run.stats = c.stats();
    }
    out
}
