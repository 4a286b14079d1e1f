//! The one place that decides which backends get new traffic and how much: weight > 0, not
//! `disabled`, checked up, not ejected; all of them when too few are usable (panic threshold); ramped
//! during slow start. Algorithms only ever see the weights computed here.
//!
//! An operator's override (see `overrides`) comes first: a drained or disabled backend is no
//! candidate at all, even in panic, and a weight override replaces the discovered weight.
//!
//! Backends marked `backup` (HAProxy's server option) form a group of their own, used only while no
//! other backend is usable; then, as in HAProxy without `option allbackups`, the first usable backup
//! in the set's order takes all new traffic. The panic threshold applies within the group in use.
//!
//! Weights depend on the clock (an ejection runs out, a ramp climbs), but the pick path never reads it:
//! [`next_change`] says when the weights computed here next differ, and the balancer's clock task
//! rebuilds the set then.

use super::overrides::{Override, OverrideMap};
use super::set::Entry;
use std::sync::Arc;
use std::time::Duration;

/// Base weights are scaled by this so slow start can ramp even a weight-1 backend in steps.
pub const SCALE: u32 = 100;
/// Slow start begins at this percentage of the weight.
const SLOW_START_FLOOR: u64 = 10;
/// A ramp is rebuilt at most this often (and at least every 1 % of the slow start period otherwise).
const RAMP_STEP_MIN_MS: u64 = 250;

/// Balancing policy beyond the algorithm.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    /// Percentage of usable backends below which health is ignored; 0 disables.
    pub panic_threshold: u32,
    /// Ramp-up period of a backend that becomes usable.
    pub slow_start: Duration,
    /// Most connections (TCP) or in-flight requests (HTTP) per backend; excess waits in the queue.
    pub max_connections: Option<u32>,
}

/// Effective weights of a set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Weights {
    /// One per entry; 0 means no new traffic.
    pub weights: Vec<u32>,
    /// True when the panic threshold overrode health.
    pub panic: bool,
}

/// `e`'s weight before health and slow start: an operator's override, else the discovered one.
pub fn base_weight(e: &Entry, admin: Option<&Override>) -> u32 {
    admin.and_then(|o| o.weight).unwrap_or(e.backend.weight)
}

/// True when `e` may get traffic at all: a weight, not in maintenance, not drained or disabled.
fn candidate(e: &Entry, overrides: &OverrideMap) -> bool {
    let admin = overrides.get(&e.key);
    base_weight(e, admin) > 0 && !e.backend.options.disabled && !admin.is_some_and(Override::blocks)
}

/// Computes effective weights at `now` (milliseconds on the health clock) under `overrides`.
pub fn weights(
    entries: &[Arc<Entry>],
    policy: &Policy,
    overrides: &OverrideMap,
    now: u64,
) -> Weights {
    let candidate = |e: &Entry| candidate(e, overrides);
    let usable = |e: &&Arc<Entry>| e.health.usable(now);
    let primaries = || {
        entries
            .iter()
            .filter(|e| candidate(e) && !e.backend.options.backup)
    };
    let backups = || {
        entries
            .iter()
            .filter(|e| candidate(e) && e.backend.options.backup)
    };
    // The backups serve only when no primary is usable, and either one of them is or there is no
    // primary at all to balance over in panic.
    let backup = primaries().filter(usable).count() == 0
        && (backups().any(|e| usable(&e)) || primaries().count() == 0);
    let group = || {
        entries
            .iter()
            .filter(move |e| candidate(e) && e.backend.options.backup == backup)
    };
    let candidates = group().count();
    let usable_count = group().filter(usable).count();
    // Without `option allbackups`, HAProxy sends everything to the first usable backup.
    let only = if backup && usable_count > 0 {
        group().find(usable).map(Arc::as_ptr)
    } else {
        None
    };
    let panic = only.is_none()
        && policy.panic_threshold > 0
        && candidates > 0
        && (usable_count as u64) * 100 < u64::from(policy.panic_threshold) * candidates as u64;
    let weights = entries
        .iter()
        .map(|e| {
            let base = base_weight(e, overrides.get(&e.key)) * SCALE;
            let member = candidate(e) && e.backend.options.backup == backup;
            if !member || only.is_some_and(|p| !std::ptr::eq(p, Arc::as_ptr(e))) {
                return 0;
            }
            if !panic && !e.health.usable(now) {
                return 0;
            }
            let slow = policy.slow_start.as_millis() as u64;
            let elapsed = now.saturating_sub(e.health.usable_since());
            if slow == 0 || elapsed >= slow {
                return base;
            }
            let percent = (elapsed * 100 / slow).max(SLOW_START_FLOOR);
            ((u64::from(base) * percent / 100) as u32).max(1)
        })
        .collect();
    Weights { weights, panic }
}

/// The next time after `now` at which [`weights`] may give a different answer with no other event: the
/// end of the earliest ejection, or the next step of a slow start ramp. `None` when only an event (a
/// check, an ejection, a swap) can change them.
pub fn next_change(
    entries: &[Arc<Entry>],
    policy: &Policy,
    overrides: &OverrideMap,
    now: u64,
) -> Option<u64> {
    let slow = policy.slow_start.as_millis() as u64;
    let step = (slow / 100).max(RAMP_STEP_MIN_MS);
    entries
        .iter()
        .filter(|e| candidate(e, overrides))
        .filter_map(|e| {
            if e.health.ejected(now) {
                return Some(e.health.ejected_until());
            }
            let end = e.health.usable_since().saturating_add(slow);
            (slow > 0 && e.health.usable(now) && end > now).then(|| end.min(now + step))
        })
        .min()
}
