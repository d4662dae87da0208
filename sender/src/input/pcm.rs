//! Raw PCM sample formats of pipe and socket inputs, decoded to `f32`.

use std::str::FromStr;

/// A raw PCM sample format (interleaved, no header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawFormat {
    /// Signed 16-bit little-endian (PulseAudio `s16le`, the default).
    S16Le,
    /// Signed 16-bit big-endian.
    S16Be,
    /// Signed 24-bit little-endian packed in 3 bytes.
    S24Le,
    /// Signed 32-bit little-endian.
    S32Le,
    /// 32-bit float little-endian.
    F32Le,
}

impl RawFormat {
    /// Bytes of one sample.
    pub fn bytes(self) -> usize {
        match self {
            RawFormat::S16Le | RawFormat::S16Be => 2,
            RawFormat::S24Le => 3,
            RawFormat::S32Le | RawFormat::F32Le => 4,
        }
    }

    /// The name as written on the command line.
    pub fn name(self) -> &'static str {
        match self {
            RawFormat::S16Le => "s16le",
            RawFormat::S16Be => "s16be",
            RawFormat::S24Le => "s24le",
            RawFormat::S32Le => "s32le",
            RawFormat::F32Le => "f32le",
        }
    }

    /// Decodes whole samples of `bytes` into `out`; returns how many it wrote (the smaller of
    /// what `bytes` holds and what `out` has room for).
    pub fn decode(self, bytes: &[u8], out: &mut [f32]) -> usize {
        let n = (bytes.len() / self.bytes()).min(out.len());
        let chunks = bytes.chunks_exact(self.bytes());
        for (o, b) in out[..n].iter_mut().zip(chunks) {
            *o = match self {
                RawFormat::S16Le => i16::from_le_bytes([b[0], b[1]]) as f32 / 32_768.0,
                RawFormat::S16Be => i16::from_be_bytes([b[0], b[1]]) as f32 / 32_768.0,
                RawFormat::S24Le => {
                    (i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) as f32 / 8_388_608.0
                }
                RawFormat::S32Le => {
                    (i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64 / 2_147_483_648.0) as f32
                }
                RawFormat::F32Le => {
                    let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    if v.is_finite() {
                        v.clamp(-1.0, 1.0)
                    } else {
                        0.0
                    }
                }
            };
        }
        n
    }
}

impl FromStr for RawFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "s16le" | "s16" => RawFormat::S16Le,
            "s16be" => RawFormat::S16Be,
            "s24le" | "s24" | "s24-3le" => RawFormat::S24Le,
            "s32le" | "s32" => RawFormat::S32Le,
            "f32le" | "f32" | "float32le" => RawFormat::F32Le,
            _ => {
                return Err(format!(
                    "unknown sample format {s:?} (expected s16le, s16be, s24le, s32le or f32le)"
                ))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wavesync_common::sample::f32_to_i16;

    #[test]
    fn every_format_decodes_known_values() {
        let mut out = [0f32; 4];
        assert_eq!(
            RawFormat::S16Le.decode(&[0x00, 0x80, 0xff, 0x7f, 0x01], &mut out),
            2
        );
        assert_eq!(out[..2], [-1.0, 32_767.0 / 32_768.0]);
        RawFormat::S16Be.decode(&[0x40, 0x00], &mut out);
        assert_eq!(out[0], 0.5);
        RawFormat::S24Le.decode(&[0x00, 0x00, 0xc0], &mut out);
        assert_eq!(out[0], -0.5);
        RawFormat::S32Le.decode(&[0, 0, 0, 0x40], &mut out);
        assert_eq!(out[0], 0.5);
        let mut b = Vec::new();
        for v in [0.25f32, f32::NAN, 7.0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(RawFormat::F32Le.decode(&b, &mut out), 3);
        assert_eq!(out[..3], [0.25, 0.0, 1.0]);
        assert_eq!("S24LE".parse::<RawFormat>().unwrap(), RawFormat::S24Le);
        assert!("u8".parse::<RawFormat>().is_err());
    }

    #[test]
    fn s16_survives_the_round_trip_to_the_wire_exactly() {
        let mut out = [0f32; 1];
        for v in i16::MIN..=i16::MAX {
            RawFormat::S16Le.decode(&v.to_le_bytes(), &mut out);
            assert_eq!(f32_to_i16(out[0]), v);
        }
    }
}
