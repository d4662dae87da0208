//! The engine's timeline: which clock the stamps are on (the stream's clock domain), and the
//! map from this host's CLOCK_MONOTONIC, on which every capture time and receive stamp is
//! read, to it.
//!
//! - `master`: the timeline is CLOCK_MONOTONIC itself (identity); receivers ask the engine's
//!   time service.
//! - `system`: the timeline is this host's CLOCK_REALTIME (UTC from 1970, as chrony or PTP
//!   keep it); the map adds CLOCK_REALTIME - CLOCK_MONOTONIC as read now (three vDSO reads).
//!   Nothing is queried; receivers read their own CLOCK_REALTIME.
//! - `ntp`: the timeline is an NTP server's UTC (from 1970): the engine reads it with the same
//!   time client and clock model the receivers use ([`TimeClient`] with
//!   [`ServerClock::NtpUtc`]) on a socket of its own, and maps through the estimate. No clock
//!   is set anywhere. Receivers ask the same server (the status message names it).
//!
//! The map is applied on the engine's network thread, where the capture times come out of the
//! input ring, so the real-time producers only ever read CLOCK_MONOTONIC.

use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use wavesync_common::clock::ClockEstimate;
use wavesync_common::format::ClockDomain;
use wavesync_common::time::{LocalNs, TimelineNs};
use wavesync_common::time_client::{ServerClock, TimeClient, TimeClientConfig};
use wavesync_net::{clock, NetError, StampedSocket};

/// Which clock the engine stamps on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineClock {
    /// Clock domain `master`: this host's CLOCK_MONOTONIC (the default).
    Master,
    /// Clock domain `system`: this host's CLOCK_REALTIME, trusted as-is.
    System,
    /// Clock domain `ntp`: the clock of this NTP server, as the time client estimates it.
    Ntp(SocketAddr),
}

impl EngineClock {
    /// The clock domain announced in the status message.
    pub fn domain(self) -> ClockDomain {
        match self {
            EngineClock::Master => ClockDomain::Master,
            EngineClock::System => ClockDomain::System,
            EngineClock::Ntp(_) => ClockDomain::Ntp,
        }
    }

    /// The NTP server announced in the status message.
    pub fn ntp_server(self) -> Option<SocketAddr> {
        match self {
            EngineClock::Ntp(a) => Some(a),
            _ => None,
        }
    }
}

/// How long [`Timeline::open`] waits for a first estimate of an NTP server's clock.
pub const NTP_FIRST_ESTIMATE: Duration = Duration::from_secs(5);

/// The engine's map from CLOCK_MONOTONIC to the timeline, with the NTP reader of domain `ntp`.
pub(crate) struct Timeline {
    kind: EngineClock,
    ntp: Option<NtpReader>,
}

struct NtpReader {
    server: SocketAddr,
    socket: StampedSocket,
    client: TimeClient,
    /// The last estimate had (kept when the model resets, until it has a new one).
    estimate: ClockEstimate,
}

/// Why the NTP server's clock could not be read at start.
#[derive(Debug)]
pub(crate) struct NtpUnavailable {
    pub server: SocketAddr,
    pub sent: u64,
    pub answered: u64,
    pub rejected: u64,
}

impl Timeline {
    /// The map for `kind`; for `ntp`, opens a socket and reads the server until the clock
    /// model has a first estimate (at most [`NTP_FIRST_ESTIMATE`]).
    pub(crate) fn open(kind: EngineClock) -> Result<Timeline, OpenError> {
        let EngineClock::Ntp(server) = kind else {
            return Ok(Timeline { kind, ntp: None });
        };
        let mut socket = StampedSocket::ephemeral(server.is_ipv6()).map_err(OpenError::Net)?;
        let mut client = TimeClient::new(TimeClientConfig {
            server_clock: ServerClock::NtpUtc,
            ..TimeClientConfig::default()
        });
        let deadline = clock::monotonic_ns() + NTP_FIRST_ESTIMATE.as_nanos() as i64;
        let mut buf = [0u8; 256];
        loop {
            let now = clock::monotonic_ns();
            if let Some(estimate) = client.estimate() {
                return Ok(Timeline {
                    kind,
                    ntp: Some(NtpReader {
                        server,
                        socket,
                        client,
                        estimate,
                    }),
                });
            }
            if now >= deadline {
                let s = client.stats();
                return Err(OpenError::Ntp(NtpUnavailable {
                    server,
                    sent: s.sent,
                    answered: s.answered,
                    rejected: s.rejected + s.outliers,
                }));
            }
            NtpReader::exchange(&mut client, &mut socket, server, now, &mut buf);
            let wake = client.poll_timeout().min(deadline);
            wait_readable(socket.fd(), wake);
        }
    }

    /// The timeline instant of `t` (CLOCK_MONOTONIC).
    pub(crate) fn to_timeline(&self, t: LocalNs) -> TimelineNs {
        match (&self.kind, &self.ntp) {
            (EngineClock::Ntp(_), Some(r)) => r.estimate.to_timeline(t),
            (EngineClock::System, _) => {
                // The timeline is CLOCK_REALTIME, in ns since 1970.
                TimelineNs::from_ns(t.ns() + clock::realtime_minus_monotonic_ns())
            }
            // On the master itself in domain `master` (and never reached for `ntp`, which
            // always has its reader).
            _ => TimelineNs::from_master_monotonic(t),
        }
    }

    /// Sends the time queries due, reads the answers (domain `ntp`; nothing otherwise).
    pub(crate) fn poll(&mut self, now: LocalNs) {
        if let Some(r) = self.ntp.as_mut() {
            let mut buf = [0u8; 256];
            NtpReader::exchange(&mut r.client, &mut r.socket, r.server, now, &mut buf);
            if let Some(e) = r.client.estimate() {
                r.estimate = e;
            }
        }
    }

    /// When [`Self::poll`] is next due, if ever.
    pub(crate) fn poll_timeout(&self) -> Option<LocalNs> {
        self.ntp.as_ref().map(|r| r.client.poll_timeout())
    }

    /// The NTP socket to wait on, if any.
    pub(crate) fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.ntp.as_ref().map(|r| r.socket.fd())
    }

    /// The current estimate of the NTP server's clock (domain `ntp`).
    pub(crate) fn estimate(&self) -> Option<ClockEstimate> {
        self.ntp.as_ref().map(|r| r.estimate)
    }
}

impl NtpReader {
    /// Reads every answer waiting, then sends the query due, if any.
    fn exchange(
        client: &mut TimeClient,
        socket: &mut StampedSocket,
        server: SocketAddr,
        now: LocalNs,
        buf: &mut [u8],
    ) {
        while let Ok(Some(d)) = socket.recv(buf) {
            // Answers from elsewhere are not the server's; refusals are counted by the client.
            if d.from == server {
                let _ = client.handle_response(d.at, &buf[..d.len]);
            }
        }
        if let Some(req) = client.poll_transmit(now) {
            // A failed send shows as an unanswered query.
            let _ = socket.send_to(&req, server);
        }
    }
}

/// Waits until `fd` is readable or CLOCK_MONOTONIC reaches `until`.
fn wait_readable(fd: BorrowedFd<'_>, until: LocalNs) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let ms = ((until - clock::monotonic_ns()).max(0) + 999_999) / 1_000_000;
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    let _ = poll(&mut fds, PollTimeout::from(ms.clamp(0, 100) as u16));
}

/// Why [`Timeline::open`] failed.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// The NTP socket could not be opened.
    Net(NetError),
    /// No estimate of the NTP server's clock in time.
    Ntp(NtpUnavailable),
}
