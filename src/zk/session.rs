//! ZooKeeper sessions: one per distinct ensemble, shared by every service that watches it.
//!
//! A manager task per ensemble connects (with jittered exponential backoff while ZooKeeper is away,
//! and before replacing a session that ended), publishes the connected client with an epoch that grows
//! on every (re)connection, so watchers re-list and re-arm after each one (events during a disconnect
//! may be lost), and builds a new client when the session expires. Watchers never see an error as "no
//! backends": the last set stays.
//!
//! A session outlives a short outage, and its client then reconnects on its own schedule, whose delays
//! double to several seconds. So that discovery does not wait for it, once the client has been
//! disconnected for [`STAND_IN_AFTER`] the manager tries (with the same jittered backoff) to open a
//! second, stand-in session; the first one that opens (a server serves again) is what watchers read
//! through until the session's own client is back. Registration keeps the session itself, so its
//! ephemeral znodes are neither lost nor written again.

use super::ZkMetrics;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zookeeper_client as zk;

/// First reconnect delay; doubles up to [`MAX_BACKOFF`], with jitter.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest reconnect delay (before jitter, so 0.35 to 1.05 s): an ensemble that is back is found within
/// about a second, however long it was away. A failed attempt costs the ensemble a refused or dropped
/// TCP connection, so a fleet retrying about once a second costs it little; the jitter spreads the
/// fleet's returns over 0.7 s.
const MAX_BACKOFF: Duration = Duration::from_millis(700);

/// How long the session's client may stay disconnected before a stand-in session is tried. Its own
/// attempts in that time are about 0, 0.15, 0.4 and 0.85 s after the loss; its next ones come 1.6 s and
/// then 3.2 s and more apart.
const STAND_IN_AFTER: Duration = Duration::from_secs(1);

/// The clients of an ensemble's session as watchers and registrations see them.
#[derive(Clone, Default)]
pub struct Conn {
    /// The client to read and watch through: the session's own, or a stand-in session's while the
    /// session's client is still reconnecting to an ensemble that serves again.
    pub client: Option<zk::Client>,
    /// The client of the session itself, which owns the registered (ephemeral) znodes.
    pub session: Option<zk::Client>,
    /// Grows with every (re)connection: watchers re-list when it changes.
    pub epoch: u64,
}

impl Conn {
    /// The session's client, read through as well.
    fn of(client: &zk::Client, epoch: u64) -> Self {
        Self {
            client: Some(client.clone()),
            session: Some(client.clone()),
            epoch,
        }
    }
}

/// The sessions of an agent, by ensemble.
pub struct Sessions {
    ensembles: Mutex<HashMap<String, watch::Receiver<Conn>>>,
    tasks: TaskTracker,
    stop: CancellationToken,
    metrics: ZkMetrics,
}

impl Sessions {
    /// An empty registry; manager tasks run on `tasks` until `stop`.
    pub fn new(tasks: TaskTracker, stop: CancellationToken, metrics: ZkMetrics) -> Self {
        Self {
            ensembles: Mutex::new(HashMap::new()),
            tasks,
            stop,
            metrics,
        }
    }

    /// The session of `hosts` (the same ensemble in any order shares one), started on first use.
    pub fn get(&self, hosts: &[String], session_timeout: Duration) -> watch::Receiver<Conn> {
        let cluster = cluster(hosts);
        let mut map = self.ensembles.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = map.get(&cluster) {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(Conn::default());
        self.tasks.spawn(manage(
            cluster.clone(),
            session_timeout,
            tx,
            self.stop.clone(),
            self.metrics.clone(),
        ));
        map.insert(cluster, rx.clone());
        rx
    }
}

/// The connect string of an ensemble: members sorted, so equal ensembles compare equal. A chroot
/// suffix (`/path`) on a member is kept at the end.
pub fn cluster(hosts: &[String]) -> String {
    let mut chroot = "";
    let mut members: Vec<&str> = hosts
        .iter()
        .map(|h| match h.find('/') {
            Some(i) => {
                chroot = &h[i..];
                &h[..i]
            }
            None => h.as_str(),
        })
        .collect();
    members.sort_unstable();
    members.dedup();
    format!("{}{chroot}", members.join(","))
}

/// Retry delays: exponential from a minimum to a maximum, each jittered to 50-150 % so that the
/// agents of a fleet do not retry against a restarted ensemble in lockstep.
pub struct Backoff {
    base: Duration,
    max: Duration,
}

impl Default for Backoff {
    /// Reconnect delays: [`MIN_BACKOFF`] to [`MAX_BACKOFF`].
    fn default() -> Self {
        Self::new(MIN_BACKOFF, MAX_BACKOFF)
    }
}

impl Backoff {
    /// Delays from `min`, doubling up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self { base: min, max }
    }

    /// The next delay, `jitter` in `[0, 1)` placing it within 50-150 % of the current base.
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let delay = self.base.mul_f64(0.5 + jitter.clamp(0.0, 1.0));
        self.base = (self.base * 2).min(self.max);
        delay
    }
}

/// A client of a new session to `cluster`; fails at the first attempt that fails.
async fn open(cluster: &str, session_timeout: Duration) -> Result<zk::Client, zk::Error> {
    zk::Client::connector()
        .with_session_timeout(session_timeout)
        .with_fail_eagerly()
        .connect(cluster)
        .await
}

/// A stand-in session, opened once the session's client has been disconnected for
/// [`STAND_IN_AFTER`]: tried with [`Backoff`] until an attempt succeeds.
async fn open_stand_in(cluster: &str, session_timeout: Duration) -> zk::Client {
    tokio::time::sleep(STAND_IN_AFTER).await;
    let mut backoff = Backoff::default();
    loop {
        match open(cluster, session_timeout).await {
            Ok(client) => return client,
            Err(e) => tracing::debug!(ensemble = %cluster, error = %e, "no stand-in session yet"),
        }
        tokio::time::sleep(backoff.next_delay(fastrand::f64())).await;
    }
}

async fn manage(
    cluster: String,
    session_timeout: Duration,
    tx: watch::Sender<Conn>,
    stop: CancellationToken,
    metrics: ZkMetrics,
) {
    let connected = metrics.connected(&cluster);
    let mut epoch = 0;
    let mut backoff = Backoff::default();
    let mut failures = 0u64;
    // A stand-in session that was open when the session ended becomes the next session.
    let mut promoted: Option<zk::Client> = None;
    loop {
        let client = match promoted.take() {
            Some(client) => client,
            None => {
                if epoch > 0 {
                    // A session just ended: every agent of the fleet may be replacing its own now, so
                    // wait a jittered delay first, longer when sessions keep ending soon after they start.
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff.next_delay(fastrand::f64())) => {}
                    }
                }
                let opened = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = open(&cluster, session_timeout) => r,
                };
                match opened {
                    Ok(client) => client,
                    Err(e) => {
                        failures += 1;
                        metrics.event(&cluster, "connect_failed");
                        // One line when trouble starts, then one per 10 attempts.
                        if failures == 1 || failures.is_multiple_of(10) {
                            tracing::warn!(ensemble = %cluster, error = %e, attempts = failures, "cannot connect to ZooKeeper; last known backends keep serving");
                        }
                        let delay = backoff.next_delay(fastrand::f64());
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(delay) => continue,
                        }
                    }
                }
            }
        };
        failures = 0;
        let started = tokio::time::Instant::now();
        epoch += 1;
        connected.set(1);
        metrics.event(&cluster, "connected");
        tracing::info!(ensemble = %cluster, session = ?client.session_id(), "ZooKeeper session established");
        let mut state = client.state_watcher();
        tx.send_replace(Conn::of(&client, epoch));
        let mut disconnected = false;
        let mut stand_in: Option<zk::Client> = None;
        loop {
            let s = tokio::select! {
                _ = stop.cancelled() => return,
                s = state.changed() => s,
                opened = open_stand_in(&cluster, session_timeout), if disconnected && stand_in.is_none() => {
                    epoch += 1;
                    metrics.event(&cluster, "stand_in");
                    tracing::info!(ensemble = %cluster, stand_in = ?opened.session_id(), "ZooKeeper serves again before the session's client reconnected; reading through a stand-in session");
                    tx.send_replace(Conn {
                        client: Some(opened.clone()),
                        session: Some(client.clone()),
                        epoch,
                    });
                    stand_in = Some(opened);
                    continue;
                }
            };
            match s {
                zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
                    disconnected = false;
                    epoch += 1;
                    connected.set(1);
                    metrics.event(&cluster, "reconnected");
                    tracing::info!(ensemble = %cluster, "ZooKeeper reconnected; re-reading watched paths");
                    // Watchers move back to the session and drop the stand-in, which then closes.
                    stand_in = None;
                    tx.send_replace(Conn::of(&client, epoch));
                }
                zk::SessionState::Disconnected => {
                    disconnected = true;
                    connected.set(0);
                    metrics.event(&cluster, "disconnected");
                    tracing::warn!(ensemble = %cluster, "ZooKeeper disconnected; last known backends keep serving");
                }
                terminal => {
                    if started.elapsed() > MAX_BACKOFF {
                        backoff = Backoff::default();
                    }
                    connected.set(0);
                    metrics.event(&cluster, "expired");
                    promoted = stand_in.take();
                    tracing::warn!(ensemble = %cluster, state = ?terminal, stand_in = promoted.is_some(), "ZooKeeper session ended; starting a new one");
                    tx.send_replace(Conn {
                        client: None,
                        session: None,
                        epoch,
                    });
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_with_jitter() {
        let mut b = Backoff::default();
        let bases: Vec<Duration> = (0..10).map(|_| b.next_delay(0.5)).collect();
        assert_eq!(bases[0], MIN_BACKOFF);
        assert_eq!(bases[1], MIN_BACKOFF * 2);
        assert_eq!(bases[9], MAX_BACKOFF);
        assert!(bases.windows(2).all(|w| w[0] <= w[1]));
        let mut b = Backoff::default();
        assert_eq!(b.next_delay(0.0), MIN_BACKOFF / 2);
        let mut b = Backoff::default();
        assert_eq!(b.next_delay(1.0), MIN_BACKOFF.mul_f64(1.5));
    }

    /// When an agent retrying with [`Backoff::default`] and jitters from `jitter` first tries again after
    /// an ensemble that went away at 0 is back at `back`.
    async fn first_try_after(back: Duration, mut jitter: impl FnMut() -> f64) -> Duration {
        let start = tokio::time::Instant::now();
        let mut backoff = Backoff::default();
        loop {
            let now = start.elapsed();
            if now >= back {
                return now;
            }
            tokio::time::sleep(backoff.next_delay(jitter())).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_ensemble_that_is_back_is_found_within_about_a_second() {
        for back in [0.3, 1.0, 5.0, 5.5, 30.0, 600.0].map(Duration::from_secs_f64) {
            for jitter in [0.0, 0.5, 0.999] {
                let found = first_try_after(back, || jitter).await;
                assert!(
                    found - back <= Duration::from_millis(1050),
                    "back at {back:?}, jitter {jitter}: found at {found:?}"
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_fleet_does_not_return_in_lockstep() {
        let back = Duration::from_secs(5);
        let mut rng = fastrand::Rng::with_seed(7);
        let mut found = Vec::new();
        for _ in 0..200 {
            found.push(first_try_after(back, || rng.f64()).await);
        }
        let (first, last) = (found.iter().min().unwrap(), found.iter().max().unwrap());
        assert!(*last - back <= Duration::from_millis(1050), "{last:?}");
        assert!(
            *last - *first >= Duration::from_millis(500),
            "spread {first:?}..{last:?}"
        );
        // No 100 ms takes more than 15 % of the fleet (in lockstep, one would take all of it).
        let mut per_100ms = std::collections::HashMap::new();
        for f in &found {
            *per_100ms.entry(f.as_millis() / 100).or_insert(0) += 1;
        }
        assert!(per_100ms.values().all(|n| *n <= 30), "{per_100ms:?}");
    }

    // Real time, not a paused clock: the attempts are real connections, whose failures a paused
    // clock would race. The assertion bounds a count, so a slow machine only makes it easier.
    #[tokio::test]
    async fn an_unreachable_ensemble_is_retried_with_backoff_not_in_a_loop() {
        // Nothing listens on port 1 of loopback: every attempt fails at once.
        let registry = crate::metrics::Registry::new();
        let metrics = ZkMetrics::register(&registry).unwrap();
        let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
        let sessions = Sessions::new(tasks.clone(), stop.clone(), metrics);
        let conn = sessions.get(&["127.0.0.1:1".into()], Duration::from_secs(10));
        let series = r#"sinew_discovery_zookeeper_session_events_total{ensemble="127.0.0.1:1",event="connect_failed"} "#;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let attempts: u64 = registry
            .render()
            .lines()
            .find_map(|l| l.strip_prefix(series))
            .map_or(0, |v| v.trim().parse().unwrap());
        // Delays of 0.1, 0.2, 0.4, then 0.7 s (each at least half that): at most 12 attempts in 3 s,
        // where a retry loop without backoff would make thousands.
        assert!((1..=12).contains(&attempts), "{attempts} attempts in 3 s");
        assert!(conn.borrow().client.is_none());
        stop.cancel();
        tasks.close();
        tasks.wait().await;
    }

    #[test]
    fn equal_ensembles_share_a_connect_string() {
        let a = cluster(&["zk2:2181".into(), "zk1:2181".into()]);
        let b = cluster(&["zk1:2181".into(), "zk2:2181".into()]);
        assert_eq!(a, b);
        assert_eq!(
            cluster(&["zk2:2181".into(), "zk1:2181/smartstack".into()]),
            "zk1:2181,zk2:2181/smartstack"
        );
    }
}
