//! Backend health settings: active checks (HAProxy's inter/fastinter/downinter/rise/fall), passive
//! outlier ejection, panic threshold and slow start.

use super::{duration, FieldError};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What an active check does.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CheckType {
    /// A TCP connect succeeds.
    #[default]
    Tcp,
    /// An HTTP GET of `path` answers an expected status (and body).
    Http,
}

/// Active health checks from this host to each backend.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HealthCheck {
    /// Check kind.
    #[serde(rename = "type")]
    pub kind: CheckType,
    /// HTTP: the path requested.
    pub path: String,
    /// HTTP: statuses that pass; empty means any 2xx or 3xx (HAProxy's default).
    pub expect_status: Vec<u16>,
    /// HTTP: a substring the body must contain.
    pub expect_body: Option<String>,
    /// HTTP: the `Host` header sent (default: the backend address).
    pub host: Option<String>,
    /// Time between checks of a backend in a steady state.
    #[serde(with = "duration")]
    pub interval: Duration,
    /// Time between checks while a backend is changing state (default: `interval`).
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub fast_interval: Option<Duration>,
    /// Time between checks of a backend that is down (default: `interval`).
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub down_interval: Option<Duration>,
    /// Consecutive passes that bring a down backend up.
    pub rise: u32,
    /// Consecutive failures that take an up backend down.
    pub fall: u32,
    /// Time allowed for one check.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Random spread added to each interval, in percent of it (HAProxy's `spread-checks`).
    pub jitter: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            kind: CheckType::Tcp,
            path: "/health".into(),
            expect_status: Vec::new(),
            expect_body: None,
            host: None,
            interval: Duration::from_secs(2),
            fast_interval: None,
            down_interval: None,
            rise: 2,
            fall: 3,
            timeout: Duration::from_secs(1),
            jitter: 10,
        }
    }
}

/// Passive outlier detection: backends that fail real traffic are ejected for a while.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Outlier {
    /// Consecutive failures (connect failures, resets, or 5xx in HTTP mode) that eject a backend.
    pub consecutive_failures: u32,
    /// The first ejection lasts this long; the n-th lasts n times as long.
    #[serde(with = "duration")]
    pub base_ejection: Duration,
    /// Cap of an ejection's length.
    #[serde(with = "duration")]
    pub max_ejection: Duration,
    /// At most this share of the set is ejected at once.
    pub max_ejection_percent: u32,
}

impl Default for Outlier {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 50,
        }
    }
}

impl HealthCheck {
    /// Checks ranges, with fields relative to `health_check`.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.rise == 0 || self.fall == 0 {
            return Err(FieldError::new("rise", "rise and fall must be at least 1"));
        }
        if self.interval.is_zero() || self.timeout.is_zero() {
            return Err(FieldError::new(
                "interval",
                "interval and timeout must be greater than zero",
            ));
        }
        if self.jitter > 50 {
            return Err(FieldError::new(
                "jitter",
                "must be between 0 and 50 (percent)",
            ));
        }
        if !self.path.starts_with('/') {
            return Err(FieldError::new(
                "path",
                format!("{:?} must start with '/'", self.path),
            ));
        }
        Ok(())
    }
}
