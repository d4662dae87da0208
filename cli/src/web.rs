//! `wavesync web [--listen ADDR:PORT] [--master HOST[:PORT]]`: one page and a small JSON API
//! over the master's control path, for people who would rather tap than type (docs/web.md).
//!
//! - `GET /`: the page (`web.html`): every room with its live sync quality, a volume slider,
//!   mute, trim, channels, on/off; it polls the API once a second.
//! - `GET /api/rooms`: the rooms as `wavesync rooms --json` prints them.
//! - `POST /api/rooms/NAME` with `{"command": "volume 50"}` (any `wavesync room NAME ...`
//!   words): the room's settings after it, as JSON; a refusal is 400 (bad command), 404
//!   (unknown room) or 502 (the master did not answer), with `{"error": "..."}`.
//!
//! The HTTP side is `tiny_http` (a small synchronous server, no async runtime: the page is
//! light and local). Requests are handled one at a time; each asks the master once.

use std::net::SocketAddr;

use serde_json::{json, Value};
use wavesync_common::wire::control::{Answer, Command, RoomEntry};

use crate::rooms;

const USAGE: &str =
    "usage: wavesync web [--listen ADDR:PORT] [--master HOST[:PORT]] [--key-file PATH]

Serves a page listing every room of the master, with a volume slider, mute, trim, channels
and on/off for each, and the JSON API behind it (docs/web.md). The default listen address is
127.0.0.1:45303 (this host only): give --listen 0.0.0.0:45303 to reach it from a phone, on a
network you trust: the page has no login, and it sends commands with the household key it was
given (--key-file, or /etc/wavesync/key when readable) to a master that has one.";

/// The default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:45303";

/// Largest request body read (a command is a few words).
const MAX_BODY: u64 = 4096;

/// What the page needs from the master (the real one is its control port; tests use a fake).
pub trait Master {
    /// Every room the master hears from.
    fn rooms(&self) -> Result<Vec<RoomEntry>, String>;
    /// Sends `command` to room `name`; its settings after it.
    fn command(&self, name: &str, command: &Command) -> Result<Answer, String>;
}

impl Master for rooms::Control {
    fn rooms(&self) -> Result<Vec<RoomEntry>, String> {
        rooms::Control::rooms(self)
    }
    fn command(&self, name: &str, command: &Command) -> Result<Answer, String> {
        rooms::Control::command(self, name, command)
    }
}

/// An HTTP answer: status, content type, body.
#[derive(Debug, PartialEq)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Content-Type.
    pub content_type: &'static str,
    /// Body.
    pub body: String,
}

impl Reply {
    fn json(status: u16, v: Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: v.to_string(),
        }
    }
    fn error(status: u16, msg: &str) -> Reply {
        Reply::json(status, json!({ "error": msg }))
    }
}

/// Decodes `%XX` escapes of a URL path segment (invalid ones are refused).
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The settings of an answer as JSON.
fn answer_json(a: &Answer) -> Value {
    let s = &a.settings;
    json!({
        "name": a.name.as_str(),
        "volume": s.volume,
        "muted": s.muted,
        "off": s.off,
        "trim_ms": s.trim_us as f64 / 1e3,
        "channels": s.channels.name(),
    })
}

/// Answers one request (no I/O but through `master`).
pub fn handle(master: &dyn Master, method: &str, url: &str, body: &str) -> Reply {
    let path = url.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/") | ("GET", "/index.html") => Reply {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: include_str!("web.html").to_string(),
        },
        ("GET", "/api/rooms") => match master.rooms() {
            Ok(r) => Reply::json(200, Value::Array(r.iter().map(rooms::room_json).collect())),
            Err(e) => Reply::error(502, &e),
        },
        ("POST", p) if p.starts_with("/api/rooms/") => {
            let Some(name) = percent_decode(&p["/api/rooms/".len()..]) else {
                return Reply::error(400, "the room name in the URL is not valid UTF-8");
            };
            let words = match serde_json::from_str::<Value>(body) {
                Ok(v) => match v.get("command").and_then(Value::as_str) {
                    Some(c) => c.split_whitespace().map(String::from).collect::<Vec<_>>(),
                    None => return Reply::error(400, "the body needs {\"command\": \"...\"}"),
                },
                Err(e) => return Reply::error(400, &format!("the body is not JSON: {e}")),
            };
            let command = match rooms::parse_command(&words) {
                Ok(c) => c,
                Err(e) => return Reply::error(400, &e),
            };
            match master.command(&name, &command) {
                Ok(a) => Reply::json(200, answer_json(&a)),
                Err(e) if e.contains("no answer from a master") => Reply::error(502, &e),
                // `Control::command` names the known rooms only when the room is not one of them.
                Err(e) if e.contains("(known rooms:") => Reply::error(404, &e),
                Err(e) => Reply::error(409, &e),
            }
        }
        (_, "/") | (_, "/api/rooms") => Reply::error(405, "method not allowed"),
        _ => Reply::error(404, "no such page"),
    }
}

/// `wavesync web ...`
pub fn run_web(args: &[String]) -> Result<(), String> {
    let mut args = args.to_vec();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return Ok(());
    }
    let control = rooms::Control::from_args(&mut args)?;
    let mut listen = DEFAULT_LISTEN.to_string();
    let mut i = 0;
    while i < args.len() {
        match (args[i].as_str(), args.get(i + 1)) {
            ("--listen", Some(v)) => {
                listen = v.clone();
                i += 2;
            }
            (other, _) => {
                if let Some(v) = other.strip_prefix("--listen=") {
                    listen = v.to_string();
                    i += 1;
                } else {
                    return Err(format!("unknown option {other:?}\n{USAGE}"));
                }
            }
        }
    }
    let addr: SocketAddr = listen
        .parse()
        .map_err(|_| format!("--listen {listen:?}: want ADDR:PORT, e.g. {DEFAULT_LISTEN}"))?;
    let server =
        tiny_http::Server::http(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    log::info!(
        "serving the rooms of the master at {} on http://{addr}/",
        control.master()
    );
    let port = control;
    for mut req in server.incoming_requests() {
        let mut body = String::new();
        let read = std::io::Read::read_to_string(
            &mut std::io::Read::take(req.as_reader(), MAX_BODY),
            &mut body,
        );
        let reply = match read {
            Ok(_) => handle(&port, &req.method().to_string(), req.url(), &body),
            Err(_) => Reply::error(400, "the body is not UTF-8"),
        };
        if reply.status >= 400 {
            log::warn!(
                "{} {}: {} {}",
                req.method(),
                req.url(),
                reply.status,
                reply.body
            );
        }
        let header =
            tiny_http::Header::from_bytes(&b"Content-Type"[..], reply.content_type.as_bytes());
        let mut resp = tiny_http::Response::from_string(reply.body).with_status_code(reply.status);
        if let Ok(h) = header {
            resp.add_header(h);
        }
        if let Err(e) = req.respond(resp) {
            log::warn!("answering a request: {e}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use wavesync_common::wire::control::Outcome;
    use wavesync_common::wire::report::Settings;
    use wavesync_common::wire::status::StatusName;

    #[derive(Default)]
    struct Fake {
        sent: RefCell<Vec<(String, Command)>>,
        down: bool,
    }

    impl Master for Fake {
        fn rooms(&self) -> Result<Vec<RoomEntry>, String> {
            if self.down {
                return Err("no answer from a master at 127.0.0.1:45301".into());
            }
            Ok(Vec::new())
        }
        fn command(&self, name: &str, command: &Command) -> Result<Answer, String> {
            if name != "kitchen" {
                return Err(format!(
                    "room {name:?}: not a room (known rooms: \"kitchen\")"
                ));
            }
            self.sent.borrow_mut().push((name.to_string(), *command));
            let mut settings = Settings::default();
            if let Command::Volume(v) = command {
                settings.volume = *v;
            }
            Ok(Answer {
                outcome: Outcome::Done,
                name: StatusName::truncated(name),
                settings,
            })
        }
    }

    #[test]
    fn the_page_and_the_room_list_are_served() {
        let m = Fake::default();
        let page = handle(&m, "GET", "/", "");
        assert_eq!(page.status, 200);
        assert!(page.body.contains("/api/rooms"), "the page uses the API");
        let list = handle(&m, "GET", "/api/rooms?t=1", "");
        assert_eq!((list.status, list.body.as_str()), (200, "[]"));
        let down = Fake {
            down: true,
            ..Fake::default()
        };
        let r = handle(&down, "GET", "/api/rooms", "");
        assert_eq!(r.status, 502);
        assert!(r.body.contains("no answer"), "{}", r.body);
    }

    #[test]
    fn commands_reach_the_named_room_and_bad_ones_are_refused_clearly() {
        let m = Fake::default();
        let r = handle(
            &m,
            "POST",
            "/api/rooms/kitchen",
            r#"{"command":"volume 50"}"#,
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let v: Value = serde_json::from_str(&r.body).expect("json");
        assert_eq!(v["volume"], 50);
        assert_eq!(
            m.sent.borrow().as_slice(),
            &[("kitchen".to_string(), Command::Volume(50))]
        );
        let cases = [
            ("/api/rooms/kitchen", r#"{"command":"volume 500"}"#, 400),
            ("/api/rooms/kitchen", "not json", 400),
            ("/api/rooms/kitchen", r#"{"cmd":"mute"}"#, 400),
            ("/api/rooms/bath%20room", r#"{"command":"mute"}"#, 404),
            ("/api/rooms/%ff", r#"{"command":"mute"}"#, 400),
            ("/api/rooms/%zz", r#"{"command":"mute"}"#, 400),
        ];
        for (url, body, status) in cases {
            let r = handle(&m, "POST", url, body);
            assert_eq!(r.status, status, "{url} {body}: {}", r.body);
            assert!(r.body.contains("\"error\""), "{}", r.body);
        }
        assert_eq!(m.sent.borrow().len(), 1, "nothing else was sent");
        assert_eq!(handle(&m, "DELETE", "/api/rooms", "").status, 405);
        assert_eq!(handle(&m, "GET", "/etc/passwd", "").status, 404);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("bath%20room").as_deref(), Some("bath room"));
        assert_eq!(percent_decode("K%C3%BCche").as_deref(), Some("Küche"));
        assert_eq!(percent_decode("%2"), None);
        assert_eq!(percent_decode("%ff"), None);
    }
}
