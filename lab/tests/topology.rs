//! The lab topology in real network namespaces: multicast from the master reaches every
//! receiver, and `down` leaves nothing behind. Skipped (with the reason printed) where network
//! namespaces cannot be made.

#[path = "../../test-support/skip.rs"]
mod skip;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use wavesync_lab::relay::RelayReport;
use wavesync_lab::topology::{self, Topology};

const BIN: &str = env!("CARGO_BIN_EXE_wavesync-lab");
/// Not the lab's own prefix, so a lab running on this machine is left alone.
const PREFIX: &str = "wslabt";

/// Removes the test's namespaces even if an assertion fails.
struct Guard;
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = topology::down(PREFIX);
    }
}

/// Starts probe-recv in `ns` on `group` (multicast group:port, joined on `iface`, or a unicast
/// address:port) and waits until it listens.
fn probe_recv_on(ns: &str, iface: &str, group: &str) -> Child {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, BIN, "probe-recv", "--iface", iface])
        .args(["--count", "3", "--group", group])
        .args(["--timeout-ms", "5000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it has joined the group.
    let mut line = String::new();
    let out = child.stdout.as_mut().unwrap();
    BufReader::new(out).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "probe-recv in {ns}");
    child
}

fn probe_recv(ns: &str, iface: &str) -> Child {
    probe_recv_on(ns, iface, "239.255.77.99:45399")
}

#[test]
fn multicast_reaches_every_receiver_and_down_cleans_up() {
    if let Err(e) = topology::check_permitted(PREFIX) {
        skip::skip_or_fail(&format!("cannot create network namespaces here: {e}"));
        return;
    }
    let _ = topology::down(PREFIX);
    let _guard = Guard;
    let t = Topology {
        prefix: PREFIX.into(),
        receivers: 2,
        relay: true,
    };
    t.up(&|| false).unwrap();
    let mut names = topology::namespaces(PREFIX).unwrap();
    names.sort();
    assert_eq!(
        names,
        [
            "wslabt-hub",
            "wslabt-master",
            "wslabt-relay",
            "wslabt-rx1",
            "wslabt-rx2"
        ]
    );
    // A second `up` refuses instead of half-building over the first.
    assert!(matches!(
        t.up(&|| false),
        Err(topology::TopologyError::AlreadyUp(_))
    ));

    // Receivers and the relay host listen; the master sends 3 datagrams.
    let listeners: Vec<(String, Child)> = [
        (t.rx(1), t.rx_addr(1)),
        (t.rx(2), t.rx_addr(2)),
        (t.relay_ns(), t.relay_addr()),
    ]
    .iter()
    .map(|(ns, a)| (ns.clone(), probe_recv(ns, &a.to_string())))
    .collect();
    let st = Command::new("ip")
        .args(["netns", "exec", &t.master(), BIN, "probe-send"])
        .args(["--iface", &t.master_addr().to_string(), "--count", "3"])
        .status()
        .unwrap();
    assert!(st.success());
    for (ns, child) in listeners {
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{ns}: {text}");
        assert!(text.contains("received 3"), "{ns}: {text}");
    }

    // Unicast between hosts works too (the relay's control path needs it).
    let master_port = format!("{}:45398", t.master_addr());
    let mut listener = probe_recv_on(&t.master(), &t.master_addr().to_string(), &master_port);
    let st = Command::new("ip")
        .args([
            "netns",
            "exec",
            &t.rx(2),
            BIN,
            "probe-send",
            "--group",
            &master_port,
        ])
        .args(["--iface", &t.rx_addr(2).to_string(), "--count", "3"])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(listener.wait().unwrap().success(), "unicast rx2 -> master");

    relay_in_the_lab_wiring(&t);

    // A process left running inside is stopped by `down`.
    let mut sleeper = Command::new("ip")
        .args(["netns", "exec", &t.rx(1), "sleep", "60"])
        .spawn()
        .unwrap();
    let removed = topology::down(PREFIX).unwrap();
    assert_eq!(removed.len(), 5);
    assert!(topology::namespaces(PREFIX).unwrap().is_empty());
    let status = sleeper.wait().unwrap();
    assert!(!status.success(), "the sleeper was not stopped");
    // Idempotent.
    assert!(topology::down(PREFIX).unwrap().is_empty());
}

/// The relays as `lab/run` wires them: the master's group re-emitted by the relay host onto the
/// receivers' group (with loss), and the receivers' unicast control traffic relayed to the
/// master. What arrives matches the relay's own stats file.
fn relay_in_the_lab_wiring(t: &Topology) {
    let dir = std::env::temp_dir().join(format!("wslabt-relay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let relay_ip = t.relay_addr().to_string();
    let stats = dir.join("data.json");
    let mut data_relay = Command::new("ip")
        .args([
            "netns",
            "exec",
            &t.relay_ns(),
            BIN,
            "relay",
            "--profile",
            "wired",
        ])
        .args([
            "--loss",
            "30",
            "--seed",
            "5",
            "--listen",
            "239.255.77.1:45310",
        ])
        .args(["--listen-if", &relay_ip, "--forward", "239.255.77.77:45300"])
        .args(["--forward-if", &relay_ip, "--stats"])
        .arg(&stats)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut control_relay = Command::new("ip")
        .args([
            "netns",
            "exec",
            &t.relay_ns(),
            BIN,
            "relay",
            "--profile",
            "wired",
        ])
        .args([
            "--clients-downstream",
            "--listen",
            &format!("{relay_ip}:45301"),
        ])
        .args(["--forward", &format!("{}:45301", t.master_addr())])
        .args(["--forward-if", &relay_ip])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();

    // Control path: rx1 -> relay:45301 -> master:45301. The relay may still be starting:
    // resend until the listener has everything (it counts matching datagrams only).
    let master_ctl = format!("{}:45301", t.master_addr());
    let mut listener = probe_recv_on(&t.master(), &t.master_addr().to_string(), &master_ctl);
    let to_relay = format!("{relay_ip}:45301");
    for _ in 0..50 {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &t.rx(1),
                BIN,
                "probe-send",
                "--group",
                &to_relay,
            ])
            .args(["--iface", &t.rx_addr(1).to_string(), "--count", "1"])
            .status()
            .unwrap();
        if listener.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let st = listener.wait().unwrap();
    assert!(st.success(), "control path rx1 -> relay -> master");

    // Data path: 200 datagrams from the master, 30 % lost on the way.
    let mut rx = Command::new("ip")
        .args(["netns", "exec", &t.rx(2), BIN, "probe-recv", "--iface"])
        .arg(t.rx_addr(2).to_string())
        .args(["--group", "239.255.77.77:45300", "--count", "200"])
        .args(["--timeout-ms", "1500"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(rx.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    let st = Command::new("ip")
        .args(["netns", "exec", &t.master(), BIN, "probe-send"])
        .args([
            "--group",
            "239.255.77.1:45310",
            "--count",
            "200",
            "--gap-ms",
            "1",
        ])
        .args(["--iface", &t.master_addr().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = rx.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let got: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("received "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count in {text:?}"));

    // SIGTERM: the relay writes its final stats and exits.
    for c in [&mut data_relay, &mut control_relay] {
        // SAFETY: kill(2) on the pid of a child this test started.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        assert!(c.wait().unwrap().success());
    }
    let report: RelayReport =
        serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(report.forward.received, 200, "{report:?}");
    assert_eq!(report.sent_forward, report.forward.delivered);
    assert_eq!(got, report.forward.delivered, "{report:?}");
    assert!((30..=90).contains(&report.forward.dropped), "{report:?}");
}
