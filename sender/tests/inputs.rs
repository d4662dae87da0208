//! Each input kind through the real binary on loopback: the packets carry the input's samples
//! (bit-exact for 16-bit sources), are stamped exactly `frames / rate` apart within a run, and
//! leave about `latency` before their play time.

mod util;

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::process::Stdio;
use std::time::Duration;

use util::*;
use wavesync_net::clock::monotonic_ns;

const LATENCY_MS: f64 = 150.0;

/// Every packet but the last of each run (those may be flushed late, at a stall or the end)
/// leaves between `latency - 40 ms` and `latency - 5 ms` before it must play: never ahead
/// of real time, never late.
fn check_leads(a: &[Audio]) {
    let leads = leads_ms(a);
    let checked: Vec<f64> = (0..a.len())
        .filter(|&i| i + 1 < a.len() && !a[i + 1].marker)
        .map(|i| leads[i])
        .collect();
    let (lo, hi) = range(&checked);
    eprintln!(
        "{} packets, lead {lo:.1}..{hi:.1} ms at latency {LATENCY_MS}",
        a.len()
    );
    for (i, l) in checked.iter().enumerate() {
        assert!(
            *l > LATENCY_MS - 40.0 && *l < LATENCY_MS - 5.0,
            "packet {i} (not counting run ends) leaves {l:.2} ms before its play time"
        );
    }
}

#[test]
fn tone_packets_carry_the_sine_with_exact_stamps() {
    let rx = listener();
    let mut cmd = sender();
    cmd.args(["--input", "tone:440", "--duration", "1.2"]);
    base(&mut cmd, &rx);
    let (got, status, err) = Running::spawn(cmd).collect(&[&rx], Duration::from_secs(10));
    assert!(status.success(), "{err}");
    let a = audio(&got[0]);
    assert_eq!(check_runs(&a, 48_000, 4), vec![a.len()], "one run");
    // 1.2 s of audio, give or take a packet.
    let frames: usize = a.iter().map(|p| p.payload.len() / 4).sum();
    assert!((57_000..=58_000).contains(&frames), "{frames} frames");
    check_leads(&a);
    let s = statuses(&got[0]);
    assert!(!s.is_empty());
    assert_eq!((s[0].format.rate, s[0].format.channels), (48_000, 2));
    assert_eq!(s[0].latency_ns, 150_000_000);
    // Both channels carry 0.5 * sin(2 pi 440 n / 48000): the generator's frame 0 is silent
    // (sin 0), and silence before a run is not sent, so the stream starts at frame 1.
    let samples = l16(&a);
    for (i, f) in samples.chunks_exact(2).enumerate() {
        let n = 1.0 + i as f64;
        let expect = 0.5 * (std::f64::consts::TAU * 440.0 * n / 48_000.0).sin() * 32_768.0;
        assert!(
            (f[0] as f64 - expect).abs() <= 2.0,
            "frame {i}: {} vs {expect}",
            f[0]
        );
        assert_eq!(f[0], f[1]);
    }
}

fn write_wav(path: &std::path::Path, rate: u32, channels: u16, samples: &[i16]) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for s in samples {
        w.write_sample(*s).unwrap();
    }
    w.finalize().unwrap();
}

#[test]
fn wav_samples_arrive_bit_exact_and_the_sender_ends_with_the_file() {
    let path = tmp("in.wav");
    let samples = test_samples(44_100 * 2, 1); // 1 s stereo
    write_wav(&path, 44_100, 2, &samples);
    let rx = listener();
    let mut cmd = sender();
    cmd.args(["--input", &format!("wav:{}", path.display())]);
    base(&mut cmd, &rx);
    let t0 = monotonic_ns();
    let (got, status, err) = Running::spawn(cmd).collect(&[&rx], Duration::from_secs(10));
    let took = (monotonic_ns() - t0) as f64 / 1e9;
    std::fs::remove_file(&path).unwrap();
    assert!(status.success(), "{err}");
    assert!(err.contains("input ended"), "{err}");
    // Paced in real time: 1 s of audio takes 1 s (plus start-up and the 0.3 s drain here).
    assert!((1.0..3.0).contains(&took), "took {took} s");
    let a = audio(&got[0]);
    assert_eq!(check_runs(&a, 44_100, 4), vec![a.len()]);
    assert_eq!(
        l16(&a),
        samples,
        "every sample, bit-exact, the last partial packet too"
    );
    check_leads(&a);
    assert_eq!(statuses(&got[0])[0].format.rate, 44_100);
}

#[test]
fn a_looped_wav_goes_on_seamlessly_and_l24_keeps_16_bit_samples_exact() {
    let path = tmp("loop.wav");
    let samples = test_samples(48_000, 2); // 0.5 s stereo at 48 kHz
    write_wav(&path, 48_000, 2, &samples);
    let rx = listener();
    let mut cmd = sender();
    cmd.args(["--input", &format!("wav:{}", path.display())])
        .args(["--loop", "--format", "l24", "--duration", "1.3"]);
    base(&mut cmd, &rx);
    let (got, status, err) = Running::spawn(cmd).collect(&[&rx], Duration::from_secs(10));
    std::fs::remove_file(&path).unwrap();
    assert!(status.success(), "{err}");
    let a = audio(&got[0]);
    assert_eq!(
        check_runs(&a, 48_000, 6),
        vec![a.len()],
        "the loop does not start a new run"
    );
    let got24: Vec<i32> = a
        .iter()
        .flat_map(|p| {
            p.payload
                .chunks_exact(3)
                .map(|b| i32::from_be_bytes([b[0], b[1], b[2], 0]) >> 8)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        got24.len() > 2 * samples.len(),
        "more than two passes: {}",
        got24.len()
    );
    for (i, v) in got24.iter().enumerate() {
        assert_eq!(*v, (samples[i % samples.len()] as i32) << 8, "sample {i}");
    }
    check_leads(&a);
}

/// Writes `samples` (s16le) to `w` in bursts of `burst_ms`, each burst when its last frame is
/// due in real time.
fn write_paced(w: &mut impl Write, samples: &[i16], rate: u32, burst_ms: u64) {
    let start = monotonic_ns();
    let per = (rate as u64 * burst_ms / 1000) as usize * 2;
    for (k, chunk) in samples.chunks(per).enumerate() {
        let due = start + ((k + 1) as i64) * burst_ms as i64 * 1_000_000;
        wavesync_net::clock::sleep_until(due);
        let bytes: Vec<u8> = chunk.iter().flat_map(|s| s.to_le_bytes()).collect();
        if w.write_all(&bytes).is_err() {
            return;
        }
    }
}

#[test]
fn fifo_in_bursts_arrives_bit_exact_in_one_smooth_run() {
    let path = tmp("in.fifo");
    mkfifo(&path);
    let samples = test_samples(48_000 * 2 * 3 / 2, 3); // 1.5 s
    let rx = listener();
    // Stop 0.3 s after the last burst: before a stall would be logged.
    let run = Running::spawn(fifo_sender(&path, "1.8", &rx));
    let (p, s) = (path.clone(), samples.clone());
    let writer = std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        // 100 ms bursts: the sender smooths them into real-time stamps.
        write_paced(&mut f, &s, 48_000, 100);
    });
    let (got, status, err) = run.collect(&[&rx], Duration::from_secs(10));
    writer.join().unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(status.success(), "{err}");
    let a = audio(&got[0]);
    assert_eq!(
        check_runs(&a, 48_000, 4),
        vec![a.len()],
        "bursts do not restart the run"
    );
    assert_eq!(l16(&a), samples);
    check_leads(&a);
    assert!(!err.contains("stalled"), "{err}");
}

#[test]
fn stdin_backlog_is_read_at_real_time_pace_bit_exact() {
    let samples = test_samples(48_000 * 2, 4); // 1 s, written at once
    let rx = listener();
    let mut cmd = sender();
    cmd.args(["--input", "-"]).stdin(Stdio::piped());
    base(&mut cmd, &rx);
    let t0 = monotonic_ns();
    let mut run = Running::spawn(cmd);
    let mut stdin = run.child.stdin.take().unwrap();
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&bytes);
    });
    let (got, status, err) = run.collect(&[&rx], Duration::from_secs(10));
    writer.join().unwrap();
    let took = (monotonic_ns() - t0) as f64 / 1e9;
    assert!(status.success(), "{err}");
    assert!(err.contains("input ended"), "{err}");
    assert!(took >= 0.95, "a backlog is not rushed out: took {took} s");
    let a = audio(&got[0]);
    assert_eq!(check_runs(&a, 48_000, 4), vec![a.len()]);
    assert_eq!(l16(&a), samples);
    check_leads(&a);
}

#[test]
fn unix_socket_like_module_simple_protocol_defaults_to_44100_stereo() {
    let path = tmp("music.source");
    let listener_sock = UnixListener::bind(&path).unwrap();
    let samples = test_samples(44_100 * 2, 5); // 1 s
    let s = samples.clone();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener_sock.accept().unwrap();
        // What module-simple-protocol-unix does: raw s16le as the source produces it.
        write_paced(&mut conn, &s, 44_100, 20);
        // Keep the connection open until the sender is done.
        std::thread::sleep(Duration::from_millis(800));
    });
    let rx = listener();
    let mut cmd = sender();
    cmd.args([
        "--input",
        &format!("unix:{}", path.display()),
        "--duration",
        "1.5",
    ]);
    base(&mut cmd, &rx);
    let (got, status, err) = Running::spawn(cmd).collect(&[&rx], Duration::from_secs(10));
    server.join().unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(status.success(), "{err}");
    let st = statuses(&got[0]);
    assert_eq!((st[0].format.rate, st[0].format.channels), (44_100, 2));
    let a = audio(&got[0]);
    assert_eq!(check_runs(&a, 44_100, 4), vec![a.len()]);
    assert_eq!(l16(&a), samples);
    check_leads(&a);
}

#[test]
fn a_stalled_input_pauses_and_restarts_at_real_time_with_one_log_line_each() {
    let path = tmp("stall.fifo");
    mkfifo(&path);
    let part1 = test_samples(48_000, 6); // 0.5 s
    let part2 = test_samples(48_000, 7); // 0.5 s
    let rx = listener();
    let run = Running::spawn(fifo_sender(&path, "2.3", &rx));
    let (p, s1, s2) = (path.clone(), part1.clone(), part2.clone());
    let writer = std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        write_paced(&mut f, &s1, 48_000, 20);
        std::thread::sleep(Duration::from_millis(1_000)); // the stall
        write_paced(&mut f, &s2, 48_000, 20);
    });
    let (got, status, err) = run.collect(&[&rx], Duration::from_secs(10));
    writer.join().unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(status.success(), "{err}");
    assert_eq!(err.matches("input stalled").count(), 1, "{err}");
    assert_eq!(err.matches("input resumed").count(), 1, "{err}");
    let a = audio(&got[0]);
    let runs = check_runs(&a, 48_000, 4);
    assert_eq!(runs.len(), 2, "a new run after the stall: {runs:?}");
    let second = a
        .iter()
        .position(|p| p.marker && p.seq != a[0].seq)
        .unwrap();
    // The new run starts at real time, about a second after the first ended, not where
    // the old run would have continued.
    let gap_ms = (a[second].play - a[second - 1].play) as f64 / 1e6;
    assert!((1_000.0..1_200.0).contains(&gap_ms), "gap {gap_ms} ms");
    let mut all = part1.clone();
    all.extend_from_slice(&part2);
    assert_eq!(l16(&a), all);
    check_leads(&a);
}
