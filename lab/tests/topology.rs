//! The lab topology in real network namespaces: multicast from the master reaches every
//! receiver, and `down` leaves nothing behind. Skipped (with the reason printed) where network
//! namespaces cannot be made.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
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
        eprintln!("SKIPPED: cannot create network namespaces here: {e}");
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
