//! Conversions between wire samples (L16/L24 big-endian) and the `f32` samples used inside.
//!
//! Inside WaveSync audio is interleaved `f32` in [-1.0, 1.0). Every 16- and 24-bit value is
//! exactly representable, so wire -> f32 -> wire is lossless when nothing changed the samples.

use crate::format::SampleFormat;

const SCALE16: f32 = 32_768.0;
const SCALE24: f32 = 8_388_608.0;

/// Decodes `payload` (whole samples of `format`) into `out`; returns how many samples it wrote
/// (the smaller of what `payload` holds and what `out` has room for).
pub fn wire_to_f32(format: SampleFormat, payload: &[u8], out: &mut [f32]) -> usize {
    match format {
        SampleFormat::L16 => {
            let mut n = 0;
            for (o, b) in out.iter_mut().zip(payload.chunks_exact(2)) {
                *o = i16::from_be_bytes([b[0], b[1]]) as f32 / SCALE16;
                n += 1;
            }
            n
        }
        SampleFormat::L24 => {
            let mut n = 0;
            for (o, b) in out.iter_mut().zip(payload.chunks_exact(3)) {
                let v = i32::from_be_bytes([b[0], b[1], b[2], 0]) >> 8;
                *o = v as f32 / SCALE24;
                n += 1;
            }
            n
        }
    }
}

/// Encodes `samples` into `out` as `format`, clamping to the format's range; returns the bytes
/// written (whole samples only, as many as fit).
pub fn f32_to_wire(format: SampleFormat, samples: &[f32], out: &mut [u8]) -> usize {
    match format {
        SampleFormat::L16 => {
            let mut n = 0;
            for (s, b) in samples.iter().zip(out.chunks_exact_mut(2)) {
                b.copy_from_slice(&f32_to_i16(*s).to_be_bytes());
                n += 2;
            }
            n
        }
        SampleFormat::L24 => {
            let mut n = 0;
            for (s, b) in samples.iter().zip(out.chunks_exact_mut(3)) {
                let v = f32_to_i24(*s).to_be_bytes();
                b.copy_from_slice(&v[1..4]);
                n += 3;
            }
            n
        }
    }
}

/// Rounds and clamps an `f32` sample to 16 bits.
pub fn f32_to_i16(s: f32) -> i16 {
    (s * SCALE16).round().clamp(-32_768.0, 32_767.0) as i16
}

/// Rounds and clamps an `f32` sample to 24 bits (in an `i32`).
pub fn f32_to_i24(s: f32) -> i32 {
    (s * SCALE24).round().clamp(-8_388_608.0, 8_388_607.0) as i32
}

/// Rounds and clamps an `f32` sample to 32 bits.
pub fn f32_to_i32(s: f32) -> i32 {
    ((s as f64) * 2_147_483_648.0)
        .round()
        .clamp(-2_147_483_648.0, 2_147_483_647.0) as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn l16_extremes() {
        let bytes = [0x80, 0x00, 0x7f, 0xff, 0x00, 0x01];
        let mut f = [0.0; 3];
        assert_eq!(wire_to_f32(SampleFormat::L16, &bytes, &mut f), 3);
        assert_eq!(f, [-1.0, 32_767.0 / 32_768.0, 1.0 / 32_768.0]);
        let mut back = [0u8; 6];
        assert_eq!(f32_to_wire(SampleFormat::L16, &f, &mut back), 6);
        assert_eq!(back, bytes);
        // Out-of-range input clamps instead of wrapping.
        assert_eq!(f32_to_i16(1.5), 32_767);
        assert_eq!(f32_to_i24(-2.0), -8_388_608);
    }

    #[test]
    fn odd_lengths_convert_whole_samples_only() {
        let mut f = [0.0; 4];
        assert_eq!(wire_to_f32(SampleFormat::L24, &[1, 2, 3, 4, 5], &mut f), 1);
        let mut out = [0u8; 5];
        assert_eq!(
            f32_to_wire(SampleFormat::L16, &[0.5, 0.5, 0.5], &mut out),
            4
        );
    }

    proptest! {
        #[test]
        fn l16_round_trip(v in proptest::collection::vec(any::<i16>(), 0..64)) {
            let bytes: Vec<u8> = v.iter().flat_map(|s| s.to_be_bytes()).collect();
            let mut f = vec![0.0; v.len()];
            wire_to_f32(SampleFormat::L16, &bytes, &mut f);
            let mut back = vec![0u8; bytes.len()];
            f32_to_wire(SampleFormat::L16, &f, &mut back);
            prop_assert_eq!(back, bytes);
        }

        #[test]
        fn l24_round_trip(v in proptest::collection::vec(-8_388_608i32..8_388_608, 0..64)) {
            let bytes: Vec<u8> = v.iter().flat_map(|s| s.to_be_bytes()[1..4].to_vec()).collect();
            let mut f = vec![0.0; v.len()];
            wire_to_f32(SampleFormat::L24, &bytes, &mut f);
            let mut back = vec![0u8; bytes.len()];
            f32_to_wire(SampleFormat::L24, &f, &mut back);
            prop_assert_eq!(back, bytes);
        }
    }
}
