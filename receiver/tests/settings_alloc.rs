//! The room's settings on the output thread never allocate: reading them from the atomic cell,
//! and the mixer's channel map and ramped gain on every buffer.

use wavesync_common::wire::report::{Channels, Settings};
use wavesync_receiver::settings::{Mixer, SettingsCell};

#[path = "../../test-support/alloc_count.rs"]
mod alloc_count;

#[global_allocator]
static ALLOC: alloc_count::Counting = alloc_count::Counting;

#[test]
fn reading_and_applying_settings_never_allocates() {
    assert_eq!(alloc_count::count(|| vec![0u8; 10].len()).1, 1);
    let cell = SettingsCell::new(Settings::default());
    let mut mixer = Mixer::new(&cell.load(), 48_000);
    let mut buf = vec![0.25f32; 2 * 256];
    let changes = [
        Settings {
            volume: 50,
            ..Settings::default()
        },
        Settings {
            channels: Channels::Mono,
            muted: true,
            ..Settings::default()
        },
        Settings {
            channels: Channels::Right,
            off: true,
            trim_us: 1500,
            ..Settings::default()
        },
    ];
    let (_, allocs) = alloc_count::count(|| {
        for s in changes {
            cell.store(s);
            for _ in 0..10 {
                let now = cell.load();
                mixer.set(&now);
                mixer.process(&mut buf, 2);
            }
        }
    });
    assert_eq!(allocs, 0);
    assert_eq!(mixer.gain(), 0.0);
}
