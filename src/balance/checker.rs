//! Active health checks of a service's backends, from this host: each backend is checked on its own
//! schedule (first check at a random point of the interval, so a 1,000-backend service's checks are
//! spread out), with HAProxy's rise/fall and inter/fastinter/downinter semantics. A verdict change
//! rebuilds the set's selection state; a pass also ends an outlier ejection early.
//!
//! The same task is the service's clock: it sleeps until the next time the effective weights change by
//! time alone (an ejection running out, the next step of a slow start ramp) and rebuilds the set then,
//! so it also runs for services that have outlier ejection or slow start but no active checks.

use super::health::{instant_at, now_ms, LastCheck};
use super::{Balancer, Entry, Target};
use crate::config::{HealthCheck, SendProxy};
use crate::health::probe::{probe, CheckTls, Failure, ProbeTarget};
use crate::health::CheckState;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// Runs until `shutdown`: keeps one check loop per backend in the current set, and rebuilds the set
/// whenever time changes its effective weights. With `tls`, checks handshake with the backends as the
/// service's connections do; with `send_proxy`, they start with a PROXY `LOCAL` header (as does a check
/// of a backend whose server options ask for one).
pub async fn run(
    balancer: Arc<Balancer>,
    check: Option<HealthCheck>,
    tls: Option<Arc<dyn CheckTls>>,
    send_proxy: Option<SendProxy>,
    shutdown: CancellationToken,
) {
    let mut swaps = balancer.subscribe();
    let mut loops = JoinSet::new();
    let mut running: HashMap<String, AbortHandle> = HashMap::new();
    loop {
        if let Some(check) = &check {
            let probing = Probing {
                check,
                tls: tls.as_ref(),
                send_proxy,
            };
            sync(&balancer, &probing, &mut loops, &mut running);
        }
        // Every turn rebuilds what time has changed and takes the next deadline from the same clock
        // reading; any other rebuild (a check, an ejection, a swap) wakes the loop to take it again.
        let next = balancer.refresh();
        let due = async {
            match next {
                Some(ms) => tokio::time::sleep_until(instant_at(ms)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = swaps.changed() => if r.is_err() { break },
            _ = balancer.rebuilt() => {}
            _ = due => {}
            Some(_) = loops.join_next(), if !loops.is_empty() => {}
        }
    }
    loops.shutdown().await;
}

/// How a service's backends are checked.
struct Probing<'a> {
    check: &'a HealthCheck,
    tls: Option<&'a Arc<dyn CheckTls>>,
    send_proxy: Option<SendProxy>,
}

/// Starts loops for new backends and stops those of backends that left the set.
fn sync(
    balancer: &Arc<Balancer>,
    probing: &Probing<'_>,
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
                probing.check.clone(),
                probing.tls.cloned(),
                entry.backend.options.send_proxy.or(probing.send_proxy),
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
    send_proxy: Option<SendProxy>,
) {
    let mut state = CheckState::new(entry.health.checked_up());
    // Spread first checks over the interval.
    tokio::time::sleep(check.interval.mul_f64(fastrand::f64())).await;
    loop {
        let target = ProbeTarget {
            addr: match entry.target {
                Target::Addr(addr) => Some(addr),
                Target::Name(_) | Target::Unix(_) => None,
            },
            unix: match &entry.target {
                Target::Unix(path) => Some(path),
                _ => None,
            },
            key: &entry.key,
            host: &entry.backend.host,
            send_proxy,
        };
        let (passed, detail) = match probe(target, &check, tls.as_deref()).await {
            Ok(d) => (true, d),
            Err(Failure::Backend(d)) => (false, d),
            Err(Failure::Local(resource, d)) => {
                // This host ran out of something: no verdict on the backend, try again next interval.
                entry.stats.metrics.check_skips.inc();
                tracing::debug!(service = %balancer.service(), backend = %entry.key, resource = resource.label(), check = %d, "health check skipped: local resource limit");
                tokio::time::sleep(next_interval(&state, &check)).await;
                continue;
            }
        };
        if !passed {
            entry.stats.metrics.check_failures.inc();
        }
        record(&balancer, &entry, &mut state, &check, passed, detail);
        tokio::time::sleep(next_interval(&state, &check)).await;
    }
}

/// Applies one check's outcome: the verdict (after rise/fall), the last check shown to operators, and
/// an early end of an ejection on a pass; rebuilds the set when any of them changed its weights.
fn record(
    balancer: &Balancer,
    entry: &Entry,
    state: &mut CheckState,
    check: &HealthCheck,
    passed: bool,
    detail: String,
) {
    let was_up = state.up;
    state.record(passed, check.rise, check.fall);
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

#[cfg(test)]
mod tests {
    //! Every way out of `ejected` and `slow_start`, with the clock task running and the clock paused:
    //! no weight is read after a `refresh` by hand, so each one seen was rebuilt on the clock or by an event.

    use super::*;
    use crate::balance::BalanceMetrics;
    use crate::balance::{Backend, Origin, Policy};
    use crate::config::{Algorithm, Outlier};
    use crate::metrics::Registry;

    const SLOW: Duration = Duration::from_secs(10);
    const EJECTION: Duration = Duration::from_secs(2);

    fn backend(port: u16) -> Backend {
        Backend::new("127.0.0.1", port, 1, Origin::Static)
    }

    /// A balancer over ports 1 and 2, past any initial ramp, with its clock task running.
    async fn clocked(slow_start: Duration) -> (Arc<Balancer>, CancellationToken) {
        let outlier = Outlier {
            consecutive_failures: 1,
            base_ejection: EJECTION,
            max_ejection: Duration::from_secs(60),
            max_ejection_percent: 50,
        };
        let policy = Policy {
            panic_threshold: 0,
            slow_start,
            max_connections: None,
        };
        let b = Arc::new(
            Balancer::new(
                "svc",
                Algorithm::RoundRobin,
                Arc::new(BalanceMetrics::register(&Registry::new()).unwrap()),
            )
            .with_policy(policy)
            .with_outlier(Some(outlier)),
        );
        b.update(vec![backend(1), backend(2)]);
        let stop = CancellationToken::new();
        tokio::spawn(run(Arc::clone(&b), None, None, None, stop.clone()));
        advance(slow_start).await;
        assert_eq!(weights(&b), [100, 100], "both at full weight to begin with");
        (b, stop)
    }

    /// Moves the paused clock and lets the clock task run.
    async fn advance(d: Duration) {
        tokio::time::advance(d).await;
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
    }

    fn weights(b: &Balancer) -> Vec<u32> {
        b.current().weights().weights.clone()
    }

    fn state(b: &Balancer, port: u16) -> &'static str {
        let view = b.view();
        let found = view
            .backends
            .iter()
            .find(|v| v.address.ends_with(&format!(":{port}")));
        // A view built in this process names its state with a static string.
        found.map_or("absent", |v| match v.state {
            std::borrow::Cow::Borrowed(state) => state,
            std::borrow::Cow::Owned(_) => "deserialized",
        })
    }

    fn entry(b: &Balancer, port: u16) -> Arc<Entry> {
        let set = b.current();
        let found = set.entries().iter().find(|e| e.backend.port == port);
        Arc::clone(found.unwrap())
    }

    fn eject(b: &Balancer, port: u16) {
        b.observe(&entry(b, port), false);
        assert_eq!(state(b, port), "ejected");
        assert_eq!(weights(b)[usize::from(port) - 1], 0);
    }

    fn check(rise_fall: u32) -> HealthCheck {
        let yaml = format!("{{ rise: {rise_fall}, fall: {rise_fall} }}");
        serde_norway::from_str(&yaml).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn an_ejection_ends_at_full_weight_without_slow_start() {
        let (b, stop) = clocked(Duration::ZERO).await;
        eject(&b, 2);
        advance(EJECTION - Duration::from_millis(1)).await;
        assert_eq!(weights(&b), [100, 0], "still ejected");
        advance(Duration::from_millis(1)).await;
        assert_eq!(weights(&b), [100, 100], "full weight the moment it ends");
        assert_eq!(state(&b, 2), "up");
        assert_eq!(b.refresh(), None, "nothing left to wake for");
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn an_ejection_ends_into_a_ramp_that_runs_on_the_clock() {
        let (b, stop) = clocked(SLOW).await;
        eject(&b, 2);
        advance(EJECTION).await;
        assert_eq!(weights(&b), [100, 10], "the ramp starts at its floor");
        assert_eq!(state(&b, 2), "slow_start");
        advance(SLOW / 2).await;
        assert_eq!(weights(&b), [100, 50]);
        advance(SLOW / 2).await;
        assert_eq!(weights(&b), [100, 100]);
        assert_eq!(state(&b, 2), "up");
        assert_eq!(b.refresh(), None);
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_passing_check_ends_an_ejection_early() {
        for (slow, at_once) in [(Duration::ZERO, 100), (SLOW, 10)] {
            let (b, stop) = clocked(slow).await;
            eject(&b, 2);
            advance(EJECTION / 2).await;
            let mut verdict = CheckState::new(true);
            record(
                &b,
                &entry(&b, 2),
                &mut verdict,
                &check(1),
                true,
                "ok".into(),
            );
            assert_eq!(weights(&b), [100, at_once], "slow start {slow:?}");
            advance(slow).await;
            assert_eq!(weights(&b), [100, 100], "slow start {slow:?}");
            stop.cancel();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_ejection_during_slow_start_restarts_the_ramp_when_it_ends() {
        let (b, stop) = clocked(SLOW).await;
        b.update(vec![backend(1), backend(2), backend(3)]);
        advance(SLOW / 2).await;
        assert_eq!(weights(&b), [100, 100, 50]);
        eject(&b, 3);
        advance(EJECTION).await;
        assert_eq!(weights(&b), [100, 100, 10], "ramping again from the floor");
        advance(SLOW).await;
        assert_eq!(weights(&b), [100, 100, 100]);
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn slow_start_finishes_at_full_weight_on_the_clock() {
        let (b, stop) = clocked(SLOW).await;
        b.update(vec![backend(1), backend(2), backend(3)]);
        assert_eq!(weights(&b), [100, 100, 10]);
        let mut seen = Vec::new();
        for _ in 0..10 {
            advance(SLOW / 10).await;
            seen.push(weights(&b)[2]);
        }
        assert_eq!(seen, [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
        assert_eq!(state(&b, 3), "up");
        assert_eq!(b.refresh(), None);
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_check_during_slow_start_stops_the_ramp_until_a_pass() {
        let (b, stop) = clocked(SLOW).await;
        b.update(vec![backend(1), backend(2), backend(3)]);
        advance(SLOW / 2).await;
        let e = entry(&b, 3);
        let mut verdict = CheckState::new(true);
        record(&b, &e, &mut verdict, &check(2), false, "refused".into());
        assert_eq!(
            weights(&b)[2],
            50,
            "one failure of two needed: the ramp runs on"
        );
        record(&b, &e, &mut verdict, &check(2), false, "refused".into());
        assert_eq!((weights(&b)[2], state(&b, 3)), (0, "down"));
        advance(SLOW * 2).await;
        assert_eq!(weights(&b)[2], 0, "a down backend stays out");
        record(&b, &e, &mut verdict, &check(2), true, "ok".into());
        record(&b, &e, &mut verdict, &check(2), true, "ok".into());
        assert_eq!(weights(&b)[2], 10, "up again: the ramp starts over");
        advance(SLOW).await;
        assert_eq!((weights(&b)[2], state(&b, 3)), (100, "up"));
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_swap_keeps_an_ejection_and_a_ramp() {
        let (b, stop) = clocked(SLOW).await;
        eject(&b, 2);
        b.update(vec![backend(1), backend(2), backend(4)]);
        advance(EJECTION / 2).await;
        assert_eq!(weights(&b)[1], 0, "still ejected after the swap");
        assert_eq!(state(&b, 2), "ejected");
        advance(EJECTION / 2).await;
        assert_eq!(weights(&b)[1], 10, "the ejection ended on time");
        advance(SLOW / 2).await;
        b.update(vec![backend(1), backend(2)]);
        assert_eq!(weights(&b), [100, 50], "a swap mid-ramp keeps the ramp");
        advance(SLOW / 2).await;
        assert_eq!(weights(&b), [100, 100]);
        stop.cancel();
    }
}
