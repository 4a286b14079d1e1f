//! Rules the types alone cannot express: cross-field constraints and ranges, checked once at load.

use super::{
    addr, Config, ConfigError, DiscoveryConfig, FieldError, Mode, ServiceConfig, TcpFastpath,
    UpstreamProtocol, MAX_COALESCE, MAX_RETRY_ATTEMPTS, MIN_HEADER_BYTES,
};
use std::net::SocketAddr;
use std::path::Path;

impl Config {
    /// Checks what the types alone cannot: cross-field rules and ranges.
    pub fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        let invalid = |e: FieldError| ConfigError::Invalid {
            file: file.to_path_buf(),
            field: e.field,
            message: e.problem,
        };
        if let Some(r) = &self.register {
            r.validate().map_err(|e| invalid(e.under("register")))?;
        }
        if self.threads.is_some_and(|t| t.get() > super::MAX_THREADS) {
            return Err(invalid(FieldError::new(
                "threads",
                format!("at most {}", super::MAX_THREADS),
            )));
        }
        self.validate_locality().map_err(invalid)?;
        let mut listeners: Vec<(SocketAddr, &str)> = vec![(self.admin.listen, "admin")];
        for (name, svc) in &self.services {
            let section = format!("services.{name}");
            check_name(name).map_err(|e| invalid(e.under(&section)))?;
            if let Some(listen) = svc.listen {
                free_listen(&listeners, listen).map_err(|e| invalid(e.under(&section)))?;
                listeners.push((listen, name));
            }
            service_rules(svc).map_err(|e| invalid(e.under(&section)))?;
            listener_rules(self, name, svc).map_err(|e| invalid(e.under(&section)))?;
        }
        for (name, frontend) in &self.http_frontends {
            let section = format!("http_frontends.{name}");
            check_name(name).map_err(|e| invalid(e.under(&section)))?;
            free_listen(&listeners, frontend.listen).map_err(|e| invalid(e.under(&section)))?;
            listeners.push((frontend.listen, name));
            frontend
                .validate(&self.services)
                .map_err(|e| invalid(e.under(&section)))?;
        }
        Ok(())
    }
}

/// Service and frontend names may use only letters, digits, '_', '-' and '.'.
fn check_name(name: &str) -> Result<(), FieldError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    {
        return Err(FieldError::new(
            "",
            "names may use only letters, digits, '_', '-' and '.'",
        ));
    }
    Ok(())
}

/// `listen` must not be, or overlap, an address already taken by one of `listeners`.
fn free_listen(listeners: &[(SocketAddr, &str)], listen: SocketAddr) -> Result<(), FieldError> {
    if let Some((addr, other)) = listeners.iter().find(|(a, _)| addr::overlaps(*a, listen)) {
        let problem = if *addr == listen {
            format!("{addr} is already used by {other}")
        } else {
            format!("{listen} overlaps {addr} of {other}: a wildcard address takes its port on every address it covers")
        };
        return Err(FieldError::new("listen", problem));
    }
    Ok(())
}

/// A service without `listen` must be reachable through a frontend, and so in HTTP mode, and may not
/// carry settings of the listener it does not have.
fn listener_rules(config: &Config, name: &str, svc: &ServiceConfig) -> Result<(), FieldError> {
    if svc.listen.is_some() {
        return Ok(());
    }
    let needs = |field: &str| {
        FieldError::new(
            field,
            "applies to the service's own listener, and there is none: give `listen` or remove it",
        )
    };
    if svc.tls_listen.is_some() {
        return Err(needs("tls_listen"));
    }
    if svc.max_client_connections.is_some() {
        return Err(needs("max_client_connections"));
    }
    if svc.mode != Mode::Http {
        return Err(FieldError::new(
            "listen",
            "required in mode tcp: only an HTTP service can be reached through an http_frontend",
        ));
    }
    if !config.http_frontends.values().any(|f| f.routes_to(name)) {
        return Err(FieldError::new(
            "listen",
            "unreachable: give listen or route to it from an http_frontend",
        ));
    }
    Ok(())
}

/// One service's own rules, with fields relative to the service.
fn service_rules(svc: &ServiceConfig) -> Result<(), FieldError> {
    match &svc.discovery {
        None if svc.backends.is_empty() => {
            return Err(FieldError::new(
                "",
                "no backends: give a `backends` list or a `discovery` source",
            ))
        }
        Some(_) if !svc.backends.is_empty() => {
            return Err(FieldError::new(
                "backends",
                "static backends and a discovery source are exclusive; keep one",
            ))
        }
        Some(DiscoveryConfig::Zookeeper(zk)) => {
            if zk.port_override == Some(0) {
                return Err(FieldError::new(
                    "discovery.zookeeper.port_override",
                    "must be a port 1-65535",
                ));
            }
            if zk.coalesce > MAX_COALESCE {
                return Err(FieldError::new(
                    "discovery.zookeeper.coalesce",
                    format!("at most {}", humantime::format_duration(MAX_COALESCE)),
                ));
            }
            if zk.hosts.is_empty() {
                return Err(FieldError::new(
                    "discovery.zookeeper.hosts",
                    "at least one host is required",
                ));
            }
            if zk.resolve_interval.is_some_and(|i| i.is_zero()) {
                return Err(FieldError::new(
                    "discovery.zookeeper.resolve_interval",
                    "must be greater than zero",
                ));
            }
            if !zk.path.starts_with('/') || (zk.path.len() > 1 && zk.path.ends_with('/')) {
                return Err(FieldError::new(
                    "discovery.zookeeper.path",
                    format!("{:?} must start with '/' and not end with one", zk.path),
                ));
            }
        }
        Some(DiscoveryConfig::Dns(dns)) => {
            if dns.servers.is_empty() {
                return Err(FieldError::new(
                    "discovery.dns.servers",
                    "at least one server is required",
                ));
            }
            if dns.interval.is_zero() {
                return Err(FieldError::new(
                    "discovery.dns.interval",
                    "must be greater than zero",
                ));
            }
        }
        _ => {}
    }
    if svc.timeouts.connect.is_zero() {
        return Err(FieldError::new(
            "timeouts.connect",
            "must be greater than zero",
        ));
    }
    if svc.timeouts.idle.is_zero() {
        return Err(FieldError::new(
            "timeouts.idle",
            "must be greater than zero",
        ));
    }
    if svc.retries.attempts > MAX_RETRY_ATTEMPTS {
        return Err(FieldError::new(
            "retries.attempts",
            format!("must be at most {MAX_RETRY_ATTEMPTS}"),
        ));
    }
    http_rules(svc)?;
    unix_rules(svc)?;
    if let Some(t) = &svc.tls_upstream {
        if t.client_cert.is_some() != t.client_key.is_some() {
            return Err(FieldError::new(
                "tls_upstream",
                "client_cert and client_key go together",
            ));
        }
    }
    if let Some(hc) = &svc.health_check {
        hc.validate().map_err(|e| e.under("health_check"))?;
    }
    if svc.connection_log && svc.mode == Mode::Http {
        return Err(FieldError::new(
            "connection_log",
            "applies to mode tcp; an HTTP service logs its requests with http.access_log",
        ));
    }
    if svc.send_proxy.is_some() && svc.mode == Mode::Http {
        let h2 = svc.upstream_protocol != crate::config::UpstreamProtocol::Http1
            || svc
                .tls_upstream
                .as_ref()
                .is_some_and(|t| t.alpn.iter().any(|p| p == "h2"));
        if h2 {
            return Err(FieldError::new(
                "send_proxy",
                "needs HTTP/1.1 to the backends (upstream_protocol: http1, no h2 in tls_upstream.alpn): HTTP/2 connections are shared by all clients",
            ));
        }
    }
    if !svc.tcp_fastpath.is_copy() {
        let refused = if svc.mode == Mode::Http && svc.tcp_fastpath == TcpFastpath::Sockmap {
            Some("applies to mode tcp only (mode http takes copy or io_uring)")
        } else if svc.tls_upstream.is_some() || svc.tls_listen.is_some() {
            Some("cannot carry TLS (tls_upstream, tls_listen): TLS runs on the copy loop; use copy")
        } else {
            None
        };
        if let Some(why) = refused {
            let path = svc.tcp_fastpath.label();
            return Err(FieldError::new("tcp_fastpath", format!("{path} {why}")));
        }
    }
    if svc.accept_proxy && svc.listen.is_none() {
        return Err(FieldError::new(
            "accept_proxy",
            "applies to the service's own listener; set listen",
        ));
    }
    if svc.ewma_decay.is_zero() {
        return Err(FieldError::new("ewma_decay", "must be greater than zero"));
    }
    if let Some(r) = &svc.locality_routing {
        r.validate().map_err(|e| e.under("locality_routing"))?;
    }
    if svc.panic_threshold > 100 {
        return Err(FieldError::new(
            "panic_threshold",
            "must be between 0 and 100 (percent)",
        ));
    }
    if let Some(o) = &svc.outlier {
        if o.consecutive_failures == 0
            || o.max_ejection_percent > 100
            || o.base_ejection > o.max_ejection
        {
            return Err(FieldError::new(
                "outlier",
                "consecutive_failures must be at least 1, max_ejection_percent at most 100, base_ejection at most max_ejection",
            ));
        }
    }
    Ok(())
}

/// HTTP-mode ranges, with fields relative to the service.
fn http_rules(svc: &ServiceConfig) -> Result<(), FieldError> {
    if !(0.0..=100.0).contains(&svc.retries.budget_percent) {
        return Err(FieldError::new(
            "retries.budget_percent",
            "must be between 0 and 100",
        ));
    }
    if svc.retries.backoff.base > svc.retries.backoff.max {
        return Err(FieldError::new(
            "retries.backoff",
            "base must not exceed max",
        ));
    }
    if svc.max_connections == Some(0) {
        return Err(FieldError::new("max_connections", "must be at least 1"));
    }
    if svc.http.max_header_bytes < MIN_HEADER_BYTES {
        return Err(FieldError::new(
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
            return Err(FieldError::new(field, "must be greater than zero"));
        }
    }
    Ok(())
}

/// Unix-socket backends: only where a name cannot be resolved (not DNS), and without TLS or HTTP/2
/// upstream, which sinew speaks over TCP only.
fn unix_rules(svc: &ServiceConfig) -> Result<(), FieldError> {
    let dns = match &svc.discovery {
        Some(DiscoveryConfig::Dns(dns)) => dns.servers.as_slice(),
        _ => &[],
    };
    let lists = [
        ("backends", svc.backends.as_slice()),
        ("default_servers", svc.default_servers.as_slice()),
        ("discovery.dns.servers", dns),
    ];
    for (field, list) in lists {
        let Some(unix) = list.iter().find(|b| addr::is_unix(&b.host)) else {
            continue;
        };
        let refused = if field == "discovery.dns.servers" {
            "a Unix socket has no name to resolve; list it under `backends`"
        } else if svc.tls_upstream.is_some() {
            "TLS to a Unix-socket backend is not supported; drop tls_upstream or use host:port"
        } else if svc.upstream_protocol == UpstreamProtocol::Http2 {
            "HTTP/2 to a Unix-socket backend is not supported; use upstream_protocol: http1"
        } else {
            continue;
        };
        return Err(FieldError::new(field, format!("{}: {refused}", unix.host)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::load::tests::parse;

    #[test]
    fn connection_log_is_for_tcp_services_only() {
        let service = |mode: &str| {
            parse(&format!(
                "services:\n  a: {{ listen: 127.0.0.1:5000, mode: {mode}, connection_log: true, backends: [127.0.0.1:1] }}\n"
            ))
        };
        let e = service("http").unwrap_err().to_string();
        assert!(
            e.contains("services.a.connection_log: applies to mode tcp"),
            "{e}"
        );
        let config = service("tcp").expect("a tcp service may log connections");
        assert!(config.services["a"].connection_log);
    }

    #[test]
    fn unix_backends_refuse_what_needs_tcp() {
        let ok = parse("services:\n  a: { listen: 127.0.0.1:5000, mode: http, backends: [\"unix:/run/a.sock\", 127.0.0.1:1] }\n")
            .expect("a Unix-socket backend beside a TCP one");
        assert_eq!(ok.services["a"].backends[0].host, "unix:/run/a.sock");
        for (service, says) in [
            (
                "{ listen: 127.0.0.1:5000, backends: [\"unix:/run/a.sock\"], tls_upstream: {} }",
                "services.a.backends: unix:/run/a.sock: TLS to a Unix-socket backend is not supported",
            ),
            (
                "{ listen: 127.0.0.1:5000, mode: http, upstream_protocol: http2, backends: [\"unix:/run/a.sock\"] }",
                "services.a.backends: unix:/run/a.sock: HTTP/2 to a Unix-socket backend",
            ),
            (
                "{ listen: 127.0.0.1:5000, discovery: { dns: { servers: [\"unix:/run/a.sock\"] } } }",
                "services.a.discovery.dns.servers: unix:/run/a.sock: a Unix socket has no name",
            ),
            (
                "{ listen: 127.0.0.1:5000, backends: [\"unix:run/a.sock\"] }",
                "invalid Unix socket backend \"unix:run/a.sock\"",
            ),
        ] {
            let e = parse(&format!("services:\n  a: {service}\n")).unwrap_err().to_string();
            assert!(e.contains(says), "{service}: {e}");
        }
    }

    #[test]
    fn send_proxy_needs_http1_upstreams_and_accept_proxy_a_listener() {
        let config = parse(
            "services:\n  a: { listen: 127.0.0.1:5000, mode: http, send_proxy: v2, accept_proxy: true, backends: [127.0.0.1:1] }\n",
        )
        .expect("send_proxy over HTTP/1.1 is valid");
        assert_eq!(
            config.services["a"].send_proxy,
            Some(crate::config::SendProxy::V2)
        );
        assert!(config.services["a"].accept_proxy);
        let e = parse(
            "services:\n  a: { listen: 127.0.0.1:5000, mode: http, upstream_protocol: http2, send_proxy: v1, backends: [127.0.0.1:1] }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("services.a.send_proxy: needs HTTP/1.1"), "{e}");
        let e = parse(
            "services:\n  a: { send_proxy: v3, listen: 127.0.0.1:5000, backends: [127.0.0.1:1] }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("v3"), "{e}");
    }

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

    /// Two HTTP services, `a` portless with `extra` settings, and the `http_frontends` section `front`.
    fn portless(extra: &str, front: &str) -> Result<crate::config::Config, String> {
        parse(&format!(
            "services:\n  a: {{ mode: http, backends: [127.0.0.1:1]{extra} }}\n  b: {{ listen: 127.0.0.1:5001, mode: http, backends: [127.0.0.1:1] }}\n{front}"
        ))
        .map_err(|e| e.to_string())
    }

    #[test]
    fn a_service_without_listen_must_be_routed_to_by_a_frontend() {
        let route = "http_frontends:\n  f: { listen: 127.0.0.1:8081, routes: [{ service: a, when: [{ match: host, values: [a] }] }] }\n";
        let c = portless("", route).unwrap();
        assert_eq!(c.services["a"].listen, None);
        let default = "http_frontends:\n  f: { listen: 127.0.0.1:8081, default_service: a }\n";
        assert!(portless("", default).is_ok());
        let e = portless("", "").unwrap_err();
        assert!(
            e.contains(
                "services.a.listen: unreachable: give listen or route to it from an http_frontend"
            ),
            "{e}"
        );
        let elsewhere = "http_frontends:\n  f: { listen: 127.0.0.1:8081, default_service: b }\n";
        assert!(portless("", elsewhere)
            .unwrap_err()
            .contains("services.a.listen: unreachable"));
    }

    #[test]
    fn a_service_without_listen_cannot_be_tcp_or_carry_listener_settings() {
        let e = parse("services:\n  a: { backends: [127.0.0.1:1] }\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("services.a.listen: required in mode tcp"), "{e}");
        let route = "http_frontends:\n  f: { listen: 127.0.0.1:8081, default_service: a }\n";
        let e = portless(", max_client_connections: 5", route).unwrap_err();
        assert!(
            e.contains("services.a.max_client_connections: applies to the service's own listener"),
            "{e}"
        );
        let e = portless(", tls_listen: { cert: c.pem, key: k.pem }", route).unwrap_err();
        assert!(e.contains("services.a.tls_listen: applies"), "{e}");
    }
}
