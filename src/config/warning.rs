//! Differences between what a foreign config (Synapse, Nerve) asks for and what sinew does, reported
//! to the operator once at load instead of silently dropped.

use std::fmt;

/// How much a [`Warning`] matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Accepted: sinew already behaves so, or the setting is about an external HAProxy.
    Info,
    /// Ignored or approximated: sinew behaves differently from Synapse + HAProxy.
    Warn,
    /// A service is skipped.
    Error,
}

/// One difference between what a Synapse config asks for and what sinew does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// How much it matters.
    pub level: Level,
    /// What differs, starting with `services.NAME` when it is about one service.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
