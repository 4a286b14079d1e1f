//! The metric families balancing owns: each service's backend set and panic mode, its wait queue,
//! and the per-backend series that live with each backend's load.

use super::load::{BackendStats, Backends};
use super::queue::QueueMetrics;
use crate::metrics::{Registry, LATENCY_BUCKETS};
use prometheus::{HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};
use std::sync::Arc;

/// Balancing's families, registered once per agent.
pub struct BalanceMetrics {
    registry: Registry,
    backends: Arc<Backends>,
    set_size: IntGaugeVec,
    swaps: IntCounterVec,
    panic: IntGaugeVec,
    panics: IntCounterVec,
    queue_depth: IntGaugeVec,
    queue_wait: HistogramVec,
    queue_rejected: IntCounterVec,
    locality_requests: IntCounterVec,
}

/// The backend-set children of one service.
#[derive(Clone)]
pub struct SetMetrics {
    /// Backends in the current set.
    pub backends: IntGauge,
    /// Backend-set swaps.
    pub swaps: IntCounter,
    /// 1 while the panic threshold overrides health.
    pub panic: IntGauge,
    /// Times the service entered panic mode.
    pub panics: IntCounter,
}

impl BalanceMetrics {
    /// Creates balancing's families in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let r = registry;
        let s = &["service"];
        let backends = Arc::new(Backends::default());
        registry.register_rendered(Arc::clone(&backends) as _);
        Ok(Self {
            registry: registry.clone(),
            backends,
            set_size: r.gauge(
                "sinew_service_backends",
                "Backends in the service's current set.",
                s,
            )?,
            swaps: r.counter(
                "sinew_service_backend_swaps_total",
                "Backend sets swapped in.",
                s,
            )?,
            panic: r.gauge(
                "sinew_service_panic_mode",
                "1 while too few backends are usable and the service balances over all of them.",
                s,
            )?,
            panics: r.counter(
                "sinew_service_panic_total",
                "Times the service entered panic mode.",
                s,
            )?,
            queue_depth: r.gauge(
                "sinew_service_queue_depth",
                "Connections or requests waiting for a backend slot.",
                s,
            )?,
            queue_wait: r.histogram(
                "sinew_service_queue_wait_seconds",
                "Time waited in the queue by connections or requests that got a backend.",
                &LATENCY_BUCKETS,
            )?,
            queue_rejected: r.counter(
                "sinew_service_queue_rejected_total",
                "Connections or requests turned away by the queue (reason: full or timeout).",
                &["service", "reason"],
            )?,
            locality_requests: r.counter(
                "sinew_service_locality_requests_total",
                "Backends picked for new connections or requests by locality routing, by the picked backend's locality (local, region, remote).",
                &["service", "locality"],
            )?,
        })
    }

    /// The backend-set children of one service.
    pub fn set(&self, service: &str) -> SetMetrics {
        let l = &[service];
        SetMetrics {
            backends: self.set_size.with_label_values(l),
            swaps: self.swaps.with_label_values(l),
            panic: self.panic.with_label_values(l),
            panics: self.panics.with_label_values(l),
        }
    }

    /// The queue children of one service.
    pub fn queue(&self, service: &str) -> QueueMetrics {
        QueueMetrics {
            depth: self.queue_depth.with_label_values(&[service]),
            wait_seconds: self.queue_wait.with_label_values(&[service]),
            full: self.queue_rejected.with_label_values(&[service, "full"]),
            timeouts: self.queue_rejected.with_label_values(&[service, "timeout"]),
        }
    }

    /// The locality routing counters of one service: local, region, remote (created at zero).
    pub fn locality(&self, service: &str) -> [IntCounter; 3] {
        ["local", "region", "remote"]
            .map(|l| self.locality_requests.with_label_values(&[service, l]))
    }

    /// The load and series of one backend of a service; `http` adds the HTTP response series. A
    /// backend that is still known (by another generation of its service) gets the state it had.
    pub fn backend(&self, service: &str, backend: &str, http: bool) -> Arc<BackendStats> {
        self.backends.get(service, backend, http)
    }

    /// Drops a backend's series once it has left the set and drained, so label cardinality stays
    /// bounded: its own and those other modules keep by backend.
    pub fn forget_backend(&self, service: &str, backend: &str) {
        self.backends.forget(service, backend);
        self.registry.forget_backend(service, backend);
    }
}
