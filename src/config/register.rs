//! The registration side (what Nerve did): this host's services, their checks, and where their
//! ephemeral znodes go. `nerve` translates an unmodified Nerve config into the same model.

use super::{duration, FieldError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Registration of this host's services.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Register {
    /// The `name` in every znode and the prefix of its node name (Nerve's `instance_id`); default: host name.
    pub instance_id: Option<String>,
    /// After SIGTERM, time between deleting the znodes and closing the listeners, so peers stop sending.
    #[serde(with = "duration")]
    pub drain: Duration,
    /// The services to register, by name.
    #[serde(deserialize_with = "super::unique::map")]
    pub services: BTreeMap<String, Registration>,
}

/// One service instance on this host.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// The host written into the znode.
    pub host: String,
    /// The port written into the znode.
    pub port: u16,
    /// ZooKeeper ensemble.
    pub zk_hosts: Vec<String>,
    /// Parent path of the znode.
    pub zk_path: String,
    /// ZooKeeper session timeout.
    #[serde(default = "default_session_timeout", with = "duration")]
    pub session_timeout: Duration,
    /// Time between check rounds (jittered by 10 %).
    #[serde(default = "default_interval", with = "duration")]
    pub check_interval: Duration,
    /// Weight written into the znode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Labels written into the znode.
    #[serde(
        default,
        deserialize_with = "super::unique::option_map",
        skip_serializing_if = "Option::is_none"
    )]
    pub labels: Option<BTreeMap<String, String>>,
    /// HAProxy server options written into the znode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub haproxy_server_options: Option<String>,
    /// The checks; the service is up when every check is up.
    pub checks: Vec<Check>,
}

/// What a check does.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// A TCP connection is accepted.
    Tcp,
    /// GET `uri` answers 2xx (and contains `expect`).
    Http,
    /// `command` exits 0.
    Exec,
    /// SET of `key` with a short TTL, then GET returns the value.
    Redis,
    /// A message published to a temporary queue is consumed back (AMQP 0-9-1).
    Rabbitmq,
}

/// One check.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// Kind.
    #[serde(rename = "type")]
    pub kind: CheckKind,
    /// Time allowed for one run.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    /// Consecutive passes that bring the check up.
    #[serde(default = "one")]
    pub rise: u32,
    /// Consecutive failures that take it down.
    #[serde(default = "one")]
    pub fall: u32,
    /// Where to connect; default: the registration's host and port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Port to connect to; default: the registration's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// http: the path requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// http: a substring the body must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
    /// exec: the program and its arguments (no shell).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// redis: the key written and read back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// redis: AUTH password; rabbitmq: the user's password (default `guest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// rabbitmq: the user (default `guest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// rabbitmq: the virtual host (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vhost: Option<String>,
    /// redis: database index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db: Option<u32>,
    /// http: extra request header fields; a `Host` among them replaces the default one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Time allowed to connect, within `timeout` (Nerve's `open_timeout`); default: all of `timeout`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "duration::option"
    )]
    pub connect_timeout: Option<Duration>,
    /// http: a 3xx status is healthy too, as in Nerve's http check; default: only 2xx.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub accept_redirects: bool,
}

/// Longest check interval, check timeout and session timeout accepted: far beyond any sensible value,
/// and far from where adding it to a clock reading overflows.
const MAX_PERIOD: Duration = Duration::from_secs(24 * 3600);

impl Default for Register {
    fn default() -> Self {
        Self {
            instance_id: None,
            drain: Duration::from_secs(2),
            services: BTreeMap::new(),
        }
    }
}

impl Register {
    /// Checks what types cannot, with fields relative to `register`.
    pub fn validate(&self) -> Result<(), FieldError> {
        for (name, r) in &self.services {
            let at = |f: &str| format!("services.{name}.{f}");
            if r.port == 0 {
                return Err(FieldError::new(at("port"), "must be 1-65535"));
            }
            if r.zk_hosts.is_empty() {
                return Err(FieldError::new(
                    at("zk_hosts"),
                    "at least one host is required",
                ));
            }
            if !r.zk_path.starts_with('/') || (r.zk_path.len() > 1 && r.zk_path.ends_with('/')) {
                return Err(FieldError::new(
                    at("zk_path"),
                    format!("{:?} must start with '/' and not end with one", r.zk_path),
                ));
            }
            if r.check_interval.is_zero() || r.check_interval > MAX_PERIOD {
                return Err(FieldError::new(
                    at("check_interval"),
                    "must be between 0 and 1 day",
                ));
            }
            if r.session_timeout > MAX_PERIOD {
                return Err(FieldError::new(
                    at("session_timeout"),
                    "must be at most 1 day",
                ));
            }
            if r.checks.is_empty() {
                return Err(FieldError::new(
                    at("checks"),
                    "at least one check is required",
                ));
            }
            for (i, c) in r.checks.iter().enumerate() {
                let at = |f: &str| format!("services.{name}.checks[{i}].{f}");
                if c.rise == 0 || c.fall == 0 {
                    return Err(FieldError::new(
                        at("rise"),
                        "rise and fall must be at least 1",
                    ));
                }
                if c.timeout.is_zero() || c.timeout > MAX_PERIOD {
                    return Err(FieldError::new(
                        at("timeout"),
                        "must be between 0 and 1 day",
                    ));
                }
                if c.kind == CheckKind::Exec && c.command.is_empty() {
                    return Err(FieldError::new(
                        at("command"),
                        "an exec check needs a command",
                    ));
                }
                for (k, v) in &c.headers {
                    if hyper::header::HeaderName::from_bytes(k.as_bytes()).is_err()
                        || hyper::header::HeaderValue::from_str(v).is_err()
                    {
                        return Err(FieldError::new(
                            at("headers"),
                            format!("{k:?}: {v:?} is not a valid header field"),
                        ));
                    }
                }
                if c.connect_timeout
                    .is_some_and(|t| t.is_zero() || t > MAX_PERIOD)
                {
                    return Err(FieldError::new(
                        at("connect_timeout"),
                        "must be between 0 and 1 day",
                    ));
                }
                if c.kind == CheckKind::Http && !c.uri.as_deref().unwrap_or("/").starts_with('/') {
                    return Err(FieldError::new(at("uri"), "must start with '/'"));
                }
                // AMQP carries these as short strings.
                for (field, value) in [("username", &c.username), ("vhost", &c.vhost)] {
                    if value.as_ref().is_some_and(|v| v.len() > 255) {
                        return Err(FieldError::new(at(field), "at most 255 bytes"));
                    }
                }
            }
        }
        Ok(())
    }
}

fn default_session_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_interval() -> Duration {
    Duration::from_millis(500)
}
fn default_timeout() -> Duration {
    Duration::from_secs(1)
}
fn one() -> u32 {
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amqp_short_strings_are_bounded_at_load() {
        let yaml = "services:\n  q:\n    host: h\n    port: 5672\n    zk_hosts: [zk:2181]\n    zk_path: /q\n    checks: [{ type: rabbitmq }]\n";
        let mut r: Register = serde_norway::from_str(yaml).unwrap();
        assert!(r.validate().is_ok());
        r.services.get_mut("q").unwrap().checks[0].vhost = Some("v".repeat(256));
        let at = r.validate().unwrap_err().field;
        assert_eq!(at, "services.q.checks[0].vhost");
    }

    #[test]
    fn periods_are_bounded_at_load() {
        let yaml = "services:\n  q:\n    host: h\n    port: 5672\n    zk_hosts: [zk:2181]\n    zk_path: /q\n    check_interval: 2d\n    checks: [{ type: tcp }]\n";
        let r: Register = serde_norway::from_str(yaml).unwrap();
        let at = r.validate().unwrap_err().field;
        assert_eq!(at, "services.q.check_interval");
    }
}
