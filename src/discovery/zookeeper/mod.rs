//! ZooKeeper discovery: the children of a path are the backends (Nerve or ServerSet znodes).
//!
//! The watcher keeps what it decoded by name and version ([`children`]) and learns of changes from one
//! persistent recursive watch on the path (ZooKeeper 3.6+; each event names the child, so a change
//! costs at most one read), or from one-shot watches on the listing and on each child (`watch:
//! oneshot`, and the fallback on older servers). When an event arrives it waits for the coalescing
//! window (`coalesce`, 100 ms by default) so that a burst becomes one re-read and one swap, then reads
//! only what changed. After a reconnection it lists again (checking every child's version where
//! events may have been lost); on a new session it checks every known child's version and reads only
//! those that changed. Both wait a random part of [`RESYNC_SPREAD`] first, so a fleet reconnecting to
//! a restarted ensemble does not re-read in the same instant. A path that does not exist yet is waited
//! for; a malformed child is skipped with one warning per node version. Trouble talking to ZooKeeper
//! never reaches the balancer: the last set keeps serving, and failed reads are retried with jittered
//! exponential backoff.

mod children;
pub mod decode;
mod order;
pub mod server_options;

use super::{Sink, SourceContext, ZkDiscoveryMetrics};
use crate::config::ZookeeperDiscovery;
use crate::supervise::Busy;
use crate::zk::{Backoff, Conn, Sessions};
use children::{Children, Dirty, PathContents, Requests};
use prometheus::IntGauge;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use zookeeper_client as zk;

/// After a reconnection of the same session, each watcher re-reads after a random delay up to this.
pub const RESYNC_SPREAD: Duration = Duration::from_secs(2);
/// First retry delay after a failed read on a session that still looks usable; doubles up to
/// [`READ_RETRY_MAX`], jittered.
const READ_RETRY_MIN: Duration = Duration::from_millis(500);
/// Longest retry delay after failed reads.
const READ_RETRY_MAX: Duration = Duration::from_secs(15);

/// Watches `config.path` until shutdown.
///
/// Each read, from a change to the swap, is a unit of work marked on `busy` for the watchdog: it should
/// end within three session timeouts. Waiting for a session or for the next change is not work.
///
/// Each set read goes to `sink`: the balancer, or the resolver when the znodes' host names are to be
/// resolved.
pub async fn run(
    config: ZookeeperDiscovery,
    ctx: SourceContext,
    sink: Sink,
    sessions: Arc<Sessions>,
    busy: Busy,
) {
    let mut watcher = Watcher::new(config, ctx, sink, &sessions);
    while watcher.step(&busy).await.is_ok() {}
}

/// The agent is shutting down (or its sessions are gone): the watcher stops.
struct Stopped;

/// One service's watch of its path: the session it reads on, what it knows, and what it must read next.
struct Watcher {
    config: ZookeeperDiscovery,
    ctx: SourceContext,
    /// Where each set read goes.
    sink: Sink,
    service: String,
    /// 1 while the last read succeeded and the session is connected.
    connected: IntGauge,
    /// When discovery last reported (seconds since the Unix epoch).
    last_update: IntGauge,
    metrics: ZkDiscoveryMetrics,
    conn: watch::Receiver<Conn>,
    children: Children,
    dirty: Dirty,
    /// The session the armed watches belong to; a different one means every watch is gone.
    session: Option<zk::SessionId>,
    /// The connection epoch of the last successful read; a different one means a reconnection
    /// since, which may have lost events and the recursive watch, however the change was noticed.
    read_epoch: Option<u64>,
    /// Propagation is recorded for changes, not for the first read of what already existed.
    loaded: bool,
    /// Delays between failed reads.
    retry: Backoff,
    /// Set by a reconnection or a new session: the re-read that follows a reconnection of the same
    /// session waits a random moment of the spread, so that a fleet does not re-read at once. The
    /// ZooKeeper client retries a lost connection with little jitter, so the fleet comes back nearly
    /// together; a new session was already spread by the jittered reconnect backoff, and re-reads at
    /// once.
    resync: bool,
}

impl Watcher {
    /// A watcher that has read nothing yet, on the session of `config.hosts`.
    fn new(
        config: ZookeeperDiscovery,
        ctx: SourceContext,
        sink: Sink,
        sessions: &Sessions,
    ) -> Self {
        let service = ctx.balancer.service().to_string();
        let skipped = ctx.metrics.zk_skipped(&service);
        let ignored = ctx.metrics.zk_ignored(&service);
        Self {
            connected: ctx.metrics.zk_service_connected(&service),
            last_update: ctx.metrics.zk_last_update(&service),
            metrics: ctx.metrics.zk_discovery(&service),
            conn: sessions.get(&config.hosts, config.session_timeout),
            children: Children::new(&config, &service, skipped, ignored),
            dirty: Dirty::everything(),
            session: None,
            read_epoch: None,
            loaded: false,
            retry: Backoff::new(READ_RETRY_MIN, READ_RETRY_MAX),
            resync: false,
            config,
            ctx,
            sink,
            service,
        }
    }

    /// One turn: wait for a session, or spread a resync, or read and then wait for the next change.
    async fn step(&mut self, busy: &Busy) -> Result<(), Stopped> {
        let working = busy.start(self.config.session_timeout * 3);
        crate::fault::point("zookeeper_discovery", &self.service).await;
        let Conn { client, epoch, .. } = self.conn.borrow_and_update().clone();
        let Some(client) = client else {
            drop(working);
            return self.wait_for_session().await;
        };
        if std::mem::take(&mut self.resync)
            && self.loaded
            && self.session == Some(client.session_id())
        {
            drop(working);
            return self.spread_resync().await;
        }
        // Taken before the read, so a disconnect during it still reaches the gauge.
        let mut state = client.state_watcher();
        match self.read(&client, epoch).await {
            Ok(found) => {
                self.apply(found, &client, epoch);
                drop(working);
                self.wait_for_change(&mut state).await
            }
            Err(e) => {
                drop(working);
                self.wait_to_retry(&e).await
            }
        }
    }

    /// No usable session: waits for the session manager to bring one.
    async fn wait_for_session(&mut self) -> Result<(), Stopped> {
        self.connected.set(0);
        tokio::select! {
            _ = self.ctx.shutdown.cancelled() => return Err(Stopped),
            r = self.conn.changed() => r.map_err(|_| Stopped)?,
        }
        self.resync = true;
        Ok(())
    }

    /// A reconnection of the same session: waits a random part of [`RESYNC_SPREAD`] before re-reading.
    async fn spread_resync(&mut self) -> Result<(), Stopped> {
        let spread = RESYNC_SPREAD.mul_f64(fastrand::f64());
        tokio::select! {
            _ = self.ctx.shutdown.cancelled() => Err(Stopped),
            _ = tokio::time::sleep(spread) => Ok(()),
        }
    }

    /// Reads what changed: everything on a new session, the listing after a reconnection.
    async fn read(&mut self, client: &zk::Client, epoch: u64) -> Result<PathContents, zk::Error> {
        if self.session != Some(client.session_id()) {
            self.dirty = Dirty::everything();
        }
        if self.read_epoch != Some(epoch) {
            self.dirty.list = true;
        }
        let found = self.children.refresh(client, &mut self.dirty).await;
        count(&self.metrics, &self.children.take_requests());
        found
    }

    /// Hands a successful read to the balancer and the metrics.
    fn apply(&mut self, found: PathContents, client: &zk::Client, epoch: u64) {
        self.session = Some(client.session_id());
        self.read_epoch = Some(epoch);
        match found {
            PathContents::Backends(backends, written) => {
                self.retry = Backoff::new(READ_RETRY_MIN, READ_RETRY_MAX);
                self.ctx
                    .metrics
                    .zk_znodes(&self.service)
                    .set(backends.len() as i64);
                if self.sink.update(backends) && self.loaded {
                    let now = unix_millis();
                    for mtime in written {
                        // Clocks of different hosts may disagree: a write "in the future" counts as 0.
                        self.metrics
                            .propagation
                            .observe(now.saturating_sub(mtime).max(0) as f64 / 1000.0);
                    }
                }
            }
            PathContents::Missing => {
                tracing::warn!(service = %self.service, zk_path = %self.config.path, "path does not exist; waiting for it");
                self.sink.update(Vec::new());
            }
        }
        self.loaded = true;
        self.connected.set(1);
        self.last_update.set(unix_millis() / 1000);
    }

    /// A read failed: the last set keeps serving; retries after a backoff, or at once on a new session.
    async fn wait_to_retry(&mut self, error: &zk::Error) -> Result<(), Stopped> {
        self.connected.set(0);
        self.ctx.metrics.error(&self.service, "zookeeper");
        tracing::warn!(service = %self.service, zk_path = %self.config.path, error = %error, "cannot read from ZooKeeper; last known backends keep serving");
        tokio::select! {
            _ = self.ctx.shutdown.cancelled() => return Err(Stopped),
            r = self.conn.changed() => {
                r.map_err(|_| Stopped)?;
                self.resync = true;
            }
            _ = tokio::time::sleep(self.retry.next_delay(fastrand::f64())) => {}
        }
        Ok(())
    }

    /// Waits until there is something to read: a reconnection or new session (list again; a new
    /// session checks every child), or fired watches, gathered over the coalescing window. A
    /// disconnect only shows in the gauge: the set stays, and the session manager announces the
    /// reconnection.
    async fn wait_for_change(&mut self, state: &mut zk::StateWatcher) -> Result<(), Stopped> {
        loop {
            tokio::select! {
                _ = self.ctx.shutdown.cancelled() => return Err(Stopped),
                r = self.conn.changed() => {
                    r.map_err(|_| Stopped)?;
                    self.resync = true;
                    return Ok(());
                }
                fired = self.children.fired() => {
                    self.dirty.absorb(fired);
                    if self.dirty.any() {
                        return self.coalesce().await;
                    }
                }
                s = state.changed() => self.connected.set(i64::from(matches!(
                    s,
                    zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly
                ))),
            }
        }
    }

    /// Gathers what else fires within the coalescing window into the same re-read.
    async fn coalesce(&mut self) -> Result<(), Stopped> {
        let window = tokio::time::sleep(self.config.coalesce);
        tokio::pin!(window);
        loop {
            tokio::select! {
                _ = self.ctx.shutdown.cancelled() => return Err(Stopped),
                _ = &mut window => return Ok(()),
                more = self.children.fired() => self.dirty.absorb(more),
            }
        }
    }
}

/// Adds one re-read's requests to the counters.
fn count(zm: &ZkDiscoveryMetrics, requests: &Requests) {
    let total = requests.total();
    if total == 0 {
        return;
    }
    for (counter, n) in zm.requests.iter().zip(requests.by_kind()) {
        counter.inc_by(n);
    }
    zm.requests_per_read.observe(total as f64);
}

/// Milliseconds since the Unix epoch (ZooKeeper's `mtime` unit).
fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
