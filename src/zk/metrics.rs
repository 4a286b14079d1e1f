//! The metric families of the ZooKeeper sessions, by ensemble.

use crate::metrics::Registry;
use prometheus::{IntCounterVec, IntGauge, IntGaugeVec};

/// The session families, registered once per agent; clones share them.
#[derive(Clone)]
pub struct ZkMetrics {
    connected: IntGaugeVec,
    events: IntCounterVec,
}

impl ZkMetrics {
    /// Creates the session families in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            connected: registry.gauge(
                "sinew_discovery_zookeeper_connected",
                "1 while the session to a ZooKeeper ensemble is connected.",
                &["ensemble"],
            )?,
            events: registry.counter(
                "sinew_discovery_zookeeper_session_events_total",
                "ZooKeeper session events (connected, reconnected, disconnected, expired, connect_failed).",
                &["ensemble", "event"],
            )?,
        })
    }

    /// The connected gauge of a ZooKeeper ensemble.
    pub fn connected(&self, ensemble: &str) -> IntGauge {
        self.connected.with_label_values(&[ensemble])
    }

    /// Counts a ZooKeeper session event.
    pub fn event(&self, ensemble: &str, event: &str) {
        self.events.with_label_values(&[ensemble, event]).inc();
    }
}
