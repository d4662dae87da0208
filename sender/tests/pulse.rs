//! `pulse:SOURCE` against a real PulseAudio-protocol server: pipewire-pulse on a private
//! headless PipeWire (scripts/headless-pipewire), a null sink whose monitor the sender records
//! while `paplay` plays a 1 kHz tone into it: the seed's setup, without module-simple-protocol.
//!
//! Skipped (with a clear SKIPPED line on stderr) when pipewire, wireplumber, pipewire-pulse,
//! pactl or paplay are not installed.

mod util;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use util::*;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A private PipeWire + WirePlumber + pipewire-pulse, stopped and removed on drop.
struct PulseServer {
    dir: PathBuf,
    pulse: Option<Child>,
}

impl PulseServer {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/headless-pipewire")
    }

    fn start() -> PulseServer {
        let dir = tmp("pw");
        let mut s = PulseServer { dir, pulse: None };
        let out = Command::new(Self::script())
            .arg("start")
            .arg(&s.dir)
            .output()
            .expect("run scripts/headless-pipewire");
        assert!(
            out.status.success(),
            "headless-pipewire: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut cmd = Command::new("pipewire-pulse");
        let child = s
            .env(&mut cmd)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pipewire-pulse");
        s.pulse = Some(child);
        let sock = s.dir.join("run/pulse/native");
        for _ in 0..100 {
            if sock.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            sock.exists(),
            "pipewire-pulse did not open {}",
            sock.display()
        );
        s
    }

    fn env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        let run = self.dir.join("run");
        cmd.env("XDG_RUNTIME_DIR", &run)
            .env("PIPEWIRE_RUNTIME_DIR", &run)
            .env(
                "PULSE_SERVER",
                format!("unix:{}/pulse/native", run.display()),
            )
            .env_remove("PIPEWIRE_REMOTE")
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
    }

    fn run(&self, tool: &str, args: &[&str]) -> String {
        let out = self
            .env(&mut Command::new(tool))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for PulseServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.pulse.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new(Self::script())
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

#[test]
fn records_a_null_sink_monitor_while_paplay_plays_into_it() {
    let missing: Vec<&str> = [
        "pipewire",
        "wireplumber",
        "pipewire-pulse",
        "pactl",
        "paplay",
    ]
    .into_iter()
    .filter(|t| !have(t))
    .collect();
    if !missing.is_empty() {
        skip_or_fail(&format!("pulse input test needs {missing:?} installed"));
        return;
    }
    let server = PulseServer::start();
    server.run(
        "pactl",
        &["load-module", "module-null-sink", "sink_name=wsync"],
    );

    // 2 s of 1 kHz at half scale, stereo 48 kHz.
    let wav = tmp("tone1k.wav");
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 48_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&wav, spec).unwrap();
    for n in 0..96_000 {
        let v =
            (0.5 * (std::f64::consts::TAU * 1000.0 * n as f64 / 48_000.0).sin() * 32_767.0) as i16;
        w.write_sample(v).unwrap();
        w.write_sample(v).unwrap();
    }
    w.finalize().unwrap();

    let rx = listener();
    let mut cmd = sender();
    server.env(&mut cmd);
    cmd.args(["--input", "pulse:wsync.monitor", "--duration", "4.5"])
        .args(["--dest", &rx.local_addr().unwrap().to_string()])
        .args([
            "--control-port",
            &free_port().to_string(),
            "--stats-interval",
            "0",
        ]);
    let run = Running::spawn(cmd);
    // paplay runs while the test collects (the socket buffer would overflow otherwise).
    let mut paplay = Command::new("sh");
    server.env(&mut paplay).args([
        "-c",
        &format!("sleep 0.7; paplay --device=wsync {}", wav.display()),
    ]);
    let mut paplay = paplay.spawn().expect("start paplay");
    let (got, status, err) = run.collect(&[&rx], Duration::from_secs(15));
    assert!(paplay.wait().unwrap().success(), "paplay failed");
    std::fs::remove_file(&wav).unwrap();
    assert!(status.success(), "{err}");

    let a = audio(&got[0]);
    let runs = check_runs(&a, 48_000, 4);
    // Silence before and after the tone is not sent: one run, the tone's 2 s (plus the
    // second of silence before the sender pauses the stream).
    assert_eq!(runs.len(), 1, "{runs:?}\n{err}");
    let samples = l16(&a);
    let frames = samples.len() / 2;
    assert!(
        (2.0..3.3).contains(&(frames as f64 / 48_000.0)),
        "{frames} frames"
    );
    // The tone is there: 1 kHz (2000 zero crossings a second) at about half scale.
    let left: Vec<f64> = samples
        .iter()
        .step_by(2)
        .map(|&s| s as f64 / 32_768.0)
        .collect();
    let peak = left.iter().cloned().fold(0.0, f64::max);
    assert!((0.4..0.6).contains(&peak), "peak {peak}");
    // 1 kHz: rising zero crossings 48 frames apart (the median, so that a dropout of the
    // headless server under load does not decide the test).
    let rising: Vec<usize> = left
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[0] < 0.0 && w[1] >= 0.0)
        .map(|(i, _)| i)
        .collect();
    let mut periods: Vec<usize> = rising.windows(2).map(|w| w[1] - w[0]).collect();
    periods.sort_unstable();
    assert!(periods.len() > 1_800, "{} cycles", periods.len());
    let median = periods[periods.len() / 2];
    let near = periods.iter().filter(|p| (47..=49).contains(*p)).count();
    assert_eq!(median, 48, "median period {median} frames");
    assert!(
        near * 10 >= periods.len() * 9,
        "{near} of {} periods near 48",
        periods.len()
    );
    // Stamped from arrival: every packet leaves within a few tens of ms of `latency` before
    // its play time (bursts from the server are smoothed, never ahead of real time).
    let leads = leads_ms(&a);
    let (lo, hi) = range(&leads[..leads.len() - 1]);
    eprintln!(
        "pulse: {} packets, lead {lo:.1}..{hi:.1} ms (latency 150)",
        a.len()
    );
    assert!(lo > 150.0 - 60.0 && hi < 150.0, "lead {lo:.1}..{hi:.1} ms");
}
