//! End to end on loopback: `wavesync calibrate` with three rooms whose sound reaches one
//! microphone 0, 3.4 and 40 ms after their DACs (a soundbar's processing, distances), through
//! a little reverberation and noise. The master (the engine, in-process) plays what calibrate
//! writes into a pipe (`--play fifo:`); three receiver daemons play it on virtual DACs; an
//! "acoustics" thread builds the microphone from what each DAC played and when (its audio file
//! and play log), delays, mixes and writes it into a pipe (`--mic fifo:`), 2 s behind real
//! time (the DACs flush their files every second), which calibrate is told with `--mic-delay`.
//!
//! Checked from the outside, on the DACs' play logs and the known acoustic delays: before
//! calibration the rooms reach the microphone ~40 ms apart; after it, within 100 us p99
//! (target 20 us); calibrating again changes every trim by less than 50 us. Bad cases (a muted
//! room, a microphone that hears nothing, a room that does not play, Ctrl-C half-way) fail with
//! clear messages and leave every room's settings as they were.

mod support;

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;
use wavesync_net::clock::monotonic_ns;

const NAMES: [&str; 3] = ["near", "far", "soundbar"];
/// After the DAC, before the microphone, ms.
const DELAYS_MS: [f64; 3] = [0.0, 3.4, 40.0];
/// Gain of each room at the microphone.
const GAINS: [f32; 3] = [0.5, 0.3, 0.4];
/// The microphone pipe runs this far behind real time.
const MIC_LAG_NS: i64 = 2_000_000_000;

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.to_str().expect("utf-8")).expect("path");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// What one virtual DAC played, read as its files grow.
struct Dac {
    log: File,
    audio: File,
    carry: String,
    bytes: Vec<u8>,
    /// Per write: (stream position or -1, frames, monotonic ns it played, first frame in the
    /// audio file).
    lines: Vec<(f64, u64, i64, u64)>,
    frames: u64,
    /// (L + R) / 2 of every frame written.
    mono: Vec<f32>,
    /// Interpolation weights for a fractional position.
    weights: (Option<f64>, [f64; 8]),
}

impl Dac {
    fn open(s: &Scratch, name: &str) -> Dac {
        let f = |ext: &str| {
            let p = s.path(&format!("{name}.{ext}"));
            let start = Instant::now();
            loop {
                if let Ok(f) = File::open(&p) {
                    return f;
                }
                assert!(start.elapsed() < Duration::from_secs(5), "{p:?} missing");
                thread::sleep(Duration::from_millis(50));
            }
        };
        Dac {
            log: f("log"),
            audio: f("f32"),
            carry: String::new(),
            bytes: Vec::new(),
            lines: Vec::new(),
            frames: 0,
            mono: Vec::new(),
            weights: (None, [0.0; 8]),
        }
    }

    fn refresh(&mut self) {
        // A receiver that reopens its DAC starts the files again.
        let read = |f: &mut File| f.stream_position().unwrap_or(0);
        let len = |f: &File| f.metadata().map_or(0, |m| m.len());
        if len(&self.log) < read(&mut self.log) || len(&self.audio) < read(&mut self.audio) {
            let _ = self.log.rewind();
            let _ = self.audio.rewind();
            self.carry.clear();
            self.bytes.clear();
            self.lines.clear();
            self.mono.clear();
            self.frames = 0;
        }
        let mut s = String::new();
        let _ = self.log.read_to_string(&mut s);
        self.carry.push_str(&s);
        while let Some(nl) = self.carry.find('\n') {
            let line: String = self.carry.drain(..=nl).collect();
            let f: Vec<&str> = line.split_whitespace().collect();
            if let [pos, frames, _, mono] = f[..] {
                if let (Ok(p), Ok(n), Ok(m)) = (pos.parse(), frames.parse(), mono.parse()) {
                    self.lines.push((p, n, m, self.frames));
                    self.frames += n;
                }
            }
        }
        let mut b = Vec::new();
        let _ = self.audio.read_to_end(&mut b);
        self.bytes.extend_from_slice(&b);
        let whole = self.bytes.len() / 8 * 8;
        for c in self.bytes[..whole].chunks_exact(8) {
            let l = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            let r = f32::from_le_bytes([c[4], c[5], c[6], c[7]]);
            self.mono.push((l + r) / 2.0);
        }
        self.bytes.drain(..whole);
    }

    /// The sound leaving the DAC at monotonic `t` ns (Lanczos interpolation), or None if the
    /// files do not hold it yet.
    fn at(&mut self, t: f64) -> Option<f32> {
        let i = self.lines.partition_point(|l| (l.2 as f64) <= t);
        let &(_, frames, mono, first) = self.lines.get(i.checked_sub(1)?)?;
        let x = first as f64 + (t - mono as f64) * RATE / 1e9;
        if x > (first + frames) as f64 + 1.0 {
            // After the last line: not written yet, or the DAC stopped.
            return if i < self.lines.len() {
                Some(0.0)
            } else {
                None
            };
        }
        let base = x.floor();
        let frac = x - base;
        if self.weights.0.is_none_or(|f| (frac - f).abs() > 1e-9) {
            let mut w = [0.0; 8];
            for (k, wk) in w.iter_mut().enumerate() {
                let u = frac - (k as f64 - 3.0);
                let sinc = |v: f64| {
                    if v.abs() < 1e-12 {
                        1.0
                    } else {
                        (std::f64::consts::PI * v).sin() / (std::f64::consts::PI * v)
                    }
                };
                *wk = sinc(u) * sinc(u / 4.0);
            }
            self.weights = (Some(frac), w);
        }
        let b = base as i64;
        if b + 4 >= self.mono.len() as i64 {
            return None;
        }
        let mut y = 0.0;
        for (k, w) in self.weights.1.iter().enumerate() {
            let j = b + k as i64 - 3;
            if j >= 0 {
                y += w * f64::from(self.mono[j as usize]);
            }
        }
        Some(y as f32)
    }

    /// When stream position `p` left the DAC, monotonic ns.
    fn played(&self, p: f64) -> Option<f64> {
        self.lines
            .iter()
            .rev()
            .find(|(pos, n, _, _)| *pos >= 0.0 && *pos <= p && p < pos + *n as f64)
            .map(|(pos, _, mono, _)| *mono as f64 + (p - pos) / RATE * 1e9)
    }

    fn last_position(&self) -> f64 {
        self.lines
            .iter()
            .rev()
            .find(|l| l.0 >= 0.0)
            .map_or(0.0, |l| l.0 + l.1 as f64)
    }
}

/// The rooms' arrival times at the microphone, from the DACs' play logs and the known acoustic
/// delays, over the last second all logs hold: (p99, max) spread across rooms, us.
fn spread_us(dacs: &Mutex<Vec<Dac>>) -> (f64, f64) {
    let d = dacs.lock().expect("dacs");
    let end = d.iter().map(Dac::last_position).fold(f64::MAX, f64::min) - 4800.0;
    let mut spreads = Vec::new();
    for k in 0..200 {
        let p = end - RATE + k as f64 * RATE / 200.0;
        let at: Option<Vec<f64>> = d
            .iter()
            .zip(DELAYS_MS)
            .map(|(dac, ms)| dac.played(p).map(|t| t / 1e3 + ms * 1e3))
            .collect();
        if let Some(at) = at {
            let hi = at.iter().copied().fold(f64::MIN, f64::max);
            let lo = at.iter().copied().fold(f64::MAX, f64::min);
            spreads.push(hi - lo);
        }
    }
    assert!(spreads.len() > 150, "positions not in every log");
    spreads.sort_by(f64::total_cmp);
    let p99 = spreads[(spreads.len() as f64 * 0.99) as usize - 1];
    (p99, *spreads.last().expect("spreads"))
}

/// Which rooms the microphone hears (bit per room), and whether it hears anything.
struct Acoustics {
    audible: AtomicU32,
    deaf: AtomicBool,
    stop: AtomicBool,
}

/// Builds the microphone signal and writes it into `fifo` (when someone reads it).
fn acoustics(dacs: Arc<Mutex<Vec<Dac>>>, a: Arc<Acoustics>, fifo: std::path::PathBuf) {
    let t0 = (monotonic_ns().ns() - MIC_LAG_NS) as f64;
    let mut n: u64 = 0;
    let mut out: Option<File> = None;
    let mut noise: u64 = 0x1234_5678_9abc_def1;
    // Two feedback combs: a little reverberation.
    let mut hist = vec![0f32; 4096];
    let mut buf = Vec::new();
    while !a.stop.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_millis(20));
        let mut d = dacs.lock().expect("dacs");
        for dac in d.iter_mut() {
            dac.refresh();
        }
        let until = (monotonic_ns().ns() - MIC_LAG_NS) as f64;
        buf.clear();
        loop {
            let t = t0 + n as f64 * 1e9 / RATE;
            if t > until {
                break;
            }
            let (audible, deaf) = (
                a.audible.load(Ordering::Relaxed),
                a.deaf.load(Ordering::Relaxed),
            );
            let mut x = 0f32;
            for (r, dac) in d.iter_mut().enumerate() {
                let v = dac.at(t - DELAYS_MS[r] * 1e6).unwrap_or(0.0);
                if !deaf && audible & (1 << r) != 0 {
                    x += GAINS[r] * v;
                }
            }
            let i = n as usize;
            let y = x + 0.3 * hist[(i + 4096 - 83) % 4096] + 0.2 * hist[(i + 4096 - 241) % 4096];
            hist[i % 4096] = y;
            noise ^= noise << 13;
            noise ^= noise >> 7;
            noise ^= noise << 17;
            // White noise at about -60 dBFS.
            let e = ((noise >> 11) as f64 / (1u64 << 53) as f64 - 0.5) as f32 * 0.0035;
            buf.extend_from_slice(&(y + e).to_le_bytes());
            n += 1;
        }
        drop(d);
        if out.is_none() {
            out = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&fifo)
                .ok();
        }
        if let Some(f) = out.as_mut() {
            let mut off = 0;
            while off < buf.len() {
                match f.write(&buf[off..]) {
                    Ok(k) => off += k,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(2))
                    }
                    // The reader went away: wait for the next one.
                    Err(_) => {
                        out = None;
                        break;
                    }
                }
            }
        }
    }
}

/// The master's input: s16le stereo from a pipe, silence when it has nothing.
fn pipe_source(path: &Path) -> impl FnMut(u64, &mut [f32]) + Send + 'static {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .expect("probe pipe");
    let mut carry: Vec<u8> = Vec::new();
    move |_, buf: &mut [f32]| {
        let want = buf.len() * 2;
        let mut tmp = vec![0u8; want.saturating_sub(carry.len())];
        if let Ok(k) = f.read(&mut tmp) {
            carry.extend_from_slice(&tmp[..k]);
        }
        let whole = carry.len().min(want) / 4 * 4;
        buf.fill(0.0);
        for (o, c) in buf.iter_mut().zip(carry[..whole].chunks_exact(2)) {
            *o = f32::from(i16::from_le_bytes([c[0], c[1]])) / 32_768.0;
        }
        carry.drain(..whole);
    }
}

fn calibrate(master: &str, s: &Scratch, extra: &[&str]) -> std::process::Output {
    calibrate_until(master, s, extra, None)
}

/// Runs `wavesync calibrate`, interrupted (SIGINT, as Ctrl-C) after `interrupt` if given.
fn calibrate_until(
    master: &str,
    s: &Scratch,
    extra: &[&str],
    interrupt: Option<Duration>,
) -> std::process::Output {
    let play = format!("fifo:{}", s.path("probe.fifo").display());
    let mic = format!("fifo:{}", s.path("mic.fifo").display());
    let started = Instant::now();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_wavesync"))
        .args([
            "calibrate",
            "--master",
            master,
            "--play",
            &play,
            "--mic",
            &mic,
            "--mic-delay",
            "2000",
        ])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run wavesync calibrate");
    if let Some(after) = interrupt {
        thread::sleep(after);
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    }
    let out = child.wait_with_output().expect("wavesync calibrate");
    eprintln!(
        "wavesync calibrate {} ({:.1} s):\n{}{}",
        extra.join(" "),
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// (off, muted, trim_us) of every room, in NAMES order.
fn settings(master: &str) -> Vec<(bool, bool, i64)> {
    let l = rooms(master);
    NAMES
        .iter()
        .map(|n| {
            let r = room(&l, n).expect("room listed");
            (
                r["off"].as_bool().expect("off"),
                r["muted"].as_bool().expect("muted"),
                (r["trim_ms"].as_f64().expect("trim") * 1e3).round() as i64,
            )
        })
        .collect()
}

fn failed_with(out: &std::process::Output, words: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should have failed");
    assert!(err.contains(words), "expected {words:?} in: {err}");
}

#[test]
fn calibration_brings_every_room_together_at_the_microphone() {
    let s = Scratch::new("wscalibrate");
    mkfifo(&s.path("probe.fifo"));
    mkfifo(&s.path("mic.fifo"));
    let ports: Vec<u16> = NAMES.iter().map(|_| free_port()).collect();
    let dests = ports
        .iter()
        .map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (control, master_thread) =
        start_master(dests, 0, stop.clone(), pipe_source(&s.path("probe.fifo")));
    let master = format!("127.0.0.1:{control}");
    for (n, p) in NAMES.iter().zip(&ports) {
        // Not joined: they end on their own after the test.
        let _ = start_receiver(&s, n, *p, 120);
    }
    let started = Instant::now();
    while rooms(&master)
        .iter()
        .filter(|r| r["state"] == "playing")
        .count()
        < 3
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not all playing: {:?}",
            rooms(&master)
        );
        thread::sleep(Duration::from_millis(200));
    }
    // Read the DACs' files from here: a receiver may start them again while it starts.
    let dacs = Arc::new(Mutex::new(
        NAMES.iter().map(|n| Dac::open(&s, n)).collect::<Vec<_>>(),
    ));
    let ac = Arc::new(Acoustics {
        audible: AtomicU32::new(0b111),
        deaf: AtomicBool::new(false),
        stop: AtomicBool::new(false),
    });
    let ac_thread = {
        let (d, a, f) = (dacs.clone(), ac.clone(), s.path("mic.fifo"));
        thread::spawn(move || acoustics(d, a, f))
    };
    thread::sleep(Duration::from_millis(2500));
    let (before_p99, _) = spread_us(&dacs);
    eprintln!("uncalibrated: the rooms reach the microphone {before_p99:.1} us apart (p99)");
    assert!((before_p99 - 40_000.0).abs() < 1000.0, "{before_p99}");
    let untouched = settings(&master);

    // A muted room: refused before anything plays.
    ok(&room_cmd(&master, &["far", "mute"]));
    failed_with(&calibrate(&master, &s, &[]), "room \"far\" is muted");
    ok(&room_cmd(&master, &["far", "unmute"]));
    assert_eq!(settings(&master), untouched);

    // A microphone that hears nothing.
    ac.deaf.store(true, Ordering::Relaxed);
    failed_with(
        &calibrate(&master, &s, &["--rooms", "near"]),
        "room \"near\": nothing heard",
    );
    ac.deaf.store(false, Ordering::Relaxed);
    assert_eq!(settings(&master), untouched, "settings untouched");

    // Ctrl-C half-way, with one room off to begin with: every room as it was.
    ok(&room_cmd(&master, &["soundbar", "off"]));
    let with_off = settings(&master);
    let out = calibrate_until(&master, &s, &[], Some(Duration::from_millis(3500)));
    failed_with(&out, "interrupted");
    assert_eq!(settings(&master), with_off, "settings put back");
    ok(&room_cmd(&master, &["soundbar", "on"]));
    assert_eq!(settings(&master), untouched);

    // A room that does not play (its loudspeaker is unplugged).
    ac.audible.store(0b101, Ordering::Relaxed);
    let out = calibrate(&master, &s, &["--rooms", "near,far"]);
    failed_with(&out, "room \"far\": nothing heard");
    failed_with(&out, "nothing was changed");
    ac.audible.store(0b111, Ordering::Relaxed);
    assert_eq!(settings(&master), untouched, "settings untouched");

    // Calibration.
    let out = calibrate(&master, &s, &["--json"]);
    assert!(out.status.success(), "calibrate failed");
    let first: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let spread_before = first["spread_before_us"].as_f64().expect("spread");
    assert!(
        (spread_before - 40_000.0).abs() < 100.0,
        "measured {spread_before} us"
    );
    let trims1: Vec<i64> = settings(&master).iter().map(|s| s.2).collect();
    assert!(
        settings(&master).iter().all(|s| !s.0 && !s.1),
        "all on again"
    );
    thread::sleep(Duration::from_millis(3000));
    let (after_p99, after_max) = spread_us(&dacs);
    eprintln!(
        "calibrated: trims {trims1:?} us; the rooms reach the microphone {after_p99:.1} us \
         apart (p99), {after_max:.1} us at most"
    );
    assert!(after_p99 < 100.0, "after calibration: {after_p99} us p99");

    // Again (as a user would, the table): nothing moves by 50 us.
    let out = calibrate(&master, &s, &[]);
    assert!(out.status.success(), "second calibrate failed");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("ROOM "), "{table}");
    let trims2: Vec<i64> = settings(&master).iter().map(|s| s.2).collect();
    eprintln!("second calibration: trims {trims2:?} us");
    for (a, b) in trims1.iter().zip(&trims2) {
        assert!((a - b).abs() < 50, "trims moved: {trims1:?} -> {trims2:?}");
    }

    ac.stop.store(true, Ordering::Relaxed);
    ac_thread.join().expect("acoustics");
    stop.store(true, Ordering::Relaxed);
    master_thread.join().expect("master");
}
