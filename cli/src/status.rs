//! `wavesync status`: what a receiver on this host is doing, read from its status socket.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use wavesync_receiver::status::StatusReport;

/// Candidate socket paths, in the order a receiver would have chosen them.
pub fn default_paths() -> Vec<PathBuf> {
    let mut v = Vec::new();
    for var in ["RUNTIME_DIRECTORY", "XDG_RUNTIME_DIR"] {
        if let Some(d) = std::env::var_os(var) {
            v.push(PathBuf::from(d).join("wavesync-receiver.sock"));
        }
    }
    v.push(PathBuf::from(
        "/run/wavesync-receiver/wavesync-receiver.sock",
    ));
    v.push(PathBuf::from("/tmp/wavesync-receiver.sock"));
    v
}

/// Reads the status from the socket at `path`.
pub fn read(path: &Path) -> Result<StatusReport, String> {
    let mut conn =
        UnixStream::connect(path).map_err(|e| format!("no receiver at {}: {e}", path.display()))?;
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let mut text = String::new();
    conn.read_to_string(&mut text)
        .map_err(|e| format!("reading {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: not a status: {e}", path.display()))
}

/// Human-readable rendering of a status.
pub fn render(s: &StatusReport) -> String {
    let mut out = String::new();
    match &s.stream {
        Some(st) => out.push_str(&format!(
            "stream     {:?} ({:08x}) from {}: {} Hz, {} ch, latency {:.0} ms{}\n",
            st.name,
            st.ssrc,
            st.master,
            st.rate,
            st.channels,
            st.latency_ms,
            if st.clock.is_empty() {
                String::new()
            } else {
                format!(", clock {}", st.clock)
            }
        )),
        None => out.push_str("stream     none heard yet\n"),
    }
    out.push_str(&format!("state      {}\n", s.state));
    out.push_str(&format!(
        "clock      {}, offset {:+.6} s, rate {:+.2} ppm, uncertainty {:.0} us\n",
        if s.clock_locked {
            "locked"
        } else {
            "not locked"
        },
        s.clock_offset_s,
        s.clock_rate_ppm,
        s.clock_uncertainty_us
    ));
    out.push_str(&format!(
        "time       {} queries, {} answered, {} refused ({} from another address), {} unanswered\n",
        s.time_queries, s.time_answered, s.time_refused, s.time_wrong_source, s.time_unanswered
    ));
    if let Some(why) = &s.clock_problem {
        out.push_str(&format!("problem    no clock: {why}\n"));
    }
    out.push_str(&format!(
        "sync       error {}, correction {:+.1} ppm\n",
        s.sync_error_us
            .map(|e| format!("{e:+.0} us"))
            .unwrap_or_else(|| "-".into()),
        s.correction_ppm
    ));
    out.push_str(&format!(
        "buffer     {:.1} ms, device delay {:.2} ms\n",
        s.buffer_ms, s.device_delay_ms
    ));
    out.push_str(&format!(
        "packets    {} received, {} lost, {} recovered ({} only reordered), {} late, {} dropped\n",
        s.packets, s.lost, s.recovered, s.reordered, s.late, s.dropped
    ));
    out.push_str(&format!(
        "resends    {} NACKs sent asking {} times, {} given up\n",
        s.nacks_sent, s.requested, s.given_up
    ));
    out.push_str(&format!(
        "playout    {} frames concealed, {} resyncs, {} underruns, {} output frames lost\n",
        s.concealed_frames, s.resyncs, s.underruns, s.lost_output_frames
    ));
    if s.keyed {
        out.push_str(&format!(
            "key        {}: {} refused ({} without a key, {} with another key, {} forged, {} replayed)",
            s.key_id.as_deref().unwrap_or("-"),
            s.unauthenticated,
            s.unprotected,
            s.wrong_key,
            s.forged,
            s.replayed
        ));
        if let Some(p) = &s.key_problem {
            out.push_str(&format!("\nproblem    {p}"));
        }
    } else {
        out.push_str("key        none: the stream is open (docs/security.md)");
    }
    let r = &s.room;
    if !r.id.is_empty() {
        out.push_str(&format!(
            "\nroom       {:?} (id {}): volume {}{}{}, channels {}, trim {:+.3} ms; {} reports sent, \
             {} commands taken, {} refused (not from the followed master)",
            r.name,
            r.id,
            r.volume,
            if r.muted { " (muted)" } else { "" },
            if r.off { ", off" } else { "" },
            r.channels,
            r.trim_ms,
            r.reports_sent,
            r.commands,
            r.commands_refused
        ));
    }
    out
}

/// The one-line form (`--brief`), for scripts and the demo.
pub fn brief(s: &StatusReport) -> String {
    format!(
        "{}, sync error {}, correction {:+.0} ppm, clock {}",
        s.state,
        s.sync_error_us
            .map(|e| format!("{e:+.0} us"))
            .unwrap_or_else(|| "-".into()),
        s.correction_ppm,
        if s.clock_locked {
            "locked"
        } else {
            "not locked"
        }
    )
}

/// `wavesync status [--json | --brief] [--socket PATH]`.
pub fn run_status(args: &[String]) -> Result<(), String> {
    let mut json = false;
    let mut one_line = false;
    let mut socket: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => json = true,
            "--brief" => one_line = true,
            "--socket" => socket = it.next().map(PathBuf::from),
            "-h" | "--help" => {
                println!("usage: wavesync status [--json | --brief] [--socket PATH]\n\nShows what the receiver on this host is doing: its stream, clock, sync error,\nbuffer and loss counters; --json as JSON, --brief on one line. --socket names\nthe receiver's status socket (default: the receiver's own default path).");
                return Ok(());
            }
            other => return Err(format!("status: unknown option {other:?} (see --help)")),
        }
    }
    let paths = match socket {
        Some(p) => vec![p],
        None => default_paths(),
    };
    let mut last_err = String::from("no receiver status socket found");
    for p in paths {
        if !p.exists() {
            continue;
        }
        match read(&p) {
            Ok(s) => {
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&s).map_err(|e| e.to_string())?
                    );
                } else if one_line {
                    println!("{}", brief(&s));
                } else {
                    println!("{}", render(&s));
                }
                return Ok(());
            }
            Err(e) => last_err = e,
        }
    }
    Err(format!(
        "{last_err}: is wavesync-receiver running? (--socket PATH)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_section() {
        let s = StatusReport {
            state: "playing".into(),
            clock_locked: true,
            sync_error_us: Some(-3.4),
            packets: 10,
            ..StatusReport::default()
        };
        let text = render(&s);
        assert!(text.contains("clock      locked"), "{text}");
        assert!(text.contains("error -3 us"), "{text}");
        assert!(text.contains("10 received"), "{text}");
        let ntp = StatusReport {
            stream: Some(wavesync_receiver::status::StreamStatus {
                name: "living room".into(),
                ssrc: 7,
                master: "192.0.2.1".into(),
                rate: 48_000,
                channels: 2,
                latency_ms: 150.0,
                clock: "ntp".into(),
            }),
            ..StatusReport::default()
        };
        assert!(
            render(&ntp).contains("latency 150 ms, clock ntp\n"),
            "{}",
            render(&ntp)
        );
        assert!(text.starts_with("stream     none heard yet"));
        assert!(!text.contains("problem"), "{text}");
        assert!(text.ends_with("key        none: the stream is open (docs/security.md)"));
        let keyed = StatusReport {
            keyed: true,
            key_id: Some("0a1b2c3d".into()),
            unauthenticated: 5,
            wrong_key: 5,
            key_problem: Some("192.0.2.1:45300 sends with another key".into()),
            ..StatusReport::default()
        };
        let text = render(&keyed);
        assert!(
            text.contains("key        0a1b2c3d: 5 refused (0 without a key, 5 with another key"),
            "{text}"
        );
        assert!(text.ends_with("problem    192.0.2.1:45300 sends with another key"));
        let stuck = StatusReport {
            time_queries: 43,
            time_refused: 43,
            time_wrong_source: 43,
            clock_problem: Some("the last answer came from 127.0.0.1:45301".into()),
            ..StatusReport::default()
        };
        let text = render(&stuck);
        assert!(
            text.contains("43 queries, 0 answered, 43 refused (43 from another address)"),
            "{text}"
        );
        assert!(
            text.contains("problem    no clock: the last answer came from"),
            "{text}"
        );
        assert_eq!(
            brief(&s),
            "playing, sync error -3 us, correction +0 ppm, clock locked"
        );
    }

    #[test]
    fn a_missing_socket_is_a_clear_error() {
        let e = run_status(&["--socket".into(), "/nonexistent/x.sock".into()]).unwrap_err();
        assert!(e.contains("is wavesync-receiver running?"), "{e}");
    }
}
