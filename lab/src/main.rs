//! `wavesync-lab`: the sync lab's tools; see `docs/lab.md`.

use clap::{Args, Parser, Subcommand};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wavesync_lab::analyze::{self, DacLog, SkewConfig};
use wavesync_lab::impair::{Overrides, Profile};
use wavesync_lab::relay::{Relay, RelayConfig, RelayReport};
use wavesync_lab::report::{self, LabReport, PeerFigures, RxCounters, Usage};
use wavesync_lab::stamps::{self, AnchorLog};
use wavesync_lab::topology::{self, Topology};
use wavesync_lab::xcorr::{self, XcorrConfig};
use wavesync_lab::{attack, probe, signal};

#[derive(Parser, Debug)]
#[command(name = "wavesync-lab", version, about = "WaveSync sync lab tools")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// UDP relay that impairs traffic both ways (delay, jitter, loss, reordering, duplication).
    Relay(RelayArgs),
    /// Skew between every pair of receivers from their virtual-DAC logs.
    Skew(SkewArgs),
    /// Black-box skew of B against A by cross-correlation (GCC-PHAT, sub-sample).
    Xcorr(XcorrArgs),
    /// Writes the lab's test signal (chirps between music-like noise) as a WAV file.
    Signal(SignalArgs),
    /// Makes or removes the lab's network namespaces (hub bridge, master, receivers).
    Topology(TopologyArgs),
    /// Puts a lab run's figures together: Markdown tables, then one JSON line.
    Report(ReportArgs),
    /// Writes a WAV file as raw s16le in real time into FIFOs, files and unix stream sockets
    /// (feeds the peers' inputs; every output gets the same chunk at the same moment).
    Feed {
        /// 16-bit WAV file.
        #[arg(long)]
        wav: PathBuf,
        /// Output FIFO (opened read-write: never waits for a reader) or file (repeat).
        #[arg(long)]
        out: Vec<PathBuf>,
        /// Unix stream socket to listen on; the connected client gets the stream (repeat).
        #[arg(long)]
        unix_listen: Vec<PathBuf>,
        /// Play it again and again.
        #[arg(long = "loop")]
        looped: bool,
        /// Frames per write.
        #[arg(long, default_value_t = 240)]
        chunk_frames: usize,
    },
    /// Prints the JSON status a receiver serves on its unix socket.
    ReadStatus {
        /// The receiver's --status-socket.
        socket: PathBuf,
    },
    /// Attacks the stream from a host without the key (forged, replayed and spoofed
    /// datagrams of every kind; see docs/lab.md); writes what it sent as JSON.
    Attack(AttackArgs),
    /// Judges an attack: the attacker's JSON, each room's status before and after and its
    /// played audio, and the master's log; prints one JSON line, exit status 1 if a check
    /// failed.
    AttackJudge(AttackJudgeArgs),
    /// Sends a few multicast datagrams (topology check).
    ProbeSend(ProbeArgs),
    /// Waits for multicast datagrams from probe-send; exit status 0 if all arrived.
    ProbeRecv(ProbeArgs),
}

#[derive(Args, Debug)]
struct ReportArgs {
    /// Virtual-DAC logs of the receivers.
    logs: Vec<PathBuf>,
    /// Profile name for the report.
    #[arg(long)]
    profile: String,
    /// Receivers in the run (logs may be missing if one failed).
    #[arg(long)]
    receivers: usize,
    /// Latency of the stream, ms.
    #[arg(long)]
    latency_ms: Option<f64>,
    /// Usage of one receiver as CPU_PCT:RSS_KIB (repeat per receiver).
    #[arg(long)]
    usage: Vec<String>,
    /// A relay's stats file as NAME=FILE (repeat).
    #[arg(long)]
    relay_stats: Vec<String>,
    /// A receiver's status JSON (from read-status; repeat per receiver): concealed frames,
    /// lost/recovered/late packets are summed.
    #[arg(long)]
    rx_status: Vec<PathBuf>,
    /// Which master played (`sender`: wavesync-sender).
    #[arg(long)]
    master: Option<String>,
    /// The data relay's anchors file: judge each receiver against the master's stamps.
    #[arg(long)]
    anchors: Option<PathBuf>,
    /// A peer's figures as NAME=P99_US:CPU_PCT:RSS_KIB:LATENCY_MS[:P50_US:MAX_US:TX_CPU_PCT:
    /// TX_RSS_KIB] (black-box skew, receivers' mean CPU and largest RSS, its buffer, its
    /// server's usage; `-` for unknown; repeat).
    #[arg(long)]
    peer: Vec<String>,
    /// The master's usage as CPU_PCT:RSS_KIB.
    #[arg(long)]
    master_usage: Option<String>,
    /// Black-box skew p99, us.
    #[arg(long)]
    blackbox_p99_us: Option<f64>,
    /// Nominal stream rate, Hz.
    #[arg(long, default_value_t = 48_000)]
    rate: u32,
}

#[derive(Args, Debug)]
struct TopologyArgs {
    /// up, down or list.
    #[arg(value_parser = ["up", "down", "list"])]
    action: String,
    /// Receiver hosts.
    #[arg(long, default_value_t = 2)]
    receivers: usize,
    /// Also make a relay host (10.77.0.2).
    #[arg(long)]
    relay: bool,
    /// Prefix of the namespaces' names.
    #[arg(long, default_value = "wslab")]
    prefix: String,
}

#[derive(Args, Debug)]
struct AttackArgs {
    /// The stream's multicast group and port.
    #[arg(long)]
    group: SocketAddrV4,
    /// The attacker's own address (joins the group there).
    #[arg(long)]
    iface: Ipv4Addr,
    /// The address the rooms take the stream and time from (the forged source).
    #[arg(long)]
    spoof: Ipv4Addr,
    /// The master's address (forged NACKs go straight to it).
    #[arg(long)]
    master: Ipv4Addr,
    /// The master's control port.
    #[arg(long, default_value_t = 45301)]
    control_port: u16,
    /// A room's control socket (forged time replies and commands go there; repeat).
    #[arg(long)]
    room: Vec<SocketAddrV4>,
    /// How long to attack, s.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Forged datagrams of each kind per second.
    #[arg(long, default_value_t = 50)]
    rate_hz: u32,
    /// Age of a captured packet when it is replayed, ms.
    #[arg(long, default_value_t = 2000)]
    replay_after_ms: u64,
    /// Where to write what was sent (JSON).
    #[arg(long)]
    stats: PathBuf,
}

#[derive(Args, Debug)]
struct AttackJudgeArgs {
    /// The attacker's JSON (from `attack --stats`).
    #[arg(long)]
    attack: PathBuf,
    /// A room as LABEL=STATUS_BEFORE.json,STATUS_AFTER.json,AUDIO.f32 (repeat).
    #[arg(long)]
    room: Vec<String>,
    /// The master's log.
    #[arg(long)]
    master_log: PathBuf,
}

#[derive(Args, Debug)]
struct ProbeArgs {
    /// Multicast group and port.
    #[arg(long, default_value = "239.255.77.99:45399")]
    group: SocketAddrV4,
    /// Address of the interface to send on / join on.
    #[arg(long)]
    iface: Ipv4Addr,
    /// Datagrams to send / expect.
    #[arg(long, default_value_t = 3)]
    count: u32,
    /// Payload.
    #[arg(long, default_value = "wavesync-lab probe")]
    payload: String,
    /// probe-send: gap between datagrams, ms.
    #[arg(long, default_value_t = 10)]
    gap_ms: u64,
    /// probe-recv: give up after this long, ms.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
}

#[derive(Args, Debug)]
struct SkewArgs {
    /// Virtual-DAC logs, one per receiver (at least two).
    #[arg(required = true, num_args = 2..)]
    logs: Vec<PathBuf>,
    /// Nominal stream rate, Hz.
    #[arg(long, default_value_t = 48_000)]
    rate: u32,
    /// |skew| under this counts as locked, us.
    #[arg(long, default_value_t = 100.0)]
    lock_us: f64,
    /// Write every skew sample here as CSV (pair, realtime_ns, position, skew_us).
    #[arg(long)]
    series: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct XcorrArgs {
    /// Reference recording (WAV, or raw s16le with --raw).
    a: PathBuf,
    /// Recording whose delay against A is measured.
    b: PathBuf,
    /// Inputs are raw interleaved signed 16-bit little-endian.
    #[arg(long)]
    raw: bool,
    /// Channels of raw input.
    #[arg(long, default_value_t = 2)]
    channels: u16,
    /// Sample rate of raw input, Hz.
    #[arg(long, default_value_t = 48_000)]
    rate: u32,
    /// Channel to use (0-based).
    #[arg(long, default_value_t = 0)]
    channel: u16,
    /// Channel of B, if not --channel (B may be the same file as A: one multichannel
    /// recording of several receivers).
    #[arg(long)]
    channel_b: Option<u16>,
    /// Window, samples (power of two).
    #[arg(long, default_value_t = 8192)]
    window: usize,
    /// Step between windows, ms.
    #[arg(long, default_value_t = 250.0)]
    hop_ms: f64,
    /// Largest |delay| searched, ms.
    #[arg(long, default_value_t = 50.0)]
    max_lag_ms: f64,
    /// Windows whose whitened peak (0..1) is below this are left out.
    #[arg(long, default_value_t = 0.1)]
    min_peak: f64,
    /// Leave out the windows centred in the first this many seconds (start-up, locking).
    #[arg(long, default_value_t = 0.0)]
    skip_s: f64,
    /// Write every window's delay here as CSV (time_s, delay_us, peak).
    #[arg(long)]
    series: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct SignalArgs {
    /// Output WAV file (16-bit, stereo).
    #[arg(long)]
    out: PathBuf,
    /// Length, seconds.
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// Sample rate, Hz.
    #[arg(long, default_value_t = 48_000)]
    rate: u32,
    /// Seed of the music-like noise.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Channels (all identical).
    #[arg(long, default_value_t = 2)]
    channels: u16,
}

/// Explicit impairment overrides, applied to both directions.
#[derive(Args, Debug, Clone)]
struct ImpairArgs {
    /// Long-run loss, percent (random; in bursts with --burst-ms).
    #[arg(long)]
    loss: Option<f64>,
    /// Mean loss burst, ms (bursts lose everything; with --loss).
    #[arg(long)]
    burst_ms: Option<f64>,
    /// Jitter p99, ms (log-normal tail of the profile kept).
    #[arg(long)]
    jitter_ms: Option<f64>,
    /// Fixed one-way delay, ms.
    #[arg(long)]
    delay_ms: Option<f64>,
    /// Packets held back so later ones overtake them, percent.
    #[arg(long)]
    reorder: Option<f64>,
    /// Packets duplicated, percent.
    #[arg(long)]
    duplicate: Option<f64>,
}

impl ImpairArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            loss_pct: self.loss,
            burst_ms: self.burst_ms,
            jitter_ms: self.jitter_ms,
            delay_ms: self.delay_ms,
            reorder_pct: self.reorder,
            duplicate_pct: self.duplicate,
        }
    }
}

#[derive(Args, Debug)]
struct RelayArgs {
    /// Address to listen on: unicast IP:PORT, or a multicast GROUP:PORT to join.
    #[arg(long)]
    listen: SocketAddrV4,
    /// Interface address to join a multicast --listen group on.
    #[arg(long)]
    listen_if: Option<Ipv4Addr>,
    /// Where to send: unicast IP:PORT or multicast GROUP:PORT.
    #[arg(long)]
    forward: SocketAddrV4,
    /// Source address of upstream sockets / interface for a multicast --forward.
    #[arg(long)]
    forward_if: Option<Ipv4Addr>,
    /// Profile of both directions: none, wired, wifi, bad.
    #[arg(long, default_value = "wired")]
    profile: String,
    /// Profile of the reverse direction (replies), if different.
    #[arg(long)]
    reverse_profile: Option<String>,
    /// The clients are downstream (receivers sending time queries and NACKs to the master):
    /// impair client -> server with the profile's upstream direction and the replies with its
    /// downstream one.
    #[arg(long)]
    clients_downstream: bool,
    /// Seed of the impairment's randomness.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Multicast TTL for a multicast --forward.
    #[arg(long, default_value_t = 1)]
    ttl: u32,
    /// Write the relay's figures (JSON) here every second and at exit.
    #[arg(long)]
    stats: Option<PathBuf>,
    /// Log the stamps of the audio stream passing through (one anchor per run) to this file.
    #[arg(long)]
    anchors: Option<PathBuf>,
    /// Stream rate, for --anchors.
    #[arg(long, default_value_t = 48_000)]
    rate: u32,
    /// For --anchors: the stream's timeline is CLOCK_REALTIME already (clock domains `system`
    /// and `ntp`, the NTP server serving this host's clock), not the master's CLOCK_MONOTONIC.
    #[arg(long)]
    realtime_timeline: bool,
    #[command(flatten)]
    impair: ImpairArgs,
}

fn stop_flag() -> Result<Arc<AtomicBool>, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    ctrlc::set_handler(move || s.store(true, Ordering::Relaxed))
        .map_err(|e| format!("cannot install the signal handler: {e}"))?;
    Ok(stop)
}

fn relay(a: RelayArgs) -> Result<(), String> {
    let named = |name: &str| -> Result<Profile, String> {
        let mut p = Profile::named(name).map_err(|e| e.to_string())?;
        p.apply(&a.impair.overrides()).map_err(|e| e.to_string())?;
        Ok(p)
    };
    let fwd = named(&a.profile)?;
    let rev = match &a.reverse_profile {
        Some(r) => named(r)?,
        None => fwd.clone(),
    };
    // Downstream = the profile's forward direction (master -> receivers).
    let (forward, reverse) = if a.clients_downstream {
        (fwd.reverse, rev.forward)
    } else {
        (fwd.forward, rev.reverse)
    };
    let mut cfg = RelayConfig::new(a.listen, a.forward, forward);
    cfg.reverse_profile = reverse;
    cfg.listen_if = a.listen_if;
    cfg.forward_if = a.forward_if;
    cfg.seed = a.seed;
    cfg.multicast_ttl = a.ttl;
    cfg.stats_path = a.stats;
    cfg.profile_name = match &a.reverse_profile {
        Some(r) => format!("{}/{}", fwd.name, r),
        None => fwd.name.clone(),
    };
    let mut relay = Relay::bind(cfg).map_err(|e| e.to_string())?;
    if let Some(path) = &a.anchors {
        let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut log = AnchorLog::new(file, a.rate);
        if a.realtime_timeline {
            log = log.on_realtime_timeline();
        }
        let mut failed = false;
        relay.set_observer(Box::new(move |d| {
            if let Err(e) = log.observe(d) {
                if !failed {
                    eprintln!("relay: cannot write anchors: {e}");
                    failed = true;
                }
            }
        }));
    }
    let stop = stop_flag()?;
    eprintln!(
        "relay: {} -> {} profile {} (seed {})",
        a.listen, a.forward, a.profile, a.seed
    );
    let report = relay.run(&stop).map_err(|e| e.to_string())?;
    println!(
        "{}",
        serde_json::to_string(&report).map_err(|e| e.to_string())?
    );
    Ok(())
}

fn skew(a: SkewArgs) -> Result<(), String> {
    let logs = a
        .logs
        .iter()
        .map(|p| DacLog::read(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let cfg = SkewConfig {
        rate: a.rate,
        lock_threshold_ns: a.lock_us * 1e3,
        ..Default::default()
    };
    let an = analyze::analyze(&logs, &cfg);
    if let Some(path) = &a.series {
        let mut csv = String::from("pair,realtime_ns,position,skew_us\n");
        for p in &an.pairs {
            for x in &p.samples {
                csv += &format!(
                    "{}-{},{},{},{:.3}\n",
                    p.a + 1,
                    p.b + 1,
                    x.realtime_ns,
                    x.position,
                    x.skew_ns / 1e3
                );
            }
        }
        std::fs::write(path, csv).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    println!("| pair | samples | lock ms | skew p50 us | p99 us | max us | mean us | all max us |");
    println!("|---|---|---|---|---|---|---|---|");
    for p in &an.pairs {
        let s = &p.summary;
        println!(
            "| rx{}-rx{} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            p.a + 1,
            p.b + 1,
            s.samples,
            s.lock_ms.map_or("never".into(), |l| format!("{l:.0}")),
            s.p50_us,
            s.p99_us,
            s.max_us,
            s.mean_us,
            s.all_max_us
        );
    }
    let json = serde_json::json!({
        "receivers": logs.len(),
        "skew_p50_us": an.skew_p50_us,
        "skew_p99_us": an.skew_p99_us,
        "skew_max_us": an.skew_max_us,
        "lock_ms": an.lock_ms,
    });
    println!("{json}");
    Ok(())
}

fn read_input(
    a: &XcorrArgs,
    path: &std::path::Path,
    channel: u16,
) -> Result<(Vec<f32>, u32), String> {
    if a.raw {
        let x = signal::read_raw_s16le(path, a.channels, channel).map_err(|e| e.to_string())?;
        Ok((x, a.rate))
    } else {
        signal::read_wav(path, channel).map_err(|e| e.to_string())
    }
}

fn xcorr_cmd(a: XcorrArgs) -> Result<(), String> {
    let (x, rate_a) = read_input(&a, &a.a, a.channel)?;
    let (y, rate_b) = read_input(&a, &a.b, a.channel_b.unwrap_or(a.channel))?;
    if rate_a != rate_b {
        return Err(format!("sample rates differ: {rate_a} and {rate_b}"));
    }
    let mut cfg = XcorrConfig::new(rate_a);
    cfg.window = a.window;
    cfg.hop = ((a.hop_ms * f64::from(rate_a) / 1e3) as usize).max(1);
    cfg.max_lag = (a.max_lag_ms * f64::from(rate_a) / 1e3) as usize;
    cfg.min_peak = a.min_peak;
    let mut w = xcorr::sliding(&x, &y, &cfg).map_err(|e| e.to_string())?;
    w.retain(|d| d.time_s >= a.skip_s);
    if let Some(path) = &a.series {
        let mut csv = String::from("time_s,delay_us,peak\n");
        for d in &w {
            csv += &format!("{:.3},{:.3},{:.3}\n", d.time_s, d.delay_us, d.peak);
        }
        std::fs::write(path, csv).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let s = xcorr::summarize(&w, cfg.min_peak);
    println!("| windows | used | skew p50 us | p99 us | max us | mean us |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
        s.windows, s.used, s.p50_us, s.p99_us, s.max_us, s.mean_us
    );
    println!(
        "{}",
        serde_json::json!({
            "windows": s.windows, "used": s.used,
            "blackbox_skew_p50_us": s.p50_us, "blackbox_skew_p99_us": s.p99_us,
            "blackbox_skew_max_us": s.max_us, "blackbox_skew_mean_us": s.mean_us,
        })
    );
    Ok(())
}

fn signal_cmd(a: SignalArgs) -> Result<(), String> {
    let cfg = signal::SignalConfig {
        rate: a.rate,
        seconds: a.seconds,
        seed: a.seed,
        ..Default::default()
    };
    let x = signal::generate(&cfg);
    signal::write_wav(&a.out, &x, a.rate, a.channels).map_err(|e| e.to_string())?;
    eprintln!(
        "signal: {} s at {} Hz x {} channels -> {}",
        a.seconds,
        a.rate,
        a.channels,
        a.out.display()
    );
    Ok(())
}

fn feed_cmd(
    wav: &std::path::Path,
    out: &[PathBuf],
    unix_listen: &[PathBuf],
    looped: bool,
    chunk_frames: usize,
) -> Result<(), String> {
    use wavesync_lab::feed::{self, SinkSpec};
    if out.is_empty() && unix_listen.is_empty() {
        return Err("feed: give at least one --out or --unix-listen".into());
    }
    let stop = stop_flag()?;
    let sinks: Vec<SinkSpec> = out
        .iter()
        .cloned()
        .map(SinkSpec::Path)
        .chain(unix_listen.iter().cloned().map(SinkSpec::UnixListen))
        .collect();
    let stats = feed::run(wav, &sinks, looped, chunk_frames, &stop).map_err(|e| e.to_string())?;
    println!(
        "{}",
        serde_json::to_string(&stats).map_err(|e| e.to_string())?
    );
    Ok(())
}

fn read_status(socket: &std::path::Path) -> Result<(), String> {
    use std::io::Read;
    let mut conn = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    conn.read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    print!("{text}");
    Ok(())
}

fn report_cmd(a: ReportArgs) -> Result<(), String> {
    let mut logs = Vec::new();
    for p in &a.logs {
        match DacLog::read(p) {
            Ok(l) => logs.push(l),
            // A receiver that failed leaves no log: report without it, and say so.
            Err(e) => eprintln!("report: skipping {}: {e}", p.display()),
        }
    }
    let cfg = SkewConfig {
        rate: a.rate,
        ..Default::default()
    };
    let an = (logs.len() >= 2).then(|| analyze::analyze(&logs, &cfg));
    let mut usage = Vec::new();
    for u in &a.usage {
        let (c, r) = u
            .split_once(':')
            .ok_or_else(|| format!("--usage {u:?}: expected CPU_PCT:RSS_KIB"))?;
        usage.push(Usage {
            cpu_pct: c.parse().map_err(|_| format!("--usage {u:?}: bad CPU"))?,
            rss_kib: r.parse().map_err(|_| format!("--usage {u:?}: bad RSS"))?,
        });
    }
    let mut relays = Vec::new();
    for r in &a.relay_stats {
        let (name, file) = r
            .split_once('=')
            .ok_or_else(|| format!("--relay-stats {r:?}: expected NAME=FILE"))?;
        let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
        let rep: RelayReport = serde_json::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
        relays.push((name.to_string(), rep));
    }
    let mut rep = LabReport::new(&a.profile, a.receivers, an.as_ref(), &usage, a.latency_ms);
    let mut counters = Vec::new();
    for p in &a.rx_status {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        counters.push(
            RxCounters::from_status_json(&text).map_err(|e| format!("{}: {e}", p.display()))?,
        );
    }
    rep.set_counters(&counters);
    rep.master = a.master;
    if let Some(u) = &a.master_usage {
        let u = report::parse_usage(u)
            .ok_or_else(|| format!("--master-usage {u:?}: expected CPU_PCT:RSS_KIB"))?;
        rep.tx_cpu_pct = Some(u.cpu_pct);
        rep.tx_rss_kib = Some(u.rss_kib);
    }
    if !a.peer.is_empty() {
        let mut peers = std::collections::BTreeMap::new();
        for p in &a.peer {
            let (name, figs) = p
                .split_once('=')
                .and_then(|(n, f)| Some((n, PeerFigures::parse(f)?)))
                .ok_or_else(|| {
                    format!(
                        "--peer {p:?}: expected NAME=P99:CPU:RSS:LATENCY[:P50:MAX:TX_CPU:TX_RSS]"
                    )
                })?;
            peers.insert(name.to_string(), figs);
        }
        rep.peers = Some(peers);
    }
    if let Some(path) = &a.anchors {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let anchors = stamps::parse_anchors(&text).map_err(|e| e.to_string())?;
        println!("Each receiver against the master's stamps (after the first 2 s; + = late):\n");
        println!("| receiver | samples | mean us | p50 us | p99 us | max us |");
        println!("|---|---|---|---|---|---|");
        let mut all = Vec::new();
        for (i, log) in logs.iter().enumerate() {
            let e = stamps::stamp_errors(log, &anchors, a.rate);
            let s = stamps::summarize(&e, 2_000_000_000);
            println!(
                "| rx{} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
                i + 1,
                s.samples,
                s.mean_us,
                s.p50_us,
                s.p99_us,
                s.max_us
            );
            all.push(s);
        }
        println!();
        rep.set_stamp_errors(&all);
    }
    rep.blackbox_skew_p99_us = a.blackbox_p99_us;
    if let Some(an) = &an {
        println!("Skew per pair (from the virtual-DAC logs):\n");
        println!("| pair | samples | lock ms | skew p50 us | p99 us | max us | mean us |");
        println!("|---|---|---|---|---|---|---|");
        for p in &an.pairs {
            let s = &p.summary;
            println!(
                "| rx{}-rx{} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
                p.a + 1,
                p.b + 1,
                s.samples,
                s.lock_ms.map_or("never".into(), |l| format!("{l:.0}")),
                s.p50_us,
                s.p99_us,
                s.max_us,
                s.mean_us
            );
        }
        println!();
    }
    if !relays.is_empty() {
        println!("What the relays did:\n");
        print!("{}", report::relay_markdown(&relays));
        println!();
    }
    print!("{}", rep.markdown());
    println!(
        "{}",
        serde_json::to_string(&rep).map_err(|e| e.to_string())?
    );
    Ok(())
}

fn topology_cmd(a: TopologyArgs) -> Result<(), String> {
    let t = Topology {
        prefix: a.prefix.clone(),
        receivers: a.receivers,
        relay: a.relay,
    };
    match a.action.as_str() {
        "up" => {
            let stop = stop_flag()?;
            t.up(&|| stop.load(Ordering::Relaxed))
                .map_err(|e| e.to_string())?;
            for (name, ns, addr) in t.hosts() {
                println!("{name} {ns} {addr}");
            }
        }
        "down" => {
            let gone = topology::down(&a.prefix).map_err(|e| e.to_string())?;
            eprintln!("removed {} namespaces {:?}", gone.len(), gone);
        }
        _ => {
            for ns in topology::namespaces(&a.prefix).map_err(|e| e.to_string())? {
                println!("{ns}");
            }
        }
    }
    Ok(())
}

fn attack_cmd(a: AttackArgs) -> Result<(), String> {
    if !(a.seconds > 0.0 && a.seconds < 86_400.0) {
        return Err("--seconds must be within 0..86400".into());
    }
    let cfg = attack::AttackConfig {
        group: a.group,
        iface: a.iface,
        spoof: a.spoof,
        control_port: a.control_port,
        master: a.master,
        rooms: a.room,
        duration: Duration::from_secs_f64(a.seconds),
        rate_hz: a.rate_hz,
        replay_after: Duration::from_millis(a.replay_after_ms),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let _ = ctrlc::set_handler(move || s.store(true, Ordering::Relaxed));
    let stats = attack::run(&cfg, &|| stop.load(Ordering::Relaxed))
        .map_err(|e| format!("attack (needs CAP_NET_RAW for its raw socket): {e}"))?;
    let json = serde_json::to_string(&stats).map_err(|e| e.to_string())?;
    std::fs::write(&a.stats, format!("{json}\n"))
        .map_err(|e| format!("{}: {e}", a.stats.display()))?;
    eprintln!("attack: {json}");
    Ok(())
}

fn attack_judge(a: AttackJudgeArgs) -> Result<(), String> {
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let json = |p: &std::path::Path| -> Result<serde_json::Value, String> {
        serde_json::from_slice(&read(p)?).map_err(|e| format!("{}: {e}", p.display()))
    };
    let stats: attack::AttackStats = serde_json::from_slice(&read(&a.attack)?)
        .map_err(|e| format!("{}: {e}", a.attack.display()))?;
    let mut rooms = Vec::new();
    for r in &a.room {
        let bad = || format!("--room {r}: want LABEL=BEFORE.json,AFTER.json,AUDIO.f32");
        let (label, files) = r.split_once('=').ok_or_else(bad)?;
        let f: Vec<&str> = files.split(',').collect();
        let [before, after, audio] = f[..] else {
            return Err(bad());
        };
        rooms.push((
            label.to_string(),
            json(before.as_ref())?,
            json(after.as_ref())?,
            // A room that played nothing left no file: judged as such.
            std::fs::read(audio).unwrap_or_default(),
        ));
    }
    let master = String::from_utf8_lossy(&read(&a.master_log)?).into_owned();
    let v = attack::judge(stats, &rooms, &master);
    println!("{}", serde_json::to_string(&v).map_err(|e| e.to_string())?);
    if v.ok {
        Ok(())
    } else {
        Err(format!("the attack got through: {}", v.problems.join("; ")))
    }
}

fn probe_send(a: ProbeArgs) -> Result<(), String> {
    probe::send(
        a.group,
        a.iface,
        a.count,
        a.payload.as_bytes(),
        Duration::from_millis(a.gap_ms),
    )
    .map_err(|e| format!("probe-send to {}: {e}", a.group))
}

fn probe_recv(a: ProbeArgs) -> Result<(), String> {
    let got = probe::receive(
        a.group,
        a.iface,
        a.count,
        a.payload.as_bytes(),
        Duration::from_millis(a.timeout_ms),
        &mut std::io::stdout(),
    )
    .map_err(|e| format!("probe-recv on {}: {e}", a.group))?;
    println!("received {got}");
    if got < a.count {
        return Err(format!("only {got} of {} datagrams arrived", a.count));
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Relay(a) => relay(a),
        Cmd::Skew(a) => skew(a),
        Cmd::Xcorr(a) => xcorr_cmd(a),
        Cmd::Signal(a) => signal_cmd(a),
        Cmd::Topology(a) => topology_cmd(a),
        Cmd::Report(a) => report_cmd(a),
        Cmd::ReadStatus { socket } => read_status(&socket),
        Cmd::Feed {
            wav,
            out,
            unix_listen,
            looped,
            chunk_frames,
        } => feed_cmd(&wav, &out, &unix_listen, looped, chunk_frames),
        Cmd::Attack(a) => attack_cmd(a),
        Cmd::AttackJudge(a) => attack_judge(a),
        Cmd::ProbeSend(a) => probe_send(a),
        Cmd::ProbeRecv(a) => probe_recv(a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wavesync-lab: {e}");
            ExitCode::FAILURE
        }
    }
}
