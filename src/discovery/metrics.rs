//! The metric families of discovery: failed reads of every source, failed host-name lookups, and what
//! each service's ZooKeeper watch decoded, requested and propagated.

use crate::metrics::Registry;
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

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

/// Discovery's families, registered once per agent.
pub struct DiscoveryMetrics {
    errors: IntCounterVec,
    dns_failures: IntCounterVec,
    zk_znodes: IntGaugeVec,
    zk_skipped: IntCounterVec,
    zk_ignored: IntCounterVec,
    zk_service_connected: IntGaugeVec,
    zk_last_update: IntGaugeVec,
    zk_requests: IntCounterVec,
    zk_requests_per_read: HistogramVec,
    zk_propagation: HistogramVec,
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

impl DiscoveryMetrics {
    /// Creates discovery's families in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let r = registry;
        let s = &["service"];
        Ok(Self {
            errors: r.counter(
                "sinew_discovery_errors_total",
                "Discovery reads that failed or were rejected (the previous set stays).",
                &["service", "source"],
            )?,
            dns_failures: r.counter(
                "sinew_discovery_dns_failures_total",
                "Host-name lookups that failed, timed out or found no address, by reason (the name's last good answer stays).",
                &["service", "reason"],
            )?,
            zk_znodes: r.gauge("sinew_discovery_znodes", "Backends decoded from a service's znodes at the last read.", s)?,
            zk_skipped: r.counter(
                "sinew_discovery_znodes_skipped_total",
                "Malformed znodes skipped (counted once per node version).",
                s,
            )?,
            zk_ignored: r.counter(
                "sinew_discovery_znode_options_ignored_total",
                "Server options and fields of znodes that sinew left out (unsupported or malformed; counted once per node version).",
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
        })
    }

    /// Counts a failed or rejected discovery read of `source` (file, zookeeper).
    pub fn error(&self, service: &str, source: &str) {
        self.errors.with_label_values(&[service, source]).inc();
    }

    /// Counts a failed lookup of one of a service's host names (`error`, `timeout` or `empty`).
    pub fn dns_failure(&self, service: &str, reason: &str) {
        self.dns_failures
            .with_label_values(&[service, reason])
            .inc();
    }

    /// The ZooKeeper discovery children of one service.
    pub fn zk_discovery(&self, service: &str) -> ZkDiscoveryMetrics {
        ZkDiscoveryMetrics {
            requests: ZK_REQUEST_KINDS.map(|k| self.zk_requests.with_label_values(&[service, k])),
            requests_per_read: self.zk_requests_per_read.with_label_values(&[service]),
            propagation: self.zk_propagation.with_label_values(&[service]),
        }
    }

    /// The decoded-znodes gauge of a service.
    pub fn zk_znodes(&self, service: &str) -> IntGauge {
        self.zk_znodes.with_label_values(&[service])
    }

    /// The skipped-znodes counter of a service.
    pub fn zk_skipped(&self, service: &str) -> IntCounter {
        self.zk_skipped.with_label_values(&[service])
    }

    /// The left-out-options counter of a service.
    pub fn zk_ignored(&self, service: &str) -> IntCounter {
        self.zk_ignored.with_label_values(&[service])
    }

    /// The connected gauge of a service watched in ZooKeeper.
    pub fn zk_service_connected(&self, service: &str) -> IntGauge {
        self.zk_service_connected.with_label_values(&[service])
    }

    /// The last-update timestamp gauge of a service watched in ZooKeeper.
    pub fn zk_last_update(&self, service: &str) -> IntGauge {
        self.zk_last_update.with_label_values(&[service])
    }
}
