//! A stand-in master for the lab: plays a WAV file through the real sender core
//! ([`wavesync_common::sender::SenderCore`]) on UDP, paced on CLOCK_MONOTONIC.
//!
//! It exists so the lab can run end to end before `wavesync-sender` has its file input and
//! destinations; `lab/run` prefers `wavesync-sender` when it has them. The timing of what goes
//! on the wire (stamps, runs, status, time service, resends) is the core's, the same as in the
//! sender and the PipeWire module; only the input is simpler: the file is pushed every
//! `push_frames` with the exact nominal capture time `start + frames / rate`, like a paced
//! file input.

use socket2::{Domain, Protocol, Socket, Type};
use std::io::{self, ErrorKind};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use wavesync_common::format::{SampleFormat, StreamFormat};
use wavesync_common::packetizer::ConfigError;
use wavesync_common::sender::{SenderConfig, SenderCore, SenderStats, Target};

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// The input file could not be read.
    #[error("{path}: {source}")]
    Wav {
        /// The file.
        path: PathBuf,
        /// What hound said.
        source: hound::Error,
    },
    /// The input has a format the stand-in does not take.
    #[error("{path}: {what}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: &'static str,
    },
    /// The sender core refused the configuration.
    #[error("sender configuration: {0}")]
    Config(#[from] ConfigError),
    /// The clock put the audio outside the timeline's valid range.
    #[error("audio: {0}")]
    Timeline(#[from] wavesync_common::time::OutOfTimeline),
    /// A socket could not be set up.
    #[error("{what}: {source}")]
    Socket {
        /// Which socket.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

/// How to run the stand-in master.
#[derive(Clone, Debug)]
pub struct MasterConfig {
    /// 16-bit integer WAV file to play.
    pub wav: PathBuf,
    /// Stream destination (multicast group or unicast address).
    pub dest: SocketAddrV4,
    /// Interface address to send from (and multicast through).
    pub iface: Ipv4Addr,
    /// Control port (time service, NACKs).
    pub control_port: u16,
    /// Stream latency, ns.
    pub latency_ns: i64,
    /// Start again at the end of the file.
    pub looped: bool,
    /// Frames pushed at a time.
    pub push_frames: usize,
    /// Frames per packet (None: the core's default, filling a 1472-byte datagram).
    pub frames_per_packet: Option<u16>,
}

fn monotonic_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass; CLOCK_MONOTONIC always exists.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

fn read_input(cfg: &MasterConfig) -> Result<(Vec<f32>, StreamFormat), MasterError> {
    let err = |source| MasterError::Wav {
        path: cfg.wav.clone(),
        source,
    };
    let mut r = hound::WavReader::open(&cfg.wav).map_err(err)?;
    let spec = r.spec();
    if spec.sample_format != hound::SampleFormat::Int || spec.bits_per_sample != 16 {
        return Err(MasterError::Format {
            path: cfg.wav.clone(),
            what: "only 16-bit integer WAV",
        });
    }
    let channels =
        u8::try_from(spec.channels)
            .ok()
            .filter(|&c| c > 0)
            .ok_or(MasterError::Format {
                path: cfg.wav.clone(),
                what: "1..=255 channels",
            })?;
    let samples = r
        .samples::<i16>()
        .map(|s| s.map(|s| f32::from(s) / 32768.0))
        .collect::<Result<Vec<f32>, _>>()
        .map_err(err)?;
    Ok((
        samples,
        StreamFormat {
            rate: spec.sample_rate,
            channels,
            sample: SampleFormat::L16,
        },
    ))
}

/// Plays until `stop` is set (or the file ends, unless looped); returns the core's counters.
pub fn run(cfg: &MasterConfig, stop: &AtomicBool) -> Result<SenderStats, MasterError> {
    let (samples, format) = read_input(cfg)?;
    let ch = usize::from(format.channels);
    let frames_total = samples.len() / ch;
    if frames_total == 0 {
        return Err(MasterError::Format {
            path: cfg.wav.clone(),
            what: "no audio",
        });
    }
    let mut sc = SenderConfig::new(format, rand::random());
    sc.latency_ns = cfg.latency_ns;
    sc.time_port = cfg.control_port;
    sc.name = "wavesync-lab master".into();
    if let Some(f) = cfg.frames_per_packet {
        sc.frames_per_packet = f;
    }
    let mut core = SenderCore::new(sc)?;

    let sock_err = |what| move |source| MasterError::Socket { what, source };
    let stream = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(sock_err("stream socket"))?;
    stream
        .set_multicast_if_v4(&cfg.iface)
        .map_err(sock_err("stream IP_MULTICAST_IF"))?;
    stream
        .set_multicast_ttl_v4(1)
        .map_err(sock_err("stream TTL"))?;
    stream
        .bind(&SocketAddr::from((cfg.iface, 0)).into())
        .map_err(sock_err("stream bind"))?;
    let stream = UdpSocket::from(stream);
    let control = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, cfg.control_port))
        .map_err(sock_err("control bind"))?;
    control
        .set_nonblocking(true)
        .map_err(sock_err("control socket"))?;

    let mut buf = vec![0u8; core.max_datagram_len().max(2048)];
    let mut rx = [0u8; 2048];
    let start = monotonic_ns();
    let mut pushed: u64 = 0;
    let rate = u64::from(format.rate);
    let push = cfg.push_frames.max(1);
    while !stop.load(Ordering::Relaxed) {
        let now = monotonic_ns();
        // Push every chunk whose last frame has been "captured" by now.
        loop {
            let next_end = start + ((pushed + push as u64) * 1_000_000_000 / rate) as i64;
            if next_end > now {
                break;
            }
            let pos = (pushed % frames_total as u64) as usize;
            if !cfg.looped && pushed as usize + push > frames_total {
                return Ok(core.stats());
            }
            let capture = start + (pushed * 1_000_000_000 / rate) as i64;
            let end = pos + push;
            if end <= frames_total {
                core.push_audio(capture, &samples[pos * ch..end * ch])?;
            } else {
                let mut chunk = samples[pos * ch..].to_vec();
                chunk.extend_from_slice(&samples[..(end - frames_total) * ch]);
                core.push_audio(capture, &chunk)?;
            }
            pushed += push as u64;
        }
        // Control traffic.
        loop {
            match control.recv_from(&mut rx) {
                Ok((n, from)) => core.handle_control(monotonic_ns(), from, &rx[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
        let now = monotonic_ns();
        while let Some(t) = core.poll_transmit(now, &mut buf) {
            let data = &buf[..t.len];
            // A failed send is the network's loss: the receivers will ask again.
            let _ = match t.to {
                Target::Stream => stream.send_to(data, cfg.dest),
                Target::Peer(p) => control.send_to(data, p),
            };
        }
        let next_push = start + ((pushed + push as u64) * 1_000_000_000 / rate) as i64;
        let wake = next_push.min(core.poll_timeout().max(now));
        let wait = (wake - monotonic_ns()).clamp(0, 20_000_000);
        let mut fds = [libc::pollfd {
            fd: control.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: wait as libc::c_long,
        };
        // SAFETY: one valid pollfd, a timespec that outlives the call, no signal mask.
        unsafe {
            libc::ppoll(fds.as_mut_ptr(), 1, &ts, std::ptr::null());
        }
    }
    Ok(core.stats())
}
