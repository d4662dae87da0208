//! Runs the receiver: opens the sockets, starts the network and output threads and the status
//! socket, logs a status line every few seconds, and stops cleanly on SIGINT/SIGTERM or after
//! `--duration`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::config::Config;
use crate::device_delay::DeviceDelay;
use crate::feed;
use crate::network::Network;
use crate::playback::Playback;
use crate::settings::RoomControl;
use crate::status::{self, Shared};
use wavesync_net::NetError;

/// Why the receiver could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The sockets could not be opened.
    #[error(transparent)]
    Net(#[from] NetError),
    /// A thread could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    /// The output device failed for good (e.g. it does not exist).
    #[error("{0}")]
    Output(String),
    /// The key file could not be used.
    #[error("{0} (see --key-file / key_file)")]
    Key(#[from] wavesync_net::KeyFileError),
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// Runs until a signal or the configured duration ends it.
pub fn run(cfg: Config) -> Result<(), DaemonError> {
    install_signal_handlers();
    let shared: Shared = Arc::default();
    let (tx, rx) = feed::channel();
    let protection = crate::keys::load(cfg.key_file.as_deref())?;
    let delay = DeviceDelay::default();
    let room = RoomControl::open(&cfg.state_file, cfg.settings, &cfg.name);
    let settings = room.cell();
    let mut network = Network::open(&cfg, tx, shared.clone(), delay.clone(), room)?;
    if let Some(p) = protection {
        network.protect(p);
    }
    let playback = Playback::new(&cfg, rx, shared.clone(), delay, settings);
    // Fail early and clearly when the device cannot be opened at all.
    playback.check_device().map_err(DaemonError::Output)?;
    match status::serve(&cfg.status_socket, shared.clone()) {
        Ok(p) => info!("status on {}", p.display()),
        Err(e) => warn!(
            "no status socket at {}: {e} (wavesync status will not see this receiver)",
            cfg.status_socket.display()
        ),
    }
    info!(
        "listening on {}{}, clock from {:?}, output {:?}",
        cfg.listen,
        cfg.interface
            .as_deref()
            .map(|i| format!(" via {i}"))
            .unwrap_or_default(),
        cfg.clock,
        cfg.output
    );
    let stop = Arc::new(AtomicBool::new(false));
    let net_thread = {
        let stop = stop.clone();
        thread::Builder::new()
            .name("network".into())
            .spawn(move || network.run(stop))
            .map_err(DaemonError::Thread)?
    };
    let out_thread = {
        let stop = stop.clone();
        thread::Builder::new()
            .name("output".into())
            .spawn(move || playback.run(stop))
            .map_err(DaemonError::Thread)?
    };
    let started = Instant::now();
    let mut next_line = Instant::now() + Duration::from_secs_f64(cfg.status_interval_s.max(0.1));
    while !STOP.load(Ordering::Relaxed) && !out_thread.is_finished() {
        if cfg
            .duration_s
            .is_some_and(|d| started.elapsed().as_secs_f64() >= d)
        {
            break;
        }
        if cfg.status_interval_s > 0.0 && Instant::now() >= next_line {
            let line = match shared.lock() {
                Ok(s) => s.line(),
                Err(p) => p.into_inner().line(),
            };
            info!("{line}");
            next_line += Duration::from_secs_f64(cfg.status_interval_s);
        }
        // A few wake-ups a second: a signal, the duration or the output thread ending is
        // seen within 200 ms.
        thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = net_thread.join();
    let result = out_thread.join();
    let _ = std::fs::remove_file(&cfg.status_socket);
    let final_line = match shared.lock() {
        Ok(s) => s.line(),
        Err(p) => p.into_inner().line(),
    };
    info!("stopped: {final_line}");
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(DaemonError::Output(e)),
        Err(_) => Err(DaemonError::Output("the output thread panicked".into())),
    }
}
