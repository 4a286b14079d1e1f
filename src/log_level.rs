//! The process's log filter, replaceable while sinew runs (`PUT /api/log-level`, `sinew log-level`).
//!
//! The binary builds its tracing subscriber with the filter behind a `tracing_subscriber::reload` layer
//! and hands the handle to [`install`]. The filter lives as long as the process: a config reload does
//! not touch it; a restart starts again from `--log-level`, `RUST_LOG` or `info`.

use std::sync::OnceLock;
use tracing_subscriber::reload::Handle;
use tracing_subscriber::{EnvFilter, Registry};

/// Why the log filter could not be read or replaced.
#[derive(Debug, thiserror::Error)]
pub enum LogLevelError {
    /// The directive string does not parse.
    #[error("invalid log filter {directive:?}: {message}")]
    Invalid {
        /// What was asked for.
        directive: String,
        /// The parser's complaint.
        message: String,
    },
    /// The process did not install a reloadable filter (an embedded agent, a test).
    #[error("the log level cannot be changed in this process: its logging was not set up by `sinew run`")]
    NotInstalled,
    /// The subscriber that held the filter is gone.
    #[error("cannot replace the log filter: {0}")]
    Reload(String),
}

/// The reloadable filter, once the binary installed it.
static FILTER: OnceLock<Handle<EnvFilter, Registry>> = OnceLock::new();

/// The most a directive string may be, so a request cannot make the filter arbitrarily large.
pub const MAX_DIRECTIVE: usize = 4096;

/// Makes `handle` the process's log filter; a second call keeps the first one.
pub fn install(handle: Handle<EnvFilter, Registry>) {
    // A second subscriber cannot be installed either: keeping the first handle matches what logs.
    let _ = FILTER.set(handle);
}

/// Parses a filter in `tracing_subscriber::EnvFilter` syntax (`info,sinew::proxy=debug`), refusing
/// what it would otherwise skip with a warning (an unknown level, a malformed directive).
pub fn parse(directive: &str) -> Result<EnvFilter, LogLevelError> {
    let invalid = |message: String| LogLevelError::Invalid {
        directive: directive.chars().take(200).collect(),
        message,
    };
    let trimmed = directive.trim();
    if trimmed.is_empty() {
        return Err(invalid("empty: give at least a level, e.g. `info`".into()));
    }
    if directive.len() > MAX_DIRECTIVE {
        return Err(invalid(format!("longer than {MAX_DIRECTIVE} bytes")));
    }
    EnvFilter::builder()
        .with_regex(false)
        .parse(trimmed)
        .map_err(|e| invalid(e.to_string()))
}

/// The filter in force, as its directives.
pub fn current() -> Result<String, LogLevelError> {
    let handle = FILTER.get().ok_or(LogLevelError::NotInstalled)?;
    handle
        .with_current(|f| f.to_string())
        .map_err(|e| LogLevelError::Reload(e.to_string()))
}

/// Replaces the filter with `directive` and logs the change; returns the old and the new filter. A
/// directive that does not parse changes nothing.
pub fn set(directive: &str) -> Result<(String, String), LogLevelError> {
    let handle = FILTER.get().ok_or(LogLevelError::NotInstalled)?;
    let filter = parse(directive)?;
    let new = filter.to_string();
    let mut old = String::new();
    handle
        .modify(|f| {
            old = f.to_string();
            *f = filter;
        })
        .map_err(|e| LogLevelError::Reload(e.to_string()))?;
    tracing::info!(old = %old, new = %new, "log filter changed");
    Ok((old, new))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_filters_parse_and_bad_ones_are_refused() {
        for good in ["info", "warn,sinew::proxy=debug", " debug ", "sinew=trace"] {
            assert!(parse(good).is_ok(), "{good:?} should parse");
        }
        for bad in ["", "  ", "sinew=loud", "info,sinew=[", "=debug=x"] {
            let err = parse(bad).expect_err(bad);
            assert!(
                err.to_string().starts_with("invalid log filter"),
                "{bad:?}: {err}"
            );
        }
        assert!(parse(&"a".repeat(MAX_DIRECTIVE + 1)).is_err());
    }

    #[test]
    fn without_an_installed_filter_reading_and_setting_say_so() {
        assert!(matches!(current(), Err(LogLevelError::NotInstalled)));
        assert!(matches!(set("debug"), Err(LogLevelError::NotInstalled)));
    }
}
