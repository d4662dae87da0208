//! The lab's attacker: a host on the same bridge as the master and the rooms, with no key, that
//! listens to the stream and tries everything a stranger on the LAN could (issue 17):
//! - forged audio with the real stream id (full-scale payload, so playing any of it shows),
//!   with a trailer naming the real key and without one;
//! - forged status messages, likewise;
//! - replays of captured genuine packets (audio and status), verbatim;
//! - forged time replies racing the real ones, to every room's control socket;
//! - forged NACK floods to the master's control port, in the rooms' names;
//! - forged control commands (volume 0, off) to every room.
//!
//! Every forged datagram goes out with a spoofed source address: the one the rooms take the
//! stream from (the master, or the relay in front of it), through a raw socket. The forging
//! itself is pure ([`Forger`]: captured bytes in, datagrams out); [`run`] is the I/O shell.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, Socket, Type};
use wavesync_common::protect::OVERHEAD;
use wavesync_common::wire::control::{self, Command};
use wavesync_common::wire::ntp::{NtpPacket, MODE_SERVER};
use wavesync_common::wire::rtp::AudioPacket;
use wavesync_common::wire::{classify, nack, Kind};

/// Full scale, big-endian L16: what forged audio carries.
const LOUD: [u8; 2] = 0x7fffu16.to_be_bytes();

/// Captured genuine datagrams kept for replays (bounded).
const KEEP: usize = 256;
/// One captured datagram in this many is kept for a replay.
const KEEP_EVERY: u64 = 16;

/// Where the attacker aims.
#[derive(Clone, Debug)]
pub struct AttackConfig {
    /// The stream's multicast group and port (listened to, and forged onto).
    pub group: SocketAddrV4,
    /// The attacker's own address (joins the group on it).
    pub iface: Ipv4Addr,
    /// The address the rooms take the stream and time from (spoofed as the source).
    pub spoof: Ipv4Addr,
    /// The control port of the master (time service, NACKs, commands).
    pub control_port: u16,
    /// The master's real address (NACKs are sent straight to it).
    pub master: Ipv4Addr,
    /// The rooms' control sockets (time replies and commands go there).
    pub rooms: Vec<SocketAddrV4>,
    /// How long to attack.
    pub duration: Duration,
    /// Forged datagrams of each kind per second.
    pub rate_hz: u32,
    /// How old a captured packet is when it is replayed.
    pub replay_after: Duration,
}

/// What the attacker did.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AttackStats {
    /// Genuine datagrams heard on the group.
    pub captured: u64,
    /// Forged audio datagrams sent (both variants).
    pub forged_audio: u64,
    /// Forged status datagrams sent.
    pub forged_status: u64,
    /// Captured genuine datagrams sent again.
    pub replayed: u64,
    /// Forged time replies sent.
    pub forged_time: u64,
    /// Forged NACKs sent.
    pub forged_nacks: u64,
    /// Forged control commands sent.
    pub forged_commands: u64,
    /// Datagrams the kernel refused to send.
    pub send_errors: u64,
}

/// A captured datagram and when it was heard.
#[derive(Clone, Debug)]
struct Captured {
    at: Instant,
    bytes: Vec<u8>,
}

/// Makes forged datagrams from what was heard (no I/O).
#[derive(Debug, Default)]
pub struct Forger {
    /// The latest genuine audio datagram.
    audio: Option<Vec<u8>>,
    /// The latest genuine status datagram.
    status: Option<Vec<u8>>,
    /// The stream id (RTP SSRC) heard.
    ssrc: Option<u32>,
    /// How many forgeries so far (varies the forged fields).
    n: u32,
}

/// The message part of a datagram: everything before a protection trailer when it has one
/// (version byte 1 and a clear length within the message), else all of it.
fn body(d: &[u8]) -> &[u8] {
    match d.len().checked_sub(OVERHEAD) {
        Some(b) if d[b + 2] == 1 && d[b + 3] == 0 => &d[..b],
        _ => d,
    }
}

/// A trailer copied from `genuine` with its counter moved on: it names the real key and
/// session, so only the tag can refuse it.
fn fake_trailer(genuine: &[u8], bump: u32) -> Option<[u8; OVERHEAD]> {
    let b = genuine.len().checked_sub(OVERHEAD)?;
    let mut t = [0u8; OVERHEAD];
    t.copy_from_slice(&genuine[b..]);
    if t[2] != 1 {
        return None;
    }
    let c = u32::from_be_bytes([t[16], t[17], t[18], t[19]]).wrapping_add(bump);
    t[16..20].copy_from_slice(&c.to_be_bytes());
    Some(t)
}

impl Forger {
    /// Learns from a genuine datagram heard on the group.
    pub fn hear(&mut self, d: &[u8]) {
        let m = body(d);
        match classify(m) {
            Kind::Audio => {
                self.ssrc = Some(u32::from_be_bytes([m[8], m[9], m[10], m[11]]));
                self.audio = Some(d.to_vec());
            }
            Kind::Status => self.status = Some(d.to_vec()),
            _ => {}
        }
    }

    /// The stream id heard, if any.
    pub fn ssrc(&self) -> Option<u32> {
        self.ssrc
    }

    /// Forged audio from the latest genuine packet: same stream id, sequence numbers a little
    /// ahead, a full-scale payload; with a trailer naming the real key, and without one.
    pub fn audio(&mut self) -> Vec<Vec<u8>> {
        let Some(g) = self.audio.as_ref() else {
            return Vec::new();
        };
        self.n = self.n.wrapping_add(1);
        let m = body(g);
        let Ok(a) = AudioPacket::decode(m) else {
            return Vec::new();
        };
        let payload_at = m.len() - a.payload.len();
        let mut forged = m.to_vec();
        let seq = a.seq.wrapping_add(2 + (self.n % 8) as u16);
        forged[2..4].copy_from_slice(&seq.to_be_bytes());
        for s in forged[payload_at..].chunks_exact_mut(2) {
            s.copy_from_slice(&LOUD);
        }
        let mut out = vec![forged.clone()];
        if let Some(t) = fake_trailer(g, 1 + self.n % 64) {
            forged.extend_from_slice(&t);
            out.push(forged);
        }
        out
    }

    /// Forged status from the latest genuine one: a byte of its body changed; with a trailer
    /// naming the real key, and without one.
    pub fn status(&mut self) -> Vec<Vec<u8>> {
        let Some(g) = self.status.as_ref() else {
            return Vec::new();
        };
        self.n = self.n.wrapping_add(1);
        let mut forged = body(g).to_vec();
        if let Some(last) = forged.last_mut() {
            *last ^= 0x5a;
        }
        let mut out = vec![forged.clone()];
        if let Some(t) = fake_trailer(g, 1 + self.n % 64) {
            forged.extend_from_slice(&t);
            out.push(forged);
        }
        out
    }

    /// A forged time reply: a server answer a few ms off, in the clear and with a trailer
    /// naming the real key (taken from any genuine datagram).
    pub fn time_reply(&mut self, now_ntp: u64) -> Vec<Vec<u8>> {
        self.n = self.n.wrapping_add(1);
        let off = 5u64 << 32 >> 10; // about 5 ms
        let p = NtpPacket {
            leap: 0,
            version: 4,
            mode: MODE_SERVER,
            stratum: 1,
            poll: 0,
            precision: -20,
            root_delay: 0,
            root_dispersion: 0,
            reference_id: *b"ATCK",
            reference_ts: now_ntp,
            origin_ts: now_ntp.wrapping_sub(u64::from(self.n)),
            receive_ts: now_ntp.wrapping_add(off),
            transmit_ts: now_ntp.wrapping_add(off),
        };
        let clear = p.encode().to_vec();
        let mut out = vec![clear.clone()];
        if let Some(t) = self.audio.as_ref().and_then(|g| fake_trailer(g, self.n)) {
            let mut keyed = clear;
            keyed.extend_from_slice(&t);
            out.push(keyed);
        }
        out
    }

    /// A forged NACK asking for the last 16 packets again (in the clear: a stranger has no
    /// key), or nothing before the stream was heard.
    pub fn nack(&self) -> Option<Vec<u8>> {
        let (g, ssrc) = (self.audio.as_ref()?, self.ssrc?);
        let m = body(g);
        let seq = u16::from_be_bytes([m[2], m[3]]);
        let lost: Vec<u16> = (1..=16).map(|k| seq.wrapping_sub(k)).collect();
        let mut out = [0u8; nack::MAX_LEN];
        let e = nack::encode(0x0bad_cafe, ssrc, &lost, &mut out).ok()?;
        Some(out[..e.len].to_vec())
    }

    /// Forged commands to a room: volume 0 and off.
    pub fn commands(&mut self) -> Vec<Vec<u8>> {
        self.n = self.n.wrapping_add(1);
        [Command::Volume(0), Command::Off]
            .iter()
            .filter_map(|c| {
                let mut out = [0u8; control::MAX_LEN];
                let n = control::encode_command(0x0bad_cafe, self.n, None, c, &mut out).ok()?;
                Some(out[..n].to_vec())
            })
            .collect()
    }
}

/// Sends UDP datagrams with any IPv4 source address (a raw socket writing its own headers).
pub struct Spoofer {
    raw: Socket,
    id: u16,
}

impl Spoofer {
    /// A raw socket whose multicast leaves on `iface`. Needs CAP_NET_RAW.
    pub fn new(iface: Ipv4Addr) -> io::Result<Spoofer> {
        let raw = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(libc::IPPROTO_RAW)),
        )?;
        raw.set_multicast_if_v4(&iface)?;
        raw.set_multicast_ttl_v4(8)?;
        raw.set_multicast_loop_v4(false)?;
        Ok(Spoofer { raw, id: 1 })
    }

    /// Sends `payload` from `from` to `to` in one UDP datagram (checksum 0: none, as IPv4
    /// allows).
    pub fn send(&mut self, from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) -> io::Result<()> {
        let total = 20 + 8 + payload.len();
        if total > 65_535 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "too long"));
        }
        let mut p = Vec::with_capacity(total);
        p.extend_from_slice(&[0x45, 0]);
        p.extend_from_slice(&(total as u16).to_be_bytes());
        p.extend_from_slice(&self.id.to_be_bytes());
        self.id = self.id.wrapping_add(1);
        p.extend_from_slice(&[0x40, 0, 8, libc::IPPROTO_UDP as u8, 0, 0]);
        p.extend_from_slice(&from.ip().octets());
        p.extend_from_slice(&to.ip().octets());
        p.extend_from_slice(&from.port().to_be_bytes());
        p.extend_from_slice(&to.port().to_be_bytes());
        p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(payload);
        self.raw
            .send_to(&p, &std::net::SocketAddr::V4(to).into())
            .map(|_| ())
    }
}

/// NTP time now (seconds since 1900 in the high half), from the system clock.
fn ntp_now() -> u64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() + 2_208_988_800;
    (secs << 32) | ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000)
}

/// Attacks for `cfg.duration`, then returns what was sent. `stop` ends it early.
pub fn run(cfg: &AttackConfig, stop: &dyn Fn() -> bool) -> io::Result<AttackStats> {
    let listen = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    listen.set_reuse_address(true)?;
    listen.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, cfg.group.port()).into())?;
    listen.join_multicast_v4(cfg.group.ip(), &cfg.iface)?;
    let listen: UdpSocket = listen.into();
    listen.set_nonblocking(true)?;
    let mut spoof = Spoofer::new(cfg.iface)?;
    let mut forger = Forger::default();
    let mut stats = AttackStats::default();
    let mut kept: std::collections::VecDeque<Captured> = std::collections::VecDeque::new();
    let start = Instant::now();
    let every = Duration::from_secs_f64(1.0 / f64::from(cfg.rate_hz.max(1)));
    let mut next = start;
    let mut buf = [0u8; 2048];
    let stream_src = SocketAddrV4::new(cfg.spoof, cfg.group.port());
    let control_src = SocketAddrV4::new(cfg.spoof, cfg.control_port);
    let master = SocketAddrV4::new(cfg.master, cfg.control_port);
    let sent = |spoof: &mut Spoofer, stats: &mut AttackStats, from, to, d: &[u8]| match spoof
        .send(from, to, d)
    {
        Ok(()) => true,
        Err(_) => {
            stats.send_errors += 1;
            false
        }
    };
    while start.elapsed() < cfg.duration && !stop() {
        while let Ok((n, from)) = listen.recv_from(&mut buf) {
            // Only what the real source sent (our own forgeries do not loop back).
            if from.ip() != std::net::IpAddr::V4(cfg.spoof) {
                continue;
            }
            stats.captured += 1;
            forger.hear(&buf[..n]);
            // One in KEEP_EVERY is kept for a replay, so the ring spans seconds of stream.
            if stats.captured % KEEP_EVERY == 0 {
                if kept.len() == KEEP {
                    kept.pop_front();
                }
                kept.push_back(Captured {
                    at: Instant::now(),
                    bytes: buf[..n].to_vec(),
                });
            }
        }
        let now = Instant::now();
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(1)));
            continue;
        }
        next += every;
        for d in forger.audio().iter().chain(forger.status().iter()) {
            let audio = classify(body(d)) == Kind::Audio;
            if sent(&mut spoof, &mut stats, stream_src, cfg.group, d) {
                if audio {
                    stats.forged_audio += 1;
                } else {
                    stats.forged_status += 1;
                }
            }
        }
        while kept
            .front()
            .is_some_and(|c| c.at.elapsed() >= cfg.replay_after)
        {
            if let Some(c) = kept.pop_front() {
                if sent(&mut spoof, &mut stats, stream_src, cfg.group, &c.bytes) {
                    stats.replayed += 1;
                }
            }
        }
        let replies = forger.time_reply(ntp_now());
        let commands = forger.commands();
        for room in &cfg.rooms {
            for d in &replies {
                if sent(&mut spoof, &mut stats, control_src, *room, d) {
                    stats.forged_time += 1;
                }
            }
            for d in &commands {
                if sent(&mut spoof, &mut stats, control_src, *room, d) {
                    stats.forged_commands += 1;
                }
            }
            if let Some(d) = forger.nack() {
                let from = SocketAddrV4::new(*room.ip(), room.port());
                if sent(&mut spoof, &mut stats, from, master, &d) {
                    stats.forged_nacks += 1;
                }
            }
        }
    }
    Ok(stats)
}

/// What one room showed before and after the attack.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct RoomVerdict {
    /// The room's status socket name or label.
    pub room: String,
    /// Datagrams its key refused during the attack (all kinds).
    pub refused: u64,
    /// Of those: without a key, naming the key but forged, replayed.
    pub unprotected: u64,
    /// Forged (naming the real key).
    pub forged: u64,
    /// Authentic but replayed.
    pub replayed: u64,
    /// How far its clock offset moved over the attack, us.
    pub clock_offset_moved_us: f64,
    /// Samples of its played audio at full scale (the forged payload; the lab's signal peaks
    /// at 0.8).
    pub loud_samples: u64,
    /// Seconds of audio it played over the whole run.
    pub audio_s: f64,
    /// Its volume, mute and on/off settings are as before.
    pub settings_unchanged: bool,
}

/// The attack's outcome: what was sent, what every room and the master did.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct AttackVerdict {
    /// What the attacker sent.
    pub attack: AttackStats,
    /// Per room.
    pub rooms: Vec<RoomVerdict>,
    /// NACKs the master took (genuine ones) and resends it made, from its last stats line.
    pub master_nacks: Option<u64>,
    /// Resends the master made.
    pub master_resends: Option<u64>,
    /// Control datagrams the master's key refused.
    pub master_refused: Option<u64>,
    /// Every check passed.
    pub ok: bool,
    /// The checks that failed, in words.
    pub problems: Vec<String>,
}

fn num(v: &serde_json::Value, k: &str) -> u64 {
    v.get(k).and_then(|x| x.as_u64()).unwrap_or(0)
}

/// Full-scale samples in an f32 little-endian audio file, and its length in seconds
/// (`channels` interleaved at 48 kHz).
pub fn loud_samples(raw: &[u8], channels: usize) -> (u64, f64) {
    let mut loud = 0;
    for b in raw.chunks_exact(4) {
        if f32::from_le_bytes([b[0], b[1], b[2], b[3]]).abs() >= 0.95 {
            loud += 1;
        }
    }
    (loud, (raw.len() / 4 / channels.max(1)) as f64 / 48_000.0)
}

/// The last number before `word` in the master's last line containing `line_has`.
fn master_figure(master_log: &str, line_has: &str, word: &str) -> Option<u64> {
    let line = master_log.lines().rev().find(|l| l.contains(line_has))?;
    let before = line.split(word).next()?;
    before
        .rsplit(|c: char| !c.is_ascii_digit())
        .find(|t| !t.is_empty())?
        .parse()
        .ok()
}

/// Judges an attack on a keyed lab: `rooms` are (label, status before, status after, played
/// audio f32 LE stereo); `master_log` is the master's stderr.
pub fn judge(
    attack: AttackStats,
    rooms: &[(String, serde_json::Value, serde_json::Value, Vec<u8>)],
    master_log: &str,
) -> AttackVerdict {
    let mut v = AttackVerdict {
        master_nacks: master_figure(master_log, "stopped:", " NACKs"),
        master_resends: master_figure(master_log, "stopped:", " resends"),
        master_refused: master_figure(master_log, "stopped:", " control datagrams refused"),
        attack,
        ..AttackVerdict::default()
    };
    let sent_stream = v.attack.forged_audio + v.attack.forged_status + v.attack.replayed;
    if sent_stream == 0 || v.attack.forged_time == 0 || v.attack.forged_nacks == 0 {
        v.problems
            .push("the attacker sent nothing (did it hear the stream?)".into());
    }
    for (label, before, after, audio) in rooms {
        let d = |k: &str| num(after, k).saturating_sub(num(before, k));
        let offset = |s: &serde_json::Value| s.get("clock_offset_s").and_then(|x| x.as_f64());
        let moved = match (offset(before), offset(after)) {
            (Some(a), Some(b)) => (b - a).abs() * 1e6,
            _ => f64::INFINITY,
        };
        let settings = |s: &serde_json::Value| {
            let r = s.get("room").cloned().unwrap_or_default();
            (
                r.get("volume").cloned(),
                r.get("muted").cloned(),
                r.get("off").cloned(),
            )
        };
        let (loud, audio_s) = loud_samples(audio, 2);
        let r = RoomVerdict {
            room: label.clone(),
            refused: d("unauthenticated"),
            unprotected: d("unprotected"),
            forged: d("forged"),
            replayed: d("replayed"),
            clock_offset_moved_us: moved,
            loud_samples: loud,
            audio_s,
            settings_unchanged: settings(before) == settings(after),
        };
        if r.loud_samples > 0 {
            v.problems
                .push(format!("{label} played {loud} forged samples"));
        }
        // Estimation noise on this path is a few us; a forged reply taken would move it by ms.
        if r.clock_offset_moved_us > 200.0 {
            v.problems
                .push(format!("{label}'s clock moved by {moved:.0} us"));
        }
        if !r.settings_unchanged {
            v.problems.push(format!("{label}'s settings changed"));
        }
        if r.forged == 0 || r.unprotected == 0 {
            v.problems.push(format!(
                "{label} counted no forged or no unkeyed datagrams: {r:?}"
            ));
        }
        if r.audio_s < 1.0 {
            v.problems
                .push(format!("{label} played {audio_s:.1} s only"));
        }
        v.rooms.push(r);
    }
    match (v.master_refused, v.master_resends) {
        (Some(refused), Some(resends)) => {
            if refused < v.attack.forged_nacks {
                v.problems.push(format!(
                    "the master refused {refused} control datagrams of {} forged NACKs",
                    v.attack.forged_nacks
                ));
            }
            // Resends answer genuine NACKs only: at most one per NACK the master took.
            if resends > 16 * v.master_nacks.unwrap_or(0) {
                v.problems
                    .push(format!("the master resent {resends} packets"));
            }
        }
        _ => v
            .problems
            .push("no final stats line in the master's log".into()),
    }
    v.ok = v.problems.is_empty();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use wavesync_common::format::SampleFormat;
    use wavesync_common::protect::{Key, OpenError, Opener, Sealer};
    use wavesync_common::time::{LocalNs, TimelineNs};

    fn genuine_audio(sealer: Option<&mut Sealer>) -> Vec<u8> {
        let payload = [0u8, 1, 0, 2, 0, 3, 0, 4];
        let p = AudioPacket {
            marker: false,
            format: SampleFormat::L16,
            seq: 1000,
            timestamp: 48_000,
            ssrc: 0x7e57_0001,
            play_time: TimelineNs::from_ns(5_000_000_000),
            payload: &payload,
        };
        let mut buf = vec![0u8; 256];
        let n = p.encode(&mut buf).expect("encode");
        let n = match sealer {
            Some(s) => s.seal(&mut buf, n).expect("seal"),
            None => n,
        };
        buf.truncate(n);
        buf
    }

    #[test]
    fn forged_audio_keeps_the_stream_id_is_full_scale_and_never_opens() {
        let key = Key::from_bytes(&[7; 32]);
        let mut sealer = Sealer::new(key.clone(), 42, true);
        let g = genuine_audio(Some(&mut sealer));
        let mut f = Forger::default();
        f.hear(&g);
        assert_eq!(f.ssrc(), Some(0x7e57_0001));
        let forged = f.audio();
        assert_eq!(forged.len(), 2, "in the clear and with a trailer");
        let mut opener = Opener::new(key);
        for d in forged {
            let m = body(&d);
            let a = AudioPacket::decode(m).expect("a well-formed RTP packet");
            assert_eq!(a.ssrc, 0x7e57_0001);
            assert!(a.payload.chunks_exact(2).all(|s| s == LOUD));
            let mut b = d.clone();
            let r = opener.open(LocalNs::from_ns(1), &mut b);
            assert!(
                matches!(
                    r,
                    Err(OpenError::Unprotected) | Err(OpenError::Forged { .. })
                ),
                "{r:?}"
            );
        }
        assert_eq!(opener.stats().forged, 1);
        assert_eq!(opener.stats().unprotected, 1);
    }

    #[test]
    fn forgeries_of_an_open_stream_have_no_trailer_and_nothing_is_forged_before_hearing() {
        let mut f = Forger::default();
        assert!(f.audio().is_empty() && f.status().is_empty() && f.nack().is_none());
        f.hear(&genuine_audio(None));
        assert_eq!(f.audio().len(), 1);
        let n = f.nack().expect("a nack once the stream is heard");
        assert_eq!(classify(&n), Kind::Nack);
        assert_eq!(f.time_reply(1 << 40).len(), 1);
        let cmds = f.commands();
        assert_eq!(cmds.len(), 2);
        assert!(cmds.iter().all(|c| classify(c) == Kind::Control));
    }

    fn room_status(offset: f64, forged: u64, volume: u8) -> serde_json::Value {
        serde_json::json!({
            "clock_offset_s": offset, "unauthenticated": 2 * forged, "unprotected": forged,
            "forged": forged, "replayed": 0, "room": {"volume": volume, "muted": false, "off": false}
        })
    }

    fn attacked() -> AttackStats {
        AttackStats {
            forged_audio: 10,
            forged_time: 10,
            forged_nacks: 10,
            ..AttackStats::default()
        }
    }

    const MASTER: &str =
        "x stats: 9 packets (0.1 MB), 1 status, 1 runs (0 resyncs), 5 time replies, \
        1 NACKs, 1 resends, 0 refused input pushes, 0 send errors\n\
        x stopped: 9 packets, 1 runs (0 resyncs), 5 time replies, 2 NACKs, 3 resends, \
        40 control datagrams refused by the key\n";

    #[test]
    fn a_room_that_held_passes_and_each_failure_is_named() {
        let quiet: Vec<u8> = [0.5f32, -0.5]
            .repeat(96_000)
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let held = (
            "rx1".to_string(),
            room_status(0.000_100, 0, 100),
            room_status(0.000_110, 50, 100),
            quiet.clone(),
        );
        let v = judge(attacked(), std::slice::from_ref(&held), MASTER);
        assert!(v.ok, "{v:?}");
        assert_eq!(
            (v.master_nacks, v.master_resends, v.master_refused),
            (Some(2), Some(3), Some(40))
        );
        assert_eq!(v.rooms[0].forged, 50);
        assert!((v.rooms[0].audio_s - 2.0).abs() < 1e-9);

        let mut loud = quiet.clone();
        loud[..4].copy_from_slice(&1.0f32.to_le_bytes());
        let fell = (
            "rx2".to_string(),
            room_status(0.000_100, 0, 100),
            room_status(0.005_100, 50, 0),
            loud,
        );
        let v = judge(attacked(), &[held, fell], MASTER);
        assert!(!v.ok);
        let all = v.problems.join("; ");
        for word in [
            "forged samples",
            "clock moved by 5000 us",
            "settings changed",
        ] {
            assert!(all.contains(word), "{word}: {all}");
        }
        assert!(
            !judge(AttackStats::default(), &[], MASTER).ok,
            "an attack that sent nothing"
        );
    }
}
