//! The legacy `wavesync --tx` command line (cli/src/tx.rs, compiled here against the sender
//! library until the `wavesync` binary calls it): the seed's command runs as written with
//! loopback channels, reads module-simple-protocol-unix's socket and streams bit-exact;
//! `--local-play` starts a local receiver and streams to it too.

mod util;

#[allow(dead_code)]
#[path = "../../cli/src/tx.rs"]
mod tx;

use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use util::*;
use wavesync_net::clock::{monotonic_ns, sleep_until};

/// A stand-in for module-simple-protocol-unix: serves `samples` (s16le) in real time.
fn serve(path: &std::path::Path, samples: Vec<i16>, rate: u32) -> std::thread::JoinHandle<()> {
    let l = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        use std::io::Write;
        let (mut c, _) = l.accept().unwrap();
        let start = monotonic_ns();
        let per = rate as usize / 50 * 2;
        for (k, chunk) in samples.chunks(per).enumerate() {
            sleep_until(start + (k as i64 + 1) * 20_000_000);
            let b: Vec<u8> = chunk.iter().flat_map(|s| s.to_le_bytes()).collect();
            if c.write_all(&b).is_err() {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    })
}

fn run_for(args: Vec<String>, seconds: f64) -> std::thread::JoinHandle<Result<(), String>> {
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let h = std::thread::spawn(move || tx::run_tx_until(&args, move || s2.load(Ordering::SeqCst)));
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs_f64(seconds));
        stop.store(true, Ordering::SeqCst);
        h.join().unwrap()
    })
}

fn capture(socks: &[&std::net::UdpSocket], seconds: f64) -> Vec<Vec<Captured>> {
    let end = monotonic_ns() + (seconds * 1e9) as i64;
    let mut out: Vec<Vec<Captured>> = socks.iter().map(|_| Vec::new()).collect();
    let mut buf = [0u8; 2048];
    for s in socks {
        s.set_nonblocking(true).unwrap();
    }
    while monotonic_ns() < end {
        let mut idle = true;
        for (i, s) in socks.iter().enumerate() {
            while let Ok(n) = s.recv(&mut buf) {
                idle = false;
                out[i].push(Captured {
                    at: monotonic_ns().ns(),
                    bytes: buf[..n].to_vec(),
                });
            }
        }
        if idle {
            std::thread::sleep(Duration::from_micros(300));
        }
    }
    out
}

#[test]
fn the_seed_tx_command_line_streams_the_socket_to_every_channel() {
    let path = tmp("music.source");
    let samples = test_samples(44_100 * 2, 11); // 1 s, s16le 44100 stereo as in the seed
    let server = serve(&path, samples.clone(), 44_100);
    let (a, b) = (listener(), listener());
    let line = format!(
        "--tx {} --channel {} --channel {} --latency 1000 --compress 3",
        path.display(),
        a.local_addr().unwrap(),
        b.local_addr().unwrap()
    );
    let mut args: Vec<String> = line.split_whitespace().map(String::from).collect();
    // Not the default control port: another sender may hold it on this host.
    let port = free_port();
    args.extend(["--source-address".into(), "127.0.0.1".into()]);
    args.extend(["--control-port".into(), port.to_string()]);
    let runner = run_for(args, 1.6);
    let got = capture(&[&a, &b], 1.9);
    let result = runner.join().unwrap();
    server.join().unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(result, Ok(()));
    for g in &got {
        let pkts = audio(g);
        assert_eq!(check_runs(&pkts, 44_100, 4), vec![pkts.len()]);
        assert_eq!(l16(&pkts), samples, "bit-exact on every channel");
        let st = statuses(g);
        assert_eq!(st[0].latency_ns, 1_000_000_000);
        assert_eq!(st[0].time_port, port);
        // Stamped from arrival: a few tens of ms under the latency, never over it.
        let (lo, hi) = range(&leads_ms(&pkts[..pkts.len() - 1]));
        eprintln!("legacy tx: lead {lo:.1}..{hi:.1} ms at --latency 1000");

        assert!(lo > 930.0 && hi < 995.0, "lead {lo}..{hi} ms");
    }
}

#[test]
fn local_play_starts_a_local_receiver_and_streams_to_it() {
    // A fake receiver that records its arguments, listens where it is told and stays up.
    let dir = tmp("fake-rx");
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("wavesync-receiver");
    let argfile = dir.join("args");
    let pidfile = dir.join("pid");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$@\" > {}\necho $$ > {}\nexec sleep 30\n",
            argfile.display(),
            pidfile.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::env::set_var(tx::RECEIVER_BIN_ENV, &script);
    let path = tmp("lp.source");
    let server = serve(&path, test_samples(44_100 * 2, 12), 44_100);
    let rx = listener();
    let args: Vec<String> = format!(
        "--tx {} --channel {} --local-play --control-port {}",
        path.display(),
        rx.local_addr().unwrap(),
        free_port()
    )
    .split_whitespace()
    .map(String::from)
    .collect();
    let runner = run_for(args, 1.2);
    std::thread::sleep(Duration::from_millis(500));
    let recorded = std::fs::read_to_string(&argfile).expect("the receiver was started");
    let port: u16 = recorded
        .split_whitespace()
        .skip_while(|a| *a != "--listen")
        .nth(1)
        .and_then(|a| a.strip_prefix("127.0.0.1:"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("receiver args {recorded:?}"));
    assert!(recorded.contains("--master 127.0.0.1"), "{recorded}");
    // The sender streams to the local receiver's port too.
    let local = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
    let got = capture(&[&local], 0.4);
    assert!(
        audio(&got[0]).len() > 20,
        "the local receiver gets the stream"
    );
    let result = runner.join().unwrap();
    server.join().unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(result, Ok(()));
    // The fake receiver was stopped with the sender.
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    assert!(
        !std::path::Path::new(&format!("/proc/{}", pid.trim())).exists(),
        "receiver {pid} left running"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
