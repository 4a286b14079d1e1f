//! Balancing: backend sets, the one swap entry point, health and ejection, and the selection algorithms.
//!
//! A [`Balancer`] holds its service's current [`BackendSet`] behind an `ArcSwap`: picking is a lock-free
//! load plus the algorithm's own atomics, and a swap replaces the whole set at once. Connections hold an
//! `Arc` of their backend entry, so a removed backend's connections finish undisturbed. Per-backend
//! counters and health live in a registry keyed by `host:port`, beside the set, so a backend that stays
//! across a swap keeps its counts and its health (least-conn depends on that).
//!
//! Health never enters the pick path: when a backend's health changes, the set's selection state is
//! rebuilt with new effective weights (see `eligible`), so algorithms only pick among usable backends.
//! Changes that come with time alone (an ejection running out, a slow start ramp) are rebuilt by the
//! service's clock task (see `checker`), which sleeps until the deadline
//! [`Balancer::refresh`] gives.

mod backend;
mod changes;
pub mod checker;
mod eligible;
mod ewma;
mod fallback;
pub mod hash;
pub mod health;
mod least_conn;
mod load;
pub mod locality;
mod metrics;
pub mod overrides;
mod p2c;
mod queue;
mod random;
mod round_robin;
mod set;
mod tries;
mod view;

pub use backend::{Backend, Labels, Origin, ServerOptions, Target};
pub use eligible::Policy;
pub use fallback::Fallback;
pub use load::{BackendLoad, BackendStats};
pub use metrics::{BalanceMetrics, SetMetrics};
pub use overrides::{Action, AdminState, Outcome, Override, OverrideError, OverrideView};
pub use queue::{QueueMetrics, Unavailable};
pub use set::{BackendSet, Entry, Pick};
pub use tries::Tries;
pub use view::{requests_total, BackendView, HistoryPoint, LocalityView, ServiceView, TrafficView};

use crate::config::{Algorithm, Outlier};
use arc_swap::ArcSwap;
use health::now_ms;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use tokio::sync::{watch, Notify};

/// The backends of one service and how to pick among them.
pub struct Balancer {
    service: String,
    algorithm: Algorithm,
    current: ArcSwap<BackendSet>,
    registry: Mutex<Registry>,
    metrics: Arc<BalanceMetrics>,
    set_metrics: SetMetrics,
    /// The service's open client connections, shown in its view (kept by the proxy).
    clients: Option<prometheus::IntGauge>,
    fallback: Fallback,
    policy: Policy,
    outlier: Option<Outlier>,
    /// Decay time constant of each backend's latency estimate (`p2c_ewma`).
    ewma_decay: Duration,
    queue: Arc<queue::Queue>,
    swapped: watch::Sender<u64>,
    /// Told whenever the set's selection state is rebuilt, so the clock task recomputes its deadline.
    rebuilt: Notify,
    /// Whether backends get HTTP response series (HTTP-mode services).
    http: bool,
    /// Operators' overrides of the service's backends, kept across reloads by the agent.
    overrides: Arc<overrides::ServiceOverrides>,
    /// Zone-aware routing, when the service routes by locality.
    locality: Option<Arc<locality::Settings>>,
}

/// The latest entry of every backend still known (in the set or draining), plus swap bookkeeping.
#[derive(Default)]
struct Registry {
    entries: HashMap<String, Arc<Entry>>,
    last_update: Option<SystemTime>,
    updates: u64,
    /// When a swap last changed the set's membership or a backend's state (`None`: never).
    changed_ms: Option<u64>,
}

impl Balancer {
    /// Creates a balancer with an empty set.
    pub fn new(service: &str, algorithm: Algorithm, metrics: Arc<BalanceMetrics>) -> Self {
        let set_metrics = metrics.set(service);
        let queue = Arc::new(queue::Queue::new(0, Duration::ZERO, metrics.queue(service)));
        let empty = eligible::weights(&[], &Policy::default(), &Default::default(), 0);
        Self {
            service: service.to_string(),
            algorithm,
            current: ArcSwap::from_pointee(BackendSet::new(algorithm, Vec::new(), empty, None)),
            registry: Mutex::new(Registry::default()),
            metrics,
            set_metrics,
            clients: None,
            fallback: Fallback::default(),
            policy: Policy::default(),
            outlier: None,
            ewma_decay: ewma::DEFAULT_DECAY,
            queue,
            swapped: watch::channel(0).0,
            rebuilt: Notify::new(),
            http: false,
            overrides: Arc::new(overrides::ServiceOverrides::detached()),
            locality: None,
        }
    }

    /// Applies the operators' overrides in `store` (the service's, shared with its earlier balancers).
    pub fn with_overrides(mut self, store: Arc<overrides::ServiceOverrides>) -> Self {
        self.overrides = store;
        self
    }

    /// Routes by locality with `settings` (none: no locality routing).
    pub fn with_locality(mut self, settings: Option<locality::Settings>) -> Self {
        self.locality = settings.map(Arc::new);
        self
    }

    /// Gives backends the HTTP response series (for HTTP-mode services).
    pub fn with_http_metrics(mut self, http: bool) -> Self {
        self.http = http;
        self
    }

    /// Shows `clients`, the service's open client connections, in its view.
    pub fn with_clients(mut self, clients: prometheus::IntGauge) -> Self {
        self.clients = Some(clients);
        self
    }

    /// Sets what is served when discovery reports no backends.
    pub fn with_fallback(mut self, fallback: Fallback) -> Self {
        self.fallback = fallback;
        self
    }

    /// Sets the panic threshold and slow start.
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets the wait queue used when `max_connections` is set: at most `max` waiters, each for `timeout`.
    pub fn with_queue(mut self, max: usize, timeout: Duration) -> Self {
        self.queue = Arc::new(queue::Queue::new(
            max,
            timeout,
            self.metrics.queue(&self.service),
        ));
        self
    }

    /// Picks from `set`, waiting in the service's queue while every usable backend is at `max_connections`.
    ///
    /// `set` may have been replaced while the caller held it (a retry, a wait in the queue): a backend
    /// that the current set holds with no new traffic (drained, disabled, down, ejected) is passed
    /// over, so nothing new reaches it through an old snapshot. One that left the set is still picked,
    /// as its open connections are served: swaps under load fail no connection.
    pub async fn pick_queued(
        &self,
        set: &BackendSet,
        skip: &[usize],
        key: Option<u64>,
    ) -> Result<Pick, Unavailable> {
        let mut skipped = std::borrow::Cow::Borrowed(skip);
        loop {
            let pick = self.queue.pick(set, &skipped, key).await?;
            if self.still_usable(set, &pick) {
                return Ok(pick);
            }
            skipped.to_mut().push(pick.index);
        }
    }

    /// False when `pick`, taken from `set`, is in the current set with no new traffic.
    fn still_usable(&self, set: &BackendSet, pick: &Pick) -> bool {
        let current = self.current.load();
        std::ptr::eq(&**current, set)
            || !current
                .entries()
                .iter()
                .zip(&current.weights().weights)
                .any(|(e, w)| *w == 0 && e.key == pick.entry.key)
    }

    /// Enables passive outlier ejection.
    pub fn with_outlier(mut self, outlier: Option<Outlier>) -> Self {
        self.outlier = outlier;
        self
    }

    /// Sets how fast backends' latency estimates decay when they get no samples (`p2c_ewma`).
    pub fn with_ewma_decay(mut self, decay: Duration) -> Self {
        self.ewma_decay = decay;
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

    /// The backend-set metric children of the service.
    pub fn metrics(&self) -> &SetMetrics {
        &self.set_metrics
    }

    /// The current set (a cheap `Arc` clone).
    pub fn current(&self) -> Arc<BackendSet> {
        self.current.load_full()
    }

    /// Picks a backend from the current set, skipping indices in `skip`.
    pub fn pick(&self, skip: &[usize]) -> Option<Pick> {
        self.current.load().pick(skip)
    }

    /// Notified (with the swap count) whenever discovery changes the set.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.swapped.subscribe()
    }

    /// Replaces the backend set: the one entry point every discovery source calls.
    ///
    /// Duplicate `host:port` pairs collapse to the first. An update identical to the current set is a
    /// no-op. Counters and health of backends that stay are kept; backends that leave keep serving their
    /// open connections and are forgotten once those have drained. True when a new set was swapped in.
    pub fn update(&self, backends: Vec<Backend>) -> bool {
        self.swap(backends, true)
    }

    /// Serves the default servers until discovery first reports; not counted as a report, so the
    /// service still shows as waiting for discovery. True when there were defaults to serve.
    pub fn serve_defaults(&self) -> bool {
        let defaults = self.fallback.defaults.clone();
        !defaults.is_empty() && self.swap(defaults, false)
    }

    /// [`Balancer::update`], marking a discovery report when `reported`.
    fn swap(&self, backends: Vec<Backend>, reported: bool) -> bool {
        let mut reg = self.lock();
        if reported {
            reg.last_update = Some(SystemTime::now());
        }
        let current = self.current.load_full();
        let Some(backends) = self.fallback.apply(&self.service, backends, &current) else {
            return false;
        };
        // The entries taken into the new set, by address: a key met again is a duplicate, since the
        // registry's entry for every key taken so far is the one taken.
        let mut taken: HashSet<*const Entry> = HashSet::with_capacity(backends.len());
        let mut entries = Vec::with_capacity(backends.len());
        let mut key = String::new();
        for backend in backends {
            backend.write_key(&mut key);
            let found = reg.entries.get(key.as_str());
            if found.is_some_and(|e| taken.contains(&Arc::as_ptr(e))) {
                continue;
            }
            let entry = match found {
                // The same backend as before: its entry serves on, with no allocation.
                Some(e) if e.backend == backend => Arc::clone(e),
                found => {
                    let (stats, health, rtt) = match found {
                        Some(e) => (
                            Arc::clone(&e.stats),
                            Arc::clone(&e.health),
                            Arc::clone(&e.rtt),
                        ),
                        None => (
                            self.metrics.backend(&self.service, &key, self.http),
                            Arc::default(),
                            Arc::new(ewma::PeakEwma::new(self.ewma_decay)),
                        ),
                    };
                    stats
                        .metrics
                        .identify(backend.name.as_deref(), &backend.labels);
                    let entry = Arc::new(Entry {
                        target: backend.target(),
                        backend,
                        key: key.clone(),
                        stats,
                        health,
                        rtt,
                        queue: Arc::clone(&self.queue),
                    });
                    reg.entries.insert(key.clone(), Arc::clone(&entry));
                    entry
                }
            };
            taken.insert(Arc::as_ptr(&entry));
            entries.push(entry);
        }
        let unchanged = current.entries().len() == entries.len()
            && current
                .entries()
                .iter()
                .zip(&entries)
                .all(|(a, b)| Arc::ptr_eq(a, b) || a.backend == b.backend);
        if unchanged {
            return false;
        }
        let count = entries.len();
        let now = now_ms();
        if changes::mark_swap(current.entries(), &entries, now) {
            reg.changed_ms = Some(now);
        }
        let admin = self.overrides.snapshot();
        let weights = eligible::weights(&entries, &self.policy, &admin, now);
        self.install(entries, weights, &admin);
        reg.updates += 1;
        self.set_metrics.swaps.inc();
        self.set_metrics.backends.set(count as i64);
        self.prune(&mut reg, &taken);
        self.swapped.send_replace(reg.updates);
        tracing::info!(service = %self.service, backends = count, "backend set swapped");
        true
    }

    /// Rebuilds the selection state if health, ejections or slow start changed the effective weights,
    /// and says when time alone next changes them (an ejection running out, a slow start ramp step) on
    /// the [`health::now_ms`] clock; `None` while only an event can. Both are as of one reading of the
    /// clock, so no deadline can fall between the rebuild and the next one.
    pub fn refresh(&self) -> Option<u64> {
        let _reg = self.lock();
        let now = now_ms();
        let current = self.current.load_full();
        let admin = self.overrides.snapshot();
        let weights = eligible::weights(current.entries(), &self.policy, &admin, now);
        if &weights != current.weights() {
            self.install(current.entries().to_vec(), weights, &admin);
        }
        eligible::next_change(current.entries(), &self.policy, &admin, now)
    }

    /// Resolves once the set's selection state has been rebuilt since the last call (the deadline
    /// [`refresh`](Self::refresh) gave may have moved).
    pub async fn rebuilt(&self) {
        self.rebuilt.notified().await
    }

    /// Builds and stores a set over `entries` with their effective `weights` under `admin`.
    fn install(
        &self,
        entries: Vec<Arc<Entry>>,
        weights: eligible::Weights,
        admin: &overrides::OverrideMap,
    ) {
        let was_panic = self.current.load().weights().panic;
        if weights.panic && !was_panic {
            self.set_metrics.panics.inc();
            tracing::warn!(service = %self.service, threshold = self.policy.panic_threshold, "panic mode: too few usable backends, balancing over all of them");
        } else if !weights.panic && was_panic {
            tracing::info!(service = %self.service, "panic mode over");
        }
        self.set_metrics.panic.set(i64::from(weights.panic));
        for (e, w) in entries.iter().zip(&weights.weights) {
            e.stats.metrics.set_member(true);
            e.stats.metrics.usable.set(i64::from(*w > 0));
        }
        let tiers = self
            .locality
            .as_ref()
            .map(|l| locality::Tiers::build(l, self.algorithm, &entries, &weights, admin));
        let set = BackendSet::new(
            self.algorithm,
            entries,
            weights,
            self.policy.max_connections,
        );
        self.current.store(Arc::new(set.with_locality(tiers)));
        self.rebuilt.notify_one();
    }

    /// Reports the outcome of real traffic to a backend; enough consecutive failures eject it.
    pub fn observe(&self, entry: &Entry, ok: bool) {
        if ok {
            entry.health.success();
            return;
        }
        let Some(outlier) = self.outlier else { return };
        if entry.health.failure() < outlier.consecutive_failures {
            return;
        }
        let now = now_ms();
        let set = self.current.load();
        let total = set.entries().len() as u64;
        let ejected = set
            .entries()
            .iter()
            .filter(|e| e.health.ejected(now))
            .count() as u64;
        if entry.health.ejected(now)
            || (ejected + 1) * 100 > u64::from(outlier.max_ejection_percent) * total
        {
            return;
        }
        let length = entry
            .health
            .eject(now, outlier.base_ejection, outlier.max_ejection);
        entry.stats.metrics.ejections.inc();
        tracing::warn!(service = %self.service, backend = %entry.key, seconds = length.as_secs_f64(), "backend ejected after consecutive failures");
        self.refresh();
    }

    /// Forgets entries that left the set and have no open connection.
    fn prune(&self, reg: &mut Registry, keep: &HashSet<*const Entry>) {
        reg.entries.retain(|key, entry| {
            let member = keep.contains(&Arc::as_ptr(entry));
            if !member {
                entry.stats.metrics.set_member(false);
            }
            let stay = member || entry.stats.load.get() > 0;
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

    /// Every backend still known: in the current set, then those draining the connections they
    /// still have.
    pub fn known(&self) -> Vec<Arc<Entry>> {
        let set = self.current();
        let reg = self.lock();
        let mut known = set.entries().to_vec();
        known.extend(draining(&reg, &set).cloned());
        known
    }

    /// A read-only view for the admin API.
    pub fn view(&self) -> ServiceView {
        let set = self.current();
        let reg = self.lock();
        let slow = self.policy.slow_start.as_millis() as u64;
        let admin = self.overrides.snapshot();
        let mut backends: Vec<BackendView> = set
            .entries()
            .iter()
            .zip(&set.weights().weights)
            .map(|(e, w)| BackendView::new(e, Some(*w), slow, admin.get(&e.key)))
            .collect();
        let locality = (self.locality.as_ref()).map(|l| view::locality(l, &set, &mut backends));
        let mut draining: Vec<BackendView> = draining(&reg, &set)
            .map(|e| BackendView::new(e, None, slow, admin.get(&e.key)))
            .collect();
        draining.sort_by(|a, b| a.address.cmp(&b.address));
        backends.extend(draining);
        ServiceView {
            name: self.service.clone(),
            balance: self.algorithm.name().into(),
            swaps: reg.updates,
            last_update_unix: reg
                .last_update
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| d.as_secs_f64()),
            active_connections: self.clients.as_ref().map_or(0, |c| c.get()),
            panic: set.weights().panic,
            queued: self.queue.depth(),
            last_change_seconds: view::service_last_change(reg.changed_ms, &backends),
            traffic: None,
            history: Vec::new(),
            locality,
            backends,
        }
    }
}

/// The entries of `reg` that left `set` and still have connections open.
fn draining<'a>(reg: &'a Registry, set: &'a BackendSet) -> impl Iterator<Item = &'a Arc<Entry>> {
    let in_set: HashSet<&str> = set.entries().iter().map(|e| e.key.as_str()).collect();
    reg.entries
        .values()
        .filter(move |e| !in_set.contains(e.key.as_str()) && e.stats.load.get() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn backend(port: u16, weight: u32) -> Backend {
        Backend::new("127.0.0.1", port, weight, Origin::Static)
    }

    fn balancer(algorithm: Algorithm) -> Balancer {
        let registry = crate::metrics::Registry::new();
        Balancer::new(
            "svc",
            algorithm,
            Arc::new(BalanceMetrics::register(&registry).unwrap()),
        )
    }

    #[test]
    fn only_http_services_get_http_response_series() {
        for http in [false, true] {
            let registry = crate::metrics::Registry::new();
            let metrics = Arc::new(BalanceMetrics::register(&registry).unwrap());
            let b = Balancer::new("svc", Algorithm::RoundRobin, Arc::clone(&metrics))
                .with_http_metrics(http);
            b.update(vec![backend(1, 1)]);
            let pick = b.pick(&[]).unwrap();
            assert_eq!(pick.entry.stats.metrics.http.is_some(), http);
            let text = registry.render();
            assert!(text.contains("sinew_backend_connections_total{"));
            assert_eq!(text.contains("sinew_backend_http_responses_total{"), http);
        }
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

    #[tokio::test(start_paused = true)]
    async fn the_view_counts_requests_and_time_since_the_last_change() {
        for http in [false, true] {
            let registry = crate::metrics::Registry::new();
            let metrics = Arc::new(BalanceMetrics::register(&registry).unwrap());
            let b = Balancer::new("svc", Algorithm::RoundRobin, metrics).with_http_metrics(http);
            assert_eq!(b.view().last_change_seconds, None, "no backends yet");
            b.update(vec![backend(1, 1), backend(2, 1)]);
            let pick = b.pick(&[]).unwrap();
            let m = &pick.entry.stats.metrics;
            m.connections.inc();
            if let Some(h) = &m.http {
                // Two responses on one connection: an HTTP backend counts responses.
                h.response_class(200).inc();
                h.response_class(503).inc();
            }
            tokio::time::advance(Duration::from_secs(30)).await;
            let key = pick.entry.key.clone();
            let set = b.current();
            let other = set.entries().iter().find(|e| e.key != key).unwrap();
            other.health.record_check(
                false,
                health::LastCheck {
                    passed: false,
                    detail: "refused".into(),
                    at_ms: now_ms(),
                },
            );
            tokio::time::advance(Duration::from_secs(5)).await;
            let v = b.view();
            let find = |k: &str| v.backends.iter().find(|x| x.address == k).unwrap();
            assert_eq!(find(&key).requests_total, if http { 2 } else { 1 });
            assert_eq!(find(&key).last_change_seconds, 35.0);
            assert_eq!(find(&other.key).last_change_seconds, 5.0);
            assert_eq!(v.last_change_seconds, Some(5.0));
        }
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

    #[test]
    fn a_backend_that_stays_keeps_its_entry_and_a_changed_one_its_counters() {
        let b = balancer(Algorithm::RoundRobin);
        b.update(vec![backend(1, 1), backend(2, 1)]);
        let before = b.current();
        // Port 1 stays as it is, port 2 changes weight (and comes twice), port 3 is new.
        assert!(b.update(vec![
            backend(1, 1),
            backend(2, 7),
            backend(2, 9),
            backend(3, 1)
        ]));
        let after = b.current();
        assert_eq!(ports_with_weight(&b), [(1, 100), (2, 700), (3, 100)]);
        assert!(Arc::ptr_eq(&before.entries()[0], &after.entries()[0]));
        assert!(!Arc::ptr_eq(&before.entries()[1], &after.entries()[1]));
        assert!(Arc::ptr_eq(
            &before.entries()[1].stats,
            &after.entries()[1].stats
        ));
        // Port 2 left with no connection open: forgotten, so it comes back with fresh counters.
        b.update(vec![backend(1, 1), backend(3, 1)]);
        b.update(vec![backend(1, 1), backend(2, 7), backend(3, 1)]);
        assert!(!Arc::ptr_eq(
            &after.entries()[1].stats,
            &b.current().entries()[1].stats
        ));
    }

    fn ports_with_weight(b: &Balancer) -> Vec<(u16, u32)> {
        let set = b.current();
        set.entries()
            .iter()
            .zip(&set.weights().weights)
            .map(|(e, w)| (e.backend.port, *w))
            .collect()
    }

    fn mark(b: &Balancer, port: u16, up: bool) {
        let set = b.current();
        let e = set
            .entries()
            .iter()
            .find(|e| e.backend.port == port)
            .unwrap();
        let check = health::LastCheck {
            passed: up,
            detail: String::new(),
            at_ms: now_ms(),
        };
        e.health.record_check(up, check);
        b.refresh();
    }

    #[test]
    fn down_backends_get_no_traffic_until_the_panic_threshold() {
        let b = balancer(Algorithm::RoundRobin).with_policy(Policy {
            panic_threshold: 50,
            slow_start: Duration::ZERO,
            max_connections: None,
        });
        b.update((1..=4).map(|p| backend(p, 1)).collect());
        mark(&b, 1, false);
        assert_eq!(ports_with_weight(&b)[0], (1, 0));
        assert!((0..20).all(|_| b.pick(&[]).unwrap().entry.backend.port != 1));
        mark(&b, 2, false);
        assert!(
            !b.current().weights().panic,
            "2 of 4 usable is exactly the threshold"
        );
        mark(&b, 3, false);
        assert!(b.current().weights().panic, "1 of 4 usable is below 50 %");
        assert!(
            ports_with_weight(&b).iter().all(|(_, w)| *w > 0),
            "panic balances over all"
        );
        assert_eq!(b.metrics().panics.get(), 1);
        mark(&b, 3, true);
        assert!(!b.current().weights().panic);
        assert_eq!(
            ports_with_weight(&b)[..3]
                .iter()
                .map(|(_, w)| *w)
                .collect::<Vec<_>>(),
            vec![0, 0, 100]
        );
    }

    fn with(port: u16, f: impl FnOnce(&mut ServerOptions)) -> Backend {
        let mut b = backend(port, 1);
        f(&mut b.options);
        b
    }

    #[test]
    fn backups_serve_only_when_no_primary_is_usable_and_then_the_first_one() {
        let b = balancer(Algorithm::RoundRobin).with_policy(Policy {
            panic_threshold: 50,
            slow_start: Duration::ZERO,
            max_connections: None,
        });
        b.update(vec![
            backend(1, 1),
            with(2, |o| o.backup = true),
            backend(3, 1),
            with(4, |o| o.backup = true),
        ]);
        assert_eq!(ports_with_weight(&b), [(1, 100), (2, 0), (3, 100), (4, 0)]);
        assert_eq!(b.view().backends[1].state, "backup");
        mark(&b, 1, false);
        assert_eq!(
            ports_with_weight(&b),
            [(1, 0), (2, 0), (3, 100), (4, 0)],
            "one primary is enough, and 1 of 2 is no panic"
        );
        mark(&b, 3, false);
        assert_eq!(
            ports_with_weight(&b),
            [(1, 0), (2, 100), (3, 0), (4, 0)],
            "no primary: the first usable backup takes all, no panic"
        );
        assert!(!b.current().weights().panic);
        assert!((0..10).all(|_| b.pick(&[]).unwrap().entry.backend.port == 2));
        mark(&b, 2, false);
        assert_eq!(ports_with_weight(&b), [(1, 0), (2, 0), (3, 0), (4, 100)]);
        mark(&b, 4, false);
        assert!(
            b.current().weights().panic,
            "nothing usable: panic over the primaries"
        );
        assert_eq!(ports_with_weight(&b), [(1, 100), (2, 0), (3, 100), (4, 0)]);
        mark(&b, 3, true);
        assert_eq!(ports_with_weight(&b), [(1, 0), (2, 0), (3, 100), (4, 0)]);
    }

    #[test]
    fn disabled_backends_get_nothing_even_in_panic() {
        let b = balancer(Algorithm::RoundRobin).with_policy(Policy {
            panic_threshold: 100,
            slow_start: Duration::ZERO,
            max_connections: None,
        });
        b.update(vec![backend(1, 1), with(2, |o| o.disabled = true)]);
        assert_eq!(ports_with_weight(&b), [(1, 100), (2, 0)]);
        assert_eq!(b.view().backends[1].state, "maintenance");
        mark(&b, 1, false);
        assert!(b.current().weights().panic);
        assert_eq!(ports_with_weight(&b), [(1, 100), (2, 0)]);
        let only_disabled = balancer(Algorithm::LeastConn);
        only_disabled.update(vec![with(1, |o| o.disabled = true)]);
        assert!(only_disabled.pick(&[]).is_none());
    }

    #[test]
    fn a_backend_maxconn_replaces_the_service_limit() {
        for service_max in [None, Some(5)] {
            let b = balancer(Algorithm::RoundRobin).with_policy(Policy {
                max_connections: service_max,
                ..Policy::default()
            });
            b.update(vec![
                with(1, |o| o.max_connections = Some(1)),
                backend(2, 1),
            ]);
            let held: Vec<Pick> = (0..4).filter_map(|_| b.pick(&[])).collect();
            let on_1 = held.iter().filter(|p| p.entry.backend.port == 1).count();
            let on_2 = held.len() - on_1;
            assert_eq!(on_1, 1, "{service_max:?}");
            assert_eq!(on_2, 3, "{service_max:?}");
            if service_max.is_some() {
                let more: Vec<Pick> = (0..5).filter_map(|_| b.pick(&[])).collect();
                assert_eq!(more.len(), 2, "port 2 stops at the service's 5");
            }
        }
        let unlimited = balancer(Algorithm::RoundRobin);
        unlimited.update(vec![backend(1, 1)]);
        assert!(!unlimited.current().limited());
    }

    #[tokio::test(start_paused = true)]
    async fn slow_start_ramps_a_new_backend() {
        let b = balancer(Algorithm::RoundRobin).with_policy(Policy {
            panic_threshold: 0,
            slow_start: Duration::from_secs(10),
            max_connections: None,
        });
        b.update(vec![backend(1, 1)]);
        tokio::time::advance(Duration::from_secs(20)).await;
        b.refresh();
        b.update(vec![backend(1, 1), backend(2, 1)]);
        assert_eq!(
            ports_with_weight(&b),
            vec![(1, 100), (2, 10)],
            "starts at the 10 % floor"
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(b.refresh().is_some(), "still ramping");
        assert_eq!(ports_with_weight(&b), vec![(1, 100), (2, 50)]);
        tokio::time::advance(Duration::from_secs(5)).await;
        b.refresh();
        assert_eq!(ports_with_weight(&b), vec![(1, 100), (2, 100)]);
        assert_eq!(b.refresh(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_eject_within_the_cap_and_ejections_expire() {
        let outlier = Outlier {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(60),
            max_ejection_percent: 50,
        };
        let b = balancer(Algorithm::RoundRobin).with_outlier(Some(outlier));
        b.update((1..=4).map(|p| backend(p, 1)).collect());
        let entries: Vec<Arc<Entry>> = b.current().entries().to_vec();
        b.observe(&entries[0], false);
        b.observe(&entries[0], false);
        b.observe(&entries[0], true);
        b.observe(&entries[0], false);
        b.observe(&entries[0], false);
        assert_eq!(
            ports_with_weight(&b)[0].1,
            100,
            "a success resets the count"
        );
        b.observe(&entries[0], false);
        assert_eq!(ports_with_weight(&b)[0].1, 0, "three in a row eject");
        for _ in 0..3 {
            b.observe(&entries[1], false);
        }
        for _ in 0..3 {
            b.observe(&entries[2], false);
        }
        let ejected = ports_with_weight(&b)
            .iter()
            .filter(|(_, w)| *w == 0)
            .count();
        assert_eq!(ejected, 2, "at most 50 % ejected");
        tokio::time::advance(Duration::from_secs(11)).await;
        b.refresh();
        assert!(
            ports_with_weight(&b).iter().all(|(_, w)| *w > 0),
            "ejections run out"
        );
        assert_eq!(entries[0].stats.metrics.ejections.get(), 1);
    }
}
