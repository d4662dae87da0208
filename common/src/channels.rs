//! Channel positions: which loudspeaker each interleaved channel of a stream is for (`FL`, `FR`,
//! `FC`, `LFE`, ..., `AUX0`..`AUX63`), as the status message carries them (docs/wire.md), so
//! the master's order and every output's agree.
//!
//! Codes on the wire: the named positions in PipeWire's (SPA's) order from `MONO` = 2 to
//! `BRC` = 37, `AUXn` = 128 + n, 0 for "no position". Without a map in the status message a
//! stream has [`ChannelMap::default_for`] its channel count: PipeWire's usual layout (`FL FR
//! FC LFE RL RR SL SR` for 7.1), which is also WAVE's and SMPTE's order.

/// The named positions in code order, starting at code [`FIRST_NAMED`].
const NAMED: &[&str] = &[
    "MONO", "FL", "FR", "FC", "LFE", "SL", "SR", "FLC", "FRC", "RC", "RL", "RR", "TC", "TFL",
    "TFC", "TFR", "TRL", "TRC", "TRR", "RLC", "RRC", "FLW", "FRW", "LFE2", "FLH", "FCH", "FRH",
    "TFLC", "TFRC", "TSL", "TSR", "LLFE", "RLFE", "BC", "BLC", "BRC",
];
/// Code of `MONO`, the first named position (SPA's id too).
pub const FIRST_NAMED: u8 = 2;
/// Code of `AUX0`.
pub const FIRST_AUX: u8 = 128;
/// Most channels a map holds (`AUX0`..`AUX63` are the unnamed ones).
pub const MAX: usize = 64;

/// A position's code from its name (`FL`, `aux3`, ...), `None` for an unknown name.
pub fn code_of(name: &str) -> Option<u8> {
    if let Some(i) = NAMED.iter().position(|n| n.eq_ignore_ascii_case(name)) {
        return Some(FIRST_NAMED + i as u8);
    }
    let n: u8 = name
        .to_ascii_uppercase()
        .strip_prefix("AUX")?
        .parse()
        .ok()?;
    ((n as usize) < MAX).then_some(FIRST_AUX + n)
}

/// A code's name (`"AUX3"` for 131); `None` for 0 or an unknown code.
pub fn name_of(code: u8) -> Option<String> {
    if code >= FIRST_AUX && ((code - FIRST_AUX) as usize) < MAX {
        return Some(format!("AUX{}", code - FIRST_AUX));
    }
    let i = code.checked_sub(FIRST_NAMED)? as usize;
    NAMED.get(i).map(|s| s.to_string())
}

/// PipeWire's (SPA's) channel id of a code: the same number for named positions, 4096 + n for
/// `AUXn`; `None` for 0 or an unknown code.
pub fn spa_id(code: u8) -> Option<u32> {
    name_of(code)?;
    Some(if code >= FIRST_AUX {
        4096 + u32::from(code - FIRST_AUX)
    } else {
        u32::from(code)
    })
}

/// The positions of a stream's channels, in order.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelMap {
    codes: [u8; MAX],
    len: u8,
}

impl ChannelMap {
    /// PipeWire's usual layout for `channels` (1..=64; more are cut to 64): MONO; FL FR;
    /// FL FR LFE; FL FR RL RR; FL FR FC RL RR; FL FR FC LFE RL RR; FL FR FC LFE RL RR SL SR;
    /// otherwise AUX0.. .
    pub fn default_for(channels: usize) -> ChannelMap {
        let named: &[&str] = match channels {
            1 => &["MONO"],
            2 => &["FL", "FR"],
            3 => &["FL", "FR", "LFE"],
            4 => &["FL", "FR", "RL", "RR"],
            5 => &["FL", "FR", "FC", "RL", "RR"],
            6 => &["FL", "FR", "FC", "LFE", "RL", "RR"],
            8 => &["FL", "FR", "FC", "LFE", "RL", "RR", "SL", "SR"],
            _ => &[],
        };
        let n = channels.min(MAX);
        let mut codes = [0u8; MAX];
        for (i, c) in codes.iter_mut().enumerate().take(n) {
            *c = match named.get(i) {
                Some(name) => code_of(name).unwrap_or(0),
                None => FIRST_AUX + i as u8,
            };
        }
        ChannelMap {
            codes,
            len: n as u8,
        }
    }

    /// ALSA's standard order for `channels` where it differs from [`Self::default_for`]
    /// (surround40/41/50/51/71: the rear pair before the centre and LFE), else the default.
    pub fn alsa_order(channels: usize) -> ChannelMap {
        let named: &[&str] = match channels {
            5 => &["FL", "FR", "RL", "RR", "FC"],
            6 => &["FL", "FR", "RL", "RR", "FC", "LFE"],
            8 => &["FL", "FR", "RL", "RR", "FC", "LFE", "SL", "SR"],
            _ => return ChannelMap::default_for(channels),
        };
        ChannelMap::from_names(named).unwrap_or_else(|| ChannelMap::default_for(channels))
    }

    /// A map of these codes (at most [`MAX`]); `None` when one is 0 or unknown, or one repeats.
    pub fn from_codes(codes: &[u8]) -> Option<ChannelMap> {
        if codes.is_empty() || codes.len() > MAX {
            return None;
        }
        let mut out = [0u8; MAX];
        for (i, &c) in codes.iter().enumerate() {
            name_of(c)?;
            if codes[..i].contains(&c) {
                return None;
            }
            out[i] = c;
        }
        Some(ChannelMap {
            codes: out,
            len: codes.len() as u8,
        })
    }

    /// A map from position names (`["FL", "FR", "FC"]`); `None` as for [`Self::from_codes`].
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Option<ChannelMap> {
        let codes: Option<Vec<u8>> = names.iter().map(|n| code_of(n.as_ref())).collect();
        ChannelMap::from_codes(&codes?)
    }

    /// The codes, one per channel.
    pub fn codes(&self) -> &[u8] {
        &self.codes[..self.len as usize]
    }

    /// Channels in the map.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True for a map of no channels (never built by the constructors).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The names, one per channel.
    pub fn names(&self) -> Vec<String> {
        self.codes()
            .iter()
            .map(|&c| name_of(c).unwrap_or_else(|| "?".into()))
            .collect()
    }

    /// Where each channel of this map goes in `to`: `perm[i]` is the index in `to` of this
    /// map's channel `i`. `None` unless both hold the same positions.
    pub fn permutation_to(&self, to: &ChannelMap) -> Option<[usize; MAX]> {
        if self.len != to.len {
            return None;
        }
        let mut perm = [0usize; MAX];
        for (i, c) in self.codes().iter().enumerate() {
            perm[i] = to.codes().iter().position(|t| t == c)?;
        }
        Some(perm)
    }
}

impl std::fmt::Debug for ChannelMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChannelMap({})", self.names().join(","))
    }
}

impl std::fmt::Display for ChannelMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

/// Reorders interleaved `frames` of `perm.len()`-or-more channels in place: channel `i` of each
/// frame moves to `perm[i]` (from [`ChannelMap::permutation_to`]). `channels` per frame.
pub fn reorder(frames: &mut [f32], channels: usize, perm: &[usize; MAX]) {
    if channels == 0 || channels > MAX {
        return;
    }
    let mut tmp = [0f32; MAX];
    for f in frames.chunks_exact_mut(channels) {
        tmp[..channels].copy_from_slice(f);
        for (i, v) in tmp[..channels].iter().enumerate() {
            f[perm[i]] = *v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_codes_round_trip() {
        assert_eq!(code_of("MONO"), Some(2));
        assert_eq!(code_of("fl"), Some(3));
        assert_eq!(code_of("LFE"), Some(6));
        assert_eq!(code_of("RR"), Some(13));
        assert_eq!(code_of("BRC"), Some(37));
        assert_eq!(code_of("AUX63"), Some(191));
        assert_eq!(code_of("AUX64"), None);
        assert_eq!(code_of("XX"), None);
        for c in 0..=255u8 {
            if let Some(n) = name_of(c) {
                assert_eq!(code_of(&n), Some(c), "{n}");
            }
        }
        assert_eq!(name_of(0), None);
        assert_eq!(name_of(38), None);
    }

    #[test]
    fn defaults_have_one_distinct_position_per_channel() {
        for n in 1..=MAX {
            let m = ChannelMap::default_for(n);
            assert_eq!(m.len(), n);
            assert_eq!(ChannelMap::from_codes(m.codes()), Some(m), "{n}");
        }
        assert_eq!(ChannelMap::default_for(6).to_string(), "FL,FR,FC,LFE,RL,RR");
        assert_eq!(ChannelMap::default_for(200).len(), MAX);
    }

    #[test]
    fn bad_maps_are_refused() {
        assert_eq!(ChannelMap::from_codes(&[]), None);
        assert_eq!(ChannelMap::from_codes(&[3, 3]), None, "a repeated position");
        assert_eq!(ChannelMap::from_codes(&[3, 0]), None, "no position");
        assert_eq!(ChannelMap::from_codes(&[3, 99]), None, "unknown code");
        assert_eq!(ChannelMap::from_names(&["FL", "XX"]), None);
    }

    #[test]
    fn a_5_1_stream_in_smpte_order_lands_in_alsa_order() {
        let smpte = ChannelMap::default_for(6);
        let alsa = ChannelMap::from_names(&["FL", "FR", "RL", "RR", "FC", "LFE"]).expect("map");
        let perm = smpte.permutation_to(&alsa).expect("same positions");
        // One frame whose channels say which position they are for.
        let mut f = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // FL FR FC LFE RL RR
        reorder(&mut f, 6, &perm);
        assert_eq!(f, [1.0, 2.0, 5.0, 6.0, 3.0, 4.0]); // FL FR RL RR FC LFE
        let stereo = ChannelMap::default_for(2);
        assert!(stereo.permutation_to(&alsa).is_none());
        assert!(
            ChannelMap::from_names(&["FL", "FR", "FC", "LFE", "SL", "SR"])
                .expect("map")
                .permutation_to(&alsa)
                .is_none()
        );
    }
}
