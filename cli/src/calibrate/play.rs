//! Plays the probe into the master without a break until stopped: `pulse[:SINK]` (a
//! PulseAudio/pipewire-pulse playback stream, by default into the WaveSync sink) or
//! `fifo:PATH` (raw s16le stereo 48 kHz into a named pipe that `wavesync-sender --input
//! fifo:PATH` reads), paced to real time.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use libpulse_binding::def::BufferAttr;
use libpulse_binding::sample::{Format, Spec};
use libpulse_binding::stream::Direction;
use libpulse_simple_binding::Simple;
use wavesync_common::calibrate::probe::Probe;

/// Frames per write (10 ms at 48 kHz).
const BLOCK: usize = 480;
/// A pipe is kept this far ahead of real time (and a pulse stream holds as much): a hiccup of
/// this program must not run the master dry, which would shift the probe between rooms.
const LEAD: Duration = Duration::from_millis(200);

/// Where the probe goes.
#[derive(Clone, Debug, PartialEq)]
pub enum PlaySpec {
    /// A PulseAudio sink (the default sink if `None`).
    Pulse(Option<String>),
    /// A named pipe.
    Fifo(PathBuf),
}

impl std::str::FromStr for PlaySpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            None if s == "pulse" => Ok(PlaySpec::Pulse(None)),
            Some(("pulse", sink)) => Ok(PlaySpec::Pulse(
                Some(sink.to_string()).filter(|s| !s.is_empty()),
            )),
            Some(("fifo", p)) if !p.is_empty() => Ok(PlaySpec::Fifo(PathBuf::from(p))),
            _ => Err(format!("--play {s:?}: expected pulse[:SINK] or fifo:PATH")),
        }
    }
}

enum Sink {
    Pulse(Simple),
    Fifo(std::fs::File, PathBuf),
}

/// The probe playing in a thread.
pub struct Player {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl Player {
    /// Opens `spec` (errors now, not in the thread) and starts playing `probe` on both channels.
    pub fn start(spec: &PlaySpec, probe: Probe) -> Result<Player, String> {
        let sink = match spec {
            PlaySpec::Pulse(name) => {
                if name.as_deref().is_some_and(|s| s.contains('\0')) {
                    return Err("--play: the sink name contains a NUL byte".into());
                }
                let spec = Spec {
                    format: Format::F32le,
                    rate: probe.rate(),
                    channels: 2,
                };
                let block_bytes = (BLOCK * 8) as u32;
                let attr = BufferAttr {
                    maxlength: u32::MAX,
                    tlength: block_bytes * 20,
                    prebuf: u32::MAX,
                    minreq: block_bytes,
                    fragsize: u32::MAX,
                };
                let s = Simple::new(
                    None,
                    "wavesync calibrate",
                    Direction::Playback,
                    name.as_deref(),
                    "WaveSync calibration",
                    &spec,
                    None,
                    Some(&attr),
                )
                .map_err(|e| {
                    format!(
                        "--play pulse:{}: {e} (is a PulseAudio or pipewire-pulse server running, \
                         with the WaveSync sink?)",
                        name.as_deref().unwrap_or("")
                    )
                })?;
                Sink::Pulse(s)
            }
            PlaySpec::Fifo(p) => {
                // Non-blocking: fails at once (ENXIO) when nobody reads the pipe.
                let f = OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(p)
                    .map_err(|e| {
                        let hint = if e.raw_os_error() == Some(libc::ENXIO) {
                            " (nobody reads it: start wavesync-sender --input fifo:PATH first)"
                        } else {
                            ""
                        };
                        format!("--play fifo:{}: {e}{hint}", p.display())
                    })?;
                Sink::Fifo(f, p.clone())
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("calibrate-play".into())
            .spawn(move || play(sink, &probe, &s))
            .map_err(|e| format!("cannot start the player thread: {e}"))?;
        Ok(Player {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops playing; what went wrong while it played, if anything.
    pub fn stop(mut self) -> Result<(), String> {
        self.finish()
    }

    fn finish(&mut self) -> Result<(), String> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err("the player thread failed".into()),
            None => Ok(()),
        }
    }
}

impl Drop for Player {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

fn play(mut sink: Sink, probe: &Probe, stop: &AtomicBool) -> Result<(), String> {
    let start = Instant::now();
    let rate = f64::from(probe.rate());
    let mut n: i64 = 0;
    let mut bytes = Vec::with_capacity(BLOCK * 8);
    while !stop.load(Ordering::Relaxed) {
        bytes.clear();
        for i in n..n + BLOCK as i64 {
            let v = probe.at(i);
            match sink {
                Sink::Pulse(_) => {
                    bytes.extend_from_slice(&v.to_le_bytes());
                    bytes.extend_from_slice(&v.to_le_bytes());
                }
                Sink::Fifo(..) => {
                    let s = (v * 32_767.0).round().clamp(-32_768.0, 32_767.0) as i16;
                    bytes.extend_from_slice(&s.to_le_bytes());
                    bytes.extend_from_slice(&s.to_le_bytes());
                }
            }
        }
        match &mut sink {
            // Blocks while the server's buffer is full: paced by the sink.
            Sink::Pulse(s) => s
                .write(&bytes)
                .map_err(|e| format!("--play pulse: playback failed: {e}"))?,
            Sink::Fifo(f, path) => {
                let due = start + Duration::from_secs_f64(n as f64 / rate);
                if let Some(wait) = due.checked_duration_since(Instant::now() + LEAD) {
                    std::thread::sleep(wait);
                }
                // Whole blocks only, even when asked to stop: a frame cut in two would shift
                // every later sample the reader gets.
                let mut off = 0;
                while off < bytes.len() {
                    match f.write(&bytes[off..]) {
                        Ok(k) => off += k,
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                            ) =>
                        {
                            if stop.load(Ordering::Relaxed) && Instant::now() > due + LEAD * 5 {
                                // Nobody reads any more: give up the rest.
                                return Ok(());
                            }
                            std::thread::sleep(Duration::from_millis(2))
                        }
                        Err(e) => {
                            return Err(format!("--play fifo:{}: {e}", path.display()));
                        }
                    }
                }
            }
        }
        n += BLOCK as i64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!("pulse".parse(), Ok(PlaySpec::Pulse(None)));
        assert_eq!(
            "pulse:wavesync".parse(),
            Ok(PlaySpec::Pulse(Some("wavesync".into())))
        );
        assert_eq!(
            "fifo:/tmp/x".parse(),
            Ok(PlaySpec::Fifo(PathBuf::from("/tmp/x")))
        );
        assert!("fifo:".parse::<PlaySpec>().is_err());
        assert!("alsa:hw:0".parse::<PlaySpec>().is_err());
    }

    #[test]
    fn a_pipe_nobody_reads_is_refused_at_once() {
        let p = std::env::temp_dir().join(format!("wscal-play-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let probe = Probe::new(48_000, -30.0).unwrap();
        let e = Player::start(&PlaySpec::Fifo(p.clone()), probe)
            .err()
            .expect("refused");
        let _ = std::fs::remove_file(&p);
        assert!(e.contains("nobody reads it"), "{e}");
    }
}
