//! `wavesync pair`: hands the household key to a receiver with a short code, over the LAN.
//!
//! On the master, `wavesync pair [--key-file PATH]` shows a code (6 digits) and waits; on the
//! receiver, `wavesync pair CODE HOST [--key-file PATH] [--force]` fetches the key from the
//! master at HOST and writes it (mode 0600).
//!
//! The exchange is SPAKE2 (the `spake2` crate, RustCrypto's PAKEs: Ed25519 group, audited
//! curve25519-dalek underneath), with the code as the password: both sides derive the same
//! 32-byte secret only if they used the same code. A passive listener learns nothing about
//! the code or the key; an active attacker gets one guess of the code per attempt, and the
//! master gives up after [`MAX_FAILURES`] failed attempts (1 in 10^6 per guess, so 3 in 10^6
//! in all). The key travels encrypted and authenticated under that secret
//! (ChaCha20-Poly1305), and the receiver confirms it got it, so the master can tell success
//! from a wrong code. One TCP connection per attempt, on [`PAIR_PORT`].

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
use spake2::{Ed25519Group, Identity, Password, Spake2};
use wavesync_common::protect::{Key, KEY_LEN};
use wavesync_net::protection::{self, DEFAULT_KEY_PATH};

use crate::key::KeyArgs;

/// TCP port the master listens on while pairing.
pub const PAIR_PORT: u16 = 45302;
/// Failed attempts after which the master gives the code up.
pub const MAX_FAILURES: u32 = 3;
/// How long a code is valid.
const CODE_LIFETIME: Duration = Duration::from_secs(600);
const MAGIC: &[u8; 4] = b"WSP1";
/// SPAKE2 messages: one group element and a side byte.
const PAKE_LEN: usize = 33;
const TAG_LEN: usize = 16;
const IO_TIMEOUT: Duration = Duration::from_secs(10);

const USAGE: &str = "\
usage: wavesync pair [--key-file PATH]                          on the master: show a code
       wavesync pair CODE HOST [--key-file PATH] [--force]      on a receiver: get the key";

fn spake(code: &str, master: bool) -> (Spake2<Ed25519Group>, Vec<u8>) {
    let password = Password::new(code.as_bytes());
    let (a, b) = (
        Identity::new(b"wavesync master"),
        Identity::new(b"wavesync receiver"),
    );
    if master {
        Spake2::<Ed25519Group>::start_a(&password, &a, &b)
    } else {
        Spake2::<Ed25519Group>::start_b(&password, &a, &b)
    }
}

fn cipher(secret: &[u8]) -> Result<ChaCha20Poly1305, String> {
    ChaCha20Poly1305::new_from_slice(secret).map_err(|_| "bad PAKE secret length".to_string())
}

fn nonce(n: u8) -> Nonce {
    let mut b = [0u8; 12];
    b[11] = n;
    Nonce::from(b)
}

/// Normalises a code as typed ("123 456", "123-456") to its digits.
fn digits(code: &str) -> Result<String, String> {
    let d: String = code.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    if d.len() == 6 && d.bytes().all(|b| b.is_ascii_digit()) {
        Ok(d)
    } else {
        Err(format!(
            "{code:?} is not a pairing code (6 digits, e.g. 123-456)"
        ))
    }
}

/// Runs `wavesync pair ...` with the arguments after `pair`.
pub fn run_pair(args: &[String]) -> Result<(), String> {
    let Some(KeyArgs {
        force,
        key_file,
        rest,
    }) = KeyArgs::parse(args, USAGE)?
    else {
        return Ok(());
    };
    let key_file = key_file.unwrap_or_else(|| PathBuf::from(DEFAULT_KEY_PATH));
    match rest.as_slice() {
        [] => serve(&key_file, PAIR_PORT),
        [code, host] => {
            let id = fetch(&digits(code)?, host, &key_file, force)?;
            println!(
                "paired: key {id:08x} written to {} (restart the receiver to use it)",
                key_file.display()
            );
            Ok(())
        }
        _ => Err(format!(
            "unknown pair command {:?}\n{USAGE}",
            args.join(" ")
        )),
    }
}

/// The master's side: shows a code and hands the key to whoever proves they know it.
fn serve(key_file: &std::path::Path, port: u16) -> Result<(), String> {
    let key = protection::read_key(key_file).map_err(|e| e.to_string())?;
    let listener = TcpListener::bind(("::", port))
        .or_else(|_| TcpListener::bind(("0.0.0.0", port)))
        .map_err(|e| format!("cannot listen on TCP port {port}: {e}"))?;
    let mut n = [0u8; 4];
    protection::random_bytes(&mut n).map_err(|e| e.to_string())?;
    let code = format!("{:06}", u32::from_ne_bytes(n) % 1_000_000);
    println!(
        "pairing code {}-{} (valid 10 minutes, {MAX_FAILURES} wrong tries end it): on each \
         receiver run\n    wavesync pair {}-{} THIS-HOST\nCtrl-C when done.",
        &code[..3],
        &code[3..],
        &code[..3],
        &code[3..]
    );
    let started = Instant::now();
    let mut failures = 0;
    listener.set_nonblocking(false).map_err(|e| e.to_string())?;
    for conn in listener.incoming() {
        if started.elapsed() > CODE_LIFETIME {
            return Err("the code expired: run wavesync pair again".into());
        }
        let Ok(mut conn) = conn else { continue };
        let peer = conn
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        match hand_over(&mut conn, &code, &key) {
            Ok(()) => println!("paired {peer}: it has key {:08x}", key.id()),
            Err(e) => {
                failures += 1;
                eprintln!("pairing attempt from {peer} failed: {e}");
                if failures >= MAX_FAILURES {
                    return Err(format!(
                        "{failures} failed attempts: the code is void (run wavesync pair again)"
                    ));
                }
            }
        }
    }
    Ok(())
}

fn hand_over(conn: &mut TcpStream, code: &str, key: &Key) -> Result<(), String> {
    conn.set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|_| conn.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let mut hello = [0u8; 4 + PAKE_LEN];
    conn.read_exact(&mut hello).map_err(|e| e.to_string())?;
    if &hello[..4] != MAGIC {
        return Err("not a WaveSync pairing request".into());
    }
    let (state, msg_a) = spake(code, true);
    let secret = state
        .finish(&hello[4..])
        .map_err(|e| format!("bad PAKE message: {e:?}"))?;
    let c = cipher(&secret)?;
    let mut sealed = [0u8; KEY_LEN + TAG_LEN];
    sealed[..KEY_LEN].copy_from_slice(key.secret_bytes());
    let tag = c
        .encrypt_in_place_detached(&nonce(0), b"wavesync pair key", &mut sealed[..KEY_LEN])
        .map_err(|_| "cannot encrypt".to_string())?;
    sealed[KEY_LEN..].copy_from_slice(&tag);
    let mut out = Vec::with_capacity(4 + PAKE_LEN + sealed.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&msg_a);
    out.extend_from_slice(&sealed);
    conn.write_all(&out).map_err(|e| e.to_string())?;
    // The receiver confirms with a tag only the same secret can make.
    let mut confirm = [0u8; TAG_LEN];
    conn.read_exact(&mut confirm)
        .map_err(|_| "no confirmation (wrong code?)".to_string())?;
    c.decrypt_in_place_detached(
        &nonce(1),
        b"wavesync pair ok",
        &mut [],
        Tag::from_slice(&confirm),
    )
    .map_err(|_| "wrong code".to_string())
}

/// The receiver's side: proves it knows `code` to the master at `host` and writes the key.
fn fetch(code: &str, host: &str, key_file: &std::path::Path, force: bool) -> Result<u32, String> {
    let addr = (host, PAIR_PORT)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))?;
    fetch_at(code, addr, key_file, force)
}

fn fetch_at(
    code: &str,
    addr: std::net::SocketAddr,
    key_file: &std::path::Path,
    force: bool,
) -> Result<u32, String> {
    let mut conn = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .map_err(|e| format!("cannot reach {addr} (is wavesync pair running there?): {e}"))?;
    conn.set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|_| conn.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let (state, msg_b) = spake(code, false);
    let mut hello = Vec::with_capacity(4 + PAKE_LEN);
    hello.extend_from_slice(MAGIC);
    hello.extend_from_slice(&msg_b);
    conn.write_all(&hello).map_err(|e| e.to_string())?;
    let mut reply = [0u8; 4 + PAKE_LEN + KEY_LEN + TAG_LEN];
    conn.read_exact(&mut reply)
        .map_err(|e| format!("no answer from {addr}: {e}"))?;
    if &reply[..4] != MAGIC {
        return Err(format!("{addr} is not a WaveSync master pairing"));
    }
    let secret = state
        .finish(&reply[4..4 + PAKE_LEN])
        .map_err(|e| format!("bad PAKE message: {e:?}"))?;
    let c = cipher(&secret)?;
    let mut key = [0u8; KEY_LEN];
    key.copy_from_slice(&reply[4 + PAKE_LEN..4 + PAKE_LEN + KEY_LEN]);
    c.decrypt_in_place_detached(
        &nonce(0),
        b"wavesync pair key",
        &mut key,
        Tag::from_slice(&reply[4 + PAKE_LEN + KEY_LEN..]),
    )
    .map_err(|_| "wrong code (the master counts it as a failed attempt)".to_string())?;
    let confirm = c
        .encrypt_in_place_detached(&nonce(1), b"wavesync pair ok", &mut [])
        .map_err(|_| "cannot confirm".to_string())?;
    conn.write_all(&confirm).map_err(|e| e.to_string())?;
    protection::write_key(key_file, &key, force).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("wavesync-pair-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    /// Runs the master's side for one connection on an ephemeral port.
    fn master(code: &'static str, key: Key) -> (u16, std::thread::JoinHandle<Result<(), String>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().map_err(|e| e.to_string())?;
            hand_over(&mut c, code, &key)
        });
        (port, t)
    }

    fn fetch_from(port: u16, code: &str, path: &std::path::Path) -> Result<u32, String> {
        fetch_at(code, ([127, 0, 0, 1], port).into(), path, false)
    }

    #[test]
    fn the_right_code_hands_the_key_over_and_a_wrong_one_gets_nothing() {
        let key = Key::from_bytes(&[42; KEY_LEN]);
        let path = scratch("ok");
        let (port, m) = master("123456", key.clone());
        assert_eq!(fetch_from(port, "123456", &path), Ok(key.id()));
        assert_eq!(m.join().unwrap(), Ok(()));
        assert_eq!(protection::read_key(&path).unwrap().id(), key.id());
        std::fs::remove_file(&path).unwrap();

        let path = scratch("wrong");
        let (port, m) = master("123456", key);
        assert!(fetch_from(port, "654321", &path).is_err());
        assert!(
            m.join().unwrap().is_err(),
            "the master counts a failed attempt"
        );
        assert!(!path.exists());
    }

    #[test]
    fn codes_are_six_digits() {
        assert_eq!(digits("123-456").unwrap(), "123456");
        assert_eq!(digits("123 456").unwrap(), "123456");
        assert!(digits("12345").is_err());
        assert!(digits("abcdef").is_err());
    }
}
