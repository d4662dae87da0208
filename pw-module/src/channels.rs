//! Channel position names (`FL`, `FR`, `AUX3`, ...) and their SPA ids.

use wavesync_common::channels::{code_of, spa_id, ChannelMap};

/// The SPA channel id of a position name, or `None` for an unknown name (the wire's codes,
/// `wavesync_common::channels`, follow SPA's order for the named positions).
pub fn channel_id(name: &str) -> Option<u32> {
    spa_id(code_of(name)?)
}

/// PipeWire's usual map for `channels` channels when `audio.position` is not given.
pub fn default_positions(channels: usize) -> Vec<String> {
    ChannelMap::default_for(channels).names()
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
