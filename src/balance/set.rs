//! `BackendSet`: an immutable snapshot of a service's backends plus the selection state built for it.

use super::backend::{Backend, Target};
use super::eligible::Weights;
use super::ewma::PeakEwma;
use super::hash::Ring;
use super::health::{now_ms, BackendHealth};
use super::least_conn::LeastConn;
use super::load::BackendStats;
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

enum Picker {
    RoundRobin(RoundRobin),
    LeastConn(LeastConn),
    Random(Random),
    P2c(P2c),
    Hash(Ring),
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
        let w = &weights.weights;
        let picker = match algorithm {
            Algorithm::RoundRobin => Picker::RoundRobin(RoundRobin::new(w)),
            Algorithm::LeastConn => Picker::LeastConn(LeastConn::new(w)),
            Algorithm::Random => Picker::Random(Random::new(w)),
            Algorithm::P2cEwma => Picker::P2c(P2c::new(w)),
            Algorithm::Hash => {
                let keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
                Picker::Hash(Ring::new(w, &keys))
            }
        };
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
        }
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
                    return Some(Pick {
                        entry: Arc::clone(entry),
                        index,
                    })
                }
            }
        }
    }

    /// The algorithm's choice among usable backends not in `skip`.
    fn select(&self, skip: &[usize], key: Option<u64>) -> Option<usize> {
        match &self.picker {
            Picker::RoundRobin(rr) => rr.pick(skip),
            Picker::LeastConn(lc) => lc.pick(skip, |i| self.loads[i].load.get().max(0) as u64),
            Picker::Random(r) => r.pick(skip),
            Picker::P2c(p) => {
                // One clock reading per pick, for both candidates' decayed estimates.
                let now = now_ms();
                p.pick(skip, |i| {
                    let pending = self.loads[i].load.get().max(0) as f64;
                    self.entries[i].rtt.estimate(now) * (pending + 1.0)
                })
            }
            Picker::Hash(ring) => ring.pick(key.unwrap_or_else(|| fastrand::u64(..)), skip),
        }
    }
}
