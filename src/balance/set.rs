//! `BackendSet`: an immutable snapshot of a service's backends plus the selection state built for it.

use super::backend::{Backend, Target};
use super::eligible::Weights;
use super::ewma::PeakEwma;
use super::hash::Ring;
use super::health::{now_ms, BackendHealth};
use super::least_conn::LeastConn;
use super::load::BackendStats;
use super::locality::Tiers;
use super::p2c::P2c;
use super::queue::Queue;
use super::random::Random;
use super::round_robin::RoundRobin;
use crate::config::Algorithm;
use std::sync::Arc;

/// A backend in a set, with the counters that outlive the set.
pub struct Entry {
    /// The backend as discovered.
    pub backend: Backend,
    /// `host:port`, the backend's identity and metric label.
    pub key: String,
    /// Where to connect.
    pub target: Target,
    /// Load and metric series shared with every other set that holds this backend.
    pub stats: Arc<BackendStats>,
    /// Health shared with every other set that holds this backend.
    pub health: Arc<BackendHealth>,
    /// Latency estimate shared with every other set that holds this backend.
    pub rtt: Arc<PeakEwma>,
    /// The service's wait queue, told when this backend frees a slot.
    pub queue: Arc<Queue>,
}

/// An algorithm's selection state over one list of weights (index = entry index).
pub(super) enum Picker {
    RoundRobin(RoundRobin),
    LeastConn(LeastConn),
    Random(Random),
    P2c(P2c),
    Hash(Ring),
}

impl Picker {
    /// Selection state for `algorithm` over `weights`, one per entry of `entries`.
    pub(super) fn new(algorithm: Algorithm, weights: &[u32], entries: &[Arc<Entry>]) -> Self {
        match algorithm {
            Algorithm::RoundRobin => Picker::RoundRobin(RoundRobin::new(weights)),
            Algorithm::LeastConn => Picker::LeastConn(LeastConn::new(weights)),
            Algorithm::Random => Picker::Random(Random::new(weights)),
            Algorithm::P2cEwma => Picker::P2c(P2c::new(weights)),
            Algorithm::Hash => {
                let keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
                Picker::Hash(Ring::new(weights, &keys))
            }
        }
    }

    /// The algorithm's choice among backends of `set` with a weight here, not in `skip`.
    pub(super) fn select(
        &self,
        set: &BackendSet,
        skip: &[usize],
        key: Option<u64>,
    ) -> Option<usize> {
        match self {
            Picker::RoundRobin(rr) => rr.pick(skip),
            Picker::LeastConn(lc) => lc.pick(skip, |i| set.loads[i].load.get().max(0) as u64),
            Picker::Random(r) => r.pick(skip),
            Picker::P2c(p) => {
                // One clock reading per pick, for both candidates' decayed estimates.
                let now = now_ms();
                p.pick(skip, |i| {
                    let pending = set.loads[i].load.get().max(0) as f64;
                    set.entries[i].rtt.estimate(now) * (pending + 1.0)
                })
            }
            Picker::Hash(ring) => ring.pick(key.unwrap_or_else(|| fastrand::u64(..)), skip),
        }
    }
}

/// An immutable set of backends; replaced whole, never edited.
pub struct BackendSet {
    entries: Vec<Arc<Entry>>,
    /// The entries' load state side by side: least-conn scans it without chasing entries.
    loads: Vec<Arc<BackendStats>>,
    weights: Weights,
    /// Each entry's connection limit (`i64::MAX`: none); `None` when no entry has one.
    limits: Option<Box<[i64]>>,
    picker: Picker,
    /// Zone-aware routing's split and per-locality selection, when the service routes by locality.
    locality: Option<Box<Tiers>>,
}

/// A picked backend; holds one active-connection count until dropped.
pub struct Pick {
    /// The picked backend.
    pub entry: Arc<Entry>,
    /// Its index in the set, for excluding it from retries.
    pub index: usize,
}

impl Drop for Pick {
    fn drop(&mut self) {
        self.entry.stats.load.release();
        self.entry.queue.release();
    }
}

impl BackendSet {
    /// Builds a set and its selection state over the effective `weights` (one per entry); `max` is the
    /// service's per-backend limit, which a backend's own `maxconn` replaces.
    pub fn new(
        algorithm: Algorithm,
        entries: Vec<Arc<Entry>>,
        weights: Weights,
        max: Option<u32>,
    ) -> Self {
        let picker = Picker::new(algorithm, &weights.weights, &entries);
        let loads = entries.iter().map(|e| Arc::clone(&e.stats)).collect();
        let limit = |e: &Arc<Entry>| e.backend.options.max_connections.or(max);
        let limits = entries.iter().any(|e| limit(e).is_some()).then(|| {
            entries
                .iter()
                .map(|e| limit(e).map_or(i64::MAX, i64::from))
                .collect()
        });
        Self {
            entries,
            loads,
            weights,
            limits,
            picker,
            locality: None,
        }
    }

    /// The same set routing by locality with `tiers` (built over this set's entries and weights).
    pub(super) fn with_locality(mut self, tiers: Option<Tiers>) -> Self {
        self.locality = tiers.map(Box::new);
        self
    }

    /// Zone-aware routing's state, when the service routes by locality.
    pub(super) fn locality(&self) -> Option<&Tiers> {
        self.locality.as_deref()
    }

    /// The effective weights the set was built with.
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// The backends in this set.
    pub fn entries(&self) -> &[Arc<Entry>] {
        &self.entries
    }

    /// Picks a backend not in `skip` and counts it active; `None` when none is eligible.
    pub fn pick(&self, skip: &[usize]) -> Option<Pick> {
        self.pick_keyed(skip, None)
    }

    /// True when some backend has a connection limit.
    pub fn limited(&self) -> bool {
        self.limits.is_some()
    }

    /// True when some backend not in `skip` gets new traffic.
    pub fn any_usable(&self, skip: &[usize]) -> bool {
        self.weights
            .weights
            .iter()
            .enumerate()
            .any(|(i, w)| *w > 0 && !skip.contains(&i))
    }

    /// Like [`pick`](Self::pick), with the request's hash key for `balance: hash` (random without one).
    /// With a connection limit, full backends are passed over; `None` when all usable ones are full.
    pub fn pick_keyed(&self, skip: &[usize], key: Option<u64>) -> Option<Pick> {
        // Full backends found on the way are added to a copy of `skip`.
        let mut skipped: Vec<usize> = Vec::new();
        loop {
            let skip_now = if skipped.is_empty() { skip } else { &skipped };
            let index = self.select(skip_now, key)?;
            let entry = &self.entries[index];
            let load = entry.stats.load.take();
            match &self.limits {
                // Counted first, checked second: two racing picks can never both take the last slot.
                Some(limits) if load > limits[index] => {
                    entry.stats.load.release();
                    if skipped.is_empty() {
                        skipped = skip.to_vec();
                    }
                    skipped.push(index);
                }
                _ => {
                    if let Some(tiers) = &self.locality {
                        tiers.count(index);
                    }
                    return Some(Pick {
                        entry: Arc::clone(entry),
                        index,
                    });
                }
            }
        }
    }

    /// The algorithm's choice among usable backends not in `skip`, within the locality routing
    /// chose when the service routes by locality.
    fn select(&self, skip: &[usize], key: Option<u64>) -> Option<usize> {
        match &self.locality {
            None => self.picker.select(self, skip, key),
            Some(tiers) => tiers.select(self, &self.picker, skip, key),
        }
    }
}
