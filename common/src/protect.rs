//! The protection layer: every datagram authenticated with the household key, audio payloads
//! encrypted, replays refused (sans-I/O: bytes, a key, a random salt and `now` in; bytes and
//! typed verdicts out).
//!
//! The layout follows SRTP (RFC 3711) with an AEAD as in RFC 7714: the message's header stays
//! in the clear and is authenticated as associated data, so Wireshark still shows the RTP
//! header; the audio payload is encrypted (unless the sender sets `encrypt = false`: then it is
//! readable but still authenticated); a trailer carries a key id, the nonce and the tag.
//! Unlike SRTP the nonce travels explicitly, so one layout covers every message (audio,
//! status, time requests and replies, NACKs, resends) and the message decoders in [`crate::wire`]
//! see exactly the bytes they saw without a key:
//!
//! ```text
//! body (the unprotected message; its first `clear` bytes in the clear, the rest encrypted)
//! trailer, 36 bytes:
//!   0..2    clear length   bytes of the body in the clear (authenticated as AAD)
//!   2       version        1
//!   3       reserved       0
//!   4..8    key id         which household key (see [`Key::id`])
//!   8..16   session salt   random per sending session (process, socket)
//!   16..20  counter        +1 per message of the session
//!   20..36  tag            Poly1305 tag over AAD and ciphertext
//! ```
//!
//! The 96-bit nonce is `salt || counter`: a fresh random salt per sending session means nonces
//! never repeat across restarts (two sessions share a salt with probability about n^2 / 2^65),
//! and a session stops (asks for a new salt) before its counter wraps. The boundary between clear
//! and encrypted bytes is bound by the AEAD's length block, the salt and counter by the nonce,
//! the key by the tag; version and reserved must be exact.
//!
//! Replays: the [`Opener`] keeps a 128-message sliding window per sending session (the SRTP
//! replay list), so a message is accepted once, late messages within the window still are, and
//! anything older is refused. Time replies are also bound to their request's origin by the time
//! client, as before. Rotation: an opener accepts the current key and, for a grace period, the
//! previous one ([`Opener::set_key`]).
//!
//! Why ChaCha20-Poly1305 from RustCrypto's `chacha20poly1305`: an IETF-standard AEAD (RFC 8439)
//! that is fast in portable code on the ARM boards without AES instructions that receivers
//! often are (AES-GCM without them is slow or not constant time), pure Rust (no C toolchain
//! for cross builds, unlike ring), audited (NCC Group, 2020), used in-place without allocation
//! (`default-features = false`), and kept by the RustCrypto project.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};

use crate::time::LocalNs;
use crate::wire::{classify, Kind};

/// Bytes of a key.
pub const KEY_LEN: usize = 32;
/// Bytes protection adds to every datagram (the trailer).
pub const OVERHEAD: usize = 36;
/// The trailer's version.
pub const VERSION: u8 = 1;
/// Messages a session's replay window remembers behind the newest.
pub const REPLAY_WINDOW: u32 = 128;
/// Sending sessions an [`Opener`] remembers (least recently heard forgotten first).
pub const MAX_SESSIONS: usize = 64;
const TAG_LEN: usize = 16;
const TAG_AT: usize = OVERHEAD - TAG_LEN;
/// The last counter value is never used for a message: its nonce derives the key id.
const COUNTER_END: u32 = u32::MAX;

/// A household key.
#[derive(Clone)]
pub struct Key {
    cipher: ChaCha20Poly1305,
    id: u32,
    bytes: [u8; KEY_LEN],
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({:08x})", self.id)
    }
}

/// Why a key file's contents are not a key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Neither 32 bytes nor 64 hexadecimal digits.
    #[error("not a key: expected 32 bytes (or 64 hex digits), found {got} bytes")]
    BadLength {
        /// Bytes found.
        got: usize,
    },
    /// 64 characters, but not all hexadecimal digits.
    #[error("not a key: 64 characters but not all hexadecimal digits")]
    BadHex,
    /// All zeros: certainly not a generated key.
    #[error("not a key: all zeros")]
    AllZero,
    /// More than two keys (the current one and the one accepted alongside it).
    #[error("more than two keys")]
    TooManyKeys,
}

impl Key {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Key {
        let cipher = ChaCha20Poly1305::new(bytes.into());
        // The id: the first 4 bytes of the tag of an empty message under a nonce no message
        // uses (counter COUNTER_END), i.e. a pseudo-random function of the key that reveals
        // nothing else about it.
        let nonce = Nonce::from([0xff; 12]);
        let id = match cipher.encrypt_in_place_detached(&nonce, b"wavesync key id", &mut []) {
            Ok(tag) => u32::from_be_bytes([tag[0], tag[1], tag[2], tag[3]]),
            // Cannot happen (an empty message is never too long); any value would do.
            Err(_) => 0,
        };
        Key {
            cipher,
            id,
            bytes: *bytes,
        }
    }

    /// The key's secret bytes (for handing it to another host when pairing).
    pub fn secret_bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// A key from a key file's contents: the 32 bytes `wavesync key new` writes, or 64
    /// hexadecimal digits (surrounding white space ignored).
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Key, KeyError> {
        let mut key = [0u8; KEY_LEN];
        if bytes.len() == KEY_LEN {
            key.copy_from_slice(bytes);
        } else {
            let text = bytes.trim_ascii();
            if text.len() != 2 * KEY_LEN {
                return Err(KeyError::BadLength { got: bytes.len() });
            }
            for (k, pair) in key.iter_mut().zip(text.chunks_exact(2)) {
                let hi = hex_digit(pair[0]).ok_or(KeyError::BadHex)?;
                let lo = hex_digit(pair[1]).ok_or(KeyError::BadHex)?;
                *k = hi << 4 | lo;
            }
        }
        if key == [0; KEY_LEN] {
            return Err(KeyError::AllZero);
        }
        Ok(Key::from_bytes(&key))
    }

    /// A key file that may hold two keys: the 32 bytes `wavesync key new` writes (one key), or
    /// one or two lines of 64 hexadecimal digits (blank lines and lines starting with `#`
    /// ignored). The first key seals; the second, during a rotation, is accepted too.
    pub fn parse_file(bytes: &[u8]) -> Result<(Key, Option<Key>), KeyError> {
        if bytes.len() == KEY_LEN {
            return Ok((Key::from_file_bytes(bytes)?, None));
        }
        let mut keys = bytes
            .split(|&b| b == b'\n')
            .map(<[u8]>::trim_ascii)
            .filter(|l| !l.is_empty() && !l.starts_with(b"#"))
            .map(Key::from_file_bytes);
        let first = keys.next().unwrap_or(Err(KeyError::BadLength { got: 0 }))?;
        let second = keys.next().transpose()?;
        if keys.next().is_some() {
            return Err(KeyError::TooManyKeys);
        }
        Ok((first, second))
    }

    /// The key's id: 32 bits derived from the key (not secret), sent with every message so the
    /// receiving side knows which key to use and can tell "another key" from "forged".
    pub fn id(&self) -> u32 {
        self.id
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Why a message could not be sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The buffer has no room for the trailer.
    #[error("no room for the protection trailer: needed {needed} bytes, got {got}")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes the buffer has.
        got: usize,
    },
    /// The message is longer than 65535 bytes.
    #[error("message too long to protect: {0} bytes")]
    TooLong(usize),
    /// The session's counter is used up: give it a new salt ([`Sealer::resalt`]).
    #[error("the session's message counter is used up: a new session salt is needed")]
    Exhausted,
}

/// The sending side of a session: seals messages with one key, one salt and a counter.
#[derive(Clone, Debug)]
pub struct Sealer {
    key: Key,
    salt: u64,
    counter: u32,
    encrypt: bool,
}

impl Sealer {
    /// A session with `key` and a random `salt` (the caller draws it from the system's random
    /// source: it must differ from every earlier session's). `encrypt = false` leaves audio
    /// payloads readable (still authenticated).
    pub fn new(key: Key, salt: u64, encrypt: bool) -> Sealer {
        Sealer {
            key,
            salt,
            counter: 0,
            encrypt,
        }
    }

    /// Switches to a new key (rotation); the counter goes on.
    pub fn set_key(&mut self, key: Key) {
        self.key = key;
    }

    /// Starts a new session with a fresh random salt (after [`SealError::Exhausted`]).
    pub fn resalt(&mut self, salt: u64) {
        self.salt = salt;
        self.counter = 0;
    }

    /// The id of the key it seals with.
    pub fn key_id(&self) -> u32 {
        self.key.id
    }

    /// Whether audio payloads are encrypted.
    pub fn encrypts(&self) -> bool {
        self.encrypt
    }

    /// Seals the message in `buf[..len]` in place and appends the trailer; returns the new
    /// length (`len + OVERHEAD`). Audio packets (by [`classify`]) keep their RTP header in the
    /// clear and have their payload encrypted when the sealer encrypts; every other message is
    /// authenticated only.
    pub fn seal(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SealError> {
        let needed = len + OVERHEAD;
        if buf.len() < needed {
            return Err(SealError::BufferTooSmall {
                needed,
                got: buf.len(),
            });
        }
        if len > u16::MAX as usize {
            return Err(SealError::TooLong(len));
        }
        if self.counter == COUNTER_END {
            return Err(SealError::Exhausted);
        }
        let counter = self.counter;
        self.counter += 1;
        let clear = if self.encrypt && classify(&buf[..len]) == Kind::Audio {
            rtp_header_len(&buf[..len])
        } else {
            len
        };
        let nonce = nonce(self.salt, counter);
        let (aad, rest) = buf.split_at_mut(clear);
        let (ct, trailer) = rest.split_at_mut(len - clear);
        let tag = self
            .key
            .cipher
            .encrypt_in_place_detached(&nonce, aad, ct)
            .map_err(|_| SealError::TooLong(len))?;
        let t = &mut trailer[..OVERHEAD];
        t[0..2].copy_from_slice(&(clear as u16).to_be_bytes());
        t[2] = VERSION;
        t[3] = 0;
        t[4..8].copy_from_slice(&self.key.id.to_be_bytes());
        t[8..16].copy_from_slice(&self.salt.to_be_bytes());
        t[16..20].copy_from_slice(&counter.to_be_bytes());
        t[TAG_AT..].copy_from_slice(&tag);
        Ok(needed)
    }
}

fn nonce(salt: u64, counter: u32) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&salt.to_be_bytes());
    n[8..].copy_from_slice(&counter.to_be_bytes());
    Nonce::from(n)
}

/// Length of an RTP packet's header (fixed part, CSRCs, header extension), capped at the
/// packet's length: what stays in the clear.
fn rtp_header_len(p: &[u8]) -> usize {
    if p.len() < 12 {
        return p.len();
    }
    let mut n = 12 + 4 * (p[0] & 0x0f) as usize;
    if p[0] & 0x10 != 0 && p.len() >= n + 4 {
        n += 4 + 4 * u16::from_be_bytes([p[n + 2], p[n + 3]]) as usize;
    }
    n.min(p.len())
}

/// Why a datagram was not accepted. The first two variants point at a configuration problem
/// (the sender has no key, or another one); the last two at an attacker or a corrupting
/// network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// No protection trailer: sent without a key (or not ours at all).
    #[error("not protected (sent without a key)")]
    Unprotected,
    /// Protected with a key this side does not have.
    #[error("protected with another key (id {key_id:08x})")]
    UnknownKey {
        /// The key id it names.
        key_id: u32,
    },
    /// Names our key but does not authenticate: forged, or corrupted on the way.
    #[error("authentication failed (forged or corrupted; key {key_id:08x})")]
    Forged {
        /// The key id it names.
        key_id: u32,
    },
    /// Authentic, but already received or older than the replay window.
    #[error("replayed (session {salt:016x}, message {counter})")]
    Replayed {
        /// The sending session.
        salt: u64,
        /// The message's counter.
        counter: u32,
    },
}

impl OpenError {
    /// True when the sender is probably misconfigured (no key, another key) rather than
    /// hostile.
    pub fn is_mismatch(&self) -> bool {
        matches!(self, OpenError::Unprotected | OpenError::UnknownKey { .. })
    }
}

/// What an [`Opener`] has accepted and refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenStats {
    /// Accepted messages.
    pub opened: u64,
    /// [`OpenError::Unprotected`].
    pub unprotected: u64,
    /// [`OpenError::UnknownKey`].
    pub unknown_key: u64,
    /// [`OpenError::Forged`].
    pub forged: u64,
    /// [`OpenError::Replayed`].
    pub replayed: u64,
}

impl OpenStats {
    /// Everything refused.
    pub fn refused(&self) -> u64 {
        self.unprotected + self.unknown_key + self.forged + self.replayed
    }
}

#[derive(Clone, Copy, Debug)]
struct Session {
    key_id: u32,
    salt: u64,
    /// Highest counter accepted.
    top: u32,
    /// Bit i set: message `top - i` accepted.
    seen: u128,
    last_heard: LocalNs,
}

impl Session {
    fn is_replay(&self, counter: u32) -> bool {
        if counter > self.top {
            return false;
        }
        let d = self.top - counter;
        d >= REPLAY_WINDOW || self.seen >> d & 1 == 1
    }

    fn accept(&mut self, counter: u32) {
        if counter > self.top {
            let shift = counter - self.top;
            self.seen = if shift >= REPLAY_WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.top = counter;
        } else {
            self.seen |= 1 << (self.top - counter);
        }
    }
}

#[derive(Clone, Debug)]
struct Accepted {
    key: Key,
    /// Accepted until then (a previous key in its grace period); `None`: the current key.
    until: Option<LocalNs>,
}

/// The receiving side: checks and opens protected datagrams with the current key, a second key
/// accepted alongside it (the next key during a rotation), and for a grace period the key they
/// replaced; and refuses replays per sending session.
#[derive(Clone, Debug)]
pub struct Opener {
    /// Current, also accepted, previous (in its grace period).
    keys: [Option<Accepted>; 3],
    sessions: Vec<Session>,
    stats: OpenStats,
}

impl Opener {
    /// An opener that accepts `key`.
    pub fn new(key: Key) -> Opener {
        Opener {
            keys: [Some(Accepted { key, until: None }), None, None],
            sessions: Vec::with_capacity(MAX_SESSIONS),
            stats: OpenStats::default(),
        }
    }

    /// Rotation: `key` becomes the current key; the one it replaces is still accepted until
    /// `now + grace_ns`. Setting the current key again changes nothing.
    pub fn set_key(&mut self, now: LocalNs, key: Key, grace_ns: i64) {
        self.set_keys(now, key, None, grace_ns);
    }

    /// Rotation with two keys: `current` and `also` are accepted from now on; of the keys
    /// accepted before, one that is in neither (the current one first) is still accepted until
    /// `now + grace_ns`.
    pub fn set_keys(&mut self, now: LocalNs, current: Key, also: Option<Key>, grace_ns: i64) {
        let kept = |id: u32| id == current.id || also.as_ref().is_some_and(|k| k.id == id);
        let [old_current, old_also, old_previous] = std::mem::take(&mut self.keys);
        let previous = [old_current, old_also]
            .into_iter()
            .flatten()
            .find(|a| !kept(a.key.id))
            .map(|mut a| {
                a.until = Some(now.saturating_add(grace_ns));
                a
            })
            .or(old_previous.filter(|a| !kept(a.key.id)));
        let also = also
            .filter(|k| k.id != current.id)
            .map(|key| Accepted { key, until: None });
        self.keys = [
            Some(Accepted {
                key: current,
                until: None,
            }),
            also,
            previous,
        ];
    }

    /// The ids of the keys accepted (current first; a replaced key until its grace period is
    /// over and a datagram has been checked after it).
    pub fn key_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.keys.iter().flatten().map(|a| a.key.id)
    }

    /// What it has accepted and refused so far.
    pub fn stats(&self) -> OpenStats {
        self.stats
    }

    /// Checks the datagram `buf` (any bytes), decrypts it in place and returns the length of
    /// the message it carried (at the start of `buf`). Every refusal is counted.
    pub fn open(&mut self, now: LocalNs, buf: &mut [u8]) -> Result<usize, OpenError> {
        let r = self.try_open(now, buf);
        let s = &mut self.stats;
        match r {
            Ok(_) => s.opened += 1,
            Err(OpenError::Unprotected) => s.unprotected += 1,
            Err(OpenError::UnknownKey { .. }) => s.unknown_key += 1,
            Err(OpenError::Forged { .. }) => s.forged += 1,
            Err(OpenError::Replayed { .. }) => s.replayed += 1,
        }
        r
    }

    fn try_open(&mut self, now: LocalNs, buf: &mut [u8]) -> Result<usize, OpenError> {
        let Some(body_len) = buf.len().checked_sub(OVERHEAD) else {
            return Err(OpenError::Unprotected);
        };
        let (body, trailer) = buf.split_at_mut(body_len);
        let clear = u16::from_be_bytes([trailer[0], trailer[1]]) as usize;
        if trailer[2] != VERSION || trailer[3] != 0 || clear > body_len {
            return Err(OpenError::Unprotected);
        }
        let key_id = u32::from_be_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
        let mut salt = [0u8; 8];
        salt.copy_from_slice(&trailer[8..16]);
        let salt = u64::from_be_bytes(salt);
        let counter = u32::from_be_bytes([trailer[16], trailer[17], trailer[18], trailer[19]]);
        for slot in self.keys.iter_mut() {
            if slot
                .as_ref()
                .is_some_and(|a| a.until.is_some_and(|t| now > t))
            {
                *slot = None;
            }
        }
        let Some(accepted) = self.keys.iter().flatten().find(|a| a.key.id == key_id) else {
            return Err(OpenError::UnknownKey { key_id });
        };
        if counter == COUNTER_END {
            return Err(OpenError::Forged { key_id });
        }
        let session = self
            .sessions
            .iter()
            .position(|s| s.key_id == key_id && s.salt == salt);
        if let Some(i) = session {
            if self.sessions[i].is_replay(counter) {
                return Err(OpenError::Replayed { salt, counter });
            }
        }
        let tag = Tag::clone_from_slice(&trailer[TAG_AT..OVERHEAD]);
        let (aad, ct) = body.split_at_mut(clear);
        accepted
            .key
            .cipher
            .decrypt_in_place_detached(&nonce(salt, counter), aad, ct, &tag)
            .map_err(|_| OpenError::Forged { key_id })?;
        match session {
            Some(i) => {
                let s = &mut self.sessions[i];
                s.accept(counter);
                s.last_heard = now;
            }
            None => {
                let s = Session {
                    key_id,
                    salt,
                    top: counter,
                    seen: 1,
                    last_heard: now,
                };
                if self.sessions.len() < MAX_SESSIONS {
                    self.sessions.push(s);
                } else if let Some(oldest) = self.sessions.iter_mut().min_by_key(|s| s.last_heard) {
                    *oldest = s;
                }
            }
        }
        Ok(body_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::SampleFormat;
    use crate::time::TimelineNs;
    use crate::wire::rtp::AudioPacket;
    use proptest::prelude::*;

    fn key(b: u8) -> Key {
        Key::from_bytes(&[b; KEY_LEN])
    }

    fn audio(payload: &[u8], buf: &mut [u8]) -> usize {
        AudioPacket {
            marker: false,
            format: SampleFormat::L16,
            seq: 7,
            timestamp: 8,
            ssrc: 9,
            play_time: TimelineNs::from_ns(1_000_000_000),
            payload,
        }
        .encode(buf)
        .unwrap()
    }

    #[test]
    fn audio_header_stays_clear_and_payload_is_encrypted() {
        let payload: Vec<u8> = (0..64).collect();
        let mut buf = [0u8; 256];
        let n = audio(&payload, &mut buf);
        let plain = buf[..n].to_vec();
        let mut s = Sealer::new(key(1), 42, true);
        let m = s.seal(&mut buf, n).unwrap();
        assert_eq!(m, n + OVERHEAD);
        assert_eq!(buf[..28], plain[..28], "the RTP header is untouched");
        assert_ne!(buf[28..n], plain[28..], "the payload is encrypted");
        assert_eq!(u16::from_be_bytes([buf[n], buf[n + 1]]), 28);
        let mut o = Opener::new(key(1));
        assert_eq!(o.open(LocalNs::from_ns(0), &mut buf[..m]), Ok(n));
        assert_eq!(buf[..n], plain[..]);
        assert_eq!(o.stats().opened, 1);
    }

    #[test]
    fn unencrypted_audio_is_readable_but_authenticated() {
        let mut buf = [0u8; 256];
        let n = audio(&[1, 2, 3, 4], &mut buf);
        let plain = buf[..n].to_vec();
        let mut s = Sealer::new(key(1), 42, false);
        let m = s.seal(&mut buf, n).unwrap();
        assert_eq!(buf[..n], plain[..]);
        let mut forged = buf;
        forged[n - 1] ^= 1;
        let mut o = Opener::new(key(1));
        assert_eq!(
            o.open(LocalNs::from_ns(0), &mut forged[..m]),
            Err(OpenError::Forged {
                key_id: key(1).id()
            })
        );
        assert_eq!(o.open(LocalNs::from_ns(0), &mut buf[..m]), Ok(n));
    }

    #[test]
    fn other_messages_are_authenticated_in_the_clear() {
        let req = crate::wire::ntp::NtpPacket::client_request(5).encode();
        let mut buf = [0u8; 128];
        buf[..48].copy_from_slice(&req);
        let m = Sealer::new(key(3), 1, true).seal(&mut buf, 48).unwrap();
        assert_eq!(buf[..48], req[..]);
        assert_eq!(
            Opener::new(key(3)).open(LocalNs::from_ns(0), &mut buf[..m]),
            Ok(48)
        );
    }

    #[test]
    fn plain_wrong_key_forged_and_replayed_are_told_apart() {
        let mut buf = [0u8; 256];
        let n = audio(&[0; 8], &mut buf);
        let mut o = Opener::new(key(1));
        // A plain packet (a master without a key).
        let mut plain = buf;
        assert_eq!(
            o.open(LocalNs::from_ns(0), &mut plain[..n]),
            Err(OpenError::Unprotected)
        );
        // Another key.
        let mut other = buf;
        let m = Sealer::new(key(2), 5, true).seal(&mut other, n).unwrap();
        assert_eq!(
            o.open(LocalNs::from_ns(0), &mut other[..m]),
            Err(OpenError::UnknownKey {
                key_id: key(2).id()
            })
        );
        assert!(OpenError::UnknownKey { key_id: 0 }.is_mismatch());
        // Ours, twice.
        let m = Sealer::new(key(1), 5, true).seal(&mut buf, n).unwrap();
        let mut again = buf;
        assert_eq!(o.open(LocalNs::from_ns(0), &mut buf[..m]), Ok(n));
        assert_eq!(
            o.open(LocalNs::from_ns(0), &mut again[..m]),
            Err(OpenError::Replayed {
                salt: 5,
                counter: 0
            })
        );
        let st = o.stats();
        assert_eq!(
            (st.opened, st.unprotected, st.unknown_key, st.replayed),
            (1, 1, 1, 1)
        );
        assert_eq!(st.refused(), 3);
    }

    #[test]
    fn replay_window_accepts_reordering_and_refuses_the_too_old() {
        let mut s = Sealer::new(key(1), 9, true);
        let sealed: Vec<Vec<u8>> = (0..300)
            .map(|i| {
                let mut buf = [0u8; 128];
                let n = audio(&[i as u8, 0], &mut buf);
                let m = s.seal(&mut buf, n).unwrap();
                buf[..m].to_vec()
            })
            .collect();
        let mut o = Opener::new(key(1));
        let mut open = |i: usize| o.open(LocalNs::from_ns(0), &mut sealed[i].clone());
        assert!(open(10).is_ok());
        assert!(open(5).is_ok(), "late within the window");
        assert!(open(5).is_err(), "but once only");
        assert!(open(200).is_ok());
        assert!(open(73).is_ok(), "200 - 127: still in the window");
        assert!(open(72).is_err(), "200 - 128: too old");
        assert!(open(299).is_ok());
        assert!(open(200).is_err());
    }

    #[test]
    fn rotation_accepts_the_previous_key_for_the_grace_period() {
        let mut buf = [0u8; 128];
        let n = audio(&[0; 4], &mut buf);
        let mut old = Sealer::new(key(1), 1, true);
        let mut new = Sealer::new(key(2), 2, true);
        let mut o = Opener::new(key(1));
        o.set_key(LocalNs::from_ns(100), key(2), 1000);
        assert_eq!(o.key_ids().collect::<Vec<_>>(), [key(2).id(), key(1).id()]);
        let mut b = buf;
        let m = old.seal(&mut b, n).unwrap();
        assert_eq!(o.open(LocalNs::from_ns(1100), &mut b[..m]), Ok(n));
        let m = new.seal(&mut buf, n).unwrap();
        assert_eq!(o.open(LocalNs::from_ns(1100), &mut buf[..m]), Ok(n));
        let mut b = [0u8; 128];
        let n = audio(&[0; 4], &mut b);
        let m = old.seal(&mut b, n).unwrap();
        assert_eq!(
            o.open(LocalNs::from_ns(1101), &mut b[..m]),
            Err(OpenError::UnknownKey {
                key_id: key(1).id()
            })
        );
        assert_eq!(o.key_ids().count(), 1);
    }

    #[test]
    fn two_key_rotation_is_gapless_in_any_order() {
        let (old, new) = (key(1), key(2));
        let mut buf = [0u8; 128];
        let n = audio(&[0; 4], &mut buf);
        let sealed_with = |k: &Key, salt: u64| {
            let mut b = buf;
            let m = Sealer::new(k.clone(), salt, true).seal(&mut b, n).unwrap();
            b[..m].to_vec()
        };
        let mut o = Opener::new(old.clone());
        // Step 1: the next key is accepted alongside.
        o.set_keys(LocalNs::from_ns(0), old.clone(), Some(new.clone()), 1000);
        assert!(o
            .open(LocalNs::from_ns(0), &mut sealed_with(&old, 1))
            .is_ok());
        assert!(o
            .open(LocalNs::from_ns(0), &mut sealed_with(&new, 2))
            .is_ok());
        // Step 2: it becomes current; the old one is now the previous, in its grace period.
        o.set_keys(LocalNs::from_ns(10), new.clone(), Some(old.clone()), 1000);
        assert!(
            o.open(LocalNs::from_ns(5000), &mut sealed_with(&old, 3))
                .is_ok(),
            "still listed: no expiry"
        );
        // Step 3: the old one dropped from the file: accepted for the grace period only.
        o.set_keys(LocalNs::from_ns(6000), new.clone(), None, 1000);
        assert!(o
            .open(LocalNs::from_ns(7000), &mut sealed_with(&old, 4))
            .is_ok());
        assert_eq!(
            o.open(LocalNs::from_ns(7001), &mut sealed_with(&old, 5)),
            Err(OpenError::UnknownKey { key_id: old.id() })
        );
        assert!(o
            .open(LocalNs::from_ns(7001), &mut sealed_with(&new, 6))
            .is_ok());
        assert_eq!(o.key_ids().collect::<Vec<_>>(), [new.id()]);
    }

    #[test]
    fn sessions_are_bounded_and_exhaustion_asks_for_a_new_salt() {
        let mut o = Opener::new(key(1));
        for salt in 0..(MAX_SESSIONS as u64 * 3) {
            let mut buf = [0u8; 64];
            let m = Sealer::new(key(1), salt, true).seal(&mut buf, 10).unwrap();
            assert_eq!(o.open(LocalNs::from_ns(salt as i64), &mut buf[..m]), Ok(10));
        }
        assert_eq!(o.sessions.len(), MAX_SESSIONS);
        let mut s = Sealer::new(key(1), 1, true);
        s.counter = COUNTER_END - 1;
        let mut buf = [0u8; 64];
        assert!(s.seal(&mut buf, 4).is_ok());
        assert_eq!(s.seal(&mut buf, 4), Err(SealError::Exhausted));
        s.resalt(2);
        assert!(s.seal(&mut buf, 4).is_ok());
        assert_eq!(
            s.seal(&mut [0u8; 10], 4),
            Err(SealError::BufferTooSmall {
                needed: 40,
                got: 10
            })
        );
    }

    #[test]
    fn key_files_raw_and_hex() {
        let raw: Vec<u8> = (1..=32).collect();
        let k = Key::from_file_bytes(&raw).unwrap();
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let k2 = Key::from_file_bytes(format!("  {hex}\n").as_bytes()).unwrap();
        assert_eq!(k.id(), k2.id());
        assert_ne!(k.id(), key(1).id());
        assert_eq!(
            Key::from_file_bytes(b"short").unwrap_err(),
            KeyError::BadLength { got: 5 }
        );
        assert_eq!(
            Key::from_file_bytes(&[b'g'; 64]).unwrap_err(),
            KeyError::BadHex
        );
        assert_eq!(
            Key::from_file_bytes(&[0; 32]).unwrap_err(),
            KeyError::AllZero
        );
        assert_eq!(format!("{k:?}"), format!("Key({:08x})", k.id()));
        let (one, none) = Key::parse_file(&raw).unwrap();
        assert_eq!((one.id(), none.map(|k| k.id())), (k.id(), None));
        let other: String = (0..32).map(|i| format!("{:02x}", 100 + i)).collect();
        let two = format!("# rotation: current first\n{hex}\n\n{other}\n");
        let (a, b) = Key::parse_file(two.as_bytes()).unwrap();
        assert_eq!(a.id(), k.id());
        assert_ne!(b.unwrap().id(), k.id());
        let three = format!("{hex}\n{other}\n{hex}\n");
        assert_eq!(
            Key::parse_file(three.as_bytes()).unwrap_err(),
            KeyError::TooManyKeys
        );
        assert!(Key::parse_file(b"# nothing\n").is_err());
    }

    #[test]
    fn opens_what_an_independent_implementation_sealed() {
        // fuzz/corpus/protect/open-*: sealed by Python's `cryptography` (OpenSSL's
        // ChaCha20-Poly1305) with key [7; 32], following docs/wire.md; first byte: fuzz mode.
        for (sealed, plain, clear) in [
            (
                &include_bytes!("../../fuzz/corpus/protect/open-audio")[1..],
                &include_bytes!("../../fuzz/corpus/rtp/l16-marker")[..],
                28,
            ),
            (
                &include_bytes!("../../fuzz/corpus/protect/open-ntp")[1..],
                &include_bytes!("../../fuzz/corpus/ntp/reply")[..],
                48,
            ),
        ] {
            let mut buf = sealed.to_vec();
            assert_eq!(buf[..clear], plain[..clear]);
            assert_eq!(
                Opener::new(key(7)).open(LocalNs::from_ns(0), &mut buf),
                Ok(plain.len())
            );
            assert_eq!(&buf[..plain.len()], plain);
        }
    }

    proptest! {
        #[test]
        fn round_trip_any_message(
            msg in proptest::collection::vec(any::<u8>(), 0..1500),
            encrypt: bool,
            salt: u64,
        ) {
            let mut buf = vec![0u8; msg.len() + OVERHEAD];
            buf[..msg.len()].copy_from_slice(&msg);
            let m = Sealer::new(key(7), salt, encrypt).seal(&mut buf, msg.len()).unwrap();
            let mut o = Opener::new(key(7));
            prop_assert_eq!(o.open(LocalNs::from_ns(0), &mut buf[..m]), Ok(msg.len()));
            prop_assert_eq!(&buf[..msg.len()], &msg[..]);
        }

        #[test]
        fn any_bit_flip_is_rejected(
            payload in proptest::collection::vec(any::<u8>(), 0..200),
            encrypt: bool,
            bit in any::<proptest::sample::Index>(),
        ) {
            let mut buf = vec![0u8; 28 + payload.len() * 2 + OVERHEAD];
            let n = audio(&payload[..payload.len() / 2 * 2], &mut buf);
            let m = Sealer::new(key(7), 3, encrypt).seal(&mut buf, n).unwrap();
            let i = bit.index(m * 8);
            buf[i / 8] ^= 1 << (i % 8);
            prop_assert!(Opener::new(key(7)).open(LocalNs::from_ns(0), &mut buf[..m]).is_err());
        }

        #[test]
        fn any_bytes_are_refused_without_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut b = bytes.clone();
            prop_assert!(Opener::new(key(7)).open(LocalNs::from_ns(0), &mut b).is_err());
        }
    }
}
