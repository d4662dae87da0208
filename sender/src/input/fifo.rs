//! `fifo:PATH` and `-`: raw PCM from a named pipe, a plain file or standard input.
//!
//! A named pipe is opened for reading *and* writing, so opening does not wait for a writer and
//! writers may come and go without ending the input (a pause is a stall). A plain file, or
//! standard input, ends at its end.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use super::stream::{poll_read, ByteSource, ReadResult};
use super::InputError;

enum Source {
    File(File),
    Stdin(std::io::Stdin),
}

/// A pipe, file or standard input.
pub struct PipeSource {
    what: String,
    src: Source,
}

impl PipeSource {
    /// Opens `path`: a named pipe (never ends) or a plain file (ends at its end).
    pub fn open(path: &Path) -> Result<Self, InputError> {
        let what = format!("fifo:{}", path.display());
        let open_err = |source: std::io::Error| {
            let hint = if source.kind() == std::io::ErrorKind::NotFound {
                "; create the pipe with mkfifo first"
            } else {
                ""
            };
            InputError::Open {
                what: what.clone(),
                source,
                hint,
            }
        };
        let meta = std::fs::metadata(path).map_err(open_err)?;
        let ft = meta.file_type();
        let file = if ft.is_fifo() {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(open_err)?
        } else if ft.is_file() || ft.is_char_device() {
            File::open(path).map_err(open_err)?
        } else if ft.is_socket() {
            return Err(InputError::Format {
                what,
                why: "is a unix socket: use unix:PATH".into(),
            });
        } else {
            return Err(InputError::Format {
                what,
                why: "is not a pipe or a file".into(),
            });
        };
        Ok(PipeSource {
            what,
            src: Source::File(file),
        })
    }

    /// Standard input.
    pub fn stdin() -> Self {
        PipeSource {
            what: "stdin".into(),
            src: Source::Stdin(std::io::stdin()),
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match &self.src {
            Source::File(f) => f.as_fd(),
            Source::Stdin(s) => s.as_fd(),
        }
    }
}

impl ByteSource for PipeSource {
    fn describe(&self) -> String {
        self.what.clone()
    }

    fn read(&mut self, buf: &mut [u8], timeout_ms: u16) -> Result<ReadResult, InputError> {
        poll_read(self.fd(), buf, timeout_ms).map_err(|source| InputError::Read {
            what: self.what.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::stream::RawStream;
    use crate::input::{Block, Input, InputOptions};

    fn tmp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("wavesync-sender-{}-{name}", std::process::id()))
    }

    #[test]
    fn a_plain_file_is_read_exactly_at_real_time_pace_and_ends() {
        let p = tmp("raw.pcm");
        // 0.2 s of stereo s16le at 8 kHz.
        let samples: Vec<i16> = (0..3200).map(|i| (i * 9 - 14_000) as i16).collect();
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        std::fs::write(&p, &bytes).unwrap();
        let opts = InputOptions {
            rate: Some(8_000),
            block_ns: 10_000_000,
            ..InputOptions::default()
        };
        let mut input = RawStream::new(PipeSource::open(&p).unwrap(), &opts, 48_000).unwrap();
        let mut buf = vec![0f32; 4096];
        let mut got = Vec::new();
        let mut stamps = Vec::new();
        let start = wavesync_net::clock::monotonic_ns();
        loop {
            match input.next_block(&mut buf).unwrap() {
                Block::Audio { capture, frames } => {
                    got.extend_from_slice(&buf[..frames * 2]);
                    stamps.push((capture, frames));
                }
                Block::Idle => {}
                Block::End => break,
            }
        }
        let took = wavesync_net::clock::monotonic_ns() - start;
        let expect: Vec<f32> = samples.iter().map(|&s| s as f32 / 32_768.0).collect();
        assert_eq!(got, expect);
        // The file is a backlog: read at real-time pace (0.2 s less the first block and the slack).
        assert!(took >= 185_000_000, "{took}");
        for w in stamps.windows(2) {
            let step = wavesync_common::time::frames_to_ns(w[0].1 as i64, 8_000);
            assert!((w[1].0 - w[0].0 - step).abs() < 1_000, "{w:?}");
        }
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn a_missing_pipe_says_how_to_make_one() {
        let e = PipeSource::open(Path::new("/nonexistent/wavesync.fifo"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("mkfifo"), "{e}");
    }
}
