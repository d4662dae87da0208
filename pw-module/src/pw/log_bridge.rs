//! Routes the `log` crate's records (used by the sender engine's network thread) to the
//! PipeWire log, so everything the module says ends up in one place.

use crate::pw::log::{log as pw_log, Level};

struct PwLogger;

static LOGGER: PwLogger = PwLogger;

impl log::Log for PwLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Error => Level::Error,
            log::Level::Warn => Level::Warn,
            _ => Level::Info,
        };
        pw_log(level, &record.args().to_string());
    }

    fn flush(&self) {}
}

/// Installs the bridge (once per process; later calls do nothing). The `log` crate's state
/// is private to this shared object, so this does not touch other Rust code in the process.
pub fn install() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}
