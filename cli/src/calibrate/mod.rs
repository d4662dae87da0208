//! `wavesync calibrate`: a microphone at the listening spot hears each room in turn and the
//! rooms' trims are set so that all arrive there together (docs/calibrate.md).
//!
//! ```text
//! wavesync calibrate [--master HOST[:PORT]] [--key-file PATH] [--mic SOURCE] [--play SINK]
//!                    [--rooms a,b,...] [--level DB] [--seconds S] [--mic-delay MS] [--dry-run]
//!                    [--json]
//! ```
//!
//! The probe ([`wavesync_common::calibrate::probe`]) plays into the master without a break
//! ([`play`]) while every room is `off`; each room in turn is switched `on` for `--seconds`
//! through the control path, the microphone is recorded throughout ([`record`]), and each
//! room's stretch is measured and solved in `wavesync_common::calibrate`. Every room's on/off
//! state is put back afterwards, on an error and on Ctrl-C too; the trims are set only when
//! every room was measured, and all put back if setting one fails.

pub mod play;
pub mod record;

use std::time::Duration;

use serde_json::json;
use wavesync_common::calibrate::measure::{measure, Arrival};
use wavesync_common::calibrate::probe::{level_db, Probe};
use wavesync_common::calibrate::solve::{check_repeat, solve, Plan};
use wavesync_common::wire::control::{Command, Outcome};
use wavesync_net::clock::monotonic_ns;

use crate::rooms::Control;
use play::{PlaySpec, Player};
use record::Recorder;

const USAGE: &str = "usage: wavesync calibrate [--master HOST[:PORT]] [--key-file PATH] \
[--mic SOURCE] [--play SINK] [--rooms a,b,...] [--level DB] [--seconds S] [--mic-delay MS] [--dry-run] [--json]

  --mic SOURCE     the microphone: pulse[:SOURCE] (default: the default source), or
                   fifo:PATH / unix:PATH / - with raw f32le mono 48 kHz
  --play SINK      where the probe goes: pulse[:SINK] (default pulse:wavesync, the WaveSync
                   sink) or fifo:PATH (s16le stereo 48 kHz, read by wavesync-sender --input)
  --rooms a,b      only these rooms (default: every online room); the others are off meanwhile
  --level DB       probe level, dBFS RMS (default -30; -60 to -6)
  --seconds S      seconds per room (default 3, at least 2)
  --mic-delay MS   how late the microphone's samples come after the sound, when its source
                   cannot tell (a pipe fed by another program); only to find each room's
                   stretch, the measurement does not depend on it
  --dry-run        measure and print, set nothing
  --json           print the result as one JSON object";

/// Rate of the probe and the recording.
const RATE: u32 = 48_000;
/// After all rooms are off and steadily playing the stream: for the last sound to die away.
const LEAD_IN: Duration = Duration::from_millis(1000);
/// The rooms must be playing the probe's stream within this.
const PLAYING_TIMEOUT: Duration = Duration::from_secs(15);
/// ... in one run for this long.
const STEADY: Duration = Duration::from_millis(2500);
/// The noise floor is measured over the end of the lead-in, this long.
const FLOOR: Duration = Duration::from_millis(500);
/// A room's stretch starts this long after it was switched on (its buffer, the acoustic delay
/// up to 0.5 s, the microphone's delay uncertainty).
const SETTLE: Duration = Duration::from_millis(800);

/// The command line.
#[derive(Clone)]
struct Options {
    control: Control,
    mic: String,
    play: PlaySpec,
    rooms: Option<Vec<String>>,
    level_db: f64,
    seconds: f64,
    mic_delay_ns: i64,
    dry_run: bool,
    json: bool,
}

fn parse(args: &[String]) -> Result<Option<Options>, String> {
    let mut args = args.to_vec();
    let control = Control::from_args(&mut args)?;
    let mut o = Options {
        control,
        mic: "pulse".into(),
        play: PlaySpec::Pulse(Some("wavesync".into())),
        rooms: None,
        level_db: -30.0,
        seconds: 3.0,
        mic_delay_ns: 0,
        dry_run: false,
        json: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or(format!("{key} needs a value\n{USAGE}"))
        };
        let number = |v: String| {
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or(format!("{key} {v:?} is not a number"))
        };
        match key {
            "--mic" => o.mic = value()?,
            "--play" => o.play = value()?.parse()?,
            "--rooms" => {
                let v = value()?;
                let names: Vec<String> = v
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                if names.is_empty() {
                    return Err("--rooms needs at least one name".into());
                }
                o.rooms = Some(names);
            }
            "--level" => o.level_db = number(value()?)?,
            "--seconds" => {
                o.seconds = number(value()?)?;
                if !(2.0..=60.0).contains(&o.seconds) {
                    return Err(format!("--seconds {}: 2 to 60", o.seconds));
                }
            }
            "--mic-delay" => {
                let ms = number(value()?)?;
                if !(0.0..=10_000.0).contains(&ms) {
                    return Err(format!("--mic-delay {ms}: 0 to 10000 ms"));
                }
                o.mic_delay_ns = (ms * 1e6) as i64;
            }
            "--dry-run" => o.dry_run = true,
            "--json" => o.json = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => return Err(format!("unknown option {other:?}\n{USAGE}")),
        }
    }
    Ok(Some(o))
}

/// One room's settings as they were before calibration.
#[derive(Debug, Clone)]
struct Saved {
    name: String,
    off: bool,
    trim_us: i32,
}

/// Puts every room's on/off state (and, once trims were touched, its trim) back when dropped:
/// on success, on an error, on Ctrl-C.
struct Restore {
    control: Control,
    saved: Vec<Saved>,
    /// Rooms may have been switched on or off.
    onoff_touched: bool,
    /// Trims may have been set.
    trims_touched: bool,
}

impl Restore {
    /// Puts back what was touched; what could not be put back.
    fn put_back(&mut self) -> Vec<String> {
        let mut failed = Vec::new();
        for s in &self.saved {
            let mut cmds = Vec::new();
            if self.onoff_touched {
                cmds.push(if s.off { Command::Off } else { Command::On });
            }
            if self.trims_touched {
                cmds.push(Command::Trim(s.trim_us));
            }
            for c in cmds {
                if let Err(e) = set(&self.control, &s.name, &c) {
                    failed.push(format!("{}: {c}: {e}", s.name));
                }
            }
        }
        self.onoff_touched = false;
        self.trims_touched = false;
        failed
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        for f in self.put_back() {
            eprintln!("wavesync calibrate: could not put back {f}");
        }
    }
}

/// Sleeps `d`, or returns an error as soon as Ctrl-C was pressed.
fn wait(d: Duration) -> Result<(), String> {
    let end = std::time::Instant::now() + d;
    while let Some(left) = end.checked_duration_since(std::time::Instant::now()) {
        if wavesync_sender::signal::stop_requested() {
            return Err("interrupted: every room's settings were put back".into());
        }
        std::thread::sleep(left.min(Duration::from_millis(20)));
    }
    Ok(())
}

/// Waits until every room in `names` has been playing one stream run (one SSRC) for
/// [`STEADY`]: a master that paused on silence (or whose pipe ran dry) starts a new run with the
/// probe, and its rooms need a moment to lock; a report from before that still says "playing".
fn wait_playing(control: &Control, names: &[String]) -> Result<(), String> {
    let start = std::time::Instant::now();
    let mut steady: Option<(std::time::Instant, Vec<u32>)> = None;
    loop {
        let table = control.rooms()?;
        let now: Vec<Option<u32>> = names
            .iter()
            .map(|n| {
                table
                    .iter()
                    .find(|e| e.report.name.as_str() == n.as_str())
                    .filter(|e| !e.offline && e.report.state.name() == "playing")
                    .map(|e| e.report.stream_ssrc)
            })
            .collect();
        let runs: Option<Vec<u32>> = now.iter().copied().collect();
        match (&steady, runs) {
            (Some((since, was)), Some(r)) if *was == r => {
                if since.elapsed() >= STEADY {
                    return Ok(());
                }
            }
            (_, Some(r)) => steady = Some((std::time::Instant::now(), r)),
            (_, None) => steady = None,
        }
        if start.elapsed() > PLAYING_TIMEOUT {
            let waiting: Vec<&str> = names
                .iter()
                .zip(&now)
                .filter(|(_, r)| r.is_none())
                .map(|(n, _)| n.as_str())
                .collect();
            return Err(format!(
                "rooms not playing steadily {:.0} s after the probe started{}: does --play \
                 reach this master?",
                PLAYING_TIMEOUT.as_secs_f64(),
                if waiting.is_empty() {
                    String::new()
                } else {
                    format!(" ({} not playing)", waiting.join(", "))
                }
            ));
        }
        wait(Duration::from_millis(250))?;
    }
}

/// Sends one command; again (up to three times) when the receiver did not acknowledge in time
/// or the master was busy: commands carry absolute values, so repeating one is harmless.
fn set(control: &Control, name: &str, c: &Command) -> Result<(), String> {
    let transient = [Outcome::NoAnswer.describe(), Outcome::Busy.describe()];
    let mut tries = 0;
    loop {
        match control.command(name, c) {
            Ok(_) => return Ok(()),
            Err(e) if tries < 2 && transient.iter().any(|t| e.ends_with(t)) => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

/// One room's measurement: the outcome per selected room, in order.
struct Measured {
    names: Vec<String>,
    trims_us: Vec<i32>,
    results: Vec<Result<Arrival, String>>,
    /// The first room again, at the end.
    again: Result<Arrival, String>,
    floor_db: f64,
}

/// `wavesync calibrate ...`
pub fn run_calibrate(args: &[String]) -> Result<(), String> {
    let Some(o) = parse(args)? else {
        return Ok(());
    };
    let probe = Probe::new(RATE, o.level_db).map_err(|e| format!("--level: {e}"))?;
    let table = o.control.rooms()?;
    let online: Vec<_> = table.iter().filter(|e| !e.offline).collect();
    let known = || {
        table
            .iter()
            .map(|e| format!("{:?}", e.report.name.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let names: Vec<String> = match &o.rooms {
        Some(n) => n.clone(),
        None => online
            .iter()
            .map(|e| e.report.name.as_str().to_string())
            .collect(),
    };
    if names.is_empty() {
        return Err("no rooms online: no receiver reports to this master".into());
    }
    let mut trims = Vec::new();
    for n in &names {
        let Some(e) = table.iter().find(|e| e.report.name.as_str() == n) else {
            return Err(format!(
                "room {n:?}: no such room (known rooms: {})",
                known()
            ));
        };
        let s = &e.report.settings;
        if e.offline {
            return Err(format!(
                "room {n:?} is offline: it cannot play the probe (leave it out with --rooms)"
            ));
        }
        if s.muted || s.volume == 0 {
            return Err(format!(
                "room {n:?} is muted: unmute it (wavesync room {n} unmute) or leave it out \
                 with --rooms"
            ));
        }
        trims.push(s.trim_us);
    }

    wavesync_sender::signal::install();
    let mut restore = Restore {
        control: o.control.clone(),
        saved: online
            .iter()
            .map(|e| Saved {
                name: e.report.name.as_str().to_string(),
                off: e.report.settings.off,
                trim_us: e.report.settings.trim_us,
            })
            .collect(),
        onoff_touched: false,
        trims_touched: false,
    };
    let measured = measure_rooms(&o, &probe, &names, trims, &mut restore)?;
    // On/off are back as they were; from here only trims change.
    let failures: Vec<String> = measured
        .names
        .iter()
        .zip(&measured.results)
        .filter_map(|(n, r)| r.as_ref().err().map(|e| format!("room {n:?}: {e}")))
        .collect();
    if !failures.is_empty() {
        return Err(format!(
            "{}\nnothing was changed (the microphone's silence: {:.1} dBFS)",
            failures.join("\n"),
            measured.floor_db
        ));
    }
    let again = measured.again.map_err(|e| {
        format!(
            "room {:?}, measured again at the end: {e}\nnothing was changed",
            measured.names[0]
        )
    })?;
    let arrivals: Vec<Arrival> = measured.results.into_iter().flatten().collect();
    let plan = solve(RATE, &arrivals, &measured.trims_us).map_err(|e| {
        // Name the rooms the solver numbered.
        let mut s = e.to_string();
        for (i, n) in measured.names.iter().enumerate().rev() {
            s = s.replace(&format!("room {i} "), &format!("room {n:?} "));
        }
        format!("{s}\nnothing was changed")
    })?;
    let slip_us = check_repeat(RATE, plan.drift_ppm, &arrivals[0], &again)
        .map_err(|e| format!("{e}\nnothing was changed"))?;
    if !o.dry_run {
        restore.trims_touched = true;
        for (n, r) in measured.names.iter().zip(&plan.rooms) {
            set(&o.control, n, &Command::Trim(r.new_trim_us))?;
        }
        // Set: nothing to put back any more.
        restore.trims_touched = false;
    }
    print_plan(
        &o,
        &measured.names,
        &arrivals,
        &plan,
        measured.floor_db,
        slip_us,
    );
    Ok(())
}

/// Plays and records, switching each room on in turn; puts on/off back before returning.
fn measure_rooms(
    o: &Options,
    probe: &Probe,
    names: &[String],
    trims_us: Vec<i32>,
    restore: &mut Restore,
) -> Result<Measured, String> {
    let recorder = Recorder::start(&o.mic, RATE)?;
    let player = Player::start(&o.play, probe.clone())?;
    restore.onoff_touched = true;
    for s in &restore.saved {
        set(&o.control, &s.name, &Command::Off)?;
    }
    wait_playing(&o.control, names)?;
    wait(LEAD_IN)?;
    let floor_to = monotonic_ns().ns();
    let floor_from = floor_to - FLOOR.as_nanos() as i64;
    let mut spans = Vec::new();
    // The first room again at the end: nothing may have slipped in between.
    for (i, n) in names.iter().chain(names.first()).enumerate() {
        if !o.json {
            let again = if i == names.len() { " again" } else { "" };
            eprintln!("wavesync calibrate: {n}: playing the probe{again}");
        }
        set(&o.control, n, &Command::On)?;
        let on = monotonic_ns().ns();
        wait(Duration::from_secs_f64(o.seconds))?;
        set(&o.control, n, &Command::Off)?;
        spans.push((on + SETTLE.as_nanos() as i64, monotonic_ns().ns()));
    }
    let played = player.stop();
    // The microphone's samples of the last room come this much later.
    wait(Duration::from_nanos(o.mic_delay_ns as u64) + Duration::from_millis(100))?;
    let rec = recorder.stop();
    let failed = restore.put_back();
    if !failed.is_empty() {
        return Err(format!("could not put back {}", failed.join("; ")));
    }
    played?;
    let rec = rec?;
    let d = o.mic_delay_ns;
    let (floor, _) = rec.between(floor_from + d, floor_to + d);
    let floor_db = level_db(floor);
    let mut results: Vec<_> = spans
        .iter()
        .map(|&(from, to)| {
            let (stretch, at) = rec.between(from + d, to + d);
            measure(probe, stretch, at as u64, floor_db).map_err(|e| e.to_string())
        })
        .collect();
    let again = results.pop().unwrap_or_else(|| Err("not measured".into()));
    Ok(Measured {
        names: names.to_vec(),
        trims_us,
        results,
        again,
        floor_db,
    })
}

fn print_plan(
    o: &Options,
    names: &[String],
    arrivals: &[Arrival],
    plan: &Plan,
    floor_db: f64,
    repeat_us: f64,
) {
    if o.json {
        let rooms: Vec<_> = names
            .iter()
            .zip(arrivals)
            .zip(&plan.rooms)
            .map(|((n, a), r)| {
                json!({
                    "name": n,
                    "level_db": a.level_db,
                    "snr_db": a.snr_db,
                    "peak": a.peak,
                    "arrival_us": r.arrival_us,
                    "trim_before_us": r.old_trim_us,
                    "trim_after_us": r.new_trim_us,
                })
            })
            .collect();
        println!(
            "{}",
            json!({
                "dry_run": o.dry_run,
                "mic_drift_ppm": plan.drift_ppm,
                "mic_floor_db": floor_db,
                "spread_before_us": plan.spread_us(),
                "repeat_us": repeat_us,
                "rooms": rooms,
            })
        );
        return;
    }
    println!(
        "{:<16} {:>8} {:>7} {:>12} {:>12} {:>12}",
        "ROOM", "LEVEL dB", "SNR dB", "ARRIVAL ms", "TRIM ms", "NEW TRIM ms"
    );
    for ((n, a), r) in names.iter().zip(arrivals).zip(&plan.rooms) {
        println!(
            "{:<16} {:>8.1} {:>7.1} {:>12.3} {:>+12.3} {:>+12.3}",
            n,
            a.level_db,
            a.snr_db,
            r.arrival_us / 1e3,
            f64::from(r.old_trim_us) / 1e3,
            f64::from(r.new_trim_us) / 1e3
        );
    }
    println!(
        "rooms {:.3} ms apart at the microphone before; microphone clock {:+.1} ppm against the \
         master; first room again at the end: {:+.1} us; {}",
        plan.spread_us() / 1e3,
        plan.drift_ppm,
        repeat_us,
        if o.dry_run {
            "dry run: nothing set"
        } else {
            "trims set (run again to check: every arrival should be within 0.02 ms)"
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn options_parse_and_bad_ones_are_refused() {
        let o = parse(&words(
            "--rooms a,b --level -20 --dry-run --mic fifo:/m --mic-delay=1500",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(o.rooms, Some(vec!["a".into(), "b".into()]));
        assert_eq!(o.level_db, -20.0);
        assert!(o.dry_run);
        assert_eq!(o.mic, "fifo:/m");
        assert_eq!(o.mic_delay_ns, 1_500_000_000);
        assert_eq!(o.play, PlaySpec::Pulse(Some("wavesync".into())));
        assert!(parse(&words("--seconds 1")).is_err());
        assert!(parse(&words("--level loud")).is_err());
        assert!(parse(&words("--rooms ,")).is_err());
        assert!(parse(&words("--level")).is_err());
        assert!(parse(&words("--frobnicate")).is_err());
        assert!(parse(&words("--play alsa:x")).is_err());
    }
}
