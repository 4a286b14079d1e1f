//! DNS discovery: host names resolved through the system resolver, one backend per address, resolved
//! again on an interval (Synapse's `dns` watcher, and with ZooKeeper its `zookeeper_dns`).
//!
//! Names go through getaddrinfo (`tokio::net::lookup_host`), so `/etc/hosts`, nsswitch and the
//! system's resolv.conf apply exactly as for every other program on the host; nothing here needs
//! record types or a nameserver of its own. The names to resolve come from a watch channel: a fixed list
//! for `discovery: dns`, the decoded znodes for ZooKeeper discovery with `resolve_interval`. Every
//! change of that list and every tick of the interval resolves each distinct name once (concurrently,
//! each lookup bounded by [`LOOKUP_TIMEOUT`]); a name whose lookup fails keeps its last good answer
//! ([`answers`]). The balancer is only called when the resulting set differs from the last one
//! reported.

pub mod answers;

use super::SourceContext;
use crate::balance::{Backend, Origin};
use crate::config::BackendAddr;
use answers::{Answers, LookupFailure, Streak};
use std::collections::HashSet;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Longest wait for one lookup; getaddrinfo's own retries can take far longer than an interval.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The list of (named) backends to resolve; `None` until the feeding source has read anything.
pub type Wanted = Option<Vec<Backend>>;

/// A way to turn a host name into addresses.
pub trait Lookup: Send + Sync + 'static {
    /// The addresses of `host`.
    fn lookup(&self, host: String) -> impl Future<Output = std::io::Result<Vec<IpAddr>>> + Send;
}

/// The system resolver (getaddrinfo: `/etc/hosts`, nsswitch, resolv.conf).
pub struct System;

impl Lookup for System {
    async fn lookup(&self, host: String) -> std::io::Result<Vec<IpAddr>> {
        Ok(tokio::net::lookup_host((host.as_str(), 0))
            .await?
            .map(|a| a.ip())
            .collect())
    }
}

/// The configured servers as named backends, each with its name (or host) as origin.
pub fn servers(servers: &[BackendAddr]) -> Vec<Backend> {
    servers
        .iter()
        .map(|s| {
            Backend::new(
                s.host.clone(),
                s.port,
                s.weight,
                Origin::Dns(s.name.clone().unwrap_or_else(|| s.host.clone())),
            )
        })
        .collect()
}

/// Resolves what `wanted` holds on every change and every `interval` until shutdown (or until the
/// feeding source is gone), handing each new set to the balancer.
pub async fn run<L: Lookup>(
    mut wanted: watch::Receiver<Wanted>,
    interval: Duration,
    ctx: SourceContext,
    lookup: Arc<L>,
) {
    let service = ctx.balancer.service().to_string();
    let span = tracing::info_span!("dns_discovery", service = %service);
    let mut answers = Answers::default();
    let mut reported: Option<Vec<Backend>> = None;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let list = wanted.borrow_and_update().clone();
        if let Some(list) = list {
            let names = answers::names(&list);
            answers.retain(&names.iter().copied().collect::<HashSet<_>>());
            for (host, result) in resolve(&names, &lookup).await {
                let failure = result.as_ref().err().map(ToString::to_string);
                if let Err(f) = &result {
                    ctx.metrics.dns_failure(&service, f.reason());
                }
                match (answers.record(&host, result), failure) {
                    (Streak::Began, Some(error)) => {
                        tracing::warn!(parent: &span, host = %host, error = %error, "cannot resolve; its last good answer (if any) keeps serving")
                    }
                    (Streak::Ended, _) => {
                        tracing::info!(parent: &span, host = %host, "resolves again")
                    }
                    _ => {}
                }
            }
            if let Some(set) = answers.backends(&list) {
                if reported.as_ref() != Some(&set) {
                    tracing::info!(parent: &span, backends = set.len(), "addresses changed");
                    ctx.balancer.update(set.clone());
                    reported = Some(set);
                }
            }
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = ticker.tick() => {}
            changed = wanted.changed() => if changed.is_err() { return },
        }
    }
}

/// Looks every name up at once, each bounded by [`LOOKUP_TIMEOUT`]; answers come back in `names`' order.
async fn resolve<L: Lookup>(
    names: &[&str],
    lookup: &Arc<L>,
) -> Vec<(String, Result<Vec<IpAddr>, LookupFailure>)> {
    let mut lookups = JoinSet::new();
    for (i, name) in names.iter().enumerate() {
        let (name, lookup) = (name.to_string(), Arc::clone(lookup));
        lookups.spawn(async move {
            let result =
                match tokio::time::timeout(LOOKUP_TIMEOUT, lookup.lookup(name.clone())).await {
                    Err(_) => Err(LookupFailure::Timeout),
                    Ok(Err(e)) => Err(LookupFailure::Error(e.to_string())),
                    Ok(Ok(addrs)) if addrs.is_empty() => Err(LookupFailure::Empty),
                    Ok(Ok(addrs)) => Ok(addrs),
                };
            (i, name, result)
        });
    }
    let mut out: Vec<_> = lookups.join_all().await.into_iter().collect();
    out.sort_by_key(|(i, _, _)| *i);
    out.into_iter().map(|(_, n, r)| (n, r)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::{BalanceMetrics, Balancer};
    use crate::config::Algorithm;
    use crate::discovery::DiscoveryMetrics;
    use crate::metrics::Registry;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    /// A resolver whose answers the test sets, counting the lookups it is asked.
    #[derive(Default)]
    struct Scripted {
        answers: Mutex<HashMap<String, Option<Vec<IpAddr>>>>,
        asked: Mutex<usize>,
    }

    impl Scripted {
        fn set(&self, host: &str, answer: Option<&[&str]>) {
            let answer = answer.map(|a| a.iter().map(|s| s.parse().unwrap()).collect());
            self.answers.lock().unwrap().insert(host.into(), answer);
        }
        fn asked(&self) -> usize {
            *self.asked.lock().unwrap()
        }
    }

    impl Lookup for Scripted {
        async fn lookup(&self, host: String) -> std::io::Result<Vec<IpAddr>> {
            *self.asked.lock().unwrap() += 1;
            match self.answers.lock().unwrap().get(&host).cloned().flatten() {
                Some(a) => Ok(a),
                None => Err(std::io::Error::other("Name or service not known")),
            }
        }
    }

    struct Harness {
        balancer: Arc<Balancer>,
        registry: Registry,
        stop: CancellationToken,
        swaps: watch::Receiver<u64>,
    }

    fn start(
        wanted: watch::Receiver<Wanted>,
        interval: Duration,
        lookup: &Arc<Scripted>,
    ) -> Harness {
        let registry = Registry::new();
        let balancer = Arc::new(Balancer::new(
            "db",
            Algorithm::RoundRobin,
            Arc::new(BalanceMetrics::register(&registry).unwrap()),
        ));
        let stop = CancellationToken::new();
        let zk = crate::zk::ZkMetrics::register(&registry).unwrap();
        let ctx = SourceContext {
            balancer: Arc::clone(&balancer),
            metrics: Arc::new(DiscoveryMetrics::register(&registry).unwrap()),
            task_metrics: crate::supervise::TaskMetrics::register(&registry).unwrap(),
            shutdown: stop.clone(),
            zookeeper: Arc::new(crate::zk::Sessions::new(
                TaskTracker::new(),
                stop.clone(),
                zk,
            )),
        };
        let swaps = balancer.subscribe();
        tokio::spawn(run(wanted, interval, ctx, Arc::clone(lookup)));
        Harness {
            balancer,
            registry,
            stop,
            swaps,
        }
    }

    fn addrs(b: &Balancer) -> Vec<String> {
        b.current()
            .entries()
            .iter()
            .map(|e| e.backend.key())
            .collect()
    }

    /// Lets the resolver task run its round at the current (paused) time.
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn re_resolves_on_the_interval_keeps_the_last_good_answer_and_never_swaps_an_equal_set() {
        let lookup = Arc::new(Scripted::default());
        lookup.set("db.internal", Some(&["10.0.0.2", "10.0.0.1"]));
        let server: BackendAddr = serde_norway::from_str("db.internal:5432").unwrap();
        let (_tx, rx) = watch::channel(Some(servers(&[server])));
        let mut h = start(rx, Duration::from_secs(30), &lookup);
        settle().await;
        assert_eq!(addrs(&h.balancer), ["10.0.0.1:5432", "10.0.0.2:5432"]);
        assert_eq!(
            h.balancer.current().entries()[0].backend.origin,
            Origin::Dns("db.internal".into())
        );
        h.swaps.borrow_and_update();

        // The same answer in another order: resolved again, not swapped again.
        lookup.set("db.internal", Some(&["10.0.0.1", "10.0.0.2"]));
        tokio::time::sleep(Duration::from_secs(30)).await;
        settle().await;
        assert_eq!(lookup.asked(), 2);
        assert!(!h.swaps.has_changed().unwrap(), "an equal set was swapped");

        // Failures keep the last good answer and are counted each time, by reason.
        lookup.set("db.internal", None);
        tokio::time::sleep(Duration::from_secs(30)).await;
        settle().await;
        lookup.set("db.internal", Some(&[]));
        tokio::time::sleep(Duration::from_secs(30)).await;
        settle().await;
        assert_eq!(lookup.asked(), 4);
        assert_eq!(addrs(&h.balancer), ["10.0.0.1:5432", "10.0.0.2:5432"]);
        assert!(!h.swaps.has_changed().unwrap());
        let text = h.registry.render();
        for reason in ["error", "empty"] {
            let series = format!(
                "sinew_discovery_dns_failures_total{{reason=\"{reason}\",service=\"db\"}} 1"
            );
            assert!(text.contains(&series), "{series} missing from\n{text}");
        }

        // Nothing is asked before the interval is up; a new answer is taken at the next tick.
        lookup.set("db.internal", Some(&["10.0.0.3"]));
        tokio::time::sleep(Duration::from_secs(29)).await;
        settle().await;
        assert_eq!(lookup.asked(), 4);
        tokio::time::sleep(Duration::from_secs(1)).await;
        settle().await;
        assert_eq!(addrs(&h.balancer), ["10.0.0.3:5432"]);
        h.stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_list_is_resolved_at_once_and_a_name_that_never_resolved_keeps_quiet() {
        let lookup = Arc::new(Scripted::default());
        let (tx, rx) = watch::channel(None);
        let h = start(rx, Duration::from_secs(30), &lookup);
        settle().await;
        assert_eq!(
            lookup.asked(),
            0,
            "nothing to resolve before the source reads"
        );
        let named =
            |host: &str| Backend::new(host, 80, 1, Origin::Zookeeper(format!("{host}_0001")));
        tx.send_replace(Some(vec![named("nowhere")]));
        settle().await;
        assert_eq!(
            h.balancer.view().last_update_unix,
            None,
            "reported while unresolved"
        );
        lookup.set("web", Some(&["127.0.0.1"]));
        tx.send_replace(Some(vec![named("nowhere"), named("web")]));
        settle().await;
        assert_eq!(addrs(&h.balancer), ["127.0.0.1:80"]);
        assert_eq!(
            h.balancer.current().entries()[0].backend.origin,
            Origin::Zookeeper("web_0001".into()),
            "the znode stays the origin"
        );
        tx.send_replace(Some(vec![]));
        settle().await;
        assert!(
            addrs(&h.balancer).is_empty(),
            "no znodes is a real empty set"
        );
        h.stop.cancel();
    }
}
