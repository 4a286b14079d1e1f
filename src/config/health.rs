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
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// Check kind.
    #[serde(default, rename = "type")]
    pub kind: CheckType,
    /// HTTP: the path requested.
    #[serde(default = "default_path")]
    pub path: String,
    /// HTTP: statuses that pass; empty means any 2xx or 3xx (HAProxy's default).
    #[serde(default)]
    pub expect_status: Vec<u16>,
    /// HTTP: a substring the body must contain.
    #[serde(default)]
    pub expect_body: Option<String>,
    /// HTTP: the `Host` header sent (default: the backend address).
    #[serde(default)]
    pub host: Option<String>,
    /// Time between checks of a backend in a steady state.
    #[serde(default = "default_interval", with = "duration")]
    pub interval: Duration,
    /// Time between checks while a backend is changing state (default: `interval`).
    #[serde(
        default,
        with = "duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub fast_interval: Option<Duration>,
    /// Time between checks of a backend that is down (default: `interval`).
    #[serde(
        default,
        with = "duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub down_interval: Option<Duration>,
    /// Consecutive passes that bring a down backend up.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failures that take an up backend down.
    #[serde(default = "default_fall")]
    pub fall: u32,
    /// Time allowed for one check.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    /// Random spread added to each interval, in percent of it (HAProxy's `spread-checks`).
    #[serde(default = "default_jitter")]
    pub jitter: u32,
}

/// Passive outlier detection: backends that fail real traffic are ejected for a while.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Outlier {
    /// Consecutive failures (connect failures, resets, or 5xx in HTTP mode) that eject a backend.
    #[serde(default = "default_consecutive")]
    pub consecutive_failures: u32,
    /// The first ejection lasts this long; the n-th lasts n times as long.
    #[serde(default = "default_base_ejection", with = "duration")]
    pub base_ejection: Duration,
    /// Cap of an ejection's length.
    #[serde(default = "default_max_ejection", with = "duration")]
    pub max_ejection: Duration,
    /// At most this share of the set is ejected at once.
    #[serde(default = "default_max_ejection_percent")]
    pub max_ejection_percent: u32,
}

impl Default for Outlier {
    fn default() -> Self {
        Self {
            consecutive_failures: default_consecutive(),
            base_ejection: default_base_ejection(),
            max_ejection: default_max_ejection(),
            max_ejection_percent: default_max_ejection_percent(),
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

fn default_path() -> String {
    "/health".into()
}
fn default_interval() -> Duration {
    Duration::from_secs(2)
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}
fn default_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_jitter() -> u32 {
    10
}
fn default_consecutive() -> u32 {
    5
}
fn default_base_ejection() -> Duration {
    Duration::from_secs(30)
}
fn default_max_ejection() -> Duration {
    Duration::from_secs(300)
}
fn default_max_ejection_percent() -> u32 {
    50
}
