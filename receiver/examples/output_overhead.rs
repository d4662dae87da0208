//! Prints what the output path costs per second of audio (48 kHz stereo): CPU time of the
//! calling thread spent in the virtual DAC (real time, 3 s, with its log) and in the ALSA write
//! path through the `null` PCM (not paced: 20 s of audio as fast as it goes), per device format.
//!
//! `cargo run --release -p wavesync-receiver --example output_overhead`

use std::time::{Duration, Instant};

use wavesync_receiver::output::alsa::{AlsaConfig, AlsaOutput};
use wavesync_receiver::output::virtual_dac::{VirtualConfig, VirtualDac};
use wavesync_receiver::output::{DeviceFormat, Output, OutputError, WriteMeta};

const RATE: u32 = 48_000;

fn thread_cpu_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// Runs the playback loop pattern for `audio_s` seconds of audio; returns (CPU ns, wall s,
/// writes).
fn run(out: &mut dyn Output, audio_s: f64) -> Result<(i64, f64, u64), OutputError> {
    let info = out.open(RATE, 2)?;
    let buf: Vec<f32> = (0..info.buffer_frames * 2)
        .map(|i| ((i / 2) as f32 * 0.03).sin() * 0.5)
        .collect();
    let total = (audio_s * RATE as f64) as usize;
    let mut written = 0;
    let mut writes = 0;
    let cpu0 = thread_cpu_ns();
    let t0 = Instant::now();
    while written < total {
        out.wait(100)?;
        let t = out.timing()?;
        let n = t.avail_frames.min(info.buffer_frames);
        let meta = WriteMeta {
            stream_position: Some(written as f64),
            audio_start: None,
        };
        written += out.write(&buf[..n * 2], &meta)?;
        writes += 1;
    }
    let cpu = thread_cpu_ns() - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    out.close();
    Ok((cpu, wall, writes))
}

fn report(name: &str, audio_s: f64, r: Result<(i64, f64, u64), OutputError>) {
    match r {
        Ok((cpu, wall, writes)) => println!(
            "{name:<34} {:>8.1} us CPU per s of audio ({:>6.3} % of a core in real time), \
             {:>7.2} us per write, {writes} writes in {wall:.2} s",
            cpu as f64 / 1e3 / audio_s,
            cpu as f64 / 1e9 / audio_s * 100.0,
            cpu as f64 / 1e3 / writes.max(1) as f64,
        ),
        Err(e) => println!("{name:<34} failed: {e}"),
    }
}

fn main() {
    let log = std::env::temp_dir().join(format!("wavesync-overhead-{}.log", std::process::id()));
    let mut dac = VirtualDac::new(VirtualConfig {
        log: Some(log.clone()),
        ..VirtualConfig::default()
    });
    report("virtual DAC (5 ms periods, log)", 3.0, run(&mut dac, 3.0));
    let _ = std::fs::remove_file(&log);
    let mut dac = VirtualDac::new(VirtualConfig {
        coarse: true,
        ..VirtualConfig::default()
    });
    report("virtual DAC (coarse, no log)", 3.0, run(&mut dac, 3.0));
    for f in DeviceFormat::PREFERENCE {
        let mut alsa = AlsaOutput::new(AlsaConfig {
            device: "null".into(),
            format: Some(f),
            ..AlsaConfig::default()
        });
        report(
            &format!("ALSA null, {f} (convert + writei)"),
            20.0,
            run(&mut alsa, 20.0),
        );
    }
    std::thread::sleep(Duration::from_millis(1));
}
