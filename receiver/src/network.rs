//! The network thread: sockets in, the common [`Receiver`] state machine, messages out to the
//! output thread. It never touches the audio device.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use log::{info, warn};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use wavesync_common::clock::ClockEstimate;
use wavesync_common::receiver::{ClockSource, Event, Receiver, ReceiverConfig};
use wavesync_common::time::{LocalNs, TimelineNs};

use crate::clock_io;
use crate::config::{self, Config};
use crate::device_delay::DeviceDelay;
use crate::feed::{Feed, Packet, MAX_DATAGRAM};
use crate::settings::RoomControl;
use crate::status::Shared;
use wavesync_common::wire::{classify, Kind};
use wavesync_net::{NetError, StampedSocket};

/// The network side, ready to run.
pub struct Network {
    stream: StampedSocket,
    control: StampedSocket,
    receiver: Receiver,
    out: rtrb::Producer<Feed>,
    status: Shared,
    /// The output device's delay, from the output thread.
    device_delay: DeviceDelay,
    overflow: u64,
    /// Audio packets too large for a feed slot (dropped).
    oversized: u64,
    sink_latency_ns: i64,
    protection: Option<Arc<wavesync_net::Protection>>,
    /// The room: reports to the master, its commands.
    room: RoomControl,
}

fn rx_config(cfg: &Config) -> ReceiverConfig {
    let clock = match cfg.clock {
        config::ClockSource::Auto => ClockSource::Auto,
        config::ClockSource::Master => ClockSource::Master,
        config::ClockSource::Ntp(a) => ClockSource::Ntp(a),
        config::ClockSource::System => ClockSource::System,
    };
    ReceiverConfig {
        master: cfg.master,
        clock,
        resend: cfg.resend,
        receiver_ssrc: rand_id(),
        ..ReceiverConfig::default()
    }
}

fn rand_id() -> u32 {
    let t = clock_io::realtime_ns() as u64;
    (t ^ (t >> 29) ^ (std::process::id() as u64) << 16) as u32
}

impl Network {
    /// Opens the sockets (errors name the address and the reason).
    pub fn open(
        cfg: &Config,
        out: rtrb::Producer<Feed>,
        status: Shared,
        device_delay: DeviceDelay,
        room: RoomControl,
    ) -> Result<Network, NetError> {
        let stream = StampedSocket::stream(cfg.listen, cfg.interface.as_deref())?;
        let control = StampedSocket::ephemeral(cfg.listen.is_ipv6())?;
        Ok(Network {
            stream,
            control,
            receiver: Receiver::new(rx_config(cfg)),
            out,
            status,
            device_delay,
            overflow: 0,
            oversized: 0,
            sink_latency_ns: room.settings().trim_us as i64 * 1000,
            room,
            protection: None,
        })
    }

    /// Protects both sockets with the household key (see [`crate::keys`]).
    pub fn protect(&mut self, p: Arc<wavesync_net::Protection>) {
        self.stream.protect(p.clone());
        self.control.protect(p.clone());
        self.protection = Some(p);
    }

    fn send(&mut self, feed: Feed) {
        if self.out.push(feed).is_err() {
            // The output thread is behind (device stalled): what it lacks it will conceal.
            self.overflow += 1;
        }
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::StreamStarted(info) => {
                let s = info.status;
                info!(
                    "stream {:08x} from {} ({:?}): {} Hz, {} ch, {:?}, {} frames/packet, latency {} ms, clock {}",
                    s.ssrc,
                    info.source,
                    s.name.as_str(),
                    s.format.rate,
                    s.format.channels,
                    s.format.sample,
                    s.frames_per_packet,
                    s.latency_ns / 1_000_000,
                    s.clock_domain.name(),
                );
                self.send(Feed::Stream(info));
            }
            Event::StreamLost { ssrc } => {
                info!("stream {ssrc:08x} silent: waiting");
                self.send(Feed::StreamLost);
            }
            Event::StreamResumed(info) => {
                info!("stream {:08x} back", info.status.ssrc);
                self.send(Feed::StreamResumed(info));
            }
            Event::ClockLocked(est) => info!(
                "clock locked: offset {:+.6} s, rate {:+.2} ppm, uncertainty {} us",
                est.offset_ns() as f64 / 1e9,
                est.rate_ppm(),
                est.uncertainty_ns / 1000
            ),
            Event::ClockStep { step_ns } => {
                warn!("the master's clock jumped by {step_ns} ns: resynchronising")
            }
            Event::NoClock(d) => {
                warn!("no clock of the master yet, so nothing plays: {d}");
                self.set_clock_problem(d.to_string());
            }
            Event::ClockMismatch(m) => {
                let fix = match m.source {
                    ClockSource::Auto | ClockSource::Ntp(None) => "give this receiver --ntp HOST \
                                                                    (the NTP server the master \
                                                                    reads)"
                        .to_string(),
                    _ => format!(
                        "run it with --clock auto (the default: follow the stream) or --clock {}",
                        m.stream.name()
                    ),
                };
                let why = format!("{m}; {fix}");
                warn!("wrong clock for this stream: {why}");
                self.set_clock_problem(why);
            }
            Event::ClockStale { off_ns } => warn!(
                "the new stream's stamps are {:+.3} s off our clock of the master: it jumped; \
                 reading it again",
                off_ns as f64 / 1e9
            ),
        }
    }

    fn set_clock_problem(&mut self, why: String) {
        let mut s = match self.status.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        s.clock_problem = Some(why);
    }

    fn system_estimate() -> ClockEstimate {
        let l = clock_io::monotonic_ns();
        let r = clock_io::realtime_ns();
        ClockEstimate {
            ref_local: l,
            // Clock domain `system`: the timeline is CLOCK_REALTIME.
            ref_timeline: TimelineNs::from_ns(r),
            rate: 1.0,
            uncertainty_ns: 0,
        }
    }

    fn publish(&mut self) {
        let st = self.receiver.stats();
        let est = self.receiver.clock();
        let locked = self.receiver.clock_locked();
        let info = self.receiver.stream().copied();
        let mut s = match self.status.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        s.clock_locked = locked;
        let d = self.receiver.clock_diagnosis();
        s.time_queries = d.sent;
        s.time_answered = d.answered;
        s.time_refused = d.refused + d.wrong_source;
        s.time_wrong_source = d.wrong_source;
        s.time_unanswered = d.timeouts;
        if est.is_some() {
            s.clock_problem = None;
        }
        if let Some(e) = est {
            s.clock_offset_s = e.offset_ns() as f64 / 1e9;
            s.clock_rate_ppm = e.rate_ppm();
            s.clock_uncertainty_us = e.uncertainty_ns as f64 / 1e3;
        }
        s.stream = info.map(|i| crate::status::StreamStatus {
            name: i.status.name.as_str().to_string(),
            ssrc: i.status.ssrc,
            master: i.source.ip().to_string(),
            rate: i.status.format.rate,
            channels: i.status.format.channels,
            latency_ms: i.status.latency_ns as f64 / 1e6,
            clock: i.status.clock_domain.name().to_string(),
        });
        // The output's lead over the DAC bounds when a resend is still of use.
        let device_delay_ns = self.device_delay.ns();
        let lead = device_delay_ns.saturating_add(self.sink_latency_ns);
        s.device_delay_ms = device_delay_ns as f64 / 1e6;
        s.packets = st.audio;
        s.lost = st.loss.missing;
        s.recovered = st.loss.recovered;
        s.reordered = st.loss.reordered;
        s.nacks_sent = st.nacks_sent;
        s.requested = st.loss.requested;
        s.given_up = st.loss.given_up;
        s.dropped = st.malformed + st.foreign + st.before_status + self.overflow + self.oversized;
        crate::keys::publish(self.protection.as_deref(), &mut s);
        let rs = self.room.settings();
        let cs = self.room.stats();
        s.room = crate::status::RoomStatus {
            id: format!("{:016x}", self.room.id()),
            name: self.room.name().as_str().to_string(),
            volume: rs.volume,
            muted: rs.muted,
            off: rs.off,
            channels: rs.channels.name().to_string(),
            trim_ms: rs.trim_us as f64 / 1000.0,
            reports_sent: cs.reports,
            commands: cs.commands,
            commands_refused: cs.refused,
            control_malformed: cs.malformed,
        };
        drop(s);
        self.sink_latency_ns = rs.trim_us as i64 * 1000;
        self.receiver.set_output_lead(lead.max(0));
    }

    /// Where reports go and whose commands are taken: the followed master's control port.
    fn master_control(&self) -> Option<std::net::SocketAddr> {
        self.receiver.stream().map(|s| s.control_addr())
    }

    /// Sends the room's report when one is due (about once a second, while a stream is
    /// followed). From the status snapshot: never on the audio path.
    fn report(&mut self, now: LocalNs, tx: &mut [u8]) {
        let Some(to) = self.master_control().filter(|_| self.room.report_due(now)) else {
            return;
        };
        let ssrc = self.receiver.stream().map_or(0, |s| s.status.ssrc);
        // The output thread only ever try-locks the snapshot: holding it here never blocks it.
        let snapshot = match self.status.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        let report = self.room.poll_report(now, &snapshot, ssrc, tx);
        drop(snapshot);
        if let Some(n) = report {
            // A lost report is followed by the next; the time queries report send failures.
            let _ = self.control.send_to(&tx[..n], to);
        }
    }

    /// A control message on the control socket: a command from the master.
    fn on_control(&mut self, from: std::net::SocketAddr, len: usize, buf: &[u8], tx: &mut [u8]) {
        let from = wavesync_common::receiver::attributed_source(from);
        let master = self.master_control();
        if let Some(n) = self.room.handle(from, master, &buf[..len], tx) {
            let _ = self.control.send_to(&tx[..n], from);
        }
    }

    /// Runs until `stop` is set.
    pub fn run(mut self, stop: Arc<AtomicBool>) {
        // Time queries are stamped in user space on the way out: keep that prompt too.
        let _ = crate::rt::make_realtime(crate::rt::NETWORK_PRIORITY);
        let mut buf = [0u8; MAX_DATAGRAM];
        let mut tx = [0u8; MAX_DATAGRAM];
        let mut last_gen = u64::MAX;
        let mut next_system_clock = LocalNs::from_ns(0);
        let mut next_publish = LocalNs::from_ns(0);
        let mut send_errors = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let now = clock_io::monotonic_ns();
            // Clock domain `system`: this host's clock, no time queries.
            if self.receiver.wants_system_clock()
                && (now >= next_system_clock || self.receiver.clock().is_none())
            {
                self.receiver.set_external_clock(Self::system_estimate());
                next_system_clock = now + 1_000_000_000;
            }
            while let Some(t) = self.receiver.poll_transmit(now, &mut tx) {
                if let Err(e) = self.control.send_to(&tx[..t.len], t.to) {
                    if send_errors == 0 {
                        warn!("cannot reach the master at {}: {e}", t.to);
                    }
                    send_errors += 1;
                } else {
                    send_errors = 0;
                }
            }
            while let Some(e) = self.receiver.poll_event() {
                self.on_event(e);
            }
            if self.receiver.clock_generation() != last_gen {
                last_gen = self.receiver.clock_generation();
                let est = self.receiver.clock();
                self.send(Feed::Clock(est));
            }
            if now >= next_publish {
                self.publish();
                next_publish = now + 200_000_000;
            }
            self.report(now, &mut tx);
            let wake = self.receiver.poll_timeout().min(next_publish);
            // Rounded up: a NACK or query due in 0.9 ms must not turn into a busy loop.
            let wait_ms = ((wake - clock_io::monotonic_ns() + 999_999) / 1_000_000).clamp(0, 100);
            let mut fds = [
                PollFd::new(self.stream.fd(), PollFlags::POLLIN),
                PollFd::new(self.control.fd(), PollFlags::POLLIN),
            ];
            let _ = poll(&mut fds, PollTimeout::from(wait_ms as u16));
            for which in 0..2 {
                loop {
                    let sock = if which == 0 {
                        &mut self.stream
                    } else {
                        &mut self.control
                    };
                    let d = match sock.recv(&mut buf) {
                        Ok(Some(d)) => d,
                        Ok(None) => break,
                        Err(e) => {
                            warn!("receive failed: {e}");
                            break;
                        }
                    };
                    if which == 1 && classify(&buf[..d.len]) == Kind::Control {
                        self.on_control(d.from, d.len, &buf, &mut tx);
                        continue;
                    }
                    // Decoded here, once; the output thread takes it as it is.
                    let packet = self
                        .receiver
                        .handle_datagram(d.at, d.from, &buf[..d.len])
                        .map(|p| Packet::new(d.at, &p));
                    match packet {
                        Some(Some(p)) => self.send(Feed::Packet(p)),
                        Some(None) => self.oversized += 1,
                        None => {}
                    }
                }
            }
        }
    }
}
