//! The ALSA output through alsa-lib PCMs that need no hardware: `null` (opens, negotiates,
//! takes writes; its delay is meaningless) and `file` (the bytes reach the file exactly).
#![cfg(feature = "alsa")]

#[path = "../../test-support/skip.rs"]
mod skip;

use std::path::PathBuf;

use wavesync_receiver::output::alsa::{playback_devices, AlsaConfig, AlsaOutput};
use wavesync_receiver::output::{DeviceFormat, Output, OutputError, WriteMeta};

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("wavesync-alsa-test-{}-{name}", std::process::id()))
}

/// Removes the files it holds when dropped (also when a test fails).
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[test]
fn output_alsa_null_opens_negotiates_and_writes() {
    let mut out = AlsaOutput::new(AlsaConfig {
        device: "null".into(),
        ..AlsaConfig::default()
    });
    let info = out.open(44_100, 2).expect("open null");
    eprintln!("null: {info}");
    assert_eq!(info.rate, 44_100);
    assert_eq!(info.device_channels, 2);
    // The first preferred format the null PCM takes.
    assert_eq!(info.device_format, DeviceFormat::S32Le);
    // 5 ms at 44.1 kHz, 4 periods (alsa-lib may round to what the plugin allows).
    assert!((200..=240).contains(&info.period_frames), "{info}");
    assert!(info.buffer_frames >= 3 * info.period_frames, "{info}");
    let buf = vec![0.25f32; info.period_frames * 2];
    let mut written = 0;
    for _ in 0..100 {
        out.wait(100).expect("wait");
        out.timing().expect("timing"); // meaningless on null, but must not fail
        written += out.write(&buf, &WriteMeta::default()).expect("write");
    }
    assert!(written >= info.buffer_frames, "wrote {written}");
    out.close();
    assert!(matches!(out.timing(), Err(OutputError::NotOpen)));
}

#[test]
fn output_alsa_file_pcm_is_byte_exact() {
    let path = temp_path("out.raw");
    let _cleanup = Cleanup(vec![path.clone()]);
    let mut out = AlsaOutput::new(AlsaConfig {
        device: format!("file:'{}',raw", path.display()),
        format: Some(DeviceFormat::S16Le),
        ..AlsaConfig::default()
    });
    let info = out.open(48_000, 2).expect("open file PCM");
    assert_eq!(info.device_format, DeviceFormat::S16Le);
    // Every 16-bit value in order, as f32: the file must hold them back exactly.
    let samples: Vec<f32> = (0..=u16::MAX)
        .map(|v| (v as i16) as f32 / 32_768.0)
        .chain((0..1000).map(|i| ((i as f32) * 0.01).sin() * 0.5))
        .collect();
    let mut off = 0;
    let mut stuck = 0;
    while off < samples.len() {
        out.wait(100).expect("wait");
        let t = out.timing().expect("timing");
        let end = (off + t.avail_frames.max(1) * 2).min(samples.len());
        let n = out
            .write(&samples[off..end], &WriteMeta::default())
            .expect("write");
        stuck = if n == 0 { stuck + 1 } else { 0 };
        assert!(stuck < 100, "the file PCM stopped taking frames");
        off += n * 2;
    }
    out.close();
    let bytes = std::fs::read(&path).expect("read the file");
    let expect: Vec<u8> = samples
        .iter()
        .flat_map(|s| ((s * 32_768.0).round() as i16).to_le_bytes())
        .collect();
    assert_eq!(bytes.len(), expect.len());
    assert!(bytes == expect, "file content differs");
}

#[test]
fn output_alsa_errors_are_typed() {
    let mut out = AlsaOutput::new(AlsaConfig {
        device: "wavesync_no_such_pcm".into(),
        ..AlsaConfig::default()
    });
    let e = out.open(48_000, 2).expect_err("no such PCM");
    assert!(matches!(e, OutputError::Open { .. }), "{e}");
    assert!(!e.is_recoverable());
    let n = playback_devices().expect("hint list").len() as u32;
    let mut out = AlsaOutput::new(AlsaConfig {
        device_index: Some(n + 5),
        ..AlsaConfig::default()
    });
    let e = out.open(48_000, 2).expect_err("index past the list");
    assert!(
        matches!(e, OutputError::NoSuchIndex { found, .. } if found == n as usize),
        "{e}"
    );
    // Parameters are checked before any device is touched.
    let mut out = AlsaOutput::new(AlsaConfig {
        device: "null".into(),
        period_ms: 0.0,
        ..AlsaConfig::default()
    });
    assert!(matches!(
        out.open(48_000, 2),
        Err(OutputError::BadParameter { .. })
    ));
}

#[test]
fn output_alsa_device_index_opens_the_hint_list_entry() {
    let list = playback_devices().expect("hint list");
    eprintln!("playback devices: {list:#?}");
    let Some(i) = list.iter().position(|h| h.name == "null") else {
        skip::skip_or_fail("no `null` entry in the ALSA hint list here");
        return;
    };
    let mut out = AlsaOutput::new(AlsaConfig {
        device_index: Some(i as u32),
        ..AlsaConfig::default()
    });
    let info = out.open(48_000, 2).expect("open by index");
    assert_eq!(info.device, "null");
}
