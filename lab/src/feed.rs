//! Feeds peers the lab signal in real time, as a sound card's capture would: raw interleaved
//! s16le, paced by the wall clock, into FIFOs (Snapcast's pipe source) and unix stream
//! sockets (the Python WaveSync's `--tx` input, which connects as a client).
//!
//! Every sink gets the same chunk at the same moment. A sink that does not keep up loses whole
//! chunks (counted), never the pacing of the others and never frame alignment. A FIFO is opened
//! read-write, so it always has a writer: its reader never sees end of file while we run, and
//! we never wait for a reader to appear (snapserver opens its pipe, reads, and on end of file
//! closes it for 100 ms, so a writer opening write-only only gets in by luck).

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What can go wrong while feeding.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The WAV file could not be read.
    #[error("{path}: {source}")]
    Wav {
        /// The file.
        path: PathBuf,
        /// Why.
        source: hound::Error,
    },
    /// The WAV file is not 16-bit integer PCM.
    #[error("{0}: not a 16-bit PCM WAV file")]
    Format(PathBuf),
    /// A sink could not be opened.
    #[error("{path}: {source}")]
    Open {
        /// The sink.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Where to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkSpec {
    /// A FIFO (opened read-write) or a regular file (created, truncated).
    Path(PathBuf),
    /// A unix stream socket we listen on; one client at a time gets the stream.
    UnixListen(PathBuf),
}

/// What one sink got.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SinkStats {
    /// The sink's path.
    pub path: String,
    /// Frames written.
    pub frames_written: u64,
    /// Frames dropped because the reader did not keep up.
    pub frames_dropped: u64,
    /// Frames offered while no client was connected (unix sockets only).
    pub frames_unconnected: u64,
    /// Clients accepted (unix sockets only).
    pub connections: u64,
}

enum Out {
    File(std::fs::File),
    Listen {
        listener: UnixListener,
        conn: Option<UnixStream>,
    },
}

struct Sink {
    out: Out,
    pending: Vec<u8>,
    written_bytes: u64,
    stats: SinkStats,
}

/// Largest backlog a sink may hold before whole chunks are dropped, in frames.
const MAX_PENDING_FRAMES: usize = 9600;

impl Sink {
    fn open(spec: &SinkSpec) -> Result<Sink, FeedError> {
        let (path, out) = match spec {
            SinkSpec::Path(p) => {
                let open_err = |source| FeedError::Open {
                    path: p.clone(),
                    source,
                };
                let fifo = std::fs::metadata(p).is_ok_and(|m| m.file_type().is_fifo());
                let f = if fifo {
                    let f = std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .custom_flags(libc::O_NONBLOCK)
                        .open(p)
                        .map_err(open_err)?;
                    // A small pipe keeps the backlog a late reader finds short (~85 ms).
                    // SAFETY: fcntl on a descriptor we own, integer argument.
                    unsafe {
                        libc::fcntl(
                            std::os::fd::AsRawFd::as_raw_fd(&f),
                            libc::F_SETPIPE_SZ,
                            16384,
                        );
                    }
                    f
                } else {
                    std::fs::File::create(p).map_err(open_err)?
                };
                (p, Out::File(f))
            }
            SinkSpec::UnixListen(p) => {
                let open_err = |source| FeedError::Open {
                    path: p.clone(),
                    source,
                };
                if std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket()) {
                    std::fs::remove_file(p).map_err(open_err)?;
                }
                let listener = UnixListener::bind(p).map_err(open_err)?;
                listener.set_nonblocking(true).map_err(open_err)?;
                (
                    p,
                    Out::Listen {
                        listener,
                        conn: None,
                    },
                )
            }
        };
        Ok(Sink {
            out,
            pending: Vec::new(),
            written_bytes: 0,
            stats: SinkStats {
                path: path.display().to_string(),
                ..Default::default()
            },
        })
    }

    /// Offers one chunk (whole frames) and writes what the reader takes without blocking.
    fn offer(&mut self, chunk: &[u8], frame: usize) {
        let frames = (chunk.len() / frame) as u64;
        if let Out::Listen { listener, conn } = &mut self.out {
            if conn.is_none() {
                if let Ok((c, _)) = listener.accept() {
                    if c.set_nonblocking(true).is_ok() {
                        *conn = Some(c);
                        self.stats.connections += 1;
                        self.pending.clear();
                        self.written_bytes = self.stats.frames_written * frame as u64;
                    }
                }
            }
            if conn.is_none() {
                self.stats.frames_unconnected += frames;
                return;
            }
        }
        if self.pending.len() + chunk.len() > MAX_PENDING_FRAMES * frame {
            self.stats.frames_dropped += frames;
        } else {
            self.pending.extend_from_slice(chunk);
        }
        self.flush(frame);
    }

    fn flush(&mut self, frame: usize) {
        while !self.pending.is_empty() {
            let res = match &mut self.out {
                Out::File(f) => f.write(&self.pending),
                Out::Listen { conn: Some(c), .. } => c.write(&self.pending),
                Out::Listen { conn: None, .. } => return,
            };
            match res {
                Ok(0) => return,
                Ok(n) => {
                    self.pending.drain(..n);
                    // A write may end inside a frame: count frames from the bytes.
                    self.written_bytes += n as u64;
                    self.stats.frames_written = self.written_bytes / frame as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    // The client went away (or the file failed): wait for the next client.
                    if let Out::Listen { conn, .. } = &mut self.out {
                        *conn = None;
                    }
                    self.pending.clear();
                    return;
                }
            }
        }
    }
}

/// Reads a 16-bit PCM WAV file as interleaved s16le bytes; returns (bytes, rate, channels).
pub fn read_s16le(wav: &Path) -> Result<(Vec<u8>, u32, u16), FeedError> {
    let err = |source| FeedError::Wav {
        path: wav.to_path_buf(),
        source,
    };
    let mut r = hound::WavReader::open(wav).map_err(err)?;
    let spec = r.spec();
    if spec.sample_format != hound::SampleFormat::Int || spec.bits_per_sample != 16 {
        return Err(FeedError::Format(wav.to_path_buf()));
    }
    let samples: Vec<i16> = r.samples::<i16>().collect::<Result<_, _>>().map_err(err)?;
    Ok((
        samples.iter().flat_map(|s| s.to_le_bytes()).collect(),
        spec.sample_rate,
        spec.channels.max(1),
    ))
}

/// Plays `wav` into every sink in real time, `chunk_frames` at a time, until the file ends
/// (or forever with `looped`) or `stop` is set. Returns what each sink got.
pub fn run(
    wav: &Path,
    sinks: &[SinkSpec],
    looped: bool,
    chunk_frames: usize,
    stop: &AtomicBool,
) -> Result<Vec<SinkStats>, FeedError> {
    let (bytes, rate, channels) = read_s16le(wav)?;
    let mut out = sinks
        .iter()
        .map(Sink::open)
        .collect::<Result<Vec<_>, _>>()?;
    let frame = 2 * usize::from(channels);
    let frames = bytes.len() / frame;
    let chunk_frames = chunk_frames.clamp(1, 1024);
    let start = Instant::now();
    let mut sent: u64 = 0;
    while frames > 0 && !stop.load(Ordering::Relaxed) && (looped || sent < frames as u64) {
        let pos = (sent % frames as u64) as usize;
        let n = chunk_frames.min(frames - pos);
        for s in &mut out {
            s.offer(&bytes[pos * frame..(pos + n) * frame], frame);
        }
        sent += n as u64;
        let due = Duration::from_secs_f64(sent as f64 / f64::from(rate.max(1)));
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    // What is still pending gets up to a second to drain.
    let end = Instant::now() + Duration::from_secs(1);
    while out.iter().any(|s| !s.pending.is_empty()) && Instant::now() < end {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        for s in &mut out {
            s.flush(frame);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(out.into_iter().map(|s| s.stats).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::{generate, write_wav, SignalConfig};
    use std::io::Read;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("wslab-feed-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn wav(d: &Path, seconds: f64) -> (PathBuf, Vec<u8>) {
        let path = d.join("s.wav");
        let a = generate(&SignalConfig {
            seconds,
            ..Default::default()
        });
        write_wav(&path, &a, 48_000, 2).unwrap();
        let (bytes, rate, ch) = read_s16le(&path).unwrap();
        assert_eq!((rate, ch), (48_000, 2));
        // Interleaved s16le of the mono signal on both channels: frame 100's left sample is at
        // byte 400.
        let left = i16::from_le_bytes([bytes[400], bytes[401]]);
        assert_eq!(left, (a[100].clamp(-1.0, 1.0) * 32767.0).round() as i16);
        (path, bytes)
    }

    /// Makes the FIFO `d/fifo`.
    fn mkfifo(d: &Path) -> PathBuf {
        let fifo = d.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        fifo
    }

    #[test]
    fn a_fifo_gets_every_frame_in_order_with_no_reader_at_first() {
        let d = dir("fifo");
        let (w, bytes) = wav(&d, 0.1);
        let fifo = mkfifo(&d);
        let stop = AtomicBool::new(false);
        let f2 = fifo.clone();
        // The reader comes 30 ms late (the feed must not wait for it) and reads to the end.
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            let mut f = std::fs::File::open(&f2).unwrap();
            let mut got = vec![0u8; 4800 * 4];
            f.read_exact(&mut got).unwrap();
            got
        });
        let stats = run(&w, &[SinkSpec::Path(fifo)], false, 240, &stop).unwrap();
        let got = reader.join().unwrap();
        assert_eq!(got, bytes);
        assert_eq!(stats[0].frames_written, 4800);
        assert_eq!(stats[0].frames_dropped, 0);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_unix_socket_client_gets_the_stream_from_where_it_joined() {
        let d = dir("unix");
        let (w, bytes) = wav(&d, 0.2);
        let sock = d.join("in.sock");
        let stop = AtomicBool::new(false);
        let s2 = sock.clone();
        let client = std::thread::spawn(move || {
            let mut c = loop {
                match UnixStream::connect(&s2) {
                    Ok(c) => break c,
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            };
            let mut got = Vec::new();
            c.read_to_end(&mut got).unwrap();
            got
        });
        let stats = run(&w, &[SinkSpec::UnixListen(sock)], false, 240, &stop).unwrap();
        let got = client.join().unwrap();
        // Whole frames, and a contiguous stretch of the signal ending at its end.
        assert_eq!(got.len() % 4, 0);
        assert!(!got.is_empty());
        assert_eq!(&bytes[bytes.len() - got.len()..], &got[..]);
        assert_eq!(stats[0].connections, 1);
        assert_eq!(
            stats[0].frames_written + stats[0].frames_unconnected,
            (bytes.len() / 4) as u64
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_stuck_reader_loses_whole_chunks_and_the_stop_flag_ends_a_loop() {
        let d = dir("stuck");
        let (w, _) = wav(&d, 0.05);
        let fifo = mkfifo(&d);
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let s2 = std::sync::Arc::clone(&stop);
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(700));
            s2.store(true, Ordering::Relaxed);
        });
        let stats = run(&w, &[SinkSpec::Path(fifo)], true, 240, &stop).unwrap();
        stopper.join().unwrap();
        // Nobody reads: the pipe (16 KiB) and the backlog fill, then whole chunks drop.
        let s = &stats[0];
        assert!(s.frames_written >= 3000, "{s:?}");
        assert!(s.frames_dropped > 0 && s.frames_dropped % 240 == 0, "{s:?}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
