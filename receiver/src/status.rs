//! The receiver's status: one snapshot, updated by the threads, logged as one line every few
//! seconds and served as JSON on a Unix socket (read by `wavesync status`).

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;

use serde::{Deserialize, Serialize};

/// Everything `wavesync status` shows.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StatusReport {
    /// Playout state: "waiting", "starting", "playing", ...
    pub state: String,
    /// The followed stream's sender name, id and format, if any.
    pub stream: Option<StreamStatus>,
    /// Clock: locked, offset (timeline - local) in s, rate in ppm, uncertainty in us.
    pub clock_locked: bool,
    /// Timeline minus local clock, seconds.
    pub clock_offset_s: f64,
    /// Rate of the timeline against the local clock, ppm.
    pub clock_rate_ppm: f64,
    /// The clock model's uncertainty, us.
    pub clock_uncertainty_us: f64,
    /// Time queries sent to the time server.
    #[serde(default)]
    pub time_queries: u64,
    /// Answers used by the clock model.
    #[serde(default)]
    pub time_answered: u64,
    /// Answers refused (from another address, matching no query, invalid, outliers).
    #[serde(default)]
    pub time_refused: u64,
    /// Of those, answers from another address than the one queried.
    #[serde(default)]
    pub time_wrong_source: u64,
    /// Queries that were never answered.
    #[serde(default)]
    pub time_unanswered: u64,
    /// Why there is no clock yet, once that has lasted a few seconds (None once there is one).
    #[serde(default)]
    pub clock_problem: Option<String>,
    /// Latest measured playout error (positive: playing early), us.
    pub sync_error_us: Option<f64>,
    /// Current speed correction, ppm.
    pub correction_ppm: f64,
    /// Audio buffered ahead of the DAC, ms.
    pub buffer_ms: f64,
    /// The device's measured delay, ms.
    pub device_delay_ms: f64,
    /// Audio packets of the followed stream received.
    pub packets: u64,
    /// Packets found missing when later ones arrived (some of them are `recovered` after all;
    /// the gaps that reached the DAC unfilled show as `concealed_frames`).
    pub lost: u64,
    /// Missing packets that arrived after all (resent or reordered).
    pub recovered: u64,
    /// Of the missing packets, those that were only reordered (arrived before any NACK).
    #[serde(default)]
    pub reordered: u64,
    /// NACK messages sent to the master.
    #[serde(default)]
    pub nacks_sent: u64,
    /// Packets asked for again (one per packet per try).
    #[serde(default)]
    pub requested: u64,
    /// Missing packets given up (too late to be played, or too many tries).
    #[serde(default)]
    pub given_up: u64,
    /// Packets that came too late to play.
    pub late: u64,
    /// Frames concealed (no packet by its deadline).
    pub concealed_frames: u64,
    /// Hard resynchronisations.
    pub resyncs: u64,
    /// Device underruns and reopenings.
    pub underruns: u64,
    /// Frames filled for the device that never reached it (it failed or lost its place with
    /// them still waiting for room).
    #[serde(default)]
    pub lost_output_frames: u64,
    /// Datagrams dropped as malformed or foreign.
    pub dropped: u64,
    /// A household key is set: only authenticated datagrams are used.
    #[serde(default)]
    pub keyed: bool,
    /// The key's id (not secret), when keyed.
    #[serde(default)]
    pub key_id: Option<String>,
    /// Datagrams refused by the key (all of the four below), never used.
    #[serde(default)]
    pub unauthenticated: u64,
    /// Of those, sent without a key.
    #[serde(default)]
    pub unprotected: u64,
    /// Of those, protected with another key.
    #[serde(default)]
    pub wrong_key: u64,
    /// Of those, naming our key but not authentic (forged or corrupted).
    #[serde(default)]
    pub forged: u64,
    /// Of those, authentic but replayed.
    #[serde(default)]
    pub replayed: u64,
    /// The first key mismatch seen (a sender without a key, or with another key).
    #[serde(default)]
    pub key_problem: Option<String>,
    /// The room: id, name, settings, and the control path's counters.
    #[serde(default)]
    pub room: RoomStatus,
}

/// The room as this receiver reports it to the master.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RoomStatus {
    /// The stable receiver id, 16 hex digits.
    pub id: String,
    /// The room's name.
    pub name: String,
    /// Volume 0..=100.
    pub volume: u8,
    /// Muted.
    pub muted: bool,
    /// Off (silent, daemon running).
    pub off: bool,
    /// Channels played: all, left, right, mono.
    pub channels: String,
    /// Trim, ms (positive plays earlier).
    pub trim_ms: f64,
    /// Reports sent to the master.
    pub reports_sent: u64,
    /// Commands applied.
    pub commands: u64,
    /// Commands dropped: not from the followed master.
    pub commands_refused: u64,
    /// Control messages that did not decode.
    pub control_malformed: u64,
}

/// The followed stream, as shown in the status.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StreamStatus {
    /// Sender name.
    pub name: String,
    /// Stream id.
    pub ssrc: u32,
    /// Master address.
    pub master: String,
    /// Frames per second.
    pub rate: u32,
    /// Channels.
    pub channels: u8,
    /// Sender's latency, ms.
    pub latency_ms: f64,
    /// The stream's clock domain: master, ntp or system.
    #[serde(default)]
    pub clock: String,
}

impl StatusReport {
    /// The one-line summary for the log.
    pub fn line(&self) -> String {
        let err = self
            .sync_error_us
            .map(|e| format!("{e:+.0}us"))
            .unwrap_or_else(|| "-".into());
        format!(
            "{} clock {} offset {:+.6}s rate {:+.2}ppm | sync error {} correction {:+.1}ppm \
             buffer {:.1}ms device delay {:.2}ms | packets {} lost {} recovered {} (asked {}, \
             given up {}) late {} concealed {} frames, resyncs {} underruns {} lost output frames {}",
            self.state,
            if self.clock_locked {
                "locked"
            } else {
                "unlocked"
            },
            self.clock_offset_s,
            self.clock_rate_ppm,
            err,
            self.correction_ppm,
            self.buffer_ms,
            self.device_delay_ms,
            self.packets,
            self.lost,
            self.recovered,
            self.requested,
            self.given_up,
            self.late,
            self.concealed_frames,
            self.resyncs,
            self.underruns,
            self.lost_output_frames,
        ) + &self.key_part()
    }

    /// What the key refused, for the line (nothing without a key).
    fn key_part(&self) -> String {
        if !self.keyed {
            return String::new();
        }
        format!(
            " | key {} refused {} (no key {}, other key {}, forged {}, replayed {})",
            self.key_id.as_deref().unwrap_or("-"),
            self.unauthenticated,
            self.unprotected,
            self.wrong_key,
            self.forged,
            self.replayed
        )
    }
}

/// The snapshot shared between the threads.
pub type Shared = Arc<Mutex<StatusReport>>;

/// Serves the snapshot as one JSON document per connection on a Unix socket at `path`
/// (replacing a stale socket file). The thread ends with the process.
pub fn serve(path: &Path, shared: Shared) -> std::io::Result<PathBuf> {
    if path.exists() {
        // A socket left by a previous run; anything else is not ours to remove.
        let is_socket = std::os::unix::fs::FileTypeExt::is_socket(&path.metadata()?.file_type());
        if is_socket {
            std::fs::remove_file(path)?;
        }
    }
    let listener = UnixListener::bind(path)?;
    let path = path.to_path_buf();
    thread::Builder::new()
        .name("status".into())
        .spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let snapshot = match shared.lock() {
                    Ok(s) => s.clone(),
                    Err(p) => p.into_inner().clone(),
                };
                if let Ok(json) = serde_json::to_vec(&snapshot) {
                    let _ = conn.write_all(&json);
                    let _ = conn.write_all(b"\n");
                }
            }
        })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    #[test]
    fn serves_the_current_snapshot_as_json() {
        let dir = std::env::temp_dir().join(format!("wsstatus-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let shared: Shared = Arc::default();
        serve(&path, shared.clone()).unwrap();
        shared.lock().unwrap().packets = 42;
        shared.lock().unwrap().state = "playing".into();
        let mut text = String::new();
        UnixStream::connect(&path)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        let got: StatusReport = serde_json::from_str(&text).unwrap();
        assert_eq!(got.packets, 42);
        assert_eq!(got.state, "playing");
        assert!(
            got.line().starts_with("playing clock unlocked"),
            "{}",
            got.line()
        );
        // A second server on the same path replaces the stale socket.
        serve(&path, shared).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
