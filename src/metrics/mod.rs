//! Prometheus metrics: the agent's one [`Registry`], which every module registers its families into
//! and `/metrics` renders, and the plain per-backend series (see [`backend`]). Children are handed
//! out per service and per backend, so hot paths touch only pre-resolved atomics.

pub mod backend;
mod registry;

pub use backend::BackendMetrics;
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};
pub use registry::{Registry, Rendered};

/// Buckets of response-time histograms, in seconds (1 ms to 10 s).
pub const LATENCY_BUCKETS: [f64; 14] = [
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
    discovery_errors: IntCounterVec,
    task_panics: IntCounterVec,
    task_stalls: IntCounterVec,
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
    admin_refused: IntCounterVec,
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

    /// Creates the families not yet owned by another module, in a registry of their own.
    pub fn new() -> Result<Self, prometheus::Error> {
        Self::register(&Registry::new())
    }

    /// Creates the families not yet owned by another module in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let r = registry;
        let s = &["service"];
        let build = r.gauge(
            "sinew_build_info",
            "Build information; always 1.",
            &["version"],
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let admin_refused = r.counter(
            "sinew_admin_requests_refused_total",
            "Admin API requests refused, by reason (host: not localhost or an IP address; origin: cross-site; token: missing or wrong admin.token).",
            &["reason"],
        )?;
        for reason in ["host", "origin", "token"] {
            admin_refused.with_label_values(&[reason]);
        }
        Ok(Self {
            discovery_errors: r.counter(
                "sinew_discovery_errors_total",
                "Discovery reads that failed or were rejected (the previous set stays).",
                &["service", "source"],
            )?,
            zk_connected: r.gauge(
                "sinew_discovery_zookeeper_connected",
                "1 while the session to a ZooKeeper ensemble is connected.",
                &["ensemble"],
            )?,
            zk_events: r.counter(
                "sinew_discovery_zookeeper_session_events_total",
                "ZooKeeper session events (connected, reconnected, disconnected, expired, connect_failed).",
                &["ensemble", "event"],
            )?,
            zk_znodes: r.gauge("sinew_discovery_znodes", "Backends decoded from a service's znodes at the last read.", s)?,
            zk_skipped: r.counter(
                "sinew_discovery_znodes_skipped_total",
                "Malformed znodes skipped (counted once per node version).",
                s,
            )?,
            zk_service_connected: r.gauge(
                "sinew_discovery_connected",
                "1 while a service's ZooKeeper watch is armed on a connected session.",
                s,
            )?,
            zk_last_update: r.gauge(
                "sinew_discovery_last_update_timestamp_seconds",
                "Unix time of a service's last successful ZooKeeper read.",
                s,
            )?,
            zk_requests: r.counter(
                "sinew_discovery_zookeeper_requests_total",
                "ZooKeeper requests made by a service's discovery, by kind (list, get_data, exists).",
                &["service", "kind"],
            )?,
            zk_requests_per_read: r.histogram(
                "sinew_discovery_zookeeper_requests_per_read",
                "ZooKeeper requests one re-read of a service's path made (a change costs one re-read after coalescing).",
                &REQUEST_COUNT_BUCKETS,
            )?,
            zk_propagation: r.histogram(
                "sinew_discovery_propagation_seconds",
                "Delay from a znode's write on the ZooKeeper server (its mtime) to the swap that applied it.",
                &PROPAGATION_BUCKETS,
            )?,
            register_up: r.gauge("sinew_register_up", "1 while every check of a registered service passes.", s)?,
            register_znode: r.gauge("sinew_register_znode", "1 while a registered service's znode exists.", s)?,
            register_check_failures: r.counter(
                "sinew_register_check_failures_total",
                "Failed runs of a registered service's checks.",
                &["service", "check"],
            )?,
            register_transitions: r.counter(
                "sinew_register_transitions_total",
                "Up/down transitions of a registered service.",
                &["service", "to"],
            )?,
            task_panics: r.counter(
                "sinew_task_panics_total",
                "Background tasks (discovery, checks, registration) that panicked and were restarted.",
                &["task"],
            )?,
            task_stalls: r.counter(
                "sinew_task_stalls_total",
                "Units of work of a background task (discovery, registration) that ran past their limit: a stuck task.",
                &["task"],
            )?,
            upgrade_handovers: r.counter(
                "sinew_upgrade_handovers_total",
                "Listening sockets offered to a successor process, by outcome (handed_over, aborted, refused).",
                &["outcome"],
            )?,
            admin_refused,
            registry: registry.clone(),
        })
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

    /// Drops every series of a service that a reload removed (its backends' go with their last owner).
    pub fn forget_service(&self, service: &str) {
        self.registry.forget_service(service);
    }

    /// Counts a failed or rejected discovery read.
    pub fn discovery_error(&self, service: &str, source: &str) {
        self.discovery_errors
            .with_label_values(&[service, source])
            .inc();
    }

    /// Renders the registry in the Prometheus text format.
    pub fn render(&self) -> String {
        self.registry.render()
    }
}
