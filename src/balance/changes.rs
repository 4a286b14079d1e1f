//! When each backend last changed state, for operators ("down for 3 minutes").
//!
//! Events stamp the backend's health when they happen: a check verdict flipping, an ejection or its
//! early end, joining or leaving the set, a discovery update that makes it disabled, in maintenance
//! or a backup. Changes that come with time alone (an ejection or a slow start running out) have no
//! event, so they are computed when read, as the ewma estimate is.

use super::backend::Backend;
use super::health::BackendHealth;
use super::set::Entry;
use std::collections::HashMap;
use std::sync::Arc;

/// When `health`'s backend last changed state, as of `now` (all on the [`super::health::now_ms`]
/// clock); `slow_start_ms` is the service's slow start (0: none).
pub fn last_change(health: &BackendHealth, slow_start_ms: u64, now: u64) -> u64 {
    let ejection_end = health.ejected_until();
    let ramp_end = (slow_start_ms > 0).then(|| health.usable_since().saturating_add(slow_start_ms));
    [Some(ejection_end), ramp_end]
        .into_iter()
        .flatten()
        .filter(|t| *t <= now)
        .fold(health.changed_at(), u64::max)
}

/// The parts of a discovered backend that decide its state (see `BackendView`).
fn shown_state(b: &Backend) -> (bool, bool, bool) {
    (b.weight == 0, b.options.disabled, b.options.backup)
}

/// Stamps the backends whose state a swap from `before` to `after` changes at `now`: those that join,
/// those that leave, and those whose discovered weight or options change their state. True when the
/// set's membership or any state changed.
pub fn mark_swap(before: &[Arc<Entry>], after: &[Arc<Entry>], now: u64) -> bool {
    let old: HashMap<&str, &Backend> = before
        .iter()
        .map(|e| (e.key.as_str(), &e.backend))
        .collect();
    let mut changed = false;
    for e in after {
        let same = old
            .get(e.key.as_str())
            .is_some_and(|b| shown_state(b) == shown_state(&e.backend));
        if !same {
            e.health.mark_changed(now);
            changed = true;
        }
    }
    let new: HashMap<&str, ()> = after.iter().map(|e| (e.key.as_str(), ())).collect();
    for e in before.iter().filter(|e| !new.contains_key(e.key.as_str())) {
        e.health.mark_changed(now);
        changed = true;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::health::{now_ms, LastCheck};
    use std::time::Duration;

    fn check(passed: bool) -> LastCheck {
        LastCheck {
            passed,
            detail: String::new(),
            at_ms: now_ms(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn events_stamp_the_change_and_time_alone_is_computed_when_read() {
        let h = BackendHealth::default();
        let born = now_ms();
        tokio::time::advance(Duration::from_secs(10)).await;
        // A passing check on a backend already up changes nothing.
        h.record_check(true, check(true));
        assert_eq!(last_change(&h, 0, now_ms()), born);
        h.record_check(false, check(false));
        let down = now_ms();
        assert_eq!(last_change(&h, 0, now_ms()), down);
        tokio::time::advance(Duration::from_secs(5)).await;
        h.record_check(true, check(true));
        let up = now_ms();
        // With a 20 s slow start the ramp ends 20 s after it became usable, with no event.
        assert_eq!(last_change(&h, 20_000, now_ms()), up);
        tokio::time::advance(Duration::from_secs(21)).await;
        assert_eq!(last_change(&h, 20_000, now_ms()), up + 20_000);
        assert_eq!(last_change(&h, 0, now_ms()), up);
        // An ejection stamps its start; its end counts once it has passed.
        let start = now_ms();
        h.eject(start, Duration::from_secs(30), Duration::from_secs(60));
        assert_eq!(last_change(&h, 0, now_ms()), start);
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(last_change(&h, 0, now_ms()), start + 30_000);
    }

    fn balancer() -> crate::balance::Balancer {
        let registry = crate::metrics::Registry::new();
        let metrics = crate::balance::BalanceMetrics::register(&registry).unwrap();
        crate::balance::Balancer::new(
            "svc",
            crate::config::Algorithm::RoundRobin,
            Arc::new(metrics),
        )
    }

    fn backend(port: u16, weight: u32) -> Backend {
        Backend::new("127.0.0.1", port, weight, crate::balance::Origin::Static)
    }

    fn entries(b: &crate::balance::Balancer) -> Vec<Arc<Entry>> {
        b.current().entries().to_vec()
    }

    #[tokio::test(start_paused = true)]
    async fn a_swap_stamps_joining_leaving_and_restated_backends_only() {
        let b = balancer();
        b.update(vec![backend(1, 1), backend(2, 1)]);
        let (one, two) = (entries(&b)[0].clone(), entries(&b)[1].clone());
        let born = now_ms();
        tokio::time::advance(Duration::from_secs(10)).await;
        let now = now_ms();
        assert!(
            !mark_swap(&entries(&b), &entries(&b), now),
            "nothing changed"
        );
        assert_eq!(
            (one.health.changed_at(), two.health.changed_at()),
            (born, born)
        );
        b.update(vec![backend(1, 1), backend(3, 1)]);
        let three = entries(&b)[1].clone();
        assert_eq!(one.health.changed_at(), born, "stayed as it was");
        assert_eq!(
            (two.health.changed_at(), three.health.changed_at()),
            (now, now)
        );
        // The same backend rediscovered with weight 0 (disabled) has a new state; a weight change
        // that keeps it in rotation does not.
        tokio::time::advance(Duration::from_secs(1)).await;
        b.update(vec![backend(1, 5), backend(3, 1)]);
        assert_eq!(one.health.changed_at(), born);
        b.update(vec![backend(1, 0), backend(3, 1)]);
        assert_eq!(one.health.changed_at(), now_ms());
        assert_eq!(three.health.changed_at(), now);
    }
}
