//! Channel positions end to end (issue 16): a 5.1 stream in the master's order (PipeWire's and
//! the module's: FL FR FC LFE RL RR), each channel told apart by its level, announced in the
//! status message, played by the receiver daemon through ALSA into a `type file` PCM: the
//! file must hold the channels in ALSA's order (FL FR RL RR FC LFE), each where it belongs.
//! And a stereo stream whose master says its channels are swapped (FR FL) lands swapped back.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;
use wavesync_common::channels::ChannelMap;
use wavesync_common::format::{SampleFormat, StreamFormat};

/// The raw file's samples as numbers (full scale 1), in the device format the receiver logged.
fn decode(raw: &[u8], format: &str) -> Vec<f64> {
    match format {
        "S16_LE" => raw
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]) as f64 / 32_768.0)
            .collect(),
        "S32_LE" => raw
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64 / 2_147_483_648.0)
            .collect(),
        "FLOAT_LE" => raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
            .collect(),
        "S24_LE" => raw
            .chunks_exact(4)
            .map(|b| {
                ((i32::from_le_bytes([b[0], b[1], b[2], b[3]]) << 8) >> 8) as f64 / 8_388_608.0
            })
            .collect(),
        other => panic!("unexpected device format {other}"),
    }
}

/// Plays `channels` channels announced as `map` into a file PCM; returns each device
/// channel's level relative to device channel 0 (median over the loud frames).
fn levels(tag: &str, channels: u8, map: Option<ChannelMap>) -> Vec<f64> {
    let scratch = Scratch::new(tag);
    let (home, raw) = file_pcm_home(&scratch, "wsfile", "null");
    let g = group(40 + u16::from(channels));
    let sender = TestSender::with(
        g,
        SenderOpts {
            latency_ms: 100,
            format: StreamFormat {
                rate: 48_000,
                channels,
                sample: SampleFormat::L16,
            },
            channel_map: map,
            distinct_channels: true,
            ..SenderOpts::default()
        },
    );
    let log = scratch.path("rx.err");
    let mut rx = RxProcess(
        Command::new(env!("CARGO_BIN_EXE_wavesync-receiver"))
            .env("HOME", &home)
            .env("RUST_LOG", "info")
            .env("STATE_DIRECTORY", &scratch.0)
            .args(["--listen", &g.to_string(), "--interface", "127.0.0.1"])
            .args([
                "--device",
                "wsfile",
                "--no-drift-correction",
                "--duration",
                "3",
            ])
            .args(["--status-interval", "0", "--status-socket"])
            .arg(scratch.path("rx.sock"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn wavesync-receiver"),
    );
    let status = rx.wait_for(Duration::from_secs(20));
    sender.stop();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()),
        "receiver failed:\n{text}"
    );
    let format = logged_device_format(&text)
        .unwrap_or_else(|| panic!("no device format in the log:\n{text}"));
    let samples = decode(&std::fs::read(&raw).expect("the file PCM wrote"), &format);
    let ch = channels as usize;
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); ch];
    for f in samples.chunks_exact(ch) {
        if f[0].abs() > 0.02 {
            for (d, r) in ratios.iter_mut().enumerate() {
                r.push(f[d] / f[0]);
            }
        }
    }
    assert!(
        ratios[0].len() > 24_000,
        "too little audio reached the file:\n{text}"
    );
    ratios
        .into_iter()
        .map(|mut r| {
            r.sort_by(f64::total_cmp);
            r[r.len() / 2]
        })
        .collect()
}

fn assert_levels(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (d, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() < 0.01,
            "device channel {d}: level {g:.3}, want {w} ({got:?})"
        );
    }
}

#[test]
fn channels_reach_alsa_where_the_master_meant_them() {
    // Stream channel c has level (c + 1) / 8 and sign + for even c: FL 1, FR -2, FC 3, LFE -4,
    // RL 5, RR -6 (in eighths). ALSA's order is FL FR RL RR FC LFE.
    let got = levels("chmap51", 6, Some(ChannelMap::default_for(6)));
    assert_levels(&got, &[1.0, -2.0, 5.0, -6.0, 3.0, -4.0]);
    // Without a map in the status message the stream is in the same default order.
    let got = levels("chmap51n", 6, None);
    assert_levels(&got, &[1.0, -2.0, 5.0, -6.0, 3.0, -4.0]);
    // A stereo stream whose master says its channels are swapped: stream channel 0 (level 1)
    // is FR, channel 1 (level -2) is FL, so the device's FR is -1/2 of its FL.
    let got = levels("chmapsw", 2, ChannelMap::from_names(&["FR", "FL"]));
    assert_levels(&got, &[1.0, -0.5]);
}
