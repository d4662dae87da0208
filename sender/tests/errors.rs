//! Bad input gives one clear error line and a non-zero exit, quickly, with nothing left
//! running.

mod util;

use std::net::UdpSocket;
use std::time::Duration;

use util::*;

/// Runs the sender with `args` (plus a loopback destination unless given) and returns its
/// exit code and stderr.
fn fails(args: &[&str]) -> (i32, String) {
    let mut cmd = sender();
    cmd.args(args)
        .args(["--control-port", &free_port().to_string()]);
    if !args.contains(&"--dest") {
        cmd.args(["--dest", "127.0.0.1:9"]);
    }
    cmd.env("PULSE_SERVER", "unix:/nonexistent/wavesync-test-pulse");
    let (status, err) = Running::spawn(cmd).wait(Duration::from_secs(5));
    let code = status.code().unwrap_or(-1);
    assert_ne!(code, 0, "{args:?} should fail: {err}");
    assert!(!err.contains("panicked"), "{err}");
    (code, err)
}

fn one_error_line(args: &[&str], needle: &str) {
    let (code, err) = fails(args);
    assert_eq!(code, 1, "{err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("wavesync-sender:"))
        .collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains(needle),
        "{args:?}: expected {needle:?} in {:?}",
        lines[0]
    );
}

#[test]
fn missing_unix_socket() {
    one_error_line(
        &["--input", "unix:/nonexistent/music.source"],
        "unix:/nonexistent/music.source: No such file or directory",
    );
}

#[test]
fn missing_wav_file() {
    one_error_line(
        &["--input", "wav:/nonexistent/a.wav"],
        "wav:/nonexistent/a.wav: No such file",
    );
}

#[test]
fn missing_fifo() {
    one_error_line(
        &["--input", "fifo:/nonexistent/x.fifo"],
        "create the pipe with mkfifo",
    );
}

#[test]
fn not_a_wav_file() {
    let p = tmp("text.wav");
    std::fs::write(&p, b"hello, this is not audio").unwrap();
    one_error_line(
        &["--input", &format!("wav:{}", p.display())],
        "not a WAV file",
    );
    std::fs::remove_file(&p).unwrap();
}

#[test]
fn wav_of_another_rate_than_asked() {
    let p = tmp("rate.wav");
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 44_100,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&p, spec).unwrap();
    for _ in 0..200 {
        w.write_sample(1i16).unwrap();
    }
    w.finalize().unwrap();
    one_error_line(
        &[
            "--input",
            &format!("wav:{}", p.display()),
            "--rate",
            "48000",
        ],
        "the file is 44100 Hz but --rate 48000 was asked",
    );
    std::fs::remove_file(&p).unwrap();
}

#[test]
fn unresolvable_host() {
    one_error_line(
        &["--input", "tone", "--dest", "no-such-host.invalid:45300"],
        "cannot resolve host \"no-such-host.invalid\"",
    );
}

#[test]
fn bad_destination() {
    one_error_line(
        &["--input", "tone", "--dest", "127.0.0.1:port"],
        "port is not a number",
    );
}

#[test]
fn control_port_in_use() {
    let taken = UdpSocket::bind("[::]:0")
        .or_else(|_| UdpSocket::bind("0.0.0.0:0"))
        .unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let mut cmd = sender();
    cmd.args([
        "--input",
        "tone",
        "--dest",
        "127.0.0.1:9",
        "--control-port",
        &port,
    ]);
    let (status, err) = Running::spawn(cmd).wait(Duration::from_secs(5));
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("control port {port} is already in use")),
        "{err}"
    );
}

#[test]
fn unknown_interface() {
    one_error_line(
        &[
            "--input",
            "tone",
            "--dest",
            "239.255.77.77:45300",
            "--interface",
            "nosuchif0",
        ],
        "no network interface \"nosuchif0\"",
    );
}

#[test]
fn no_pulseaudio_server() {
    one_error_line(&["--input", "pulse:wsync.monitor"], "pulse:wsync.monitor:");
}

#[test]
fn unknown_input_kind_and_bad_raw_format_are_usage_errors() {
    let (code, err) = fails(&["--input", "mp3:song.mp3"]);
    assert_eq!(code, 2, "clap's usage error code: {err}");
    assert!(err.contains("expected tone[:HZ]"), "{err}");
    let (code, err) = fails(&["--input", "-", "--input-format", "u8"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown sample format"), "{err}");
    let (code, err) = fails(&["--dest", "127.0.0.1:9"]);
    assert_eq!(code, 2, "--input is required: {err}");
}
