//! The protection layer's I/O shell: key files, the system's random source, and
//! [`Protection`], the keyed state one program's sockets share (one sending session, one replay
//! memory). The sealing and opening themselves are `wavesync_common::protect` (sans-I/O).
//!
//! A socket given a [`Protection`] ([`crate::StampedSocket::protect`],
//! [`crate::StreamSockets::protect`]) seals everything it sends and opens everything it
//! receives; what does not open is counted here and never returned to the caller, so the
//! sans-I/O cores above see exactly the messages they saw without a key, and nothing
//! unauthenticated at all.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use wavesync_common::protect::{
    Key, KeyError, OpenError, OpenStats, Opener, SealError, Sealer, KEY_LEN, OVERHEAD,
};
use wavesync_common::time::LocalNs;

/// Where the receiver looks for the household key when none is configured.
pub const DEFAULT_KEY_PATH: &str = "/etc/wavesync/key";

/// How often the programs look at their key file for a rotation.
pub const KEY_FILE_CHECK: Duration = Duration::from_secs(2);

/// How long a replaced key is still accepted after a rotation.
pub const ROTATION_GRACE_NS: i64 = 60_000_000_000;

/// A key file problem, phrased for the user.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// It could not be read.
    #[error("cannot read key file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Its contents are not a key.
    #[error("key file {path}: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: KeyError,
    },
    /// It exists and overwriting was not asked for.
    #[error("{0} exists: not overwriting it (--force replaces it, and every host must then get the new key)")]
    Exists(PathBuf),
    /// It could not be written.
    #[error("cannot write key file {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The system's random source failed.
    #[error("no random numbers from the system: {0}")]
    Random(String),
}

/// Fills `buf` from the system's random source (getrandom(2); blocks at early boot until the
/// pool is ready, never falls back to anything guessable).
pub fn random_bytes(buf: &mut [u8]) -> Result<(), KeyFileError> {
    getrandom::getrandom(buf).map_err(|e| KeyFileError::Random(e.to_string()))
}

/// A random 64-bit session salt.
pub fn random_salt() -> Result<u64, KeyFileError> {
    let mut b = [0u8; 8];
    random_bytes(&mut b)?;
    Ok(u64::from_ne_bytes(b))
}

/// The keys of a key file: the one to seal with and, during a rotation, one accepted too.
#[derive(Clone, Debug)]
pub struct KeySet {
    /// Seals, and is accepted.
    pub current: Key,
    /// Accepted too (the next or the previous key during a rotation).
    pub also: Option<Key>,
}

/// Reads a key file (one key, or two during a rotation: see `Key::parse_file`). A file every
/// user can read is used, with a warning.
pub fn read_keys(path: &Path) -> Result<KeySet, KeyFileError> {
    let read_err = |source| KeyFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let bytes = fs::read(path).map_err(read_err)?;
    if let Ok(m) = fs::metadata(path) {
        if m.permissions().mode() & 0o004 != 0 {
            log::warn!(
                "key file {} is readable by every user: chmod 600 (and chown to the service's user)",
                path.display()
            );
        }
    }
    let (current, also) = Key::parse_file(&bytes).map_err(|source| KeyFileError::Invalid {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(KeySet { current, also })
}

/// Reads a key file's (first) key.
pub fn read_key(path: &Path) -> Result<Key, KeyFileError> {
    read_keys(path).map(|k| k.current)
}

/// Writes a fresh random key to `path` (mode 0600; an existing file only with `force`) and
/// returns its id.
pub fn write_new_key(path: &Path, force: bool) -> Result<u32, KeyFileError> {
    let mut key = [0u8; KEY_LEN];
    random_bytes(&mut key)?;
    write_key(path, &key, force)
}

/// Writes `key` to `path` as a key file (mode 0600; an existing file only with `force`) and
/// returns its id.
pub fn write_key(path: &Path, key: &[u8; KEY_LEN], force: bool) -> Result<u32, KeyFileError> {
    let write_err = |source| KeyFileError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut opts = OpenOptions::new();
    opts.write(true).mode(0o600);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            KeyFileError::Exists(path.to_path_buf())
        } else {
            write_err(e)
        }
    })?;
    // An overwritten file keeps its old mode: make it 0600 too.
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(write_err)?;
    f.write_all(key).map_err(write_err)?;
    f.sync_all().map_err(write_err)?;
    Ok(Key::from_bytes(key).id())
}

/// What a keyed program has refused, and the first mismatch it saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProtectionStatus {
    /// Counters of the opener.
    pub stats: OpenStats,
    /// The first sign of a key mismatch ("... without a key", "... with another key"), said
    /// once in the log too.
    pub mismatch: Option<String>,
}

#[derive(Debug)]
struct Inner {
    sealer: Sealer,
    opener: Opener,
    status: ProtectionStatus,
    said_forged: bool,
}

/// The keyed state shared by one program's sockets: see the module doc.
#[derive(Debug)]
pub struct Protection {
    inner: Mutex<Inner>,
}

impl Protection {
    /// Protection with `key` and a fresh random session salt; `encrypt = false` leaves audio
    /// payloads readable (still authenticated).
    pub fn new(key: Key, encrypt: bool) -> Result<Protection, KeyFileError> {
        let salt = random_salt()?;
        Ok(Protection {
            inner: Mutex::new(Inner {
                sealer: Sealer::new(key.clone(), salt, encrypt),
                opener: Opener::new(key),
                status: ProtectionStatus::default(),
                said_forged: false,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The id of the key messages are sealed with.
    pub fn key_id(&self) -> u32 {
        self.lock().sealer.key_id()
    }

    /// Protection with a key file's keys (see [`Protection::new`] and [`Protection::set_keys`]).
    pub fn with_keys(keys: KeySet, encrypt: bool) -> Result<Protection, KeyFileError> {
        let p = Protection::new(keys.current.clone(), encrypt)?;
        p.set_keys(crate::clock::monotonic_ns(), keys);
        Ok(p)
    }

    /// Rotation: seal with `key` from now on, and accept the previous key for
    /// [`ROTATION_GRACE_NS`] more.
    pub fn rotate(&self, now: LocalNs, key: Key) {
        self.set_keys(
            now,
            KeySet {
                current: key,
                also: None,
            },
        );
    }

    /// Rotation with a key file's keys: seal with `keys.current`, accept it and `keys.also`,
    /// and a key accepted before but in neither for [`ROTATION_GRACE_NS`] more.
    pub fn set_keys(&self, now: LocalNs, keys: KeySet) {
        let mut g = self.lock();
        g.sealer.set_key(keys.current.clone());
        g.opener
            .set_keys(now, keys.current, keys.also, ROTATION_GRACE_NS);
    }

    /// The ids of the keys accepted now (the sealing key first).
    pub fn accepted_ids(&self) -> Vec<u32> {
        self.lock().opener.key_ids().collect()
    }

    /// Re-reads `path` every `every` while the protection lives, and applies a changed file
    /// with [`Protection::set_keys`] (a key rotation without a restart: see docs/security.md).
    /// A file that cannot be read or holds no key is said once and the keys in use are kept.
    pub fn watch(self: &Arc<Self>, path: PathBuf, every: Duration) -> io::Result<()> {
        let weak: Weak<Protection> = Arc::downgrade(self);
        let stamp = |p: &Path| {
            fs::metadata(p)
                .ok()
                .map(|m| (m.modified().ok(), m.len(), m.ino()))
        };
        let mut last = stamp(&path);
        std::thread::Builder::new()
            .name("wavesync-key".into())
            .spawn(move || {
                let mut said = false;
                loop {
                    std::thread::sleep(every);
                    let Some(p) = weak.upgrade() else { return };
                    let now = stamp(&path);
                    if now == last {
                        continue;
                    }
                    match read_keys(&path) {
                        Ok(keys) => {
                            last = now;
                            said = false;
                            p.set_keys(crate::clock::monotonic_ns(), keys);
                            let ids: Vec<String> = p
                                .accepted_ids()
                                .iter()
                                .map(|i| format!("{i:08x}"))
                                .collect();
                            log::info!(
                                "key file {} changed: sealing with {}, accepting {}",
                                path.display(),
                                ids.first().map(String::as_str).unwrap_or("-"),
                                ids.join(", ")
                            );
                        }
                        Err(e) if !said => {
                            said = true;
                            log::warn!("{e}: keeping the keys in use");
                        }
                        Err(_) => {}
                    }
                }
            })
            .map(|_| ())
    }

    /// What has been refused so far.
    pub fn status(&self) -> ProtectionStatus {
        let g = self.lock();
        ProtectionStatus {
            stats: g.opener.stats(),
            mismatch: g.status.mismatch.clone(),
        }
    }

    /// Seals `msg` into `out` and returns the sealed datagram.
    pub fn seal<'a>(&self, msg: &[u8], out: &'a mut [u8]) -> Result<&'a [u8], SealError> {
        let needed = msg.len() + OVERHEAD;
        if out.len() < needed {
            return Err(SealError::BufferTooSmall {
                needed,
                got: out.len(),
            });
        }
        out[..msg.len()].copy_from_slice(msg);
        let mut g = self.lock();
        let n = match g.sealer.seal(out, msg.len()) {
            Err(SealError::Exhausted) => {
                // Four billion messages in one session: start another.
                let salt = random_salt().map_err(|_| SealError::Exhausted)?;
                g.sealer.resalt(salt);
                g.sealer.seal(out, msg.len())?
            }
            r => r?,
        };
        Ok(&out[..n])
    }

    /// Opens a datagram received from `from` in place; returns the message's length. A
    /// refusal is counted; the first of each kind is logged (once per kind, not per packet).
    pub fn open(&self, now: LocalNs, from: SocketAddr, buf: &mut [u8]) -> Result<usize, OpenError> {
        let mut g = self.lock();
        let r = g.opener.open(now, buf);
        if let Err(e) = r {
            let from = wavesync_common::receiver::attributed_source(from);
            if e.is_mismatch() && g.status.mismatch.is_none() {
                let what = match e {
                    OpenError::UnknownKey { key_id } => format!(
                        "{from} sends with another key (id {key_id:08x}, ours {:08x}): nothing \
                         from it is used; give every host the same key file",
                        g.sealer.key_id()
                    ),
                    _ => format!(
                        "{from} sends without a key: nothing from it is used; give it the key \
                         file (--key-file, key_file, wavesync.key.file)"
                    ),
                };
                log::warn!("{what}");
                g.status.mismatch = Some(what);
            } else if !e.is_mismatch() && !g.said_forged {
                g.said_forged = true;
                log::warn!("refused a datagram from {from}: {e} (counted; said once)");
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("wavesync-key-{}-{name}", std::process::id()));
        let _ = fs::remove_file(&d);
        d
    }

    #[test]
    fn new_key_files_are_private_and_not_overwritten() {
        let p = tmp("new");
        let id = write_new_key(&p, false).unwrap();
        let m = fs::metadata(&p).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        assert_eq!(m.len(), KEY_LEN as u64);
        assert_eq!(read_key(&p).unwrap().id(), id);
        assert!(matches!(
            write_new_key(&p, false),
            Err(KeyFileError::Exists(_))
        ));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let id2 = write_new_key(&p, true).unwrap();
        assert_ne!(id, id2);
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        fs::write(&p, b"nonsense").unwrap();
        assert!(matches!(read_key(&p), Err(KeyFileError::Invalid { .. })));
        fs::remove_file(&p).unwrap();
        assert!(matches!(read_key(&p), Err(KeyFileError::Read { .. })));
    }

    #[test]
    fn sealed_opens_and_mismatches_are_said_once() {
        let a = Protection::new(Key::from_bytes(&[1; 32]), true).unwrap();
        let b = Protection::new(Key::from_bytes(&[2; 32]), true).unwrap();
        let from: SocketAddr = "192.0.2.1:45300".parse().unwrap();
        let mut out = [0u8; 128];
        let sealed = a.seal(b"hello", &mut out).unwrap().to_vec();
        let mut buf = sealed.clone();
        assert_eq!(a.open(LocalNs::from_ns(0), from, &mut buf), Ok(5));
        assert_eq!(&buf[..5], b"hello");
        let mut buf = sealed.clone();
        assert!(matches!(
            b.open(LocalNs::from_ns(0), from, &mut buf),
            Err(OpenError::UnknownKey { .. })
        ));
        let mut plain = *b"hello";
        assert_eq!(
            b.open(LocalNs::from_ns(0), from, &mut plain),
            Err(OpenError::Unprotected)
        );
        let st = b.status();
        assert_eq!(st.stats.refused(), 2);
        assert!(st.mismatch.unwrap().contains("another key"));
    }

    #[test]
    fn a_changed_key_file_rotates_without_a_restart() {
        let p = tmp("watch");
        write_new_key(&p, false).unwrap();
        let first = read_key(&p).unwrap();
        let prot = Arc::new(Protection::with_keys(read_keys(&p).unwrap(), true).unwrap());
        prot.watch(p.clone(), Duration::from_millis(20)).unwrap();
        let next = Key::from_bytes(&[3; 32]);
        let hex: String = [3u8; 32].iter().map(|b| format!("{b:02x}")).collect();
        fs::write(&p, format!("{hex}\n")).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while prot.key_id() != next.id() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(prot.key_id(), next.id());
        assert_eq!(prot.accepted_ids(), [next.id(), first.id()]);
        fs::remove_file(&p).unwrap();
    }
}
