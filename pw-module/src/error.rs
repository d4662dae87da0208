//! Why the module refused to load.

/// A module argument that cannot be used. Its `Display` is the single line the module writes
/// to the PipeWire log before refusing to load.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// An argument's value is malformed or out of range.
    #[error("invalid argument {key} = \"{value}\": {reason}")]
    Invalid {
        /// The argument's name, e.g. `destination.port`.
        key: &'static str,
        /// The value as given.
        value: String,
        /// What is wrong with it, and what would be right.
        reason: String,
    },
    /// Two arguments contradict each other.
    #[error("conflicting arguments: {0}")]
    Conflict(String),
}

impl ConfigError {
    /// Shorthand for [`ConfigError::Invalid`].
    pub fn invalid(key: &'static str, value: &str, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

/// Why the module could not start although its arguments were fine.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The arguments were refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A PipeWire call failed.
    #[error("{what} failed: {source}")]
    PipeWire {
        /// The call that failed.
        what: &'static str,
        /// The errno it reported.
        source: std::io::Error,
    },
    /// The sending engine (sockets, threads) could not start.
    #[error("cannot start the sender: {}", .0.describe(&crate::sender::SETTING_NAMES))]
    Engine(wavesync_engine::EngineError),
}
