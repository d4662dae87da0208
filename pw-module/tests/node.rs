//! The module in a real (headless) PipeWire: the node, bad arguments, clean exit, and the
//! separate client process mode. Each test starts its own daemon and stops it on drop.

mod common;

use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn node_appears_as_audio_sink_named_wavesync() {
    let port = free_udp_port();
    let daemon = Daemon::start(&[module_dropin(&loopback_args(port, ""), true)], false)
        .unwrap_or_else(|f| panic!("daemon did not start: {f:?}"));
    let node = daemon
        .wait_node("wavesync")
        .expect("node wavesync in pw-dump");
    let props = props_of(&node);
    note(&format!(
        "pw-dump: id {} node.name={} node.description={} media.class={}",
        node["id"], props["node.name"], props["node.description"], props["media.class"]
    ));
    assert_eq!(props["media.class"], "Audio/Sink");
    assert_eq!(props["node.description"], "WaveSync");
    assert_eq!(props["wavesync.destinations"], format!("127.0.0.1:{port}"));
    // The node has input ports (two: FL, FR), so the session manager can link players to it.
    let ports: Vec<_> = daemon
        .dump()
        .into_iter()
        .filter(|o| {
            o["type"] == "PipeWire:Interface:Port"
                && o["info"]["props"]["node.id"] == node["id"]
                && o["info"]["direction"] == "input"
        })
        .collect();
    assert_eq!(ports.len(), 2, "input ports of the sink");
}

#[test]
fn description_and_name_can_be_overridden() {
    let args = loopback_args(
        free_udp_port(),
        "node.description = \"Living room\" stream.props = { node.name = ws-test priority.session = 100 }",
    );
    let daemon = Daemon::start(&[module_dropin(&args, true)], false)
        .unwrap_or_else(|f| panic!("daemon did not start: {f:?}"));
    let node = daemon.wait_node("ws-test").expect("renamed node");
    let props = props_of(&node);
    assert_eq!(props["node.description"], "Living room");
    assert_eq!(props["priority.session"], "100");
    assert_eq!(props["media.class"], "Audio/Sink");
}

fn our_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains("wavesync:")).collect()
}

#[test]
fn bad_arguments_with_nofail_refuse_to_load_and_the_daemon_runs_on() {
    let daemon = Daemon::start(
        &[module_dropin(
            "destination.ip = 127.0.0.1 destination.port = 99999",
            true,
        )],
        false,
    )
    .unwrap_or_else(|f| panic!("daemon must run on with nofail: {f:?}"));
    // The daemon is up and serving clients, the CI sink is there, ours is not.
    assert!(daemon.wait_node("ci-null-sink").is_some());
    assert!(daemon
        .dump()
        .iter()
        .all(|o| o["info"]["props"]["node.name"] != "wavesync"));
    let log = daemon.log();
    let lines = our_lines(&log);
    note(&format!("log: {lines:?}"));
    assert_eq!(lines.len(), 1, "exactly one line from the module: {log}");
    assert!(
        lines[0].contains("not loaded: invalid argument destination.port = \"99999\""),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].starts_with("[E]"),
        "logged as an error: {}",
        lines[0]
    );
}

#[test]
fn bad_arguments_without_nofail_stop_pipewire_cleanly_with_the_reason() {
    let failure = match Daemon::start(&[module_dropin("wavesync.clock = gps", false)], false) {
        Ok(_) => panic!("a mandatory module with bad arguments must stop PipeWire"),
        Err(f) => f,
    };
    let lines = our_lines(&failure.log);
    note(&format!("log: {lines:?}, exit {:?}", failure.exit));
    assert_eq!(lines.len(), 1, "{}", failure.log);
    assert!(lines[0].contains("invalid argument wavesync.clock = \"gps\""));
    assert!(failure.log.contains("could not load mandatory module"));
    // PipeWire exits with an error status: no crash.
    assert!(
        matches!(failure.exit, Exit::Code(c) if c != 0) || failure.exit == Exit::Unknown,
        "{:?}",
        failure.exit
    );
    assert!(!matches!(failure.exit, Exit::Signal(_)));
    for crash in ["double free", "Segmentation", "Aborted", "panicked"] {
        assert!(!failure.log.contains(crash), "{}", failure.log);
    }
}

#[test]
fn daemon_exits_cleanly_while_streaming() {
    let scratch = Scratch::new("exit");
    let wav = scratch.path().join("tone.wav");
    write_wav(&wav, &test_signal(48_000 * 5));
    let mut daemon = Daemon::start(
        &[module_dropin(&loopback_args(free_udp_port(), ""), true)],
        true,
    )
    .unwrap_or_else(|f| panic!("daemon did not start: {f:?}"));
    daemon.wait_node("wavesync").expect("node");
    let mut player = daemon.spawn_play("wavesync", &wav);
    // Wait until the sink is streaming, then stop the daemon under it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !daemon
        .log()
        .contains("wavesync: sink stream paused -> streaming")
    {
        assert!(
            Instant::now() < deadline,
            "never streamed: {}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let exit = daemon.stop();
    let _ = player.kill();
    let _ = player.wait();
    let log = daemon.log();
    note(&format!("pipewire exit: {exit:?}"));
    assert_eq!(exit, Exit::Code(0), "{log}");
    assert!(!log.contains("double free"), "{log}");
    assert!(
        log.contains("wavesync: unloaded"),
        "module destroyed: {log}"
    );
}

/// The packaged `wavesync-master.conf` with loopback arguments instead of the defaults.
fn client_conf(port: u16, control_port: u16) -> String {
    let conf = fs::read_to_string(repo_root().join("packaging/pipewire/wavesync-master.conf"))
        .expect("packaged wavesync-master.conf");
    let marker = "#destination.ip = \"239.255.77.77\"";
    assert!(
        conf.contains(marker),
        "the packaged conf documents destination.ip"
    );
    conf.replacen(
        marker,
        &format!(
            "destination.ip = \"127.0.0.1\" destination.port = {port} wavesync.control.port = {control_port}"
        ),
        1,
    )
}

#[test]
fn separate_client_process_creates_the_node() {
    let daemon = Daemon::start(&[], false).unwrap_or_else(|f| panic!("daemon: {f:?}"));
    let scratch = Scratch::new("client");
    let conf = scratch.path().join("wavesync-master.conf");
    fs::write(&conf, client_conf(free_udp_port(), free_udp_port())).expect("write conf");
    let log = scratch.path().join("client.log");
    let mut client = daemon
        .command("pipewire")
        // As the systemd unit runs it: by name, found in the config directory.
        .args(["-c", "wavesync-master.conf"])
        .env("PIPEWIRE_CONFIG_DIR", scratch.path())
        .env("PIPEWIRE_MODULE_DIR", daemon.module_dir_env())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn pipewire -c wavesync-master.conf");
    struct KillOnDrop<'a>(&'a mut std::process::Child);
    impl Drop for KillOnDrop<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let guard = KillOnDrop(&mut client);
    let node = daemon.wait_node("wavesync");
    let node = node.unwrap_or_else(|| {
        panic!(
            "node from the client process: {}",
            fs::read_to_string(&log).unwrap_or_default()
        )
    });
    let props = props_of(&node);
    assert_eq!(props["media.class"], "Audio/Sink");
    assert_eq!(props["node.description"], "WaveSync");
    // It belongs to a client (the separate process), not to the daemon itself.
    assert!(props.contains_key("client.id"), "{props:?}");
    // SIGTERM: the client process unloads the module and exits cleanly; the node goes away.
    let pid = guard.0.id() as i32;
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = guard.0.wait().expect("wait client");
    assert!(status.success(), "client exit {status}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while daemon
        .dump()
        .iter()
        .any(|o| o["info"]["props"]["node.name"] == "wavesync")
    {
        assert!(
            Instant::now() < deadline,
            "node still there after the client exited"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_busy_control_port_refuses_to_load_with_the_reason() {
    let busy = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
    let port = busy.local_addr().expect("addr").port();
    let args = format!(
        "destination.ip = 127.0.0.1 destination.port = {} wavesync.control.port = {port}",
        free_udp_port()
    );
    let daemon = Daemon::start(&[module_dropin(&args, true)], false)
        .unwrap_or_else(|f| panic!("daemon must run on with nofail: {f:?}"));
    assert!(daemon.wait_node("ci-null-sink").is_some());
    let log = daemon.log();
    let lines = our_lines(&log);
    note(&format!("log: {lines:?}"));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("not loaded: cannot start the sender")
                && l.contains(&port.to_string())
                && l.contains("wavesync.control.port")),
        "{log}"
    );
    assert!(daemon
        .dump()
        .iter()
        .all(|o| o["info"]["props"]["node.name"] != "wavesync"));
}
