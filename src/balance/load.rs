//! A backend's load: the connections (TCP) or requests (HTTP) in flight to it, which least-conn and
//! P2C read and `max_connections` caps, kept with the backend's metric series in one allocation that
//! outlives sets, swaps and service generations.
//!
//! Balancing owns the count; the per-backend metric families only read it when `/metrics` renders
//! (`sinew_backend_connections_active`). A backend's state is shared by every generation of its
//! service (see [`BackendSeries`]), so a service rebuilt by a reload counts the connections its
//! previous generation still drains, and `max_connections` holds across the reload.

use crate::metrics::backend::{BackendMetrics, BackendSeries, BackendSource};
use std::sync::atomic::{AtomicI64, Ordering};

/// Connections or requests in flight to one backend.
#[derive(Default)]
pub struct BackendLoad(AtomicI64);

impl BackendLoad {
    /// Counts one more in flight and returns the count with it.
    pub fn take(&self) -> i64 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Counts one fewer in flight.
    pub fn release(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// In flight now.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What a backend keeps across sets and service generations: its load and its metric series.
pub struct BackendStats {
    /// Connections or requests in flight.
    pub load: BackendLoad,
    /// The backend's metric series.
    pub metrics: BackendMetrics,
}

impl BackendSource for BackendStats {
    fn new(http: bool) -> Self {
        Self {
            load: BackendLoad::default(),
            metrics: BackendMetrics::new(http),
        }
    }

    fn metrics(&self) -> &BackendMetrics {
        &self.metrics
    }

    fn active(&self) -> i64 {
        self.load.get()
    }
}

/// Every backend's state by service and backend, held weakly (see [`BackendSeries`]).
pub type Backends = BackendSeries<BackendStats>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_counts_first_and_returns_the_count_with_it() {
        let load = BackendLoad::default();
        // (operation, count it returns or leaves)
        let steps: [(&str, i64); 5] = [
            ("take", 1),
            ("take", 2),
            ("release", 1),
            ("take", 2),
            ("release", 1),
        ];
        for (op, want) in steps {
            let got = match op {
                "take" => load.take(),
                _ => {
                    load.release();
                    load.get()
                }
            };
            assert_eq!(got, want, "{op}");
        }
    }
}
