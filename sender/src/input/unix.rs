//! `unix:PATH`: raw PCM from a unix stream socket, such as PulseAudio's
//! module-simple-protocol-unix with `record=true` (s16le, 44100 Hz, stereo by default, the
//! seed's `/tmp/music.source`).
//!
//! The socket must exist at start (a clear error otherwise). If the server goes away later,
//! the input stalls and reconnects every second.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use wavesync_common::time::LocalNs;

use super::stream::{poll_read, ByteSource, ReadResult};
use super::InputError;
use wavesync_net::clock;

const RECONNECT_NS: i64 = 1_000_000_000;

/// A connection to a unix socket server.
pub struct UnixSource {
    path: PathBuf,
    conn: Option<UnixStream>,
    last_attempt: LocalNs,
    failing: bool,
}

impl UnixSource {
    /// Connects to `path`.
    pub fn connect(path: &Path) -> Result<Self, InputError> {
        let conn = UnixStream::connect(path).map_err(|source| {
            let hint = match source.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    "; is PulseAudio's module-simple-protocol-unix loaded with record=true and this socket?"
                }
                _ => "",
            };
            InputError::Open {
                what: format!("unix:{}", path.display()),
                source,
                hint,
            }
        })?;
        Ok(UnixSource {
            path: path.to_path_buf(),
            conn: Some(conn),
            last_attempt: clock::monotonic_ns(),
            failing: false,
        })
    }

    fn reconnect(&mut self, timeout_ms: u16) {
        let now = clock::monotonic_ns();
        if now - self.last_attempt < RECONNECT_NS {
            let wait =
                (RECONNECT_NS - (now - self.last_attempt)).min(timeout_ms as i64 * 1_000_000);
            clock::sleep_until(now + wait);
            return;
        }
        self.last_attempt = now;
        match UnixStream::connect(&self.path) {
            Ok(c) => {
                log::info!("{}: connected again", self.describe());
                self.failing = false;
                self.conn = Some(c);
            }
            Err(e) => {
                if !self.failing {
                    self.failing = true;
                    log::warn!(
                        "{}: cannot reconnect ({e}); retrying every second",
                        self.describe()
                    );
                }
            }
        }
    }
}

impl ByteSource for UnixSource {
    fn describe(&self) -> String {
        format!("unix:{}", self.path.display())
    }

    fn read(&mut self, buf: &mut [u8], timeout_ms: u16) -> Result<ReadResult, InputError> {
        let Some(conn) = &self.conn else {
            self.reconnect(timeout_ms);
            return Ok(ReadResult::Timeout);
        };
        match poll_read(conn.as_fd(), buf, timeout_ms) {
            Ok(ReadResult::Eof) | Err(_) => {
                log::warn!(
                    "{}: the server closed the connection; reconnecting",
                    self.describe()
                );
                self.conn = None;
                self.last_attempt = clock::monotonic_ns();
                Ok(ReadResult::Timeout)
            }
            Ok(r) => Ok(r),
        }
    }
}
