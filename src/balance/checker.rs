//! Active health checks of a service's backends, from this host: each backend is checked on its own
//! schedule (first check at a random point of the interval, so a 1,000-backend service's checks are
//! spread out), with HAProxy's rise/fall and inter/fastinter/downinter semantics. A verdict change
//! rebuilds the set's selection state; a pass also ends an outlier ejection early.
//!
//! The same task runs the time-based refresh (ejections running out, slow start ramps), so it also runs
//! for services that have outlier ejection or slow start but no active checks.

use super::health::{now_ms, CheckState, LastCheck};
use super::probe::{probe, CheckTls, ProbeTarget};
use super::{Balancer, Entry};
use crate::config::HealthCheck;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// How often time-based weights (ejection expiry, slow start) are re-evaluated.
const REFRESH: Duration = Duration::from_millis(250);

/// Runs until `shutdown`: keeps one check loop per backend in the current set, and refreshes weights.
/// With `tls`, checks handshake with the backends as the service's connections do.
pub async fn run(
    balancer: Arc<Balancer>,
    check: Option<HealthCheck>,
    tls: Option<Arc<dyn CheckTls>>,
    shutdown: CancellationToken,
) {
    let mut swaps = balancer.subscribe();
    let mut loops = JoinSet::new();
    let mut running: HashMap<String, AbortHandle> = HashMap::new();
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if let Some(check) = &check {
            sync(&balancer, check, tls.as_ref(), &mut loops, &mut running);
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = swaps.changed() => if r.is_err() { break },
            _ = tick.tick() => {
                if balancer.time_dependent() {
                    balancer.refresh();
                }
            }
            Some(_) = loops.join_next(), if !loops.is_empty() => {}
        }
    }
    loops.shutdown().await;
}

/// Starts loops for new backends and stops those of backends that left the set.
fn sync(
    balancer: &Arc<Balancer>,
    check: &HealthCheck,
    tls: Option<&Arc<dyn CheckTls>>,
    loops: &mut JoinSet<()>,
    running: &mut HashMap<String, AbortHandle>,
) {
    let set = balancer.current();
    let keys: HashMap<&str, &Arc<Entry>> =
        set.entries().iter().map(|e| (e.key.as_str(), e)).collect();
    running.retain(|key, handle| {
        let keep = keys.contains_key(key.as_str());
        if !keep {
            handle.abort();
        }
        keep
    });
    for (key, entry) in keys {
        if !running.contains_key(key) {
            let handle = loops.spawn(check_loop(
                Arc::clone(balancer),
                Arc::clone(entry),
                check.clone(),
                tls.cloned(),
            ));
            running.insert(key.to_string(), handle);
        }
    }
}

/// Checks one backend forever (until aborted).
async fn check_loop(
    balancer: Arc<Balancer>,
    entry: Arc<Entry>,
    check: HealthCheck,
    tls: Option<Arc<dyn CheckTls>>,
) {
    let mut state = CheckState::new(entry.health.checked_up());
    // Spread first checks over the interval.
    tokio::time::sleep(check.interval.mul_f64(fastrand::f64())).await;
    loop {
        let target = ProbeTarget {
            target: &entry.target,
            key: &entry.key,
            host: &entry.backend.host,
        };
        let result = probe(target, &check, tls.as_deref()).await;
        let passed = result.is_ok();
        if !passed {
            entry.stats.check_failures.inc();
        }
        let was_up = state.up;
        state.record(passed, check.rise, check.fall);
        let detail = match &result {
            Ok(d) | Err(d) => d.clone(),
        };
        let now = now_ms();
        let changed = entry.health.record_check(
            state.up,
            LastCheck {
                passed,
                detail: detail.clone(),
                at_ms: now,
            },
        );
        if changed || was_up != state.up {
            if state.up {
                tracing::info!(service = %balancer.service(), backend = %entry.key, check = %detail, "backend up");
            } else {
                tracing::warn!(service = %balancer.service(), backend = %entry.key, check = %detail, "backend down");
            }
        }
        let unejected = passed && entry.health.clear_ejection(now);
        if unejected {
            tracing::info!(service = %balancer.service(), backend = %entry.key, "ejection ended by a passing check");
        }
        if changed || unejected {
            balancer.refresh();
        }
        tokio::time::sleep(next_interval(&state, &check)).await;
    }
}

/// HAProxy's choice of interval, plus jitter.
fn next_interval(state: &CheckState, check: &HealthCheck) -> Duration {
    let base = if state.transitioning() {
        check.fast_interval.unwrap_or(check.interval)
    } else if state.up {
        check.interval
    } else {
        check.down_interval.unwrap_or(check.interval)
    };
    let spread = f64::from(check.jitter) / 100.0;
    base.mul_f64(1.0 + spread * (2.0 * fastrand::f64() - 1.0))
}
