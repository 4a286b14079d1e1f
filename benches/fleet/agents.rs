//! N simulated agents in this process: each is sinew's real ZooKeeper discovery (its own session,
//! its own balancer) watching the big service, plus an observer that notes when its session comes
//! back and whether its balancer ever held an empty set after the first load.

use prometheus::core::Metric;
use sinew::balance::BalanceMetrics;
use sinew::balance::Balancer;
use sinew::config::{Algorithm, ZookeeperDiscovery};
use sinew::discovery::zookeeper;
use sinew::discovery::{DiscoveryMetrics, SourceContext};
use sinew::metrics::Registry;
use sinew::supervise::TaskMetrics;
use sinew::zk::{Sessions, ZkMetrics};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The service every agent watches.
pub const SERVICE: &str = "big";

/// What one agent's observer saw.
#[derive(Default)]
struct Seen {
    /// Times its session became usable again (a reconnection or a new session).
    sessions: Mutex<Vec<Instant>>,
    /// The set was empty at a swap after it had been loaded.
    ever_empty: AtomicBool,
}

/// The simulated agents.
pub struct Fleet {
    /// Discovery's families, shared by all agents: counters and histograms are fleet totals.
    pub discovery: Arc<DiscoveryMetrics>,
    /// Session families, shared the same way.
    zk: ZkMetrics,
    /// Task panic and stall counters, shared the same way.
    task_metrics: TaskMetrics,
    /// Balancing's families, shared the same way.
    balance: Arc<BalanceMetrics>,
    balancers: Vec<Arc<Balancer>>,
    seen: Vec<Arc<Seen>>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Fleet {
    /// Starts `n` agents on `config`, `batch` at a time, each batch once the previous one has loaded
    /// `want` backends (so that start-up does not measure a herd of first reads).
    pub async fn start(n: usize, batch: usize, config: &ZookeeperDiscovery, want: usize) -> Self {
        let registry = Registry::new();
        let discovery = Arc::new(DiscoveryMetrics::register(&registry).expect("metrics"));
        let zk = ZkMetrics::register(&registry).expect("metrics");
        let task_metrics = TaskMetrics::register(&registry).expect("metrics");
        let balance = Arc::new(BalanceMetrics::register(&registry).expect("metrics"));
        let mut fleet = Self {
            discovery,
            zk,
            task_metrics,
            balance,
            balancers: Vec::with_capacity(n),
            seen: Vec::with_capacity(n),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        };
        while fleet.balancers.len() < n {
            let first = fleet.balancers.len();
            for _ in first..(first + batch).min(n) {
                fleet.spawn(config);
            }
            let deadline = Instant::now() + Duration::from_secs(600);
            while fleet.balancers[first..]
                .iter()
                .any(|b| b.current().entries().len() < want)
            {
                assert!(
                    Instant::now() < deadline,
                    "agents did not load within 10 min"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        fleet
    }

    fn spawn(&mut self, config: &ZookeeperDiscovery) {
        let sessions = Arc::new(Sessions::new(
            self.tasks.clone(),
            self.stop.clone(),
            self.zk.clone(),
        ));
        let balancer = Arc::new(Balancer::new(
            SERVICE,
            Algorithm::RoundRobin,
            Arc::clone(&self.balance),
        ));
        let seen = Arc::new(Seen::default());
        let ctx = SourceContext {
            balancer: Arc::clone(&balancer),
            metrics: Arc::clone(&self.discovery),
            task_metrics: self.task_metrics.clone(),
            shutdown: self.stop.clone(),
            zookeeper: Arc::clone(&sessions),
        };
        // The observer shares the agent's session: the same ensemble is one session per agent.
        let mut conn = sessions.get(&config.hosts, config.session_timeout);
        let (s, stop) = (Arc::clone(&seen), self.stop.clone());
        self.tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    r = conn.changed() => if r.is_err() { return },
                }
                if conn.borrow_and_update().client.is_some() {
                    s.sessions.lock().unwrap().push(Instant::now());
                }
            }
        });
        let mut swaps = balancer.subscribe();
        let (b, s, stop) = (Arc::clone(&balancer), Arc::clone(&seen), self.stop.clone());
        self.tasks.spawn(async move {
            let mut loaded = false;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    r = swaps.changed() => if r.is_err() { return },
                }
                let empty = b.current().entries().is_empty();
                if loaded && empty {
                    s.ever_empty.store(true, Ordering::Relaxed);
                }
                loaded |= !empty;
            }
        });
        self.tasks.spawn(zookeeper::run(
            config.clone(),
            ctx,
            sinew::discovery::Sink::Balancer(Arc::clone(&balancer)),
            sessions,
            sinew::supervise::Busy::default(),
        ));
        self.balancers.push(balancer);
        self.seen.push(seen);
    }

    /// Agents whose set was ever empty after it was first loaded.
    pub fn ever_empty(&self) -> usize {
        self.seen
            .iter()
            .filter(|s| s.ever_empty.load(Ordering::Relaxed))
            .count()
    }

    /// The number of agents.
    pub fn len(&self) -> usize {
        self.balancers.len()
    }

    /// Agents whose set holds a backend on `host` now.
    pub fn holding(&self, host: &str) -> usize {
        self.balancers
            .iter()
            .filter(|b| b.current().entries().iter().any(|e| e.backend.host == host))
            .count()
    }

    /// The agents that do not hold `host` (at most five): when their balancer was last updated and
    /// when their session came back, in seconds before now.
    pub fn laggards(&self, host: &str) -> String {
        let now = std::time::SystemTime::now();
        self.balancers
            .iter()
            .zip(&self.seen)
            .enumerate()
            .filter(|(_, (b, _))| !b.current().entries().iter().any(|e| e.backend.host == host))
            .take(5)
            .map(|(i, (b, s))| {
                let updated = b.view().last_update_unix.map(|t| {
                    let t = std::time::UNIX_EPOCH + Duration::from_secs_f64(t.max(0.0));
                    now.duration_since(t).unwrap_or_default().as_secs()
                });
                let back: Vec<u64> = s
                    .sessions
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|t| t.elapsed().as_secs())
                    .collect();
                format!("agent {i}: updated {updated:?} s ago, sessions back {back:?} s ago")
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// For each agent, the first time its session came back after `since` (none if it did not).
    pub fn sessions_back(&self, since: Instant) -> Vec<Option<Instant>> {
        self.seen
            .iter()
            .map(|s| {
                s.sessions
                    .lock()
                    .unwrap()
                    .iter()
                    .copied()
                    .find(|t| *t >= since)
            })
            .collect()
    }

    /// Fleet total of discovery's ZooKeeper requests, by kind (list, get_data, exists).
    pub fn requests(&self) -> [u64; 5] {
        self.discovery
            .zk_discovery(SERVICE)
            .requests
            .map(|c| c.get())
    }

    /// The write-to-swap histogram now: cumulative counts by upper bound.
    pub fn propagation(&self) -> Vec<(f64, u64)> {
        let m = self.discovery.zk_discovery(SERVICE).propagation.metric();
        m.get_histogram()
            .get_bucket()
            .iter()
            .map(|b| (b.get_upper_bound(), b.get_cumulative_count()))
            .chain(std::iter::once((
                f64::INFINITY,
                m.get_histogram().get_sample_count(),
            )))
            .collect()
    }

    /// Stops every agent.
    pub async fn stop(self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}
