//! Raw PCM from a byte stream (pipe, stdin, unix socket): bytes to frames, stamped by
//! [`LiveClock`], put on CLOCK_MONOTONIC by [`LiveRetimer`].

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::live::LiveClock;
use super::retime::LiveRetimer;
use super::{check_format, Block, Input, InputError, InputFormat, InputOptions, RawFormat};
use wavesync_net::clock;

/// What a read from a byte source got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadResult {
    /// Bytes at the start of the buffer.
    Data(usize),
    /// Nothing within the timeout.
    Timeout,
    /// The source ended for good.
    Eof,
}

/// A stream of raw PCM bytes.
pub trait ByteSource: Send {
    /// What it is (`fifo:/tmp/x`).
    fn describe(&self) -> String;
    /// Waits up to `timeout_ms` for bytes and reads what is there (at most `buf.len()`).
    fn read(&mut self, buf: &mut [u8], timeout_ms: u16) -> Result<ReadResult, InputError>;
}

/// Waits up to `timeout_ms` for `fd` to be readable, then reads once.
pub fn poll_read(fd: BorrowedFd<'_>, buf: &mut [u8], timeout_ms: u16) -> io::Result<ReadResult> {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::from(timeout_ms)) {
        Ok(0) => return Ok(ReadResult::Timeout),
        Ok(_) => {}
        Err(nix::errno::Errno::EINTR) => return Ok(ReadResult::Timeout),
        Err(e) => return Err(e.into()),
    }
    // SAFETY: reads at most buf.len() bytes into buf from an open descriptor.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n > 0 {
        Ok(ReadResult::Data(n as usize))
    } else if n == 0 {
        Ok(ReadResult::Eof)
    } else {
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(ReadResult::Timeout),
            _ => Err(e),
        }
    }
}

/// A raw PCM input over a [`ByteSource`].
pub struct RawStream<S: ByteSource> {
    src: S,
    raw: RawFormat,
    format: InputFormat,
    block: usize,
    bytes: Vec<u8>,
    carry: usize,
    clock: LiveClock,
    retimer: LiveRetimer,
}

impl<S: ByteSource> RawStream<S> {
    /// Reads `src` as `opts.raw_format` at `opts.rate` (else `default_rate`) and
    /// `opts.channels` (else 2).
    pub fn new(src: S, opts: &InputOptions, default_rate: u32) -> Result<Self, InputError> {
        let what = src.describe();
        let format = check_format(&what, opts.format_or(default_rate))?;
        let block = opts.block_frames(format.rate);
        let frame_bytes = opts.raw_format.bytes() * format.channels as usize;
        Ok(RawStream {
            clock: LiveClock::new(&what, format.rate),
            retimer: LiveRetimer::new(&what, format.rate, format.channels as usize, block)
                .enabled(opts.retime),
            src,
            raw: opts.raw_format,
            format,
            block,
            bytes: vec![0; (block + 1) * frame_bytes],
            carry: 0,
        })
    }

    /// The stamping state (for tests and statistics).
    pub fn clock(&self) -> &LiveClock {
        &self.clock
    }

    /// The retiming state (for tests and statistics).
    pub fn retimer(&self) -> &LiveRetimer {
        &self.retimer
    }
}

impl<S: ByteSource> Input for RawStream<S> {
    fn describe(&self) -> String {
        format!(
            "{}, raw {} {} Hz {} ch",
            self.src.describe(),
            self.raw.name(),
            self.format.rate,
            self.format.channels
        )
    }

    fn format(&self) -> InputFormat {
        self.format
    }

    fn next_block(&mut self, buf: &mut [f32]) -> Result<Block, InputError> {
        let ch = self.format.channels as usize;
        let frame_bytes = self.raw.bytes() * ch;
        let max_frames = self
            .block
            .min(self.retimer.input_frames_for(buf.len() / ch));
        let limit = max_frames * frame_bytes;
        if limit <= self.carry {
            return Ok(Block::Idle);
        }
        let got = match self.src.read(&mut self.bytes[self.carry..limit], 100)? {
            ReadResult::Data(n) => n,
            ReadResult::Timeout => {
                self.clock.idle(clock::monotonic_ns());
                return Ok(Block::Idle);
            }
            ReadResult::Eof => return Ok(Block::End),
        };
        let arrival = clock::monotonic_ns();
        let total = self.carry + got;
        let frames = total / frame_bytes;
        let used = frames * frame_bytes;
        self.raw
            .decode(&self.bytes[..used], self.retimer.input(frames));
        self.bytes.copy_within(used..total, 0);
        self.carry = total - used;
        if frames == 0 {
            return Ok(Block::Idle);
        }
        let capture = self.clock.stamp(arrival, frames);
        let (capture, frames) = self.retimer.finish(capture, frames, buf);
        if frames == 0 {
            return Ok(Block::Idle);
        }
        Ok(Block::Audio { capture, frames })
    }
}
