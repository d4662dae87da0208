//! Interleaved f32 -> the device's sample format and channel count.
//!
//! Channel mapping when the device does not take the stream's channel count: a mono stream is
//! copied to every device channel; a multi-channel stream fills the first device channels and
//! leaves the others silent; a device with fewer channels than the stream gets the first
//! channels, except a mono device, which gets the mean of all stream channels.

use std::fmt;

use wavesync_common::sample::{f32_to_i16, f32_to_i24, f32_to_i32};

/// Sample formats the outputs feed a device with (little-endian, as on every ALSA host we
/// target).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceFormat {
    /// 16-bit signed.
    S16Le,
    /// 24-bit signed packed in 3 bytes.
    S24_3Le,
    /// 24-bit signed in the low 3 bytes of 4.
    S24Le,
    /// 32-bit signed.
    S32Le,
    /// 32-bit float.
    FloatLe,
}

impl DeviceFormat {
    /// The order [`crate::output::alsa`] tries formats in: most bits first, float last (a
    /// plug layer converts float again; hardware rarely takes it).
    pub const PREFERENCE: [DeviceFormat; 5] = [
        DeviceFormat::S32Le,
        DeviceFormat::S24_3Le,
        DeviceFormat::S24Le,
        DeviceFormat::S16Le,
        DeviceFormat::FloatLe,
    ];

    /// Bytes of one sample of one channel.
    pub fn bytes(self) -> usize {
        match self {
            DeviceFormat::S16Le => 2,
            DeviceFormat::S24_3Le => 3,
            DeviceFormat::S24Le | DeviceFormat::S32Le | DeviceFormat::FloatLe => 4,
        }
    }

    /// The ALSA name (as `aplay` prints it).
    pub fn alsa_name(self) -> &'static str {
        match self {
            DeviceFormat::S16Le => "S16_LE",
            DeviceFormat::S24_3Le => "S24_3LE",
            DeviceFormat::S24Le => "S24_LE",
            DeviceFormat::S32Le => "S32_LE",
            DeviceFormat::FloatLe => "FLOAT_LE",
        }
    }

    /// Parses an ALSA format name (case-insensitive; `S16`, `S24_3`, `S32`, `FLOAT` also work).
    pub fn from_name(s: &str) -> Option<Self> {
        let u = s.to_ascii_uppercase();
        let u = u.strip_suffix("_LE").unwrap_or(&u);
        Some(match u {
            "S16" => DeviceFormat::S16Le,
            "S24_3" | "S24_3LE" => DeviceFormat::S24_3Le,
            "S24" => DeviceFormat::S24Le,
            "S32" => DeviceFormat::S32Le,
            "FLOAT" | "F32" => DeviceFormat::FloatLe,
            _ => return None,
        })
    }
}

impl fmt::Display for DeviceFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.alsa_name())
    }
}

/// Writes one f32 sample as `format` into `out` (exactly `format.bytes()` long).
#[inline]
fn put(format: DeviceFormat, s: f32, out: &mut [u8]) {
    match format {
        DeviceFormat::S16Le => out.copy_from_slice(&f32_to_i16(s).to_le_bytes()),
        DeviceFormat::S24_3Le => out.copy_from_slice(&f32_to_i24(s).to_le_bytes()[..3]),
        DeviceFormat::S24Le => out.copy_from_slice(&f32_to_i24(s).to_le_bytes()),
        DeviceFormat::S32Le => out.copy_from_slice(&f32_to_i32(s).to_le_bytes()),
        DeviceFormat::FloatLe => out.copy_from_slice(&s.clamp(-1.0, 1.0).to_le_bytes()),
    }
}

/// Converts whole frames of interleaved `samples` (`in_ch` per frame) into `out` as `format`
/// with `out_ch` channels per frame; returns the frames converted (as many as both hold).
pub fn convert(
    samples: &[f32],
    in_ch: usize,
    format: DeviceFormat,
    out_ch: usize,
    out: &mut [u8],
) -> usize {
    if in_ch == 0 || out_ch == 0 {
        return 0;
    }
    let b = format.bytes();
    let frames = (samples.len() / in_ch).min(out.len() / (b * out_ch));
    let ins = samples.chunks_exact(in_ch);
    let outs = out.chunks_exact_mut(b * out_ch);
    for (fin, fout) in ins.zip(outs).take(frames) {
        if in_ch == out_ch {
            for (s, o) in fin.iter().zip(fout.chunks_exact_mut(b)) {
                put(format, *s, o);
            }
        } else if out_ch == 1 {
            let mean = fin.iter().sum::<f32>() / in_ch as f32;
            put(format, mean, fout);
        } else {
            for (c, o) in fout.chunks_exact_mut(b).enumerate() {
                let s = if in_ch == 1 {
                    fin[0]
                } else {
                    fin.get(c).copied().unwrap_or(0.0)
                };
                put(format, s, o);
            }
        }
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s16_same_channels_is_little_endian_and_exact() {
        let s = [-1.0, 32_767.0 / 32_768.0, 1.0 / 32_768.0, 0.0];
        let mut out = [0u8; 8];
        assert_eq!(convert(&s, 2, DeviceFormat::S16Le, 2, &mut out), 2);
        assert_eq!(out, [0x00, 0x80, 0xff, 0x7f, 0x01, 0x00, 0x00, 0x00]);
    }

    #[test]
    fn formats_have_expected_bytes() {
        let mut out = [0u8; 4];
        convert(&[0.5], 1, DeviceFormat::S24_3Le, 1, &mut out[..3]);
        assert_eq!(&out[..3], &[0x00, 0x00, 0x40]);
        convert(&[-0.5], 1, DeviceFormat::S24Le, 1, &mut out);
        assert_eq!(out, (-4_194_304i32).to_le_bytes());
        convert(&[0.25], 1, DeviceFormat::S32Le, 1, &mut out);
        assert_eq!(out, (536_870_912i32).to_le_bytes());
        convert(&[2.0], 1, DeviceFormat::FloatLe, 1, &mut out);
        assert_eq!(out, 1.0f32.to_le_bytes());
    }

    #[test]
    fn channel_mapping() {
        // mono -> stereo duplicates
        let mut out = [0u8; 8];
        assert_eq!(
            convert(&[0.5, -0.5], 1, DeviceFormat::S16Le, 2, &mut out),
            2
        );
        let v: Vec<i16> = out
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(v, [16_384, 16_384, -16_384, -16_384]);
        // stereo -> mono averages
        let mut out = [0u8; 2];
        convert(&[0.5, 0.0], 2, DeviceFormat::S16Le, 1, &mut out);
        assert_eq!(i16::from_le_bytes(out), 8_192);
        // stereo -> 4 channels: extra channels silent
        let mut out = [0xffu8; 8];
        convert(&[0.5, 0.25], 2, DeviceFormat::S16Le, 4, &mut out);
        assert_eq!(out, [0x00, 0x40, 0x00, 0x20, 0, 0, 0, 0]);
    }

    #[test]
    fn converts_only_whole_frames_that_fit() {
        let mut out = [0u8; 6];
        assert_eq!(convert(&[0.0; 5], 2, DeviceFormat::S16Le, 2, &mut out), 1);
        assert_eq!(
            convert(&[0.0; 8], 2, DeviceFormat::S16Le, 2, &mut [0u8; 16]),
            4
        );
        assert_eq!(convert(&[0.0; 8], 0, DeviceFormat::S16Le, 2, &mut out), 0);
    }

    #[test]
    fn names_round_trip() {
        for f in DeviceFormat::PREFERENCE {
            assert_eq!(DeviceFormat::from_name(f.alsa_name()), Some(f));
        }
        assert_eq!(DeviceFormat::from_name("s16"), Some(DeviceFormat::S16Le));
        assert_eq!(DeviceFormat::from_name("U8"), None);
    }
}
