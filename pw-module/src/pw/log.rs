//! Writing to the PipeWire log (the daemon's stderr or journal, filtered by its log level).

use std::ffi::CString;

use pipewire::spa::sys as spa_sys;
use pipewire::sys as pw_sys;

/// Log levels the module uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Something failed; the module did not load or stopped working.
    Error,
    /// Something unexpected that the module recovered from.
    Warn,
    /// One line per event a user may want to see (loaded, stream started/stopped).
    Info,
}

impl Level {
    fn spa(self) -> spa_sys::spa_log_level {
        match self {
            Level::Error => spa_sys::SPA_LOG_LEVEL_ERROR,
            Level::Warn => spa_sys::SPA_LOG_LEVEL_WARN,
            Level::Info => spa_sys::SPA_LOG_LEVEL_INFO,
        }
    }
}

/// Writes one line `wavesync: <msg>` to the PipeWire log at `level`.
///
/// Allocates: call it from the main loop, never from the real-time process callback.
pub fn log(level: Level, msg: &str) {
    let level = level.spa();
    // SAFETY: `pw_log_level` is a plain integer global that libpipewire initialises before
    // any module is loaded; reading it races only with a log-level change, which is harmless.
    let current = unsafe { std::ptr::addr_of!(pw_sys::pw_log_level).read() };
    if current < level {
        return;
    }
    let line = CString::new(format!("wavesync: {msg}").replace('\0', " "))
        .unwrap_or_else(|_| CString::from(c"wavesync: (unprintable message)"));
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call, and the
    // format "%s" consumes exactly the one string argument passed.
    unsafe {
        pw_sys::pw_log_log(
            level,
            c"module-wavesync".as_ptr(),
            0,
            c"wavesync".as_ptr(),
            c"%s".as_ptr(),
            line.as_ptr(),
        );
    }
}

/// `log(Level::Error, ...)`.
pub fn error(msg: &str) {
    log(Level::Error, msg)
}

/// `log(Level::Warn, ...)`.
pub fn warn(msg: &str) {
    log(Level::Warn, msg)
}

/// `log(Level::Info, ...)`.
pub fn info(msg: &str) {
    log(Level::Info, msg)
}
