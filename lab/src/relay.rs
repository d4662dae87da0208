//! A user-space UDP relay that impairs traffic in both directions (there is no netem here).
//!
//! Clients send to `listen`; each datagram goes through the forward [`Impairment`] and, when its
//! time comes, out to `forward`. Replies come back through the reverse impairment to the client
//! that caused them: in unicast mode each client gets its own upstream socket (connected to
//! `forward`), so replies are keyed by client address. Either side may be a multicast group:
//! a multicast `listen` is joined on `listen_if` (the master's packets -> relay), a multicast
//! `forward` is sent through `forward_if` (-> the receivers' segment) from one shared socket,
//! and anything sent back to that socket goes to the last client heard.
//!
//! One thread, `ppoll` with a nanosecond timeout (and 1 ns timer slack) until 40 us before the
//! earliest pending delivery, then polling without sleeping until it is due (a wake-up from
//! sleep costs tens of microseconds, which would add to the delays asked for); pending
//! datagrams sit in a binary heap bounded by [`RelayConfig::max_queued_bytes`] (beyond it a
//! datagram is dropped and counted as `overflow`), clients by [`RelayConfig::max_clients`]
//! (the idlest one is forgotten).

use crate::histogram::Histogram;
use crate::impair::{ImpairReport, Impairment, LinkProfile, Verdict};
use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, Socket, Type};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::io::{self, ErrorKind};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long before a due delivery the relay stops sleeping and polls without blocking, ns.
const SPIN_NS: i64 = 40_000;

/// What went wrong setting up or running the relay.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Creating, binding or configuring a socket failed.
    #[error("socket setup for {what} ({addr}): {source}")]
    Socket {
        /// Which socket.
        what: &'static str,
        /// Its address.
        addr: SocketAddrV4,
        /// The OS error.
        source: io::Error,
    },
    /// Waiting for sockets failed.
    #[error("ppoll failed: {0}")]
    Poll(io::Error),
    /// Writing the stats file failed.
    #[error("writing stats to {path}: {source}")]
    Stats {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// How to run a relay.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Where clients send (unicast address or multicast group and port).
    pub listen: SocketAddrV4,
    /// Interface address to join a multicast `listen` group on (default: any).
    pub listen_if: Option<Ipv4Addr>,
    /// Where to send (unicast server or multicast group).
    pub forward: SocketAddrV4,
    /// Source address for upstream sockets; for a multicast `forward`, the interface to send on.
    pub forward_if: Option<Ipv4Addr>,
    /// Client -> server impairment.
    pub forward_profile: LinkProfile,
    /// Server -> client impairment.
    pub reverse_profile: LinkProfile,
    /// Seed of the impairments (the reverse one uses a derived seed).
    pub seed: u64,
    /// Most clients remembered at once.
    pub max_clients: usize,
    /// Most bytes waiting for delivery at once.
    pub max_queued_bytes: usize,
    /// Multicast TTL for a multicast `forward`.
    pub multicast_ttl: u32,
    /// Where to write the JSON stats (every second and at exit).
    pub stats_path: Option<PathBuf>,
    /// Name of the profile, for the report.
    pub profile_name: String,
}

impl RelayConfig {
    /// A config with the usual limits (256 clients, 64 MiB queued, TTL 1, no stats file).
    pub fn new(listen: SocketAddrV4, forward: SocketAddrV4, profile: LinkProfile) -> Self {
        RelayConfig {
            listen,
            listen_if: None,
            forward,
            forward_if: None,
            forward_profile: profile,
            reverse_profile: profile,
            seed: 1,
            max_clients: 256,
            max_queued_bytes: 64 << 20,
            multicast_ttl: 1,
            stats_path: None,
            profile_name: String::new(),
        }
    }
}

/// The relay's figures, as written to the stats file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RelayReport {
    /// Profile name.
    pub profile: String,
    /// What the forward impairment did.
    pub forward: ImpairReport,
    /// What the reverse impairment did.
    pub reverse: ImpairReport,
    /// Datagrams actually sent towards `forward`.
    pub sent_forward: u64,
    /// Datagrams actually sent back to clients.
    pub sent_reverse: u64,
    /// Datagrams dropped because the queue was full.
    pub overflow: u64,
    /// Sends that failed (counted, not retried).
    pub send_errors: u64,
    /// Clients seen in total.
    pub clients: u64,
    /// Datagrams waiting now.
    pub queued: u64,
    /// How late deliveries left compared with their due time: median, us.
    pub lateness_p50_us: f64,
    /// How late deliveries left: 99th percentile, us.
    pub lateness_p99_us: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    Forward,
    Reverse,
}

#[derive(Debug)]
struct Pending {
    at: i64,
    seq: u64,
    dir: Dir,
    session: usize,
    generation: u64,
    data: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        self.at == o.at && self.seq == o.seq
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    // Reversed: BinaryHeap is a max-heap and we want the earliest first.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Debug)]
struct Session {
    client: SocketAddr,
    /// Index into `Relay::upstream`.
    upstream: usize,
    last_seen: i64,
    generation: u64,
}

/// Called with every datagram a client sends, before it is impaired.
pub type Observer = Box<dyn FnMut(&[u8]) + Send>;

/// A bound relay, ready to [`Relay::run`].
pub struct Relay {
    cfg: RelayConfig,
    listen: UdpSocket,
    listen_is_multicast: bool,
    /// Upstream sockets: one shared (multicast forward) or one per session.
    upstream: Vec<Option<UdpSocket>>,
    sessions: Vec<Option<Session>>,
    by_client: HashMap<SocketAddr, usize>,
    heap: BinaryHeap<Pending>,
    queued_bytes: usize,
    seq: u64,
    next_generation: u64,
    fwd: Impairment,
    rev: Impairment,
    report: RelayReport,
    lateness: Histogram,
    shared: Arc<Mutex<RelayReport>>,
    epoch: Instant,
    observer: Option<Observer>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("listen", &self.cfg.listen)
            .field("forward", &self.cfg.forward)
            .field("report", &self.report)
            .finish_non_exhaustive()
    }
}

fn udp_socket(what: &'static str, addr: SocketAddrV4) -> Result<Socket, RelayError> {
    let err = |source| RelayError::Socket { what, addr, source };
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    // Best effort: the kernel caps these at rmem_max/wmem_max.
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.set_nonblocking(true).map_err(err)?;
    Ok(s)
}

impl Relay {
    /// Creates the sockets (joining the multicast group if `listen` is one).
    pub fn bind(cfg: RelayConfig) -> Result<Relay, RelayError> {
        let listen_is_multicast = cfg.listen.ip().is_multicast();
        let s = udp_socket("listen", cfg.listen)?;
        let err = |source| RelayError::Socket {
            what: "listen",
            addr: cfg.listen,
            source,
        };
        if listen_is_multicast {
            s.set_reuse_address(true).map_err(err)?;
            set_multicast_all(&s, false).map_err(err)?;
            s.bind(&SocketAddr::V4(cfg.listen).into()).map_err(err)?;
            let iface = cfg.listen_if.unwrap_or(Ipv4Addr::UNSPECIFIED);
            s.join_multicast_v4(cfg.listen.ip(), &iface).map_err(err)?;
        } else {
            s.bind(&SocketAddr::V4(cfg.listen).into()).map_err(err)?;
        }
        let mut upstream = Vec::new();
        if cfg.forward.ip().is_multicast() {
            upstream.push(Some(Self::upstream_socket(&cfg)?));
        }
        let fwd = Impairment::new(cfg.forward_profile, cfg.seed);
        let rev = Impairment::new(cfg.reverse_profile, cfg.seed ^ 0x9e37_79b9_7f4a_7c15);
        let report = RelayReport {
            profile: cfg.profile_name.clone(),
            ..Default::default()
        };
        Ok(Relay {
            listen: s.into(),
            listen_is_multicast,
            upstream,
            sessions: Vec::new(),
            by_client: HashMap::new(),
            heap: BinaryHeap::new(),
            queued_bytes: 0,
            seq: 0,
            next_generation: 0,
            fwd,
            rev,
            shared: Arc::new(Mutex::new(report.clone())),
            report,
            lateness: Histogram::new(),
            epoch: Instant::now(),
            observer: None,
            cfg,
        })
    }

    fn upstream_socket(cfg: &RelayConfig) -> Result<UdpSocket, RelayError> {
        let src = SocketAddrV4::new(cfg.forward_if.unwrap_or(Ipv4Addr::UNSPECIFIED), 0);
        let s = udp_socket("upstream", src)?;
        let err = |source| RelayError::Socket {
            what: "upstream",
            addr: cfg.forward,
            source,
        };
        s.bind(&SocketAddr::V4(src).into()).map_err(err)?;
        if cfg.forward.ip().is_multicast() {
            if let Some(i) = cfg.forward_if {
                s.set_multicast_if_v4(&i).map_err(err)?;
            }
            s.set_multicast_ttl_v4(cfg.multicast_ttl).map_err(err)?;
            s.set_multicast_loop_v4(true).map_err(err)?;
        } else {
            s.connect(&SocketAddr::V4(cfg.forward).into())
                .map_err(err)?;
        }
        Ok(s.into())
    }

    /// Shows every datagram clients send (before impairment) to `f`, e.g. to log the stream's
    /// stamps.
    pub fn set_observer(&mut self, f: Observer) {
        self.observer = Some(f);
    }

    /// The address the relay listens on (with the port the OS chose if it was 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listen.local_addr()
    }

    /// A handle on the latest figures, refreshed while running (at least every 10 ms while
    /// traffic flows, and whenever the queue empties).
    pub fn report_handle(&self) -> Arc<Mutex<RelayReport>> {
        Arc::clone(&self.shared)
    }

    fn now(&self) -> i64 {
        self.epoch.elapsed().as_nanos() as i64
    }

    /// Finds or creates the session of `client`.
    fn session_of(&mut self, client: SocketAddr, now: i64) -> Result<usize, RelayError> {
        if let Some(&i) = self.by_client.get(&client) {
            if let Some(s) = self.sessions[i].as_mut() {
                s.last_seen = now;
            }
            return Ok(i);
        }
        if self.by_client.len() >= self.cfg.max_clients.max(1) {
            // Forget the idlest client; datagrams still queued for it are discarded when due.
            let idlest = self
                .sessions
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.as_ref().map(|s| (s.last_seen, i)))
                .min();
            if let Some((_, i)) = idlest {
                if let Some(s) = self.sessions[i].take() {
                    self.by_client.remove(&s.client);
                    if !self.cfg.forward.ip().is_multicast() {
                        self.upstream[s.upstream] = None;
                    }
                }
            }
        }
        let upstream = if self.cfg.forward.ip().is_multicast() {
            0
        } else {
            let sock = Self::upstream_socket(&self.cfg)?;
            match self.upstream.iter().position(Option::is_none) {
                Some(i) => {
                    self.upstream[i] = Some(sock);
                    i
                }
                None => {
                    self.upstream.push(Some(sock));
                    self.upstream.len() - 1
                }
            }
        };
        self.next_generation += 1;
        let session = Session {
            client,
            upstream,
            last_seen: now,
            generation: self.next_generation,
        };
        let i = match self.sessions.iter().position(Option::is_none) {
            Some(i) => {
                self.sessions[i] = Some(session);
                i
            }
            None => {
                self.sessions.push(Some(session));
                self.sessions.len() - 1
            }
        };
        self.by_client.insert(client, i);
        self.report.clients += 1;
        Ok(i)
    }

    fn enqueue(&mut self, at: i64, dir: Dir, session: usize, data: &[u8]) {
        if self.queued_bytes + data.len() > self.cfg.max_queued_bytes {
            self.report.overflow += 1;
            return;
        }
        let generation = self.sessions[session].as_ref().map_or(0, |s| s.generation);
        self.queued_bytes += data.len();
        self.seq += 1;
        self.heap.push(Pending {
            at,
            seq: self.seq,
            dir,
            session,
            generation,
            data: data.to_vec(),
        });
    }

    fn impair(&mut self, now: i64, dir: Dir, session: usize, data: &[u8]) {
        let imp = match dir {
            Dir::Forward => &mut self.fwd,
            Dir::Reverse => &mut self.rev,
        };
        if let Verdict::Deliver {
            at, duplicate_at, ..
        } = imp.decide(now)
        {
            self.enqueue(at, dir, session, data);
            if let Some(d) = duplicate_at {
                self.enqueue(d, dir, session, data);
            }
        }
    }

    /// Reads what is waiting on the listen socket (forward direction).
    fn drain_listen(&mut self, buf: &mut [u8]) -> Result<bool, RelayError> {
        let mut any = false;
        for _ in 0..256 {
            match self.listen.recv_from(buf) {
                Ok((n, from)) => {
                    any = true;
                    let now = self.now();
                    let s = self.session_of(from, now)?;
                    let data = buf[..n].to_vec();
                    if let Some(obs) = self.observer.as_mut() {
                        obs(&data);
                    }
                    self.impair(now, Dir::Forward, s, &data);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                // ICMP errors from earlier sends surface here on some kernels: ignore.
                Err(_) => continue,
            }
        }
        Ok(any)
    }

    /// Reads replies on upstream socket `u` (reverse direction).
    fn drain_upstream(&mut self, u: usize, buf: &mut [u8]) -> bool {
        let mut any = false;
        for _ in 0..256 {
            let Some(sock) = self.upstream[u].as_ref() else {
                break;
            };
            match sock.recv_from(buf) {
                Ok((n, _from)) => {
                    any = true;
                    let now = self.now();
                    // The session this socket serves: its own, or the last client heard on a
                    // shared (multicast) socket.
                    let session = self
                        .sessions
                        .iter()
                        .enumerate()
                        .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
                        .filter(|(_, s)| s.upstream == u)
                        .max_by_key(|(_, s)| s.last_seen)
                        .map(|(i, _)| i);
                    if let Some(s) = session {
                        let data = buf[..n].to_vec();
                        self.impair(now, Dir::Reverse, s, &data);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => continue,
            }
        }
        any
    }

    /// Sends every datagram due by `now`.
    fn send_due(&mut self, now: i64) -> bool {
        let mut any = false;
        while self.heap.peek().is_some_and(|p| p.at <= now) {
            let Some(p) = self.heap.pop() else { break };
            any = true;
            self.queued_bytes -= p.data.len();
            let Some(session) = self.sessions[p.session]
                .as_ref()
                .filter(|s| s.generation == p.generation)
            else {
                continue; // the client was forgotten
            };
            let res = match p.dir {
                Dir::Forward => match self.upstream[session.upstream].as_ref() {
                    Some(u) if self.cfg.forward.ip().is_multicast() => {
                        u.send_to(&p.data, self.cfg.forward)
                    }
                    Some(u) => u.send(&p.data),
                    None => continue,
                },
                Dir::Reverse => {
                    if self.listen_is_multicast {
                        match self.upstream[session.upstream].as_ref() {
                            Some(u) => u.send_to(&p.data, session.client),
                            None => continue,
                        }
                    } else {
                        self.listen.send_to(&p.data, session.client)
                    }
                }
            };
            match res {
                Ok(_) => {
                    match p.dir {
                        Dir::Forward => self.report.sent_forward += 1,
                        Dir::Reverse => self.report.sent_reverse += 1,
                    }
                    self.lateness.record((self.now() - p.at).max(0) as u64);
                }
                Err(_) => self.report.send_errors += 1,
            }
        }
        any
    }

    fn refresh_report(&mut self) {
        self.report.forward = self.fwd.stats().report();
        self.report.reverse = self.rev.stats().report();
        self.report.queued = self.heap.len() as u64;
        self.report.lateness_p50_us = self.lateness.quantile(0.5) as f64 / 1e3;
        self.report.lateness_p99_us = self.lateness.quantile(0.99) as f64 / 1e3;
        if let Ok(mut s) = self.shared.lock() {
            *s = self.report.clone();
        }
    }

    fn write_stats(&self) -> Result<(), RelayError> {
        let Some(path) = &self.cfg.stats_path else {
            return Ok(());
        };
        let err = |source| RelayError::Stats {
            path: path.clone(),
            source,
        };
        let json = serde_json::to_string_pretty(&self.report).map_err(io::Error::from);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, json.map_err(err)? + "\n").map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }

    /// Relays until `stop` is set; returns the final figures (also written to the stats file).
    pub fn run(&mut self, stop: &AtomicBool) -> Result<RelayReport, RelayError> {
        // Wake at the due time, not up to 50 us later (the default timer slack): the relay's own
        // lateness adds to the delays it is asked to make. Best effort.
        // SAFETY: PR_SET_TIMERSLACK takes an integer argument and touches no memory of ours.
        unsafe {
            libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
        }
        let mut buf = vec![0u8; 65536];
        let mut last_refresh = 0i64;
        let mut last_write = 0i64;
        let mut dirty = false;
        while !stop.load(AtomicOrdering::Relaxed) {
            let now = self.now();
            let mut wait_ns: i64 = 20_000_000;
            if let Some(p) = self.heap.peek() {
                // Sleep until SPIN_NS before the due time, then poll without sleeping: waking
                // from a sleep costs tens of microseconds, which would add to the delays.
                let until = p.at - now - SPIN_NS;
                wait_ns = wait_ns.min(until.max(0));
            }
            let mut fds = Vec::with_capacity(1 + self.upstream.len());
            fds.push(libc::pollfd {
                fd: self.listen.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            let mut fd_upstream = Vec::with_capacity(self.upstream.len());
            for (i, u) in self.upstream.iter().enumerate() {
                if let Some(u) = u {
                    fds.push(libc::pollfd {
                        fd: u.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    });
                    fd_upstream.push(i);
                }
            }
            let ts = libc::timespec {
                tv_sec: (wait_ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (wait_ns % 1_000_000_000) as libc::c_long,
            };
            // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()` pollfd
            // structs; `ts` lives across the call; a null sigmask leaves the mask unchanged.
            let r = unsafe {
                libc::ppoll(
                    fds.as_mut_ptr(),
                    fds.len() as libc::nfds_t,
                    &ts,
                    std::ptr::null(),
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != ErrorKind::Interrupted {
                    return Err(RelayError::Poll(e));
                }
            }
            if r > 0 {
                if fds[0].revents != 0 && self.drain_listen(&mut buf)? {
                    dirty = true;
                }
                for (k, &u) in fd_upstream.iter().enumerate() {
                    if fds[k + 1].revents != 0 && self.drain_upstream(u, &mut buf) {
                        dirty = true;
                    }
                }
            }
            let now = self.now();
            if self.send_due(now) {
                dirty = true;
            }
            if dirty && (self.heap.is_empty() || now - last_refresh > 10_000_000) {
                self.refresh_report();
                last_refresh = now;
                dirty = false;
            }
            if now - last_write > 1_000_000_000 {
                self.write_stats()?;
                last_write = now;
            }
        }
        self.refresh_report();
        self.write_stats()?;
        Ok(self.report.clone())
    }
}

/// Sets IP_MULTICAST_ALL: with it off, a socket gets only the groups it joined itself.
fn set_multicast_all(s: &Socket, on: bool) -> io::Result<()> {
    let v: libc::c_int = on.into();
    // SAFETY: the fd is valid for the socket's lifetime; the option value is a c_int whose
    // address and size are passed correctly.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_ALL,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Waits (polling the handle every millisecond) until `pred` holds for the relay's report, or
/// `timeout` passes; returns the last report seen and whether `pred` held. For tests and the
/// lab's orchestration.
pub fn wait_for_report(
    handle: &Arc<Mutex<RelayReport>>,
    timeout: Duration,
    pred: impl Fn(&RelayReport) -> bool,
) -> (RelayReport, bool) {
    let deadline = Instant::now() + timeout;
    loop {
        let r = handle.lock().map(|r| r.clone()).unwrap_or_default();
        if pred(&r) {
            return (r, true);
        }
        if Instant::now() >= deadline {
            return (r, false);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
