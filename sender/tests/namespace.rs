//! The defaults, multicast included, in a private network namespace (`unshare -n`, loopback
//! only, `224.0.0.0/4` routed to `lo`): `wavesync-sender --input tone` with no destination and
//! no interface sends to 239.255.77.77:45300, which a plain multicast listener (Python's
//! socket module, joined on the default interface) receives. Nothing leaves the namespace.
//!
//! Skipped (a clear SKIPPED line) where network namespaces or python3 are not available.

mod util;

use std::process::Command;

use util::*;
use wavesync_common::wire::{classify, Kind};

const LISTENER: &str = r#"
import binascii, socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", 45300))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
             struct.pack("4s4s", socket.inet_aton("239.255.77.77"), socket.inet_aton("0.0.0.0")))
s.settimeout(2.0)
print("ready", flush=True)
end = time.time() + float(sys.argv[1])
while time.time() < end:
    try:
        d = s.recv(4096)
    except socket.timeout:
        break
    print(binascii.hexlify(d).decode(), flush=True)
"#;

#[test]
fn default_multicast_group_in_a_private_namespace() {
    let ok = Command::new("unshare")
        .args(["-n", "true"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let py = Command::new("python3").arg("-c").arg("pass").status();
    if !ok || !py.map(|s| s.success()).unwrap_or(false) {
        skip_or_fail("needs unshare -n (root) and python3");
        return;
    }
    let dir = tmp("ns");
    std::fs::create_dir_all(&dir).unwrap();
    let script = format!(
        "ip link set lo up && ip route add 224.0.0.0/4 dev lo || exit 90\n\
         python3 -c \"$LISTENER\" 2.5 > {d}/rx.txt &\n\
         rx=$!\n\
         for i in $(seq 50); do grep -q ready {d}/rx.txt 2>/dev/null && break; sleep 0.05; done\n\
         \"$SENDER\" --input tone --duration 1 --stats-interval 0 2> {d}/tx.err\n\
         echo $? > {d}/tx.rc\n\
         wait $rx\n",
        d = dir.display()
    );
    let out = Command::new("unshare")
        .args(["-n", "sh", "-c", &script])
        .env("LISTENER", LISTENER)
        .env("SENDER", env!("CARGO_BIN_EXE_wavesync-sender"))
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rc = std::fs::read_to_string(dir.join("tx.rc")).unwrap();
    let err = std::fs::read_to_string(dir.join("tx.err")).unwrap();
    assert_eq!(rc.trim(), "0", "{err}");
    assert!(err.contains("sending to 239.255.77.77:45300"), "{err}");
    assert!(err.contains("on port 45301"), "{err}");
    let rx = std::fs::read_to_string(dir.join("rx.txt")).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let captured: Vec<Captured> = rx
        .lines()
        .skip(1)
        .map(|l| Captured {
            at: 0,
            bytes: (0..l.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&l[i..i + 2], 16).unwrap())
                .collect(),
        })
        .collect();
    assert!(captured.iter().any(|c| classify(&c.bytes) == Kind::Status));
    let a = audio(&captured);
    assert!(a.len() > 100, "{} audio packets", a.len());
    assert_eq!(check_runs(&a, 48_000, 4), vec![a.len()]);
}
