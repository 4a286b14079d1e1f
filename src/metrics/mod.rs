//! Prometheus metrics: one registry per agent, metric families defined here, children handed out per
//! service and per backend so hot paths touch only pre-resolved atomics.

pub mod backend;
mod family;

pub use backend::BackendMetrics;
use family::{counter, gauge, histogram, Families, ServiceFamilies};
use prometheus::{
    Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry,
};
use std::sync::Arc;

/// Buckets of the response-time histogram, in seconds (1 ms to 10 s).
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Buckets of the write-to-swap histogram, in seconds (5 ms to 2 min).
const PROPAGATION_BUCKETS: [f64; 20] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0,
    20.0, 60.0, 120.0,
];

/// Buckets of the requests-per-read histogram.
const REQUEST_COUNT_BUCKETS: [f64; 12] = [
    1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0, 30000.0,
];

/// ZooKeeper request kinds, as `kind` label values.
pub const ZK_REQUEST_KINDS: [&str; 5] = ["list", "get_data", "exists", "watch", "multi_read"];

/// All metric families of one agent.
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// The per-backend series, rendered after the registry.
    backends: backend::BackendSeries,
    /// The families holding series of proxied services, for removing a service.
    service_families: ServiceFamilies,
    service_connections: IntCounterVec,
    service_active: IntGaugeVec,
    service_no_backend: IntCounterVec,
    service_retries: IntCounterVec,
    service_idle_timeouts: IntCounterVec,
    service_backends: IntGaugeVec,
    service_swaps: IntCounterVec,
    discovery_errors: IntCounterVec,
    http_errors: IntCounterVec,
    http_budget_exhausted: IntCounterVec,
    service_panic: IntGaugeVec,
    service_panics: IntCounterVec,
    service_rejected: IntCounterVec,
    task_panics: IntCounterVec,
    task_stalls: IntCounterVec,
    tls_handshakes: IntCounterVec,
    tls_failures: IntCounterVec,
    tls_reload_failures: IntCounterVec,
    tls_expiry: IntGaugeVec,
    queue_depth: IntGaugeVec,
    queue_wait: HistogramVec,
    queue_rejected: IntCounterVec,
    pool_opened: IntCounterVec,
    pool_open: IntGaugeVec,
    zk_connected: IntGaugeVec,
    zk_events: IntCounterVec,
    zk_znodes: IntGaugeVec,
    zk_skipped: IntCounterVec,
    zk_service_connected: IntGaugeVec,
    zk_last_update: IntGaugeVec,
    zk_requests: IntCounterVec,
    zk_requests_per_read: HistogramVec,
    zk_propagation: HistogramVec,
    register_up: IntGaugeVec,
    register_znode: IntGaugeVec,
    register_check_failures: IntCounterVec,
    register_transitions: IntCounterVec,
    upgrade_handovers: IntCounterVec,
    accept_errors: IntCounterVec,
    local_errors: IntCounterVec,
    client_errors: IntCounterVec,
    admin_refused: IntCounterVec,
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
}

/// Per-service metric children.
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
    /// Backends in the current set.
    pub backends: IntGauge,
    /// Backend-set swaps.
    pub swaps: IntCounter,
    /// 1 while the panic threshold overrides health.
    pub panic: IntGauge,
    /// Client connections refused by `max_client_connections`.
    pub rejected: IntCounter,
    /// Times the service entered panic mode.
    pub panics: IntCounter,
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

/// Per-service ZooKeeper discovery children.
pub struct ZkDiscoveryMetrics {
    /// Requests by kind, in the order of [`ZK_REQUEST_KINDS`].
    pub requests: [IntCounter; 5],
    /// Requests made by each re-read.
    pub requests_per_read: Histogram,
    /// Delay from a znode's write to the swap that applied it.
    pub propagation: Histogram,
}

impl Metrics {
    /// The ZooKeeper discovery children of one service.
    pub fn zk_discovery(&self, service: &str) -> ZkDiscoveryMetrics {
        ZkDiscoveryMetrics {
            requests: ZK_REQUEST_KINDS.map(|k| self.zk_requests.with_label_values(&[service, k])),
            requests_per_read: self.zk_requests_per_read.with_label_values(&[service]),
            propagation: self.zk_propagation.with_label_values(&[service]),
        }
    }

    /// Creates and registers every metric family.
    pub fn new() -> Result<Self, prometheus::Error> {
        let r = Families::new();
        let sb = &["service", "backend"];
        let s = &["service"];
        let build = gauge(
            &r,
            "sinew_build_info",
            "Build information; always 1.",
            &["version"],
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let admin_refused = counter(
            &r,
            "sinew_admin_requests_refused_total",
            "Admin API requests refused, by reason (host: not localhost or an IP address; origin: cross-site; token: missing or wrong admin.token).",
            &["reason"],
        )?;
        for reason in ["host", "origin", "token"] {
            admin_refused.with_label_values(&[reason]);
        }
        Ok(Self {
            service_connections: counter(
                &r,
                "sinew_service_connections_total",
                "Client connections accepted.",
                s,
            )?,
            service_active: gauge(
                &r,
                "sinew_service_connections_active",
                "Client connections open now.",
                s,
            )?,
            service_no_backend: counter(
                &r,
                "sinew_service_no_backend_total",
                "Client connections closed because no backend could be reached.",
                s,
            )?,
            service_retries: counter(
                &r,
                "sinew_service_retries_total",
                "Connection attempts retried on another backend.",
                s,
            )?,
            service_idle_timeouts: counter(
                &r,
                "sinew_service_idle_timeouts_total",
                "Connections closed after the idle timeout.",
                s,
            )?,
            service_backends: gauge(
                &r,
                "sinew_service_backends",
                "Backends in the service's current set.",
                s,
            )?,
            service_swaps: counter(
                &r,
                "sinew_service_backend_swaps_total",
                "Backend sets swapped in.",
                s,
            )?,
            discovery_errors: counter(
                &r,
                "sinew_discovery_errors_total",
                "Discovery reads that failed or were rejected (the previous set stays).",
                &["service", "source"],
            )?,
            http_errors: counter(
                &r,
                "sinew_http_errors_total",
                "HTTP requests sinew answered itself, by cause (no_backend 503, connect_failure 502, reset 502, timeout 504, bad_request 400, head_too_large 431, head_timeout 408, ...).",
                &["service", "cause"],
            )?,
            http_budget_exhausted: counter(
                &r,
                "sinew_http_retry_budget_exhausted_total",
                "HTTP retries not attempted because the retry budget was spent.",
                s,
            )?,
            service_panic: gauge(
                &r,
                "sinew_service_panic_mode",
                "1 while too few backends are usable and the service balances over all of them.",
                s,
            )?,
            service_panics: counter(&r, "sinew_service_panic_total", "Times the service entered panic mode.", s)?,
            queue_depth: gauge(&r, "sinew_service_queue_depth", "Connections or requests waiting for a backend slot.", s)?,
            queue_wait: histogram(
                &r,
                "sinew_service_queue_wait_seconds",
                "Time waited in the queue by connections or requests that got a backend.",
                &LATENCY_BUCKETS,
            )?,
            queue_rejected: counter(
                &r,
                "sinew_service_queue_rejected_total",
                "Connections or requests turned away by the queue (reason: full or timeout).",
                &["service", "reason"],
            )?,
            pool_opened: counter(
                &r,
                "sinew_backend_http_connections_opened_total",
                "HTTP connections opened to a backend by the pool (requests minus these were served on reused connections).",
                sb,
            )?,
            pool_open: gauge(&r, "sinew_backend_http_connections_open", "HTTP pool connections open to a backend now.", sb)?,
            zk_connected: gauge(
                &r,
                "sinew_discovery_zookeeper_connected",
                "1 while the session to a ZooKeeper ensemble is connected.",
                &["ensemble"],
            )?,
            zk_events: counter(
                &r,
                "sinew_discovery_zookeeper_session_events_total",
                "ZooKeeper session events (connected, reconnected, disconnected, expired, connect_failed).",
                &["ensemble", "event"],
            )?,
            zk_znodes: gauge(&r, "sinew_discovery_znodes", "Backends decoded from a service's znodes at the last read.", s)?,
            zk_skipped: counter(
                &r,
                "sinew_discovery_znodes_skipped_total",
                "Malformed znodes skipped (counted once per node version).",
                s,
            )?,
            zk_service_connected: gauge(
                &r,
                "sinew_discovery_connected",
                "1 while a service's ZooKeeper watch is armed on a connected session.",
                s,
            )?,
            zk_last_update: gauge(
                &r,
                "sinew_discovery_last_update_timestamp_seconds",
                "Unix time of a service's last successful ZooKeeper read.",
                s,
            )?,
            zk_requests: counter(
                &r,
                "sinew_discovery_zookeeper_requests_total",
                "ZooKeeper requests made by a service's discovery, by kind (list, get_data, exists).",
                &["service", "kind"],
            )?,
            zk_requests_per_read: histogram(
                &r,
                "sinew_discovery_zookeeper_requests_per_read",
                "ZooKeeper requests one re-read of a service's path made (a change costs one re-read after coalescing).",
                &REQUEST_COUNT_BUCKETS,
            )?,
            zk_propagation: histogram(
                &r,
                "sinew_discovery_propagation_seconds",
                "Delay from a znode's write on the ZooKeeper server (its mtime) to the swap that applied it.",
                &PROPAGATION_BUCKETS,
            )?,
            register_up: gauge(&r, "sinew_register_up", "1 while every check of a registered service passes.", s)?,
            register_znode: gauge(&r, "sinew_register_znode", "1 while a registered service's znode exists.", s)?,
            register_check_failures: counter(
                &r,
                "sinew_register_check_failures_total",
                "Failed runs of a registered service's checks.",
                &["service", "check"],
            )?,
            register_transitions: counter(
                &r,
                "sinew_register_transitions_total",
                "Up/down transitions of a registered service.",
                &["service", "to"],
            )?,
            service_rejected: counter(
                &r,
                "sinew_service_rejected_connections_total",
                "Client connections closed at once because max_client_connections were open.",
                s,
            )?,
            task_panics: counter(
                &r,
                "sinew_task_panics_total",
                "Background tasks (discovery, checks, registration) that panicked and were restarted.",
                &["task"],
            )?,
            task_stalls: counter(
                &r,
                "sinew_task_stalls_total",
                "Units of work of a background task (discovery, registration) that ran past their limit: a stuck task.",
                &["task"],
            )?,
            tls_handshakes: counter(
                &r,
                "sinew_tls_handshakes_total",
                "TLS handshakes with clients (side listen) and backends (side upstream, checks included), by result.",
                &["service", "side", "result"],
            )?,
            tls_failures: counter(
                &r,
                "sinew_tls_handshake_failures_total",
                "Failed TLS handshakes by reason (unknown_ca, expired, hostname_mismatch, no_client_cert, bad_certificate, protocol, io, timeout, other).",
                &["service", "side", "reason"],
            )?,
            tls_reload_failures: counter(
                &r,
                "sinew_tls_certificate_reload_failures_total",
                "Changed certificate, key or CA files that could not be used (the previous ones stay).",
                &["service", "side"],
            )?,
            tls_expiry: gauge(
                &r,
                "sinew_tls_certificate_expiry_timestamp_seconds",
                "Unix time at which the earliest-expiring certificate of a file in use expires (kind cert: presented by sinew; ca: trusted).",
                &["service", "side", "kind"],
            )?,
            upgrade_handovers: counter(
                &r,
                "sinew_upgrade_handovers_total",
                "Listening sockets offered to a successor process, by outcome (handed_over, aborted, refused).",
                &["outcome"],
            )?,
            accept_errors: counter(
                &r,
                "sinew_listener_accept_errors_total",
                "Failed accepts on a service's listener, by kind (emfile, enfile, enobufs, enomem, other).",
                &["service", "kind"],
            )?,
            local_errors: counter(
                &r,
                "sinew_service_local_errors_total",
                "Backend connects that failed for a local resource limit (emfile, enfile, enobufs, enomem, eaddrnotavail); never charged to the backend.",
                &["service", "kind"],
            )?,
            client_errors: counter(
                &r,
                "sinew_service_client_errors_total",
                "Requests that failed by the client's fault, by kind (bad_request, head_too_large, head_timeout, bad_request_body, client_aborted, body_timeout); never charged to a backend.",
                &["service", "kind"],
            )?,
            admin_refused,
            registry: r.registry(),
            service_families: r.take_service_families(),
            backends: backend::BackendSeries::default(),
        })
    }

    /// The children of one service.
    pub fn service(&self, service: &str) -> ServiceMetrics {
        let l = &[service];
        ServiceMetrics {
            connections: self.service_connections.with_label_values(l),
            active: self.service_active.with_label_values(l),
            no_backend: self.service_no_backend.with_label_values(l),
            retries: self.service_retries.with_label_values(l),
            idle_timeouts: self.service_idle_timeouts.with_label_values(l),
            backends: self.service_backends.with_label_values(l),
            swaps: self.service_swaps.with_label_values(l),
            panic: self.service_panic.with_label_values(l),
            rejected: self.service_rejected.with_label_values(l),
            panics: self.service_panics.with_label_values(l),
        }
    }

    /// The series of one backend of a service; `http` adds the HTTP response series. A backend that
    /// is still known gets the series it had.
    pub fn backend(&self, service: &str, backend: &str, http: bool) -> Arc<BackendMetrics> {
        self.backends.get(service, backend, http)
    }

    /// The connected gauge of a ZooKeeper ensemble.
    pub fn zk_connected(&self, ensemble: &str) -> IntGauge {
        self.zk_connected.with_label_values(&[ensemble])
    }

    /// Counts a ZooKeeper session event.
    pub fn zk_event(&self, ensemble: &str, event: &str) {
        self.zk_events.with_label_values(&[ensemble, event]).inc();
    }

    /// The decoded-znodes gauge of a service.
    pub fn zk_znodes(&self, service: &str) -> IntGauge {
        self.zk_znodes.with_label_values(&[service])
    }

    /// The skipped-znodes counter of a service.
    pub fn zk_skipped(&self, service: &str) -> IntCounter {
        self.zk_skipped.with_label_values(&[service])
    }

    /// The connected gauge of a service watched in ZooKeeper.
    pub fn zk_service_connected(&self, service: &str) -> IntGauge {
        self.zk_service_connected.with_label_values(&[service])
    }

    /// The last-update timestamp gauge of a service watched in ZooKeeper.
    pub fn zk_last_update(&self, service: &str) -> IntGauge {
        self.zk_last_update.with_label_values(&[service])
    }

    /// The up gauge of a registered service.
    pub fn register_up(&self, service: &str) -> IntGauge {
        self.register_up.with_label_values(&[service])
    }

    /// The znode gauge of a registered service.
    pub fn register_znode(&self, service: &str) -> IntGauge {
        self.register_znode.with_label_values(&[service])
    }

    /// The failure counter of one check kind of a registered service.
    pub fn register_check_failure(&self, service: &str, check: &str) -> IntCounter {
        self.register_check_failures
            .with_label_values(&[service, check])
    }

    /// Counts an up/down transition.
    pub fn register_transition(&self, service: &str, to: &str) {
        self.register_transitions
            .with_label_values(&[service, to])
            .inc();
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

    /// The counter of handovers to a successor process that ended with `outcome`.
    pub fn upgrade_handover(&self, outcome: &str) -> IntCounter {
        self.upgrade_handovers.with_label_values(&[outcome])
    }

    /// The counter of admin API requests refused for `reason` (host, origin, token).
    pub fn admin_refused(&self, reason: &str) -> IntCounter {
        self.admin_refused.with_label_values(&[reason])
    }

    /// The panic counter of a kind of background task.
    pub fn task_panics(&self, task: &str) -> IntCounter {
        self.task_panics.with_label_values(&[task])
    }

    /// The stall counter of a kind of background task.
    pub fn task_stalls(&self, task: &str) -> IntCounter {
        self.task_stalls.with_label_values(&[task])
    }

    /// The HTTP pool counters of one service.
    pub fn pool(&self, service: &str) -> crate::proxy::PoolMetrics {
        crate::proxy::PoolMetrics {
            service: service.to_string(),
            opened: self.pool_opened.clone(),
            open: self.pool_open.clone(),
        }
    }

    /// The queue children of one service.
    pub fn queue(&self, service: &str) -> crate::balance::QueueMetrics {
        crate::balance::QueueMetrics {
            depth: self.queue_depth.with_label_values(&[service]),
            wait_seconds: self.queue_wait.with_label_values(&[service]),
            full: self.queue_rejected.with_label_values(&[service, "full"]),
            timeouts: self.queue_rejected.with_label_values(&[service, "timeout"]),
        }
    }

    /// The counters of one service's failures that no backend is charged with.
    pub fn faults(&self, service: &str) -> FaultMetrics {
        FaultMetrics {
            service: service.to_string(),
            accept: self.accept_errors.clone(),
            local: self.local_errors.clone(),
            client: self.client_errors.clone(),
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

    /// Drops a backend's series once it has left the set and drained, so label cardinality stays bounded.
    pub fn forget_backend(&self, service: &str, backend: &str) {
        self.backends.forget(service, backend);
        self.forget_pool(service, backend);
    }

    /// Drops the HTTP pool series of a backend.
    fn forget_pool(&self, service: &str, backend: &str) {
        let l = &[service, backend];
        // Removing a series that was never created is not an error worth reporting.
        let _ = self.pool_opened.remove_label_values(l);
        let _ = self.pool_open.remove_label_values(l);
    }

    /// Drops every series of a service that a reload removed (its backends' go with their last owner).
    pub fn forget_service(&self, service: &str) {
        self.service_families.forget(service);
    }

    /// Counts a failed or rejected discovery read.
    pub fn discovery_error(&self, service: &str, source: &str) {
        self.discovery_errors
            .with_label_values(&[service, source])
            .inc();
    }

    /// Renders the registry in the Prometheus text format.
    pub fn render(&self) -> String {
        for (service, backend) in self.backends.sweep() {
            self.forget_pool(&service, &backend);
        }
        let mut out = String::new();
        let families = self.registry.gather();
        if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&families, &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        self.backends.render(&mut out);
        out
    }
}
