//! The metric families of registration, by registered service.
//!
//! Their `service` is a registered service, which lives and goes with the `register` section: a
//! proxied service of the same name leaving does not take these series with it.

use crate::metrics::Registry;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

/// Registration's families, registered once per agent.
pub struct RegisterMetrics {
    up: IntGaugeVec,
    znode: IntGaugeVec,
    check_failures: IntCounterVec,
    transitions: IntCounterVec,
}

impl RegisterMetrics {
    /// Creates registration's families in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let r = registry;
        let s = &["service"];
        Ok(Self {
            up: r.gauge(
                "sinew_register_up",
                "1 while every check of a registered service passes.",
                s,
            )?,
            znode: r.gauge(
                "sinew_register_znode",
                "1 while a registered service's znode exists.",
                s,
            )?,
            check_failures: r.counter(
                "sinew_register_check_failures_total",
                "Failed runs of a registered service's checks.",
                &["service", "check"],
            )?,
            transitions: r.counter(
                "sinew_register_transitions_total",
                "Up/down transitions of a registered service.",
                &["service", "to"],
            )?,
        })
    }

    /// The up gauge of a registered service.
    pub fn up(&self, service: &str) -> IntGauge {
        self.up.with_label_values(&[service])
    }

    /// The znode gauge of a registered service.
    pub fn znode(&self, service: &str) -> IntGauge {
        self.znode.with_label_values(&[service])
    }

    /// The failure counter of one check kind of a registered service.
    pub fn check_failure(&self, service: &str, check: &str) -> IntCounter {
        self.check_failures.with_label_values(&[service, check])
    }

    /// Counts an up/down transition.
    pub fn transition(&self, service: &str, to: &str) {
        self.transitions.with_label_values(&[service, to]).inc();
    }
}
