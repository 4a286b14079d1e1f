//! `BackendSet`: an immutable snapshot of a service's backends plus the selection state built for it.

use super::backend::{Backend, Target};
use super::eligible::Weights;
use super::ewma::PeakEwma;
use super::hash::Ring;
use super::health::BackendHealth;
use super::least_conn::LeastConn;
use super::p2c::P2c;
use super::random::Random;
use super::round_robin::RoundRobin;
use crate::config::Algorithm;
use crate::metrics::BackendMetrics;
use prometheus::IntGauge;
use std::sync::Arc;

/// A backend in a set, with the counters that outlive the set.
pub struct Entry {
    /// The backend as discovered.
    pub backend: Backend,
    /// `host:port`, the backend's identity and metric label.
    pub key: String,
    /// Where to connect.
    pub target: Target,
    /// Counters shared with every other set that holds this backend.
    pub stats: Arc<BackendMetrics>,
    /// Health shared with every other set that holds this backend.
    pub health: Arc<BackendHealth>,
    /// Latency estimate shared with every other set that holds this backend.
    pub rtt: Arc<PeakEwma>,
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
    /// The entries' active-connection gauges side by side: least-conn scans them without chasing entries.
    loads: Vec<IntGauge>,
    weights: Weights,
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
        self.entry.stats.active.dec();
    }
}

impl BackendSet {
    /// Builds a set and its selection state over the effective `weights` (one per entry).
    pub fn new(algorithm: Algorithm, entries: Vec<Arc<Entry>>, weights: Weights) -> Self {
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
        let loads = entries.iter().map(|e| e.stats.active.clone()).collect();
        Self {
            entries,
            loads,
            weights,
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

    /// Like [`pick`](Self::pick), with the request's hash key for `balance: hash` (random without one).
    pub fn pick_keyed(&self, skip: &[usize], key: Option<u64>) -> Option<Pick> {
        let index = match &self.picker {
            Picker::RoundRobin(rr) => rr.pick(skip),
            Picker::LeastConn(lc) => lc.pick(skip, |i| self.loads[i].get().max(0) as u64),
            Picker::Random(r) => r.pick(skip),
            Picker::P2c(p) => p.pick(skip, |i| {
                let pending = self.loads[i].get().max(0) as f64;
                self.entries[i].rtt.estimate() * (pending + 1.0)
            }),
            Picker::Hash(ring) => ring.pick(key.unwrap_or_else(|| fastrand::u64(..)), skip),
        }?;
        let entry = Arc::clone(&self.entries[index]);
        entry.stats.active.inc();
        Some(Pick { entry, index })
    }
}
