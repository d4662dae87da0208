//! A private headless PipeWire + WirePlumber for one test binary (`scripts/headless-pipewire`),
//! with this process's PipeWire environment pointed at it. Include with
//! `#[path = "support/headless_pipewire.rs"] mod headless_pipewire;`.

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "../../../test-support/skip.rs"]
mod skip;
use skip::skip_or_fail;

/// A headless PipeWire + WirePlumber, stopped on drop.
pub struct Daemon {
    dir: PathBuf,
    script: PathBuf,
}

impl Daemon {
    /// Starts it (`None`, with a note, where PipeWire is not installed).
    pub fn start() -> Option<Daemon> {
        let d = Daemon {
            dir: std::env::temp_dir().join(format!("wsync-pw-{}", std::process::id())),
            script: Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/headless-pipewire"),
        };
        match d.run("start") {
            Ok(()) => {}
            Err(why) if why.contains("not installed") => {
                skip_or_fail(&why);
                return None;
            }
            Err(why) => panic!("headless PipeWire did not start: {why}"),
        }
        // Point this process at it: XDG_RUNTIME_DIR and PIPEWIRE_RUNTIME_DIR from DIR/env
        // (the same paths when started again in the same DIR).
        let env = std::fs::read_to_string(d.dir.join("env")).expect("read DIR/env");
        for line in env.lines() {
            if let Some(kv) = line.strip_prefix("export ") {
                if let Some((k, v)) = kv.split_once('=') {
                    std::env::set_var(k, v);
                }
            } else if let Some(vars) = line.strip_prefix("unset ") {
                for k in vars.split_whitespace() {
                    std::env::remove_var(k);
                }
            }
        }
        Some(d)
    }

    /// `scripts/headless-pipewire CMD DIR`; the error is its stderr.
    pub fn run(&self, cmd: &str) -> Result<(), String> {
        let out = Command::new(&self.script)
            .arg(cmd)
            .arg(&self.dir)
            .output()
            .map_err(|e| format!("cannot run {:?}: {e}", self.script))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.run("stop");
    }
}
