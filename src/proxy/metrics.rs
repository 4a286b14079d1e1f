//! The metric families the proxy owns: each service's client connections, HTTP answers sinew gave
//! itself, failures no backend is charged with, TLS, and the HTTP pool's backend connections.

use super::red::{RedFamilies, ServiceRed};
use super::PoolMetrics;
use crate::config::Mode;
use crate::metrics::Registry;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec};
use std::sync::Arc;

/// The proxy's families, registered once per agent.
pub struct ProxyMetrics {
    connections: IntCounterVec,
    active: IntGaugeVec,
    no_backend: IntCounterVec,
    retries: IntCounterVec,
    idle_timeouts: IntCounterVec,
    rejected: IntCounterVec,
    http_errors: IntCounterVec,
    http_budget_exhausted: IntCounterVec,
    tls_handshakes: IntCounterVec,
    tls_failures: IntCounterVec,
    tls_reload_failures: IntCounterVec,
    tls_expiry: IntGaugeVec,
    pool_opened: IntCounterVec,
    pool_open: IntGaugeVec,
    accept_errors: IntCounterVec,
    local_errors: IntCounterVec,
    client_errors: IntCounterVec,
    proxy_protocol_errors: IntCounterVec,
    fastpath: IntGaugeVec,
    red: RedFamilies,
}

/// The client-connection children of one service.
#[derive(Clone)]
pub struct ServiceMetrics {
    /// Client connections accepted.
    pub connections: IntCounter,
    /// Client connections open now.
    pub active: IntGauge,
    /// Client connections closed because no backend was available.
    pub no_backend: IntCounter,
    /// Connection attempts retried on another backend.
    pub retries: IntCounter,
    /// Connections closed by the idle timeout.
    pub idle_timeouts: IntCounter,
    /// Client connections refused by `max_client_connections`.
    pub rejected: IntCounter,
}

/// Per-service HTTP metric children.
pub struct HttpMetrics {
    service: String,
    errors: IntCounterVec,
    /// Retries refused because the retry budget was spent.
    pub budget_exhausted: IntCounter,
}

impl HttpMetrics {
    /// The counter of answers sinew gave itself for `cause` (no_backend, connect_failure, ...).
    pub fn error(&self, cause: &str) -> IntCounter {
        self.errors
            .with_label_values(&[self.service.as_str(), cause])
    }
}

/// Per-service counters of failures that are not a backend's: accept errors, local resource limits
/// and client faults. Labelled by kind when they happen (they are rare), from fixed sets of kinds.
#[derive(Clone)]
pub struct FaultMetrics {
    service: String,
    accept: IntCounterVec,
    local: IntCounterVec,
    client: IntCounterVec,
    proxy_protocol: IntCounterVec,
}

impl FaultMetrics {
    /// Counts a failed accept of `kind`.
    pub fn accept_error(&self, kind: &str) {
        self.accept.with_label_values(&[&self.service, kind]).inc();
    }

    /// Counts a backend connect that failed for the local resource `kind`.
    pub fn local_error(&self, kind: &str) {
        self.local.with_label_values(&[&self.service, kind]).inc();
    }

    /// Counts a request that failed by the client's fault `kind`.
    pub fn client_error(&self, kind: &str) {
        self.client.with_label_values(&[&self.service, kind]).inc();
    }

    /// Counts a client connection closed because its PROXY protocol header was bad for `cause`.
    pub fn proxy_protocol_error(&self, cause: &str) {
        self.proxy_protocol
            .with_label_values(&[&self.service, cause])
            .inc();
    }
}

/// The TLS metric children of one service. `side` is `upstream` (sinew is the client) or `listen`
/// (sinew is the server); every label value comes from a fixed set, so cardinality stays bounded.
#[derive(Clone)]
pub struct TlsMetrics {
    service: String,
    handshakes: IntCounterVec,
    failures: IntCounterVec,
    reload_failures: IntCounterVec,
    expiry: IntGaugeVec,
}

/// The (side, kind) pairs of the certificate-expiry gauge.
const TLS_CERT_KINDS: [(&str, &str); 4] = [
    ("listen", "cert"),
    ("listen", "ca"),
    ("upstream", "cert"),
    ("upstream", "ca"),
];

impl TlsMetrics {
    /// Counts a handshake on `side`: `Ok`, or failed for `reason`.
    pub fn handshake(&self, side: &str, result: Result<(), &str>) {
        let s = self.service.as_str();
        match result {
            Ok(()) => self.handshakes.with_label_values(&[s, side, "ok"]).inc(),
            Err(reason) => {
                self.handshakes
                    .with_label_values(&[s, side, "failed"])
                    .inc();
                self.failures.with_label_values(&[s, side, reason]).inc();
            }
        }
    }

    /// Counts changed certificate files on `side` that could not be used.
    pub fn reload_failed(&self, side: &str) {
        self.reload_failures
            .with_label_values(&[self.service.as_str(), side])
            .inc();
    }

    /// Sets the not-after time (unix seconds) of the `kind` (`cert` or `ca`) file on `side`.
    pub fn expiry(&self, side: &str, kind: &str, not_after: i64) {
        self.expiry
            .with_label_values(&[self.service.as_str(), side, kind])
            .set(not_after);
    }

    /// Drops the service's expiry series (before its TLS settings are loaded again).
    pub fn forget_expiry(&self) {
        for (side, kind) in TLS_CERT_KINDS {
            // Removing a series that was never created is not an error worth reporting.
            let _ = self
                .expiry
                .remove_label_values(&[self.service.as_str(), side, kind]);
        }
    }
}

impl ProxyMetrics {
    /// Creates the proxy's families in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let r = registry;
        let s = &["service"];
        let sb = &["service", "backend"];
        registry.register_rendered(std::sync::Arc::new(super::uring::EngineMetrics));
        Ok(Self {
            fastpath: r.gauge(
                "sinew_tcp_fastpath",
                "1 for the path a TCP service's bytes take (copy, the kernel's sockmap, or io_uring), 0 for the others.",
                &["service", "path"],
            )?,
            connections: r.counter(
                "sinew_service_connections_total",
                "Client connections accepted.",
                s,
            )?,
            active: r.gauge(
                "sinew_service_connections_active",
                "Client connections open now.",
                s,
            )?,
            no_backend: r.counter(
                "sinew_service_no_backend_total",
                "Client connections closed because no backend could be reached.",
                s,
            )?,
            retries: r.counter(
                "sinew_service_retries_total",
                "Connection attempts retried on another backend.",
                s,
            )?,
            idle_timeouts: r.counter(
                "sinew_service_idle_timeouts_total",
                "Connections closed after the idle timeout.",
                s,
            )?,
            rejected: r.counter(
                "sinew_service_rejected_connections_total",
                "Client connections closed at once because max_client_connections were open.",
                s,
            )?,
            http_errors: r.counter(
                "sinew_http_errors_total",
                "HTTP requests sinew answered itself, by cause (no_backend 503, connect_failure 502, reset 502, timeout 504, bad_request 400, head_too_large 431, head_timeout 408, ...).",
                &["service", "cause"],
            )?,
            http_budget_exhausted: r.counter(
                "sinew_http_retry_budget_exhausted_total",
                "HTTP retries not attempted because the retry budget was spent.",
                s,
            )?,
            tls_handshakes: r.counter(
                "sinew_tls_handshakes_total",
                "TLS handshakes with clients (side listen) and backends (side upstream, checks included), by result.",
                &["service", "side", "result"],
            )?,
            tls_failures: r.counter(
                "sinew_tls_handshake_failures_total",
                "Failed TLS handshakes by reason (unknown_ca, expired, hostname_mismatch, no_client_cert, bad_certificate, protocol, io, timeout, other).",
                &["service", "side", "reason"],
            )?,
            tls_reload_failures: r.counter(
                "sinew_tls_certificate_reload_failures_total",
                "Changed certificate, key or CA files that could not be used (the previous ones stay).",
                &["service", "side"],
            )?,
            tls_expiry: r.gauge(
                "sinew_tls_certificate_expiry_timestamp_seconds",
                "Unix time at which the earliest-expiring certificate of a file in use expires (kind cert: presented by sinew; ca: trusted).",
                &["service", "side", "kind"],
            )?,
            pool_opened: r.counter(
                "sinew_backend_http_connections_opened_total",
                "HTTP connections opened to a backend by the pool (requests minus these were served on reused connections).",
                sb,
            )?,
            pool_open: r.gauge("sinew_backend_http_connections_open", "HTTP pool connections open to a backend now.", sb)?,
            accept_errors: r.counter(
                "sinew_listener_accept_errors_total",
                "Failed accepts on a service's listener, by kind (emfile, enfile, enobufs, enomem, other).",
                &["service", "kind"],
            )?,
            local_errors: r.counter(
                "sinew_service_local_errors_total",
                "Backend connects that failed for a local resource limit (emfile, enfile, enobufs, enomem, eaddrnotavail); never charged to the backend.",
                &["service", "kind"],
            )?,
            client_errors: r.counter(
                "sinew_service_client_errors_total",
                "Requests that failed by the client's fault, by kind (bad_request, head_too_large, head_timeout, bad_request_body, client_aborted, body_timeout); never charged to a backend.",
                &["service", "kind"],
            )?,
            proxy_protocol_errors: r.counter(
                "sinew_proxy_protocol_errors_total",
                "Client connections closed because their PROXY protocol header (accept_proxy) was missing, malformed, too long, truncated or late, by cause.",
                &["service", "cause"],
            )?,
            red: RedFamilies::register(r)?,
        })
    }

    /// The RED children of a service in `mode`, every series created now at 0.
    pub fn red(&self, service: &str, mode: Mode) -> Arc<ServiceRed> {
        self.red.service(service, mode)
    }

    /// Records that `service`'s bytes take `path` (`copy`, `sockmap` or `io_uring`).
    pub fn fastpath(&self, service: &str, path: crate::config::TcpFastpath) {
        use crate::config::TcpFastpath::{Copy, IoUring, Sockmap};
        for p in [Copy, Sockmap, IoUring] {
            self.fastpath
                .with_label_values(&[service, p.label()])
                .set(i64::from(p == path));
        }
    }

    /// The client-connection children of one service.
    pub fn service(&self, service: &str) -> ServiceMetrics {
        let l = &[service];
        ServiceMetrics {
            connections: self.connections.with_label_values(l),
            active: self.active.with_label_values(l),
            no_backend: self.no_backend.with_label_values(l),
            retries: self.retries.with_label_values(l),
            idle_timeouts: self.idle_timeouts.with_label_values(l),
            rejected: self.rejected.with_label_values(l),
        }
    }

    /// The TLS children of a service.
    pub fn tls(&self, service: &str) -> TlsMetrics {
        TlsMetrics {
            service: service.to_string(),
            handshakes: self.tls_handshakes.clone(),
            failures: self.tls_failures.clone(),
            reload_failures: self.tls_reload_failures.clone(),
            expiry: self.tls_expiry.clone(),
        }
    }

    /// The HTTP pool counters of one service.
    pub fn pool(&self, service: &str) -> PoolMetrics {
        PoolMetrics {
            service: service.to_string(),
            opened: self.pool_opened.clone(),
            open: self.pool_open.clone(),
        }
    }

    /// The counters of one service's failures that no backend is charged with.
    pub fn faults(&self, service: &str) -> FaultMetrics {
        FaultMetrics {
            service: service.to_string(),
            accept: self.accept_errors.clone(),
            local: self.local_errors.clone(),
            client: self.client_errors.clone(),
            proxy_protocol: self.proxy_protocol_errors.clone(),
        }
    }

    /// The HTTP children of one service.
    pub fn http(&self, service: &str) -> HttpMetrics {
        HttpMetrics {
            service: service.to_string(),
            errors: self.http_errors.clone(),
            budget_exhausted: self.http_budget_exhausted.with_label_values(&[service]),
        }
    }
}
