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

use super::SourceContext;
use crate::config::ZookeeperDiscovery;
use crate::metrics::ZkDiscoveryMetrics;
use crate::supervise::Busy;
use crate::zk::{Backoff, Conn, Sessions};
use children::{Children, Dirty, Found};
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
pub async fn run(
    config: ZookeeperDiscovery,
    ctx: SourceContext,
    sessions: Arc<Sessions>,
    busy: Busy,
) {
    let service = ctx.balancer.service().to_string();
    let connected = ctx.metrics.zk_service_connected(&service);
    let last_update = ctx.metrics.zk_last_update(&service);
    let skipped = ctx.metrics.zk_skipped(&service);
    let zm = ctx.metrics.zk_discovery(&service);
    let mut conn = sessions.get(&config.hosts, config.session_timeout);
    let mut children = Children::new(config.watch, &config.path);
    let mut dirty = Dirty::everything();
    // The session the armed watches belong to; a different one means every watch is gone.
    let mut session: Option<zk::SessionId> = None;
    // The connection epoch of the last successful read; a different one means a reconnection
    // since, which may have lost events and the recursive watch, however the change was noticed.
    let mut read_epoch: Option<u64> = None;
    // Propagation is recorded for changes, not for the first read of what already existed.
    let mut loaded = false;
    let mut retry = Backoff::new(READ_RETRY_MIN, READ_RETRY_MAX);
    // Set by a reconnection or a new session: the re-read that follows a reconnection of the same
    // session waits a random moment of the spread, so that a fleet does not re-read at once. The
    // ZooKeeper client retries a lost connection with little jitter, so the fleet comes back nearly
    // together; a new session was already spread by the jittered reconnect backoff, and re-reads at once.
    let mut resync = false;
    loop {
        let working = busy.start(config.session_timeout * 3);
        crate::fault::point("zookeeper_discovery", &service).await;
        let Conn { client, epoch } = conn.borrow_and_update().clone();
        let Some(client) = client else {
            drop(working);
            connected.set(0);
            if !wait_conn(&mut conn, &ctx).await {
                return;
            }
            resync = true;
            continue;
        };
        if std::mem::take(&mut resync) && loaded && session == Some(client.session_id()) {
            drop(working);
            let spread = RESYNC_SPREAD.mul_f64(fastrand::f64());
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                _ = tokio::time::sleep(spread) => {}
            }
            continue;
        }
        if session != Some(client.session_id()) {
            dirty = Dirty::everything();
        }
        if read_epoch != Some(epoch) {
            dirty.list = true;
        }
        // Taken before the read, so a disconnect during it still reaches the gauge.
        let mut state = client.state_watcher();
        let mut requests = [0; 5];
        let found = children
            .refresh(
                &client,
                &config,
                &service,
                &mut dirty,
                &mut requests,
                &skipped,
            )
            .await;
        count(&zm, &requests);
        match found {
            Ok(Found::Backends(backends, written)) => {
                session = Some(client.session_id());
                read_epoch = Some(epoch);
                retry = Backoff::new(READ_RETRY_MIN, READ_RETRY_MAX);
                ctx.metrics.zk_znodes(&service).set(backends.len() as i64);
                if ctx.balancer.update(backends) && loaded {
                    let now = unix_millis();
                    for mtime in written {
                        // Clocks of different hosts may disagree: a write "in the future" counts as 0.
                        zm.propagation
                            .observe(now.saturating_sub(mtime).max(0) as f64 / 1000.0);
                    }
                }
                loaded = true;
                connected.set(1);
                last_update.set(unix_millis() / 1000);
            }
            Ok(Found::Missing) => {
                session = Some(client.session_id());
                read_epoch = Some(epoch);
                tracing::warn!(service = %service, zk_path = %config.path, "path does not exist; waiting for it");
                ctx.balancer.update(Vec::new());
                loaded = true;
                connected.set(1);
                last_update.set(unix_millis() / 1000);
            }
            Err(e) => {
                drop(working);
                connected.set(0);
                ctx.metrics.discovery_error(&service, "zookeeper");
                tracing::warn!(service = %service, zk_path = %config.path, error = %e, "cannot read from ZooKeeper; last known backends keep serving");
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return,
                    r = conn.changed() => if r.is_err() { return } else { resync = true },
                    _ = tokio::time::sleep(retry.next_delay(fastrand::f64())) => {}
                }
                continue;
            }
        }
        drop(working);
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                // A reconnection or a new session: list again (a new session checks every child).
                r = conn.changed() => {
                    if r.is_err() {
                        return;
                    }
                    resync = true;
                    break;
                }
                fired = children.fired() => {
                    dirty.absorb(fired);
                    if !dirty.any() {
                        continue;
                    }
                    // Gather what else fires within the window into the same re-read.
                    let window = tokio::time::sleep(config.coalesce);
                    tokio::pin!(window);
                    loop {
                        tokio::select! {
                            _ = ctx.shutdown.cancelled() => return,
                            _ = &mut window => break,
                            more = children.fired() => dirty.absorb(more),
                        }
                    }
                    break;
                }
                // A disconnect only shows in the gauge: the set stays, and the session manager
                // announces the reconnection above.
                s = state.changed() => connected.set(i64::from(matches!(
                    s,
                    zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly
                ))),
            }
        }
    }
}

/// Adds one re-read's requests to the counters.
fn count(zm: &ZkDiscoveryMetrics, requests: &children::Requests) {
    let total: u64 = requests.iter().sum();
    if total == 0 {
        return;
    }
    for (counter, n) in zm.requests.iter().zip(requests) {
        counter.inc_by(*n);
    }
    zm.requests_per_read.observe(total as f64);
}

/// Milliseconds since the Unix epoch (ZooKeeper's `mtime` unit).
fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Waits for the session to change; false on shutdown.
async fn wait_conn(conn: &mut watch::Receiver<Conn>, ctx: &SourceContext) -> bool {
    tokio::select! {
        _ = ctx.shutdown.cancelled() => false,
        r = conn.changed() => r.is_ok(),
    }
}
