//! A small discrete-event simulator for the clock tests: a receiver and a master with their
//! own clocks (offsets of hours, rate errors in ppm, steps), a network path with per-direction
//! delay distributions and loss, and a time server answering in the real NTP wire format.
//! Everything is driven by one seeded RNG, so every run is reproducible.

#![allow(dead_code)] // each test binary uses a different part

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp, LogNormal, Pareto};
use wavesync_common::clock::{ClockEstimate, ClockEvent};
use wavesync_common::time::ntp64_from_ns;
use wavesync_common::time::LocalNs;
use wavesync_common::time_client::{TimeClient, TimeClientConfig, TimeClientStats};
use wavesync_common::wire::ntp::NtpPacket;

/// One microsecond in ns.
pub const US: i64 = 1_000;
/// One millisecond in ns.
pub const MS: i64 = 1_000_000;
/// One second in ns.
pub const S: i64 = 1_000_000_000;

/// The two clocks as functions of true time `t` (ns since the start of the simulation).
#[derive(Clone, Debug)]
pub struct Clocks {
    /// Receiver's CLOCK_MONOTONIC at t = 0.
    pub local0: i64,
    /// Receiver's rate error (e.g. 150e-6).
    pub local_ppm: f64,
    /// Master's timeline at t = 0.
    pub master0: i64,
    /// Master's rate error.
    pub master_ppm: f64,
    /// Steps of the master's timeline: (true time, jump in ns).
    pub steps: Vec<(i64, i64)>,
}

impl Clocks {
    /// Receiver monotonic 3 h, master timeline 17 days, the given rate errors in ppm.
    pub fn new(local_ppm: f64, master_ppm: f64) -> Self {
        Clocks {
            local0: 3 * 3600 * S,
            local_ppm: local_ppm * 1e-6,
            master0: 17 * 86_400 * S,
            master_ppm: master_ppm * 1e-6,
            steps: Vec::new(),
        }
    }

    /// The receiver's clock at true time `t`.
    pub fn local(&self, t: i64) -> i64 {
        self.local0 + t + (t as f64 * self.local_ppm).round() as i64
    }

    /// The first true time at which the receiver's clock reads at least `l`.
    pub fn true_at_local(&self, l: i64) -> i64 {
        let mut t = ((l - self.local0) as f64 / (1.0 + self.local_ppm)).floor() as i64 - 2;
        while self.local(t) < l {
            t += 1;
        }
        t
    }

    /// The master's timeline at true time `t`.
    pub fn master(&self, t: i64) -> i64 {
        let stepped: i64 = self.steps.iter().filter(|s| s.0 <= t).map(|s| s.1).sum();
        self.master0 + t + (t as f64 * self.master_ppm).round() as i64 + stepped
    }

    /// Timeline ns per local ns.
    pub fn true_rate(&self) -> f64 {
        (1.0 + self.master_ppm) / (1.0 + self.local_ppm)
    }
}

/// Delay model of one direction: base + exponential jitter + lognormal queueing + rare
/// Pareto spikes.
#[derive(Clone, Copy, Debug)]
pub struct OneWay {
    /// Fixed propagation/processing delay.
    pub base: i64,
    /// Mean of an exponential jitter term (0 = none).
    pub exp_mean: i64,
    /// Median and sigma of a lognormal queueing term (median 0 = none).
    pub lognormal: (i64, f64),
    /// Probability and (scale, shape) of a Pareto spike (retries, power save).
    pub spike: (f64, i64, f64),
    /// Spikes are capped here.
    pub spike_cap: i64,
    /// Probability that the datagram is lost.
    pub loss: f64,
    /// Probability that the datagram arrives twice (the copy with its own delay).
    pub duplicate: f64,
}

impl OneWay {
    fn sample(&self, rng: &mut StdRng) -> Option<i64> {
        if rng.gen::<f64>() < self.loss {
            return None;
        }
        let mut d = self.base as f64;
        if self.exp_mean > 0 {
            d += Exp::new(1.0 / self.exp_mean as f64).unwrap().sample(rng);
        }
        if self.lognormal.0 > 0 {
            let ln = LogNormal::new((self.lognormal.0 as f64).ln(), self.lognormal.1).unwrap();
            d += ln.sample(rng);
        }
        if self.spike.0 > 0.0 && rng.gen::<f64>() < self.spike.0 {
            let p = Pareto::new(self.spike.1 as f64, self.spike.2).unwrap();
            d += p.sample(rng).min(self.spike_cap as f64);
        }
        Some(d.round() as i64)
    }
}

/// A network path between receiver and master.
#[derive(Clone, Copy, Debug)]
pub struct Profile {
    /// Name printed with the figures.
    pub name: &'static str,
    /// Receiver to master.
    pub up: OneWay,
    /// Master to receiver.
    pub down: OneWay,
    /// The server's time between T2 and T3: uniform in this range.
    pub server_proc: (i64, i64),
}

/// Wired LAN: 120 µs each way plus exponential jitter of mean 30 µs, symmetric, no loss:
/// round trips of 0.25-0.5 ms.
pub fn wired() -> Profile {
    let dir = OneWay {
        base: 120 * US,
        exp_mean: 30 * US,
        lognormal: (0, 0.0),
        spike: (0.0, 0, 0.0),
        spike_cap: 0,
        loss: 0.0,
        duplicate: 0.0,
    };
    Profile {
        name: "wired",
        up: dir,
        down: dir,
        server_proc: (10 * US, 60 * US),
    }
}

/// Wi-Fi: asymmetric (up 1.0 ms + lognormal median 0.6 ms, down 0.9 ms + lognormal median
/// 0.4 ms, sigma 0.9), 4 % Pareto spikes (scale 2 ms, shape 1.2, capped at 60 ms) each way,
/// 1.5 % loss each way (3 % of exchanges), 0.5 % duplicates: round trips of 2-40 ms, median
/// about 3 ms.
pub fn wifi() -> Profile {
    let up = OneWay {
        base: 1_000 * US,
        exp_mean: 0,
        lognormal: (600 * US, 0.9),
        spike: (0.04, 2 * MS, 1.2),
        spike_cap: 60 * MS,
        loss: 0.015,
        duplicate: 0.005,
    };
    let down = OneWay {
        base: 900 * US,
        lognormal: (400 * US, 0.9),
        ..up
    };
    Profile {
        name: "wifi",
        up,
        down,
        server_proc: (20 * US, 200 * US),
    }
}

/// What happened during one simulated run.
#[derive(Debug, Default)]
pub struct Run {
    /// (true time, estimate - truth in ns) every evaluation tick once an estimate exists.
    pub errors: Vec<(i64, i64)>,
    /// (true time, estimated rate - true rate in ppm) at the same ticks.
    pub rate_errors: Vec<(i64, f64)>,
    /// (true time, uncertainty reported) at the same ticks.
    pub uncertainty: Vec<(i64, i64)>,
    /// (true time, event) for every answer the client accepted.
    pub events: Vec<(i64, ClockEvent)>,
    /// Round trip (ns) of every answered exchange.
    pub rtts: Vec<i64>,
    /// The client's counters at the end.
    pub stats: TimeClientStats,
}

impl Run {
    /// True time of the first `Locked` event at or after `from`.
    pub fn lock_time(&self, from: i64) -> Option<i64> {
        self.events
            .iter()
            .find(|(t, e)| *t >= from && *e == ClockEvent::Locked)
            .map(|(t, _)| *t)
    }

    /// Absolute errors at ticks in `[from, to)`.
    pub fn abs_errors(&self, from: i64, to: i64) -> Vec<i64> {
        self.errors
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, e)| e.abs())
            .collect()
    }

    /// True if the last event left the model locked (no step or reset since the last lock).
    pub fn is_locked_at_end(&self) -> bool {
        let last_lock = self.events.iter().rposition(|e| e.1 == ClockEvent::Locked);
        let last_step = self
            .events
            .iter()
            .rposition(|e| matches!(e.1, ClockEvent::StepDetected { .. }));
        match (last_lock, last_step) {
            (Some(l), Some(s)) => l > s,
            (Some(_), None) => true,
            _ => false,
        }
    }

    /// Largest absolute rate error (ppm) at ticks at or after `from`.
    pub fn max_rate_error(&self, from: i64) -> f64 {
        self.rate_errors
            .iter()
            .filter(|(t, _)| *t >= from)
            .map(|(_, e)| e.abs())
            .fold(0.0, f64::max)
    }
}

/// Per-run knobs beyond clocks and path.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Clocks of both hosts.
    pub clocks: Clocks,
    /// Network path.
    pub profile: Profile,
    /// RNG seed.
    pub seed: u64,
    /// Simulated duration.
    pub duration: i64,
    /// Evaluation tick.
    pub tick: i64,
    /// The client's configuration.
    pub client: TimeClientConfig,
    /// The server answers the n-th request (0-based) with timestamps off by this much.
    pub corrupt: Option<(u64, i64)>,
    /// Every datagram in these true-time intervals is lost.
    pub outages: Vec<(i64, i64)>,
}

impl Scenario {
    /// Defaults: 120 s, 10 ms ticks, default client, no corruption or outage.
    pub fn new(clocks: Clocks, profile: Profile, seed: u64) -> Self {
        Scenario {
            clocks,
            profile,
            seed,
            duration: 120 * S,
            tick: 10 * MS,
            client: TimeClientConfig::default(),
            corrupt: None,
            outages: Vec::new(),
        }
    }
}

enum Flight {
    ToServer([u8; 48]),
    ToClient([u8; 48]),
}

/// Runs a [`TimeClient`] against a simulated time server over the scenario's path.
pub fn run(sc: &Scenario) -> Run {
    let mut rng = StdRng::seed_from_u64(sc.seed);
    let clocks = &sc.clocks;
    let mut client = TimeClient::new(sc.client);
    let mut flights: Vec<(i64, Flight)> = Vec::new();
    let mut out = Run::default();
    let mut next_tick = 0i64;
    let mut requests_served = 0u64;
    let lost = |t: i64| sc.outages.iter().any(|&(a, b)| t >= a && t < b);
    let mut t = 0i64;
    while t <= sc.duration {
        // Client timers.
        let local = clocks.local(t);
        while let Some(req) = client.poll_transmit(LocalNs::from_ns(local)) {
            if let (Some(d), false) = (sc.profile.up.sample(&mut rng), lost(t)) {
                flights.push((t + d, Flight::ToServer(req)));
            }
        }
        // Datagrams arriving now.
        let mut i = 0;
        while i < flights.len() {
            if flights[i].0 > t {
                i += 1;
                continue;
            }
            let (_, f) = flights.swap_remove(i);
            match f {
                Flight::ToServer(bytes) => {
                    let Ok(req) = NtpPacket::decode(&bytes) else {
                        continue;
                    };
                    let (lo, hi) = sc.profile.server_proc;
                    let proc_ns = rng.gen_range(lo..=hi);
                    let mut t2 = clocks.master(t);
                    let mut t3 = clocks.master(t + proc_ns);
                    if let Some((n, err)) = sc.corrupt {
                        if n == requests_served {
                            t2 += err;
                            t3 += err;
                        }
                    }
                    requests_served += 1;
                    let reply = NtpPacket::server_reply(&req, ntp64_from_ns(t2), ntp64_from_ns(t3));
                    let sent = t + proc_ns;
                    if let (Some(d), false) = (sc.profile.down.sample(&mut rng), lost(sent)) {
                        flights.push((sent + d, Flight::ToClient(reply.encode())));
                        if rng.gen::<f64>() < sc.profile.down.duplicate {
                            let d2 = sc.profile.down.sample(&mut rng).unwrap_or(d);
                            flights.push((sent + d2, Flight::ToClient(reply.encode())));
                        }
                    }
                }
                Flight::ToClient(bytes) => {
                    if let Ok(ev) =
                        client.handle_response(LocalNs::from_ns(clocks.local(t)), &bytes)
                    {
                        out.events.push((t, ev));
                        out.rtts.push(rtt_of(&bytes, clocks.local(t)));
                    }
                }
            }
        }
        // Evaluation.
        while next_tick <= t {
            if let Some(est) = client.estimate() {
                record(&mut out, clocks, &est, next_tick);
            }
            next_tick += sc.tick;
        }
        // Next event.
        let wake = clocks.true_at_local(client.poll_timeout().ns()).max(t + 1);
        let arrival = flights.iter().map(|f| f.0).min().unwrap_or(i64::MAX);
        t = wake.min(arrival).min(next_tick).max(t + 1);
    }
    out.stats = client.stats();
    out
}

fn rtt_of(reply: &[u8; 48], t4: i64) -> i64 {
    match NtpPacket::decode(reply) {
        Ok(p) => {
            let t1 = wavesync_common::time::ns_from_ntp64(p.origin_ts);
            let t2 = wavesync_common::time::ns_from_ntp64(p.receive_ts);
            let t3 = wavesync_common::time::ns_from_ntp64(p.transmit_ts);
            (t4 - t1) - (t3 - t2)
        }
        Err(_) => -1,
    }
}

fn record(out: &mut Run, clocks: &Clocks, est: &ClockEstimate, t: i64) {
    let err = est.to_timeline(LocalNs::from_ns(clocks.local(t))) - clocks.master(t);
    out.errors.push((t, err.ns()));
    out.rate_errors
        .push((t, (est.rate - clocks.true_rate()) * 1e6));
    out.uncertainty.push((t, est.uncertainty_ns));
}

/// The `q`-quantile (0..=1) of `v` (sorted in place), nearest rank.
pub fn quantile(v: &mut [i64], q: f64) -> i64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}
