//! `wavesync-lab`: the sync lab's tools; see `docs/lab.md`.

use clap::{Args, Parser, Subcommand};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use wavesync_lab::impair::{Overrides, Profile};
use wavesync_lab::relay::{Relay, RelayConfig};

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
    /// Seed of the impairment's randomness.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Multicast TTL for a multicast --forward.
    #[arg(long, default_value_t = 1)]
    ttl: u32,
    /// Write the relay's figures (JSON) here every second and at exit.
    #[arg(long)]
    stats: Option<PathBuf>,
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
    let mut fwd = Profile::named(&a.profile).map_err(|e| e.to_string())?;
    fwd.apply(&a.impair.overrides())
        .map_err(|e| e.to_string())?;
    let reverse = match &a.reverse_profile {
        Some(r) => {
            let mut p = Profile::named(r).map_err(|e| e.to_string())?;
            p.apply(&a.impair.overrides()).map_err(|e| e.to_string())?;
            p.reverse
        }
        None => fwd.reverse,
    };
    let mut cfg = RelayConfig::new(a.listen, a.forward, fwd.forward);
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Relay(a) => relay(a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wavesync-lab: {e}");
            ExitCode::FAILURE
        }
    }
}
