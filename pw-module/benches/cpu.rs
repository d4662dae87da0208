//! CPU cost of the PipeWire process carrying the module, next to PipeWire's own
//! `libpipewire-module-rtp-sink`, in the same run.
//!
//! For each configuration a fresh headless PipeWire + WirePlumber is started, `pw-play` plays
//! a 48 kHz stereo 16-bit signal into the sink for `WAVESYNC_BENCH_SECS` (default 25) seconds,
//! and the daemon's user+sys time (from `/proc/<pid>/stat`) over the play is divided by the
//! wall time. Median of `WAVESYNC_BENCH_RUNS` (default 3) runs. Packets go to a UDP socket on
//! 127.0.0.1 that reads them (so the kernel path is the same for both); rtp-sink's SAP
//! announcements are pointed at loopback too.
//!
//! `cargo bench -p pipewire-module-wavesync --bench cpu`

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

struct Case {
    name: &'static str,
    target: &'static str,
    dropin: Option<(&'static str, String)>,
}

fn cpu_ticks(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after ") ".
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn daemon_pid(daemon: &Daemon) -> i32 {
    // The daemon's pid file sits next to its runtime dir.
    let dir = daemon.runtime_dir();
    let pid_file = dir.parent().expect("daemon dir").join("pipewire.pid");
    fs::read_to_string(pid_file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid")
}

/// One run: returns (CPU % of the daemon, packets received).
fn run_once(case: &Case, wav: &Path, secs: u64) -> Option<(f64, usize)> {
    let listener = Listener::start();
    let dropins: Vec<(&str, String)> = case
        .dropin
        .iter()
        .map(|(n, c)| (*n, c.replace("@PORT@", &listener.port.to_string())))
        .collect();
    let daemon = match Daemon::start(&dropins, false) {
        Ok(d) => d,
        Err(f) => {
            eprintln!("{}: daemon did not start: {f:?}", case.name);
            return None;
        }
    };
    daemon.wait_node(case.target)?;
    let pid = daemon_pid(&daemon);
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut player = daemon.spawn_play(case.target, wav);
    // Skip the start-up (linking, format negotiation): measure the steady state.
    std::thread::sleep(Duration::from_secs(1));
    let t0 = Instant::now();
    let c0 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(secs));
    let c1 = cpu_ticks(pid);
    let wall = t0.elapsed().as_secs_f64();
    let _ = player.kill();
    let _ = player.wait();
    let (c0, c1) = (c0?, c1?);
    drop(daemon);
    let packets = listener.finish().len();
    Some(((c1 - c0) as f64 / hz / wall * 100.0, packets))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing useful: both run.
    let secs: u64 = std::env::var("WAVESYNC_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(25);
    let runs: usize = std::env::var("WAVESYNC_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let scratch = Scratch::new("bench");
    let wav = scratch.path().join("signal.wav");
    write_wav(&wav, &test_signal(48_000 * (secs as usize + 3)));

    let control = free_udp_port();
    let sap = free_udp_port();
    let cases = [
        Case {
            name: "no module (play into the CI null sink)",
            target: "ci-null-sink",
            dropin: None,
        },
        Case {
            name: "libpipewire-module-wavesync (L16, 361 frames/packet)",
            target: "wavesync",
            dropin: Some(module_dropin(
                &format!(
                    "destination.ip = 127.0.0.1 destination.port = @PORT@ \
                     wavesync.control.port = {control}"
                ),
                true,
            )),
        },
        Case {
            name: "libpipewire-module-wavesync, node.latency = 368/48000 as rtp-sink",
            target: "wavesync",
            dropin: Some(module_dropin(
                &format!(
                    "destination.ip = 127.0.0.1 destination.port = @PORT@ \
                     wavesync.control.port = {control} node.latency = 368/48000"
                ),
                true,
            )),
        },
        Case {
            name: "libpipewire-module-rtp-sink (S16BE, MTU 1472 -> 368 frames/packet)",
            target: "rtp-sink",
            dropin: Some((
                "50-rtp-sink.conf",
                format!(
                    "context.modules = [ {{ name = libpipewire-module-rtp-sink args = {{ \
                     source.ip = 127.0.0.1 destination.ip = 127.0.0.1 destination.port = @PORT@ \
                     sap.ip = 127.0.0.1 sap.port = {sap} net.mtu = 1472 \
                     audio.format = S16BE audio.rate = 48000 audio.channels = 2 \
                     audio.position = [ FL FR ] \
                     stream.props = {{ node.name = rtp-sink }} }} }} ]\n"
                ),
            )),
        },
    ];

    println!(
        "CPU of the PipeWire daemon, 48 kHz stereo, {secs} s of pw-play per run, median of {runs} runs"
    );
    println!(
        "{:<68} {:>8} {:>22} {:>10}",
        "configuration", "CPU %", "runs", "packets/s"
    );
    for case in &cases {
        let mut cpu = Vec::new();
        let mut pkts = Vec::new();
        for _ in 0..runs {
            if let Some((c, p)) = run_once(case, &wav, secs) {
                cpu.push(c);
                pkts.push(p as f64 / (secs as f64 + 1.0));
            }
        }
        let list = cpu
            .iter()
            .map(|c| format!("{c:.2}"))
            .collect::<Vec<_>>()
            .join(" ");
        println!(
            "{:<68} {:>8.2} {:>22} {:>10.0}",
            case.name,
            median(&mut cpu.clone()),
            list,
            median(&mut pkts)
        );
    }
}
