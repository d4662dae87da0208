//! The lab's hosts: network namespaces joined by a bridge, made and removed with iproute2.
//!
//! `<prefix>-hub` holds bridge `br0` (multicast snooping off, so every port sees every group);
//! each host namespace (`<prefix>-master`, optionally `<prefix>-relay`, `<prefix>-rx1..N`) gets a
//! veth pair whose hub end (`v-<host>`) is a bridge port and whose other end is `eth0` inside
//! the host, with an address in 10.77.0.0/24 (master .1, relay .2, rx i at .10+i), `lo` up and
//! a route for 224.0.0.0/4 via `eth0`. Nothing is configured outside these namespaces.
//!
//! [`down`] kills what still runs inside the namespaces (processes the lab started there) and
//! deletes them; it is idempotent. [`Topology::up`] undoes its own partial work when a step
//! fails.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// `ip` could not be started.
    #[error("cannot run {cmd}: {source}")]
    Spawn {
        /// The command line.
        cmd: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A command failed.
    #[error("{cmd} failed ({status}): {stderr}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// Namespaces with this prefix exist already.
    #[error("namespaces already exist: {0:?} (run `topology down` first)")]
    AlreadyUp(Vec<String>),
    /// Asked to stop (Ctrl-C) while bringing the topology up.
    #[error("interrupted")]
    Interrupted,
    /// More receivers than addresses.
    #[error("{0} receivers: at most 200")]
    TooManyReceivers(usize),
}

/// Runs a command; returns its stdout.
pub fn run(prog: &str, args: &[&str]) -> Result<String, TopologyError> {
    let cmd = format!("{prog} {}", args.join(" "));
    let out = Command::new(prog)
        .args(args)
        .output()
        .map_err(|source| TopologyError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(TopologyError::Command {
            cmd,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String, TopologyError> {
    run("ip", args)
}

/// A lab topology: names and addresses, and how to make it.
#[derive(Clone, Debug)]
pub struct Topology {
    /// Prefix of every namespace name (`wslab` for the lab, another for tests).
    pub prefix: String,
    /// Number of receiver hosts.
    pub receivers: usize,
    /// Whether to add a relay host.
    pub relay: bool,
}

/// The /24 the lab uses inside its namespaces.
pub const SUBNET: [u8; 3] = [10, 77, 0];

impl Topology {
    /// `receivers` receivers under the default prefix `wslab`, no relay host.
    pub fn new(receivers: usize) -> Self {
        Topology {
            prefix: "wslab".into(),
            receivers,
            relay: false,
        }
    }

    /// The hub namespace (the bridge).
    pub fn hub(&self) -> String {
        format!("{}-hub", self.prefix)
    }

    /// The master's namespace.
    pub fn master(&self) -> String {
        format!("{}-master", self.prefix)
    }

    /// The relay's namespace.
    pub fn relay_ns(&self) -> String {
        format!("{}-relay", self.prefix)
    }

    /// Receiver `i`'s namespace (1-based).
    pub fn rx(&self, i: usize) -> String {
        format!("{}-rx{i}", self.prefix)
    }

    /// The master's address.
    pub fn master_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], 1)
    }

    /// The relay's address.
    pub fn relay_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], 2)
    }

    /// Receiver `i`'s address (1-based).
    pub fn rx_addr(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], (10 + i).min(254) as u8)
    }

    /// Every host: (short name, namespace, address).
    pub fn hosts(&self) -> Vec<(String, String, Ipv4Addr)> {
        let mut h = vec![("master".to_string(), self.master(), self.master_addr())];
        if self.relay {
            h.push(("relay".into(), self.relay_ns(), self.relay_addr()));
        }
        for i in 1..=self.receivers {
            h.push((format!("rx{i}"), self.rx(i), self.rx_addr(i)));
        }
        h
    }

    /// Makes the namespaces, bridge and links. On failure (or when `interrupted` returns true
    /// between steps) removes what it made and returns the error.
    pub fn up(&self, interrupted: &dyn Fn() -> bool) -> Result<(), TopologyError> {
        if self.receivers > 200 {
            return Err(TopologyError::TooManyReceivers(self.receivers));
        }
        let existing = namespaces(&self.prefix)?;
        if !existing.is_empty() {
            return Err(TopologyError::AlreadyUp(existing));
        }
        let res = self.build(interrupted);
        if res.is_err() {
            let _ = down(&self.prefix);
        }
        res
    }

    fn build(&self, interrupted: &dyn Fn() -> bool) -> Result<(), TopologyError> {
        let hub = self.hub();
        ip(&["netns", "add", &hub])?;
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &hub,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for (name, ns, addr) in self.hosts() {
            if interrupted() {
                return Err(TopologyError::Interrupted);
            }
            let port = format!("v-{name}");
            let cidr = format!("{addr}/24");
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            ip(&["-n", &hub, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &hub, "link", "set", &port, "up"])?;
            ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "eth0"])?;
        }
        Ok(())
    }
}

/// The namespaces whose name starts with `<prefix>-`.
pub fn namespaces(prefix: &str) -> Result<Vec<String>, TopologyError> {
    let out = ip(&["netns", "list"])?;
    let want = format!("{prefix}-");
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&want))
        .map(str::to_string)
        .collect())
}

/// Process ids running in namespace `ns`.
fn pids_in(ns: &str) -> Vec<i32> {
    ip(&["netns", "pids", ns])
        .map(|o| {
            o.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Stops what runs in the `<prefix>-*` namespaces (SIGTERM, then SIGKILL after 2 s) and deletes
/// them. Idempotent; returns the namespaces it deleted.
pub fn down(prefix: &str) -> Result<Vec<String>, TopologyError> {
    let list = namespaces(prefix)?;
    let mut pids: Vec<i32> = list.iter().flat_map(|ns| pids_in(ns)).collect();
    for &p in &pids {
        // SAFETY: kill(2) with a pid read from `ip netns pids`; no memory is involved.
        unsafe {
            libc::kill(p, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while !pids.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        // SAFETY: signal 0 only checks that the process exists.
        pids.retain(|&p| unsafe { libc::kill(p, 0) } == 0);
    }
    for &p in &pids {
        // SAFETY: as above.
        unsafe {
            libc::kill(p, libc::SIGKILL);
        }
    }
    // The hub last: deleting a host namespace deletes its veth pair.
    let (mut hubs, mut hosts): (Vec<&String>, Vec<&String>) =
        list.iter().partition(|n| n.ends_with("-hub"));
    hosts.append(&mut hubs);
    for ns in hosts {
        ip(&["netns", "del", ns])?;
    }
    Ok(list)
}

/// Whether this process may create network namespaces (tries one named
/// `<prefix>-permcheck`); the error says why not.
pub fn check_permitted(prefix: &str) -> Result<(), TopologyError> {
    let ns = format!("{prefix}-permcheck");
    ip(&["netns", "add", &ns])?;
    ip(&["netns", "del", &ns])?;
    Ok(())
}
