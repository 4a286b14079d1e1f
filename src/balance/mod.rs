//! Balancing: backend sets, the one swap entry point, and the selection algorithms.
//!
//! A [`Balancer`] holds its service's current [`BackendSet`] behind an `ArcSwap`: picking is a lock-free
//! load plus the algorithm's own atomics, and a swap replaces the whole set at once. Connections hold an
//! `Arc` of their backend entry, so a removed backend's connections finish undisturbed. Per-backend
//! counters live in a registry keyed by `host:port`, beside the set, so a backend that stays across a swap
//! keeps its counts (least-conn depends on that).

mod backend;
mod least_conn;
mod random;
mod round_robin;
mod set;

pub use backend::{Backend, Origin, Target};
pub use set::{BackendSet, Entry, Pick};

use crate::config::Algorithm;
use crate::metrics::{BackendMetrics, Metrics, ServiceMetrics};
use arc_swap::ArcSwap;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

/// The backends of one service and how to pick among them.
pub struct Balancer {
    service: String,
    algorithm: Algorithm,
    current: ArcSwap<BackendSet>,
    registry: Mutex<Registry>,
    metrics: Arc<Metrics>,
    service_metrics: ServiceMetrics,
    fallback: Fallback,
}

/// What to serve when discovery reports no backends (Synapse's semantics).
#[derive(Debug, Clone, Default)]
pub struct Fallback {
    /// Served when discovery has none (origin `Default`).
    pub defaults: Vec<Backend>,
    /// Serve `defaults` always, beside what discovery reports.
    pub keep_defaults: bool,
    /// With no defaults, keep the previous set when discovery reports none.
    pub use_previous: bool,
}

/// Backend counters by key, plus bookkeeping only swaps touch.
#[derive(Default)]
struct Registry {
    stats: HashMap<String, Arc<BackendMetrics>>,
    last_update: Option<SystemTime>,
    updates: u64,
}

impl Balancer {
    /// Creates a balancer with an empty set.
    pub fn new(service: &str, algorithm: Algorithm, metrics: Arc<Metrics>) -> Self {
        let service_metrics = metrics.service(service);
        Self {
            service: service.to_string(),
            algorithm,
            current: ArcSwap::from_pointee(BackendSet::new(algorithm, Vec::new())),
            registry: Mutex::new(Registry::default()),
            metrics,
            service_metrics,
            fallback: Fallback::default(),
        }
    }

    /// Sets what is served when discovery reports no backends.
    pub fn with_fallback(mut self, fallback: Fallback) -> Self {
        self.fallback = fallback;
        self
    }

    /// The service this balancer serves.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The algorithm in use.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The service-level metric children.
    pub fn metrics(&self) -> &ServiceMetrics {
        &self.service_metrics
    }

    /// The current set (a cheap `Arc` clone).
    pub fn current(&self) -> Arc<BackendSet> {
        self.current.load_full()
    }

    /// Picks a backend from the current set, skipping indices in `skip`.
    pub fn pick(&self, skip: &[usize]) -> Option<Pick> {
        self.current.load().pick(skip)
    }

    /// Replaces the backend set: the one entry point every discovery source calls.
    ///
    /// Duplicate `host:port` pairs collapse to the first. An update identical to the current set is a
    /// no-op. Counters of backends that stay are kept; backends that leave keep serving their open
    /// connections and are forgotten once those have drained.
    pub fn update(&self, backends: Vec<Backend>) {
        let backends = match self.apply_fallback(backends) {
            Some(b) => b,
            None => {
                self.lock().last_update = Some(SystemTime::now());
                return;
            }
        };
        let mut reg = self.lock();
        let mut seen = HashSet::with_capacity(backends.len());
        let mut entries = Vec::with_capacity(backends.len());
        for backend in backends {
            let key = backend.key();
            if !seen.insert(key.clone()) {
                continue;
            }
            let stats = Arc::clone(
                reg.stats
                    .entry(key.clone())
                    .or_insert_with(|| Arc::new(self.metrics.backend(&self.service, &key))),
            );
            entries.push(Arc::new(Entry {
                target: backend.target(),
                backend,
                key,
                stats,
            }));
        }
        reg.last_update = Some(SystemTime::now());
        let current = self.current.load();
        let unchanged = current.entries().len() == entries.len()
            && current
                .entries()
                .iter()
                .zip(&entries)
                .all(|(a, b)| a.backend == b.backend);
        if unchanged {
            return;
        }
        let count = entries.len();
        self.current
            .store(Arc::new(BackendSet::new(self.algorithm, entries)));
        reg.updates += 1;
        self.service_metrics.swaps.inc();
        self.service_metrics.backends.set(count as i64);
        self.prune(&mut reg, &seen);
        tracing::info!(service = %self.service, backends = count, "backend set swapped");
    }

    /// Applies the fallback policy; `None` means "keep the current set as it is".
    fn apply_fallback(&self, mut backends: Vec<Backend>) -> Option<Vec<Backend>> {
        let f = &self.fallback;
        if f.keep_defaults {
            backends.extend(f.defaults.iter().cloned());
            return Some(backends);
        }
        if !backends.is_empty() {
            return Some(backends);
        }
        if !f.defaults.is_empty() {
            tracing::warn!(service = %self.service, "discovery reports no backends; serving the default servers");
            return Some(f.defaults.clone());
        }
        let current = self.current.load();
        if !f.use_previous || current.entries().is_empty() {
            return Some(backends);
        }
        if current
            .entries()
            .iter()
            .all(|e| e.backend.origin == Origin::Previous)
        {
            return None;
        }
        tracing::warn!(
            service = %self.service,
            backends = current.entries().len(),
            "discovery reports no backends; keeping the previous ones"
        );
        Some(
            current
                .entries()
                .iter()
                .map(|e| Backend {
                    origin: Origin::Previous,
                    ..e.backend.clone()
                })
                .collect(),
        )
    }

    /// Forgets counters of backends that left the set and have no open connection.
    fn prune(&self, reg: &mut Registry, keep: &HashSet<String>) {
        reg.stats.retain(|key, stats| {
            let stay = keep.contains(key) || stats.active.get() > 0;
            if !stay {
                self.metrics.forget_backend(&self.service, key);
            }
            stay
        });
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock cannot leave the registry inconsistent: recover it.
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A read-only view for the admin API.
    pub fn view(&self) -> ServiceView {
        let set = self.current();
        let reg = self.lock();
        let mut backends: Vec<BackendView> = set
            .entries()
            .iter()
            .map(|e| BackendView::new(&e.key, &e.stats, Some(&e.backend)))
            .collect();
        let in_set: HashSet<&str> = set.entries().iter().map(|e| e.key.as_str()).collect();
        let mut draining: Vec<BackendView> = reg
            .stats
            .iter()
            .filter(|(k, s)| !in_set.contains(k.as_str()) && s.active.get() > 0)
            .map(|(k, s)| BackendView::new(k, s, None))
            .collect();
        draining.sort_by(|a, b| a.address.cmp(&b.address));
        backends.extend(draining);
        ServiceView {
            name: self.service.clone(),
            balance: self.algorithm.name(),
            swaps: reg.updates,
            last_update_unix: reg
                .last_update
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| d.as_secs_f64()),
            active_connections: self.service_metrics.active.get(),
            backends,
        }
    }
}

/// What the admin API shows of a service's balancer.
#[derive(Debug, Serialize)]
pub struct ServiceView {
    /// Service name.
    pub name: String,
    /// Algorithm name.
    pub balance: &'static str,
    /// Backend-set swaps so far.
    pub swaps: u64,
    /// When discovery last reported (seconds since the Unix epoch).
    pub last_update_unix: Option<f64>,
    /// Client connections open now.
    pub active_connections: i64,
    /// Backends in the set, then draining ones.
    pub backends: Vec<BackendView>,
}

/// What the admin API shows of a backend.
#[derive(Debug, Serialize)]
pub struct BackendView {
    /// `host:port`.
    pub address: String,
    /// Weight (absent for draining backends).
    pub weight: Option<u32>,
    /// `up`, `disabled` (weight 0) or `draining` (removed, connections still open).
    pub state: &'static str,
    /// Where it came from.
    pub origin: Option<String>,
    /// Connections open now.
    pub active_connections: i64,
    /// Connections opened so far.
    pub connections_total: u64,
    /// Failed connection attempts so far.
    pub connect_failures_total: u64,
}

impl BackendView {
    fn new(key: &str, stats: &BackendMetrics, backend: Option<&Backend>) -> Self {
        let state = match backend {
            None => "draining",
            Some(b) if b.weight == 0 => "disabled",
            Some(_) => "up",
        };
        Self {
            address: key.to_string(),
            weight: backend.map(|b| b.weight),
            state,
            origin: backend.map(|b| b.origin.to_string()),
            active_connections: stats.active.get(),
            connections_total: stats.connections.get(),
            connect_failures_total: stats.connect_failures.get(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(port: u16, weight: u32) -> Backend {
        Backend {
            host: "127.0.0.1".into(),
            port,
            weight,
            origin: Origin::Static,
        }
    }

    fn balancer(algorithm: Algorithm) -> Balancer {
        Balancer::new("svc", algorithm, Arc::new(Metrics::new().unwrap()))
    }

    #[test]
    fn least_conn_counts_survive_swaps() {
        let b = balancer(Algorithm::LeastConn);
        b.update(vec![backend(1, 1), backend(2, 1)]);
        let held: Vec<Pick> = (0..4).map(|_| b.pick(&[]).unwrap()).collect();
        b.update(vec![backend(1, 1), backend(2, 1), backend(3, 1)]);
        // Backends 1 and 2 carry two connections each; the new one must take the next three.
        let next: Vec<u16> = (0..2)
            .map(|_| b.pick(&[]).unwrap().entry.backend.port)
            .collect();
        assert_eq!(next, vec![3, 3]);
        drop(held);
    }

    #[test]
    fn removed_backend_drains_then_is_forgotten() {
        let b = balancer(Algorithm::RoundRobin);
        b.update(vec![backend(1, 1)]);
        let conn = b.pick(&[]).unwrap();
        b.update(vec![backend(2, 1)]);
        let v = b.view();
        assert_eq!(v.backends.len(), 2);
        assert_eq!(v.backends[1].state, "draining");
        drop(conn);
        b.update(vec![backend(2, 1), backend(3, 1)]);
        assert!(b.view().backends.iter().all(|x| x.state == "up"));
        assert_eq!(b.view().backends.len(), 2);
    }

    #[test]
    fn empty_discovery_falls_back() {
        let previous = balancer(Algorithm::RoundRobin).with_fallback(Fallback {
            use_previous: true,
            ..Default::default()
        });
        previous.update(vec![backend(1, 1)]);
        previous.update(vec![]);
        let v = previous.view();
        assert_eq!(
            (v.backends.len(), v.backends[0].origin.as_deref()),
            (1, Some("previous"))
        );

        let defaults = balancer(Algorithm::RoundRobin).with_fallback(Fallback {
            defaults: vec![Backend {
                origin: Origin::Default,
                ..backend(9, 1)
            }],
            keep_defaults: false,
            use_previous: true,
        });
        defaults.update(vec![backend(1, 1)]);
        assert_eq!(defaults.current().entries().len(), 1);
        defaults.update(vec![]);
        assert_eq!(defaults.current().entries()[0].backend.port, 9);

        let none = balancer(Algorithm::RoundRobin);
        none.update(vec![backend(1, 1)]);
        none.update(vec![]);
        assert!(none.current().entries().is_empty());
    }

    #[test]
    fn duplicates_collapse_and_same_set_is_not_swapped() {
        let b = balancer(Algorithm::RoundRobin);
        b.update(vec![backend(1, 1), backend(1, 5)]);
        assert_eq!(b.current().entries().len(), 1);
        b.update(vec![backend(1, 1)]);
        assert_eq!(b.view().swaps, 1);
        assert_eq!(b.metrics().swaps.get(), 1);
    }
}
