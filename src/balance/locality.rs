//! Zone-aware routing with spill-over, after Envoy's locality priorities.
//!
//! Each backend is `local` (its zone label is this host's zone), `region` (another zone of this
//! host's region) or `remote` (anything else, a backend without a zone label included). A tier's
//! health is `min(1, usable capacity / capacity x overprovisioning)`, where usable capacity is the sum
//! of its backends' effective weights (so health checks, ejection, drain, disable and slow start all
//! count) and capacity the sum of their configured weights. The local tier takes its health's share of
//! new picks, the region tier the rest up to its own health, the remote tier what is left; when the
//! healths add up to less than 1, each tier gets its health's part of their sum. A local zone with
//! fewer than `min_backends` usable backends has health 0 and spills entirely. In panic mode, or when
//! no tier has usable capacity (backups in use), the split is off and the set balances as a whole,
//! as Envoy turns zone-aware routing off in panic.
//!
//! The split and one selection state per tier are built with the set, when membership, health or
//! weights change; a pick draws its tier in O(1) (a golden-ratio sequence, so the shares hold within
//! a pick or two over any run; a hash key picks its tier from the key, so a client stays put) and then
//! runs the service's algorithm among that tier's backends. A tier whose backends are all skipped or
//! full passes the pick on to the next one.

use super::backend::Backend;
use super::eligible::{base_weight, Weights, SCALE};
use super::metrics::BalanceMetrics;
use super::overrides::OverrideMap;
use super::set::{BackendSet, Entry, Picker};
use crate::config::{Algorithm, HostLocality, LocalityRouting};
use prometheus::IntCounter;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The 64-bit golden ratio: consecutive multiples spread evenly over the range (Weyl sequence).
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
/// Picks are drawn on this scale.
const ONE: f64 = (1u64 << 32) as f64;

/// A backend's place relative to this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// In this host's zone.
    Local = 0,
    /// In another zone of this host's region.
    Region = 1,
    /// Anywhere else, or without a zone label.
    Remote = 2,
}

impl Tier {
    /// Every tier, in order of preference.
    const ALL: [Tier; 3] = [Tier::Local, Tier::Region, Tier::Remote];

    /// The name in metrics and the admin API.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Local => "local",
            Tier::Region => "region",
            Tier::Remote => "remote",
        }
    }
}

/// A service's locality routing: this host's place, the service's settings, and its counters.
pub struct Settings {
    zone: String,
    region: Option<String>,
    overprovisioning: f64,
    min_backends: usize,
    zone_labels: Vec<String>,
    region_label: String,
    /// Picks by tier: local, region, remote.
    requests: [IntCounter; 3],
}

impl Settings {
    /// The locality routing of `service` when `routing` is given and enabled and `host` known.
    pub fn new(
        host: Option<&HostLocality>,
        routing: Option<&LocalityRouting>,
        metrics: &BalanceMetrics,
        service: &str,
    ) -> Option<Self> {
        let (host, routing) = (host?, routing.filter(|r| r.enabled)?);
        Some(Self {
            zone: host.zone.clone(),
            region: host.region.clone(),
            overprovisioning: routing.overprovisioning,
            min_backends: routing.min_backends as usize,
            zone_labels: routing.zone_labels(),
            region_label: routing.region_label.clone(),
            requests: metrics.locality(service),
        })
    }

    /// This host's zone.
    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// This host's region, when known.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// `backend`'s zone label, the first of the labels the service reads it from.
    pub fn zone_of<'a>(&self, backend: &'a Backend) -> Option<&'a str> {
        self.zone_labels
            .iter()
            .find_map(|l| backend.labels.get(l))
            .map(String::as_str)
    }

    /// Where `backend` is relative to this host.
    pub fn tier(&self, backend: &Backend) -> Tier {
        let Some(zone) = self.zone_of(backend) else {
            return Tier::Remote;
        };
        if zone == self.zone {
            return Tier::Local;
        }
        let region = backend.labels.get(&self.region_label);
        match (&self.region, region) {
            (Some(mine), Some(theirs)) if mine == theirs => Tier::Region,
            _ => Tier::Remote,
        }
    }
}

/// One tier's capacity, in effective-weight units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capacity {
    /// Sum of its backends' effective weights now.
    pub usable: u64,
    /// Sum of its backends' configured weights (scaled like effective weights).
    pub total: u64,
    /// Its backends with an effective weight.
    pub backends: usize,
}

/// Envoy's priority load: each tier's share of new picks (local, region, remote), summing to 1;
/// `None` when no tier has usable capacity.
pub fn split(cap: &[Capacity; 3], overprovisioning: f64, min_backends: usize) -> Option<[f64; 3]> {
    let health = |t: usize| {
        let c = cap[t];
        if c.total == 0 || c.usable == 0 || (t == Tier::Local as usize && c.backends < min_backends)
        {
            return 0.0;
        }
        (overprovisioning * c.usable as f64 / c.total as f64).min(1.0)
    };
    let health = [health(0), health(1), health(2)];
    let sum: f64 = health.iter().sum();
    if sum <= 0.0 {
        return None;
    }
    if sum < 1.0 {
        return Some(health.map(|h| h / sum));
    }
    let mut left = 1.0;
    Some(health.map(|h| {
        let share = h.min(left);
        left -= share;
        share
    }))
}

/// A set's locality routing: each backend's tier, the split, and one selection state per tier.
pub struct Tiers {
    tier_of: Box<[Tier]>,
    requests: [IntCounter; 3],
    /// The shares; `None` while the set balances as a whole (panic, or nothing usable).
    split: Option<[f64; 3]>,
    /// Draws below `cuts[0]` go local, below `cuts[1]` to the region, the rest remote.
    cuts: [u64; 2],
    pickers: [Option<Picker>; 3],
    draws: AtomicU64,
}

impl Tiers {
    /// The routing of a set of `entries` with effective `weights`, under `overrides`.
    pub fn build(
        settings: &Settings,
        algorithm: Algorithm,
        entries: &[Arc<Entry>],
        weights: &Weights,
        overrides: &OverrideMap,
    ) -> Self {
        let tier_of: Box<[Tier]> = entries.iter().map(|e| settings.tier(&e.backend)).collect();
        let mut cap = [Capacity::default(); 3];
        for ((e, w), t) in entries.iter().zip(&weights.weights).zip(tier_of.iter()) {
            if e.backend.options.backup {
                continue;
            }
            let c = &mut cap[*t as usize];
            c.total += u64::from(base_weight(e, overrides.get(&e.key))) * u64::from(SCALE);
            c.usable += u64::from(*w);
            c.backends += usize::from(*w > 0);
        }
        let split = if weights.panic {
            None
        } else {
            split(&cap, settings.overprovisioning, settings.min_backends)
        };
        let [local, region, _] = split.unwrap_or_default();
        let cuts = [(local * ONE) as u64, ((local + region) * ONE) as u64];
        let pickers = Tier::ALL.map(|t| {
            let masked: Vec<u32> = weights
                .weights
                .iter()
                .zip(tier_of.iter())
                .map(|(w, at)| if *at == t { *w } else { 0 })
                .collect();
            (split.is_some() && masked.iter().any(|w| *w > 0))
                .then(|| Picker::new(algorithm, &masked, entries))
        });
        Self {
            tier_of,
            requests: settings.requests.clone(),
            split,
            cuts,
            pickers,
            draws: AtomicU64::new(fastrand::u64(..)),
        }
    }

    /// The shares of new picks (local, region, remote); `None` while the set balances as a whole.
    pub fn split(&self) -> Option<[f64; 3]> {
        self.split
    }

    /// The tier of the set's entry `index`.
    pub fn tier(&self, index: usize) -> Tier {
        self.tier_of[index]
    }

    /// Counts a pick of the set's entry `index`.
    pub fn count(&self, index: usize) {
        self.requests[self.tier_of[index] as usize].inc();
    }

    /// Picks from `set` within the tier drawn for this pick, then the others in order of preference;
    /// `whole` is the set's selection state over every backend, used while the split is off.
    pub(super) fn select(
        &self,
        set: &BackendSet,
        whole: &Picker,
        skip: &[usize],
        key: Option<u64>,
    ) -> Option<usize> {
        if self.split.is_none() {
            return whole.select(set, skip, key);
        }
        let first = self.draw(key);
        std::iter::once(first)
            .chain(Tier::ALL.into_iter().filter(|t| *t != first))
            .filter_map(|t| self.pickers[t as usize].as_ref())
            .find_map(|p| p.select(set, skip, key))
    }

    /// The tier of the next pick: from the hash key when there is one, else the next draw.
    fn draw(&self, key: Option<u64>) -> Tier {
        let x = match key {
            // Not the key itself: the ring places the key within the tier with those bits.
            Some(k) => super::hash::hash(&k.to_le_bytes()) >> 32,
            None => {
                self.draws
                    .fetch_add(1, Ordering::Relaxed)
                    .wrapping_mul(GOLDEN)
                    >> 32
            }
        };
        if x < self.cuts[0] {
            Tier::Local
        } else if x < self.cuts[1] {
            Tier::Region
        } else {
            Tier::Remote
        }
    }
}

#[cfg(test)]
mod tests;
