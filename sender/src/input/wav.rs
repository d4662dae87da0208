//! `wav:FILE`: a WAV file played in real time (paced on CLOCK_MONOTONIC), optionally looped.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use hound::{SampleFormat as WavSampleFormat, WavReader};

use super::paced::Pacer;
use super::{check_format, Block, Input, InputError, InputFormat, InputOptions};

/// A WAV file input (8/16/24/32-bit integer or 32-bit float PCM).
pub struct WavInput {
    path: PathBuf,
    reader: WavReader<BufReader<File>>,
    format: InputFormat,
    kind: (WavSampleFormat, u16),
    looped: bool,
    block: usize,
    pacer: Pacer,
    loops: u64,
}

impl WavInput {
    /// Opens `path`. `opts.rate`/`opts.channels`, when given, must match the file's (the
    /// sender does not resample).
    pub fn open(path: &Path, opts: &InputOptions) -> Result<Self, InputError> {
        let what = format!("wav:{}", path.display());
        let reader = WavReader::open(path).map_err(|e| match e {
            hound::Error::IoError(source) => InputError::Open {
                what: what.clone(),
                source,
                hint: "",
            },
            other => InputError::Format {
                what: what.clone(),
                why: format!("not a WAV file the sender can read ({other})"),
            },
        })?;
        let spec = reader.spec();
        let supported = matches!(
            (spec.sample_format, spec.bits_per_sample),
            (WavSampleFormat::Int, 8 | 16 | 24 | 32) | (WavSampleFormat::Float, 32)
        );
        if !supported {
            return Err(InputError::Format {
                what,
                why: format!(
                    "{:?} samples of {} bits are not supported (8/16/24/32-bit integer or 32-bit float)",
                    spec.sample_format, spec.bits_per_sample
                ),
            });
        }
        let format = check_format(
            &what,
            InputFormat {
                rate: spec.sample_rate,
                channels: u8::try_from(spec.channels).unwrap_or(0),
            },
        )?;
        if let Some(r) = opts.rate.filter(|&r| r != format.rate) {
            return Err(InputError::Format {
                what,
                why: format!(
                    "the file is {} Hz but --rate {r} was asked (the sender does not resample)",
                    format.rate
                ),
            });
        }
        if let Some(c) = opts.channels.filter(|&c| c != format.channels) {
            return Err(InputError::Format {
                what,
                why: format!(
                    "the file has {} channels but --channels {c} was asked",
                    format.channels
                ),
            });
        }
        if reader.duration() == 0 {
            return Err(InputError::Format {
                what,
                why: "the file holds no audio".into(),
            });
        }
        Ok(WavInput {
            path: path.to_path_buf(),
            kind: (spec.sample_format, spec.bits_per_sample),
            reader,
            format,
            looped: opts.looped,
            block: opts.block_frames(format.rate),
            pacer: Pacer::new(format.rate),
            loops: 0,
        })
    }

    fn what(&self) -> String {
        format!("wav:{}", self.path.display())
    }

    /// Reads up to `out.len()` samples; returns how many.
    fn read(&mut self, out: &mut [f32]) -> Result<usize, InputError> {
        let mut n = 0;
        let path = &self.path;
        macro_rules! take {
            ($t:ty, $scale:expr) => {{
                for (o, s) in out.iter_mut().zip(self.reader.samples::<$t>()) {
                    let v = s.map_err(|e| wav_err(path, e))?;
                    *o = v as f32 / $scale;
                    n += 1;
                }
            }};
        }
        match self.kind {
            (WavSampleFormat::Float, _) => {
                for (o, s) in out.iter_mut().zip(self.reader.samples::<f32>()) {
                    let v = s.map_err(|e| wav_err(path, e))?;
                    *o = if v.is_finite() {
                        v.clamp(-1.0, 1.0)
                    } else {
                        0.0
                    };
                    n += 1;
                }
            }
            (_, 8) => take!(i8, 128.0),
            (_, 16) => take!(i16, 32_768.0),
            (_, 24) => take!(i32, 8_388_608.0),
            _ => {
                for (o, s) in out.iter_mut().zip(self.reader.samples::<i32>()) {
                    let v = s.map_err(|e| wav_err(path, e))?;
                    *o = (v as f64 / 2_147_483_648.0) as f32;
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}

fn wav_err(path: &Path, e: hound::Error) -> InputError {
    let what = format!("wav:{}", path.display());
    match e {
        hound::Error::IoError(source) => InputError::Read { what, source },
        other => InputError::Format {
            what,
            why: other.to_string(),
        },
    }
}

impl Input for WavInput {
    fn describe(&self) -> String {
        format!(
            "{}, {} Hz, {} ch, {:.1} s{}",
            self.what(),
            self.format.rate,
            self.format.channels,
            self.reader.duration() as f64 / self.format.rate as f64,
            if self.looped { ", looped" } else { "" }
        )
    }

    fn format(&self) -> InputFormat {
        self.format
    }

    fn next_block(&mut self, buf: &mut [f32]) -> Result<Block, InputError> {
        let ch = self.format.channels as usize;
        let want = self.block.min(buf.len() / ch) * ch;
        let mut got = self.read(&mut buf[..want])?;
        if got < want && self.looped {
            // Continue from the start within the same block: the stream time goes on.
            self.reader.seek(0).map_err(|e| InputError::Read {
                what: self.what(),
                source: e,
            })?;
            self.loops += 1;
            log::debug!("{}: loop {}", self.what(), self.loops);
            got += self.read(&mut buf[got..want])?;
        }
        let frames = got / ch;
        if frames == 0 {
            return Ok(Block::End);
        }
        let capture = self.pacer.pace(frames);
        Ok(Block::Audio { capture, frames })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_wav(path: &Path, rate: u32, channels: u16, frames: usize) {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: WavSampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for i in 0..frames * channels as usize {
            w.write_sample((i as i16).wrapping_mul(7)).unwrap();
        }
        w.finalize().unwrap();
    }

    fn tmp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("wavesync-sender-{}-{name}", std::process::id()))
    }

    #[test]
    fn samples_come_out_exactly_and_loop_continues_the_time() {
        let p = tmp("loop.wav");
        write_wav(&p, 8_000, 2, 100);
        let opts = InputOptions {
            looped: true,
            block_ns: 10_000_000,
            ..InputOptions::default()
        };
        let mut w = WavInput::open(&p, &opts).unwrap();
        assert_eq!(
            w.format(),
            InputFormat {
                rate: 8_000,
                channels: 2
            }
        );
        let mut buf = vec![0f32; 1000];
        let mut got = Vec::new();
        let mut captures = Vec::new();
        while got.len() < 2 * 250 {
            match w.next_block(&mut buf).unwrap() {
                Block::Audio { capture, frames } => {
                    got.extend_from_slice(&buf[..frames * 2]);
                    captures.push((capture, frames));
                }
                other => panic!("{other:?}"),
            }
        }
        for (i, v) in got.iter().enumerate() {
            let expect = ((i % 200) as i16).wrapping_mul(7) as f32 / 32_768.0;
            assert_eq!(*v, expect, "sample {i}");
        }
        for pair in captures.windows(2) {
            let step = wavesync_common::time::frames_to_ns(pair[0].1 as i64, 8_000);
            assert_eq!(pair[1].0 - pair[0].0, step);
        }
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn without_loop_the_file_ends_and_mismatches_are_refused() {
        let p = tmp("end.wav");
        write_wav(&p, 8_000, 1, 50);
        let mut w = WavInput::open(&p, &InputOptions::default()).unwrap();
        let mut buf = vec![0f32; 1000];
        assert!(matches!(
            w.next_block(&mut buf).unwrap(),
            Block::Audio { frames: 40, .. }
        ));
        assert!(matches!(
            w.next_block(&mut buf).unwrap(),
            Block::Audio { frames: 10, .. }
        ));
        assert_eq!(w.next_block(&mut buf).unwrap(), Block::End);
        let opts = InputOptions {
            rate: Some(48_000),
            ..InputOptions::default()
        };
        let e = WavInput::open(&p, &opts).err().unwrap().to_string();
        assert!(e.contains("the file is 8000 Hz but --rate 48000"), "{e}");
        std::fs::write(&p, b"not a wav file at all").unwrap();
        let e = WavInput::open(&p, &InputOptions::default())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not a WAV file"), "{e}");
        std::fs::remove_file(&p).unwrap();
        let e = WavInput::open(&p, &InputOptions::default())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("No such file"), "{e}");
    }
}
