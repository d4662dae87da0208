//! The `pipewire` PCM with a PipeWire daemon but no session manager: nothing links the stream,
//! so nothing consumes (a blocking `snd_pcm_writei` would hang forever). The output must keep
//! the loop alive: `wait` times out, writes take nothing, the prediction never claims the device
//! is consuming, and close returns.
//!
//! A separate test binary: it points this process's PipeWire environment at its own daemon.
#![cfg(feature = "alsa")]

#[path = "../../test-support/skip.rs"]
mod skip;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wavesync_receiver::output::alsa::{AlsaConfig, AlsaOutput};
use wavesync_receiver::output::{Output, WriteMeta};

/// A bare `pipewire` daemon (no WirePlumber) in a private runtime dir; killed on drop.
struct BareDaemon {
    child: Child,
    dir: PathBuf,
}

impl BareDaemon {
    fn start() -> Option<BareDaemon> {
        let conf_src =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pipewire/pipewire.conf");
        let dir = std::env::temp_dir().join(format!("wsync-pw-bare-{}", std::process::id()));
        let run = dir.join("run");
        let conf = dir.join("conf");
        std::fs::create_dir_all(&run).expect("create the runtime dir");
        std::fs::create_dir_all(&conf).expect("create the config dir");
        std::fs::copy(&conf_src, conf.join("pipewire.conf")).expect("copy pipewire.conf");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700));
        }
        std::env::set_var("XDG_RUNTIME_DIR", &run);
        std::env::set_var("PIPEWIRE_RUNTIME_DIR", &run);
        std::env::remove_var("PIPEWIRE_REMOTE");
        std::env::remove_var("DBUS_SESSION_BUS_ADDRESS");
        let child = match Command::new("pipewire")
            .arg("-c")
            .arg(conf.join("pipewire.conf"))
            .env("PIPEWIRE_CONFIG_DIR", &conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                skip::skip_or_fail(&format!("cannot run pipewire: {e}"));
                let _ = std::fs::remove_dir_all(&dir);
                return None;
            }
        };
        let d = BareDaemon { child, dir };
        // Wait for its socket.
        let end = Instant::now() + Duration::from_secs(5);
        while !run.join("pipewire-0").exists() {
            assert!(Instant::now() < end, "pipewire did not create its socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(d)
    }
}

impl Drop for BareDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn output_alsa_pipewire_without_session_manager_never_blocks() {
    let Some(_daemon) = BareDaemon::start() else {
        return;
    };
    let mut out = AlsaOutput::new(AlsaConfig {
        device: "pipewire".into(),
        ..AlsaConfig::default()
    });
    let info = out.open(48_000, 2).expect("open the pipewire PCM");
    let buf = vec![0.0f32; info.period_frames * 2];
    let started = Instant::now();
    let mut taken = 0;
    let mut timeouts = 0;
    for _ in 0..(info.buffer_frames / info.period_frames + 3) {
        if !out.wait(100).expect("wait") {
            timeouts += 1;
        }
        let t = out.timing().expect("timing");
        assert!(
            !t.settled,
            "nothing consumes, yet the device claims it does"
        );
        taken += out.write(&buf, &WriteMeta::default()).expect("write");
    }
    let elapsed = started.elapsed();
    out.close();
    eprintln!(
        "unlinked pipewire PCM: took {taken} frames, {timeouts} wait timeouts in {elapsed:?}"
    );
    // The buffer fills, then nothing more is taken; each later wait returns after its timeout.
    assert_eq!(taken, info.buffer_frames);
    assert!(
        timeouts >= 3,
        "waits should time out once the buffer is full"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "the loop was held up: {elapsed:?}"
    );
}
