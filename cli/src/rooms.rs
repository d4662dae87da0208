//! `wavesync rooms` and `wavesync room NAME ...`: clients of the master's control port (the
//! `WSCM` vocabulary of `docs/wire.md`).
//!
//! - `wavesync rooms [--master HOST[:PORT]] [--key-file PATH] [--json] [--watch]`: every room
//!   the master hears from, one line each (or a JSON array), refreshed every second with
//!   `--watch`;
//! - `wavesync room NAME volume 0..100 | mute | unmute | trim +-MS | channels all|left|right|mono
//!   | off | on | rename NEW [--master HOST[:PORT]] [--key-file PATH]`: changes one room,
//!   through the master.
//!
//! With the household key (`--key-file`, or `/etc/wavesync/key` when readable), requests are
//! sealed and answers opened like every other datagram (docs/security.md): a keyed master
//! ignores requests without it.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wavesync_common::wire::control::{
    encode_command, encode_list, Answer, Command, Envelope, Message, Outcome, RoomEntry,
};
use wavesync_common::wire::report::{Channels, MAX_TRIM_US};
use wavesync_common::wire::status::StatusName;
use wavesync_net::defaults;
use wavesync_net::protection::{read_keys, Protection, DEFAULT_KEY_PATH};

const ROOMS_USAGE: &str =
    "usage: wavesync rooms [--master HOST[:PORT]] [--key-file PATH] [--json] [--watch]";
const ROOM_USAGE: &str = "usage: wavesync room NAME volume 0..100 | mute | unmute | trim +-MS | \
channels all|left|right|mono | off | on | rename NEW [--master HOST[:PORT]] [--key-file PATH]

--key-file: the household key, for a master that has one (docs/security.md) [default:
/etc/wavesync/key when this user can read it]";

/// Asks once, then again every this long while no answer comes.
const RETRY: Duration = Duration::from_millis(400);
/// Gives up after this long (the master answers a command within 1 s).
const TIMEOUT: Duration = Duration::from_millis(2500);

/// Splits `--master X` / `--master=X` out of `args`; returns the master's control address.
pub fn take_master(args: &mut Vec<String>) -> Result<SocketAddr, String> {
    let mut master = None;
    let mut i = 0;
    while i < args.len() {
        if args[i] == "--master" {
            let v = args
                .get(i + 1)
                .cloned()
                .ok_or("--master needs HOST[:PORT]")?;
            master = Some(v);
            args.drain(i..i + 2);
        } else if let Some(v) = args[i].strip_prefix("--master=") {
            master = Some(v.to_string());
            args.remove(i);
        } else {
            i += 1;
        }
    }
    let m = master.unwrap_or_else(|| "127.0.0.1".to_string());
    wavesync_net::resolve::resolve(&m, defaults::CONTROL_PORT)
        .map_err(|e| format!("--master {m}: {e}"))
}

/// Splits `--key-file PATH` out of `args` and loads it; without it, the default key file when
/// this user can read it (a master with a key refuses requests without one).
pub fn take_key(args: &mut Vec<String>) -> Result<Option<Arc<Protection>>, String> {
    let mut path: Option<PathBuf> = None;
    let mut i = 0;
    while i < args.len() {
        if args[i] == "--key-file" {
            let v = args.get(i + 1).cloned().ok_or("--key-file needs PATH")?;
            path = Some(v.into());
            args.drain(i..i + 2);
        } else if let Some(v) = args[i].strip_prefix("--key-file=") {
            path = Some(v.into());
            args.remove(i);
        } else {
            i += 1;
        }
    }
    let (path, explicit) = match path {
        Some(p) => (p, true),
        None => (PathBuf::from(DEFAULT_KEY_PATH), false),
    };
    if !explicit && !path.exists() {
        return Ok(None);
    }
    match read_keys(&path).and_then(|k| Protection::with_keys(k, true)) {
        Ok(p) => Ok(Some(Arc::new(p))),
        Err(e) if explicit => Err(format!("--key-file: {e}")),
        Err(e) => {
            log::warn!(
                "{e}: asking without the key (a master with one will not answer; --key-file)"
            );
            Ok(None)
        }
    }
}

/// A client of the master's control port: where it is and, when the household has a key, the
/// protection every request is sealed with and every answer opened with.
#[derive(Clone)]
pub struct Control {
    master: SocketAddr,
    key: Option<Arc<Protection>>,
}

impl Control {
    /// A client of `master`, with `key` when the master has one.
    pub fn new(master: SocketAddr, key: Option<Arc<Protection>>) -> Control {
        Control { master, key }
    }

    /// `--master` and `--key-file` taken out of `args`.
    pub fn from_args(args: &mut Vec<String>) -> Result<Control, String> {
        let master = take_master(args)?;
        Ok(Control::new(master, take_key(args)?))
    }

    /// The master's control address.
    pub fn master(&self) -> SocketAddr {
        self.master
    }

    /// Every room the master hears from.
    pub fn rooms(&self) -> Result<Vec<RoomEntry>, String> {
        fetch_rooms(self)
    }

    /// Sends `command` to room `name`; its settings after it.
    pub fn command(&self, name: &str, command: &Command) -> Result<Answer, String> {
        command_room(self, name, command)
    }
}

fn socket(master: SocketAddr) -> Result<UdpSocket, String> {
    let any: SocketAddr = if master.is_ipv6() {
        "[::]:0".parse().map_err(|_| "address")?
    } else {
        "0.0.0.0:0".parse().map_err(|_| "address")?
    };
    let s = UdpSocket::bind(any).map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    s.connect(master)
        .map_err(|e| format!("cannot reach {master}: {e}"))?;
    Ok(s)
}

fn request_id() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (t ^ (t >> 32) ^ (std::process::id() as u64) << 8) as u32
}

/// Sends `req` (sealed with the key, if any) and returns the first answer to request `id`
/// accepted by `take` (opened with the key: anything else is dropped), sending again every
/// [`RETRY`] until [`TIMEOUT`].
fn ask<T>(
    sock: &UdpSocket,
    control: &Control,
    req: &[u8],
    id: u32,
    mut take: impl FnMut(&Message<'_>) -> Option<T>,
) -> Result<T, String> {
    let master = control.master;
    let start = Instant::now();
    let mut buf = [0u8; 2048];
    let mut sealed = [0u8; 2048];
    let req = match &control.key {
        Some(k) => k
            .seal(req, &mut sealed)
            .map_err(|e| format!("cannot seal the request: {e}"))?,
        None => req,
    };
    while start.elapsed() < TIMEOUT {
        sock.send(req)
            .map_err(|e| format!("cannot send to the master at {master}: {e}"))?;
        let sent = Instant::now();
        while sent.elapsed() < RETRY {
            let left = RETRY
                .saturating_sub(sent.elapsed())
                .max(Duration::from_millis(1));
            sock.set_read_timeout(Some(left))
                .map_err(|e| format!("socket: {e}"))?;
            let n = match sock.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                // A signal (Ctrl-C during calibration): ask again.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => break,
                // ICMP port unreachable: nothing listens there (yet); try again.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    std::thread::sleep(RETRY.saturating_sub(sent.elapsed()));
                    break;
                }
                Err(e) => return Err(format!("receive: {e}")),
            };
            let n = match &control.key {
                Some(k) => match k.open(wavesync_net::clock::monotonic_ns(), master, &mut buf[..n])
                {
                    Ok(n) => n,
                    Err(_) => continue,
                },
                None => n,
            };
            if let Ok(env) = Envelope::decode(&buf[..n]) {
                if env.request == id {
                    if let Some(t) = take(&env.message) {
                        return Ok(t);
                    }
                }
            }
        }
    }
    let key = if control.key.is_some() {
        "; with a key: does the master have the same one?"
    } else {
        "; without a key: if the master has one, give it with --key-file"
    };
    Err(format!(
        "no answer from a master at {master} (is wavesync-sender or the PipeWire module running \
         there? use --master HOST[:PORT]{key})"
    ))
}

/// Fetches the whole room table from `master`.
fn fetch_rooms(control: &Control) -> Result<Vec<RoomEntry>, String> {
    let sock = socket(control.master)?;
    let mut rooms: Vec<RoomEntry> = Vec::new();
    let mut req = [0u8; 32];
    // A page per round trip; the table cannot have more than u16::MAX rooms.
    for _ in 0..1024 {
        let id = request_id();
        let n = encode_list(id, id, rooms.len() as u16, &mut req).map_err(|e| e.to_string())?;
        let (total, page) = ask(&sock, control, &req[..n], id, |m| match m {
            Message::Rooms(p) => Some((
                p.total as usize,
                p.entries().filter_map(Result::ok).collect::<Vec<_>>(),
            )),
            _ => None,
        })?;
        let got = page.len();
        rooms.extend(page);
        if got == 0 || rooms.len() >= total {
            break;
        }
    }
    Ok(rooms)
}

fn state_of(e: &RoomEntry) -> &'static str {
    if e.offline {
        "offline"
    } else if e.report.settings.off {
        "off"
    } else {
        e.report.state.name()
    }
}

/// One room as JSON.
pub fn room_json(e: &RoomEntry) -> Value {
    let r = &e.report;
    let s = &r.settings;
    json!({
        "id": format!("{:016x}", r.id),
        "name": r.name.as_str(),
        "address": e.address.to_string(),
        "state": state_of(e),
        "online": !e.offline,
        "last_report_ms": e.age_ms,
        "version": format!("{}.{}.{}", r.version.0, r.version.1, r.version.2),
        "stream": format!("{:08x}", r.stream_ssrc),
        "clock_locked": r.clock_locked,
        "clock_offset_us": r.clock_offset_ns as f64 / 1e3,
        "clock_uncertainty_us": r.clock_uncertainty_ns as f64 / 1e3,
        "sync_error_us": r.sync_error_ns.map(|e| e as f64 / 1e3),
        "buffer_ms": r.buffer_us as f64 / 1e3,
        "device_delay_ms": r.device_delay_us as f64 / 1e3,
        "lost": r.lost,
        "recovered": r.recovered,
        "concealed_frames": r.concealed_frames,
        "volume": s.volume,
        "muted": s.muted,
        "off": s.off,
        "trim_ms": s.trim_us as f64 / 1e3,
        "channels": s.channels.name(),
    })
}

fn table(rooms: &[RoomEntry]) -> String {
    let mut out = format!(
        "{:<16} {:<21} {:<9} {:>8} {:>8} {:>7} {:>7} {:>16} {:>4} {:<5} {:>8} {:<8}\n",
        "NAME",
        "ADDRESS",
        "STATE",
        "SYNC us",
        "CLOCK us",
        "BUF ms",
        "DEV ms",
        "LOST/REC/CONC",
        "VOL",
        "MUTE",
        "TRIM ms",
        "CHANNELS"
    );
    for e in rooms {
        let r = &e.report;
        let s = &r.settings;
        out.push_str(&format!(
            "{:<16} {:<21} {:<9} {:>8} {:>8.0} {:>7.1} {:>7.2} {:>16} {:>4} {:<5} {:>+8.3} {:<8}\n",
            r.name.as_str(),
            e.address.to_string(),
            state_of(e),
            r.sync_error_ns
                .map(|e| format!("{:+.0}", e as f64 / 1e3))
                .unwrap_or_else(|| "-".into()),
            r.clock_uncertainty_ns as f64 / 1e3,
            r.buffer_us as f64 / 1e3,
            r.device_delay_us as f64 / 1e3,
            format!("{}/{}/{}", r.lost, r.recovered, r.concealed_frames),
            s.volume,
            if s.muted { "yes" } else { "no" },
            s.trim_us as f64 / 1e3,
            s.channels.name(),
        ));
    }
    if rooms.is_empty() {
        out.push_str("(no rooms: no receiver reports to this master yet)\n");
    }
    out
}

/// `wavesync rooms ...`
pub fn run_rooms(args: &[String]) -> Result<(), String> {
    let mut args = args.to_vec();
    let control = Control::from_args(&mut args)?;
    let (mut json_out, mut watch) = (false, false);
    for a in &args {
        match a.as_str() {
            "--json" => json_out = true,
            "--watch" => watch = true,
            "--help" | "-h" => {
                println!("{ROOMS_USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown option {other:?}\n{ROOMS_USAGE}")),
        }
    }
    loop {
        let rooms = control.rooms()?;
        if json_out {
            let v: Vec<Value> = rooms.iter().map(room_json).collect();
            println!("{}", Value::Array(v));
        } else {
            if watch {
                // Clear the screen and go home, like `watch`.
                print!("\x1b[2J\x1b[H");
            }
            print!("{}", table(&rooms));
        }
        if !watch {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Parses the words after `wavesync room NAME` into a command; absurd values are refused here
/// with the same words the master would use.
pub fn parse_command(words: &[String]) -> Result<Command, String> {
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    let err = |e: wavesync_common::wire::control::CommandError| e.to_string();
    match w.as_slice() {
        ["volume", v] => {
            let v: i64 = v
                .parse()
                .map_err(|_| format!("volume {v:?} is not a whole number 0..100"))?;
            Command::from_parts(1, v, StatusName::default()).map_err(err)
        }
        ["mute"] => Ok(Command::Mute),
        ["unmute"] => Ok(Command::Unmute),
        ["trim", ms] => {
            let t: f64 = ms
                .parse()
                .map_err(|_| format!("trim {ms:?} is not a number of milliseconds"))?;
            let us = t * 1000.0;
            if !us.is_finite() || us.abs() > MAX_TRIM_US as f64 {
                return Err(format!(
                    "trim {ms} ms is out of range (+-{} ms)",
                    MAX_TRIM_US / 1000
                ));
            }
            Ok(Command::Trim(us.round() as i32))
        }
        ["channels", c] => Channels::from_name(c)
            .map(Command::Channels)
            .ok_or_else(|| format!("channels {c:?}: use all, left, right or mono")),
        ["off"] => Ok(Command::Off),
        ["on"] => Ok(Command::On),
        ["rename", n] => {
            if n.trim().is_empty() || n.len() > StatusName::MAX {
                return Err("a room name is 1 to 64 bytes".into());
            }
            Ok(Command::Rename(StatusName::truncated(n)))
        }
        _ => Err(format!(
            "unknown room command {:?}\n{ROOM_USAGE}",
            w.join(" ")
        )),
    }
}

/// `wavesync room NAME ...`
pub fn run_room(args: &[String]) -> Result<(), String> {
    let mut args = args.to_vec();
    let control = Control::from_args(&mut args)?;
    if args.is_empty() || args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{ROOM_USAGE}");
        return Ok(());
    }
    let name = args.remove(0);
    if name.is_empty() || name.len() > StatusName::MAX {
        return Err(format!("room name {name:?}: 1 to 64 bytes"));
    }
    let command = parse_command(&args)?;
    let answer = control.command(&name, &command)?;
    let s = &answer.settings;
    println!(
        "{}: volume {}{}{}, channels {}, trim {:+.3} ms",
        answer.name.as_str(),
        s.volume,
        if s.muted { " (muted)" } else { "" },
        if s.off { ", off" } else { "" },
        s.channels.name(),
        s.trim_us as f64 / 1e3
    );
    Ok(())
}

/// Sends `command` to room `name` through the master; the room's settings after it, or what
/// went wrong (naming the known rooms when `name` is not one of them).
fn command_room(control: &Control, name: &str, command: &Command) -> Result<Answer, String> {
    let room = StatusName::truncated(name);
    let sock = socket(control.master)?;
    let id = request_id();
    let mut req = [0u8; 256];
    let n = encode_command(id, id, Some(&room), command, &mut req).map_err(|e| e.to_string())?;
    let answer = ask(&sock, control, &req[..n], id, |m| match m {
        Message::Reply(a) => Some(*a),
        _ => None,
    })?;
    match answer.outcome {
        Outcome::Done => Ok(answer),
        Outcome::UnknownRoom => {
            let known = fetch_rooms(control)
                .map(|r| {
                    r.iter()
                        .map(|e| format!("{:?}", e.report.name.as_str()))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            Err(format!(
                "room {name:?}: {} (known rooms: {})",
                answer.outcome.describe(),
                if known.is_empty() { "none" } else { &known }
            ))
        }
        o => Err(format!("room {name:?}: {}", o.describe())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn commands_parse_and_absurd_values_are_refused() {
        assert_eq!(parse_command(&words("volume 50")), Ok(Command::Volume(50)));
        assert_eq!(parse_command(&words("trim -2.5")), Ok(Command::Trim(-2500)));
        assert_eq!(parse_command(&words("trim +5")), Ok(Command::Trim(5000)));
        assert_eq!(
            parse_command(&words("channels left")),
            Ok(Command::Channels(Channels::Left))
        );
        assert_eq!(
            parse_command(&words("volume 500")),
            Err("volume 500 is out of range (0..=100)".into())
        );
        assert!(parse_command(&words("trim 600000"))
            .unwrap_err()
            .contains("out of range"));
        assert!(parse_command(&words("channels sideways")).is_err());
        assert!(parse_command(&words("explode")).is_err());
    }

    #[test]
    fn master_defaults_to_this_host() {
        let mut a = words("--json");
        assert_eq!(
            take_master(&mut a).unwrap(),
            SocketAddr::from(([127, 0, 0, 1], defaults::CONTROL_PORT))
        );
        let mut a = words("--master 10.1.2.3:999 --json");
        assert_eq!(take_master(&mut a).unwrap().to_string(), "10.1.2.3:999");
        assert_eq!(a, words("--json"));
    }
}
