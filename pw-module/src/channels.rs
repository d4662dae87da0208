//! Channel position names (`FL`, `FR`, `AUX3`, ...) and their SPA ids.

/// SPA's channel names in id order, starting at `SPA_AUDIO_CHANNEL_MONO` (2).
const NAMED: &[&str] = &[
    "MONO", "FL", "FR", "FC", "LFE", "SL", "SR", "FLC", "FRC", "RC", "RL", "RR", "TC", "TFL",
    "TFC", "TFR", "TRL", "TRC", "TRR", "RLC", "RRC", "FLW", "FRW", "LFE2", "FLH", "FCH", "FRH",
    "TFLC", "TFRC", "TSL", "TSR", "LLFE", "RLFE", "BC", "BLC", "BRC",
];
const FIRST_NAMED_ID: u32 = 2;
const FIRST_AUX_ID: u32 = 4096;

/// The SPA channel id of a position name, or `None` for an unknown name.
pub fn channel_id(name: &str) -> Option<u32> {
    if let Some(i) = NAMED.iter().position(|n| n.eq_ignore_ascii_case(name)) {
        return Some(FIRST_NAMED_ID + i as u32);
    }
    let upper = name.to_ascii_uppercase();
    let n: u32 = upper.strip_prefix("AUX")?.parse().ok()?;
    (n < 64).then_some(FIRST_AUX_ID + n)
}

/// PipeWire's usual map for `channels` channels when `audio.position` is not given.
pub fn default_positions(channels: usize) -> Vec<String> {
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
    if named.is_empty() {
        (0..channels).map(|i| format!("AUX{i}")).collect()
    } else {
        named.iter().map(|s| s.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipewire::spa::sys as spa_sys;

    #[test]
    fn ids_match_spa() {
        assert_eq!(channel_id("MONO"), Some(spa_sys::SPA_AUDIO_CHANNEL_MONO));
        assert_eq!(channel_id("FL"), Some(spa_sys::SPA_AUDIO_CHANNEL_FL));
        assert_eq!(channel_id("fr"), Some(spa_sys::SPA_AUDIO_CHANNEL_FR));
        assert_eq!(channel_id("RR"), Some(spa_sys::SPA_AUDIO_CHANNEL_RR));
        assert_eq!(channel_id("BRC"), Some(spa_sys::SPA_AUDIO_CHANNEL_BRC));
        assert_eq!(channel_id("AUX0"), Some(spa_sys::SPA_AUDIO_CHANNEL_AUX0));
        assert_eq!(channel_id("AUX63"), Some(spa_sys::SPA_AUDIO_CHANNEL_AUX63));
        assert_eq!(channel_id("AUX64"), None);
        assert_eq!(channel_id("XX"), None);
    }

    #[test]
    fn defaults_have_one_name_per_channel() {
        for c in 1..=64 {
            let p = default_positions(c);
            assert_eq!(p.len(), c);
            assert!(p.iter().all(|n| channel_id(n).is_some()));
        }
    }
}
