//! Rules the types alone cannot express: cross-field constraints and ranges, checked once at load.

use super::{
    addr, Config, ConfigError, DiscoveryConfig, ServiceConfig, MAX_COALESCE, MAX_RETRY_ATTEMPTS,
    MIN_HEADER_BYTES,
};
use std::net::SocketAddr;
use std::path::Path;

impl Config {
    /// Checks what the types alone cannot: cross-field rules and ranges.
    pub fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        let invalid = |field: String, message: String| ConfigError::Invalid {
            file: file.to_path_buf(),
            field,
            message,
        };
        if let Some(r) = &self.register {
            r.validate()
                .map_err(|(field, message)| invalid(format!("register.{field}"), message))?;
        }
        let mut listeners: Vec<(SocketAddr, &str)> = vec![(self.admin.listen, "admin")];
        for (name, svc) in &self.services {
            let at = |f: &str| format!("services.{name}.{f}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
            {
                return Err(invalid(
                    format!("services.{name}"),
                    "service names may use only letters, digits, '_', '-' and '.'".into(),
                ));
            }
            if let Some((addr, other)) = listeners
                .iter()
                .find(|(a, _)| addr::overlaps(*a, svc.listen))
            {
                let message = if *addr == svc.listen {
                    format!("{addr} is already used by {other}")
                } else {
                    format!("{} overlaps {addr} of {other}: a wildcard address takes its port on every address it covers", svc.listen)
                };
                return Err(invalid(at("listen"), message));
            }
            listeners.push((svc.listen, name));
            match &svc.discovery {
                None if svc.backends.is_empty() => {
                    return Err(invalid(
                        format!("services.{name}"),
                        "no backends: give a `backends` list or a `discovery` source".into(),
                    ))
                }
                Some(_) if !svc.backends.is_empty() => {
                    return Err(invalid(
                        at("backends"),
                        "static backends and a discovery source are exclusive; keep one".into(),
                    ))
                }
                Some(DiscoveryConfig::Zookeeper(zk)) => {
                    if zk.port_override == Some(0) {
                        return Err(invalid(
                            at("discovery.zookeeper.port_override"),
                            "must be a port 1-65535".into(),
                        ));
                    }
                    if zk.coalesce > MAX_COALESCE {
                        return Err(invalid(
                            at("discovery.zookeeper.coalesce"),
                            format!("at most {}", humantime::format_duration(MAX_COALESCE)),
                        ));
                    }
                    if zk.hosts.is_empty() {
                        return Err(invalid(
                            at("discovery.zookeeper.hosts"),
                            "at least one host is required".into(),
                        ));
                    }
                    if !zk.path.starts_with('/') || (zk.path.len() > 1 && zk.path.ends_with('/')) {
                        return Err(invalid(
                            at("discovery.zookeeper.path"),
                            format!("{:?} must start with '/' and not end with one", zk.path),
                        ));
                    }
                }
                _ => {}
            }
            if svc.timeouts.connect.is_zero() {
                return Err(invalid(
                    at("timeouts.connect"),
                    "must be greater than zero".into(),
                ));
            }
            if svc.timeouts.idle.is_zero() {
                return Err(invalid(
                    at("timeouts.idle"),
                    "must be greater than zero".into(),
                ));
            }
            if svc.retries.attempts > MAX_RETRY_ATTEMPTS {
                return Err(invalid(
                    at("retries.attempts"),
                    format!("must be at most {MAX_RETRY_ATTEMPTS}"),
                ));
            }
            validate_http(svc).map_err(|(field, message)| invalid(at(field), message))?;
            if let Some(t) = &svc.tls_upstream {
                if t.client_cert.is_some() != t.client_key.is_some() {
                    return Err(invalid(
                        at("tls_upstream"),
                        "client_cert and client_key go together".into(),
                    ));
                }
            }
            if let Some(hc) = &svc.health_check {
                hc.validate()
                    .map_err(|(f, m)| invalid(at(&format!("health_check.{f}")), m))?;
            }
            if svc.ewma_decay.is_zero() {
                return Err(invalid(
                    at("ewma_decay"),
                    "must be greater than zero".into(),
                ));
            }
            if svc.panic_threshold > 100 {
                return Err(invalid(
                    at("panic_threshold"),
                    "must be between 0 and 100 (percent)".into(),
                ));
            }
            if let Some(o) = &svc.outlier {
                if o.consecutive_failures == 0
                    || o.max_ejection_percent > 100
                    || o.base_ejection > o.max_ejection
                {
                    return Err(invalid(
                        at("outlier"),
                        "consecutive_failures must be at least 1, max_ejection_percent at most 100, base_ejection at most max_ejection".into(),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// HTTP-mode ranges: the field (relative to the service) and what is wrong.
fn validate_http(svc: &ServiceConfig) -> Result<(), (&'static str, String)> {
    if !(0.0..=100.0).contains(&svc.retries.budget_percent) {
        return Err(("retries.budget_percent", "must be between 0 and 100".into()));
    }
    if svc.retries.backoff.base > svc.retries.backoff.max {
        return Err(("retries.backoff", "base must not exceed max".into()));
    }
    if svc.max_connections == Some(0) {
        return Err(("max_connections", "must be at least 1".into()));
    }
    if svc.http.max_header_bytes < MIN_HEADER_BYTES {
        return Err((
            "http.max_header_bytes",
            format!("must be at least {MIN_HEADER_BYTES}"),
        ));
    }
    let t = &svc.timeouts;
    for (field, d) in [
        ("timeouts.request", t.request),
        ("timeouts.header_read", t.header_read),
        ("timeouts.pool_idle", t.pool_idle),
    ] {
        if d.is_zero() {
            return Err((field, "must be greater than zero".into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::load::tests::parse;

    #[test]
    fn duplicate_listen_rejected() {
        let e = parse(
            "services:\n  a: { listen: 127.0.0.1:5000, backends: [127.0.0.1:1] }\n  b: { listen: 127.0.0.1:5000, backends: [127.0.0.1:1] }\n",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("services.b.listen: 127.0.0.1:5000 is already used by a"),
            "{e}"
        );
    }

    #[test]
    fn a_wildcard_listen_beside_an_address_it_covers_is_rejected() {
        let two = |a: &str, b: &str| {
            parse(&format!("admin: {{ listen: 127.0.0.1:3210 }}\nservices:\n  a: {{ listen: \"{a}\", backends: [127.0.0.1:1] }}\n  b: {{ listen: \"{b}\", backends: [127.0.0.1:1] }}\n"))
        };
        let e = two("0.0.0.0:4001", "127.0.0.1:4001")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("services.b.listen: 127.0.0.1:4001 overlaps 0.0.0.0:4001 of a"),
            "{e}"
        );
        assert!(two("[::]:4001", "127.0.0.1:4001").is_err());
        assert!(two("127.0.0.1:4001", "127.0.0.2:4001").is_ok());
        let e = two("0.0.0.0:3210", "127.0.0.1:4001")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("services.a.listen: 0.0.0.0:3210 overlaps 127.0.0.1:3210 of admin"),
            "{e}"
        );
    }
}
