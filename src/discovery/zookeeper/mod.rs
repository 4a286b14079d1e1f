//! ZooKeeper discovery: the children of a path are the backends (Nerve or ServerSet znodes).
//!
//! The watcher lists the path with a one-shot child watch, reads every child's data with a one-shot
//! data watch (requests are pipelined on the session), and hands the decoded set to the balancer. It
//! re-lists when any of these watches fires (a child added or removed, new data in a child), after a
//! short pause that coalesces a burst of changes into one swap, and whenever the session reconnects
//! or is replaced, since events during a disconnect can be lost. A child deleted between the listing
//! and the read is skipped; a path that does not exist yet is waited for; a malformed child is
//! skipped with one warning per node version. Trouble talking to ZooKeeper never reaches the
//! balancer: the last set keeps serving.

mod decode;
pub mod session;

use super::SourceContext;
use crate::balance::Backend;
use crate::config::ZookeeperDiscovery;
use session::{Conn, Sessions};
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::sync::watch;
use zookeeper_client as zk;

/// Pause after a change event before re-listing, so a burst of changes becomes one swap.
const COALESCE: Duration = Duration::from_millis(100);
/// Pause before retrying a failed read on a session that still looks usable.
const RETRY: Duration = Duration::from_secs(1);

/// A one-shot watch waiting to fire.
type Armed = Pin<Box<dyn Future<Output = zk::WatchedEvent> + Send>>;

/// What one read of the path found.
enum Read {
    /// The backends, and the watches to wait on: the children, and the data of each child.
    Found(Vec<Backend>, Vec<Armed>),
    /// The path does not exist; the watch fires when it is created.
    Missing(Armed),
    /// The path appeared while it was being looked at: read again at once.
    Appeared,
}

/// Watches `config.path` until shutdown.
pub async fn run(config: ZookeeperDiscovery, ctx: SourceContext, sessions: Arc<Sessions>) {
    let service = ctx.balancer.service().to_string();
    let connected = ctx.metrics.zk_service_connected(&service);
    let last_update = ctx.metrics.zk_last_update(&service);
    let mut conn = sessions.get(&config.hosts, config.session_timeout);
    let mut warned: HashSet<(String, i64, i32)> = HashSet::new();
    // The watches of the last read stay registered until the next read has armed its own, so the
    // client never tells the server to drop a watch that is about to be set again.
    let mut armed: Vec<Armed>;
    loop {
        let Conn { client, .. } = conn.borrow_and_update().clone();
        let Some(client) = client else {
            connected.set(0);
            if !wait_conn(&mut conn, &ctx).await {
                return;
            }
            continue;
        };
        // Taken before the read, so a disconnect during it still reaches the gauge.
        let mut state = client.state_watcher();
        armed = match read(&client, &config, &service, &ctx, &mut warned).await {
            Ok(Read::Found(backends, watches)) => {
                ctx.metrics.zk_znodes(&service).set(backends.len() as i64);
                ctx.balancer.update(backends);
                connected.set(1);
                last_update.set(unix_now());
                watches
            }
            Ok(Read::Appeared) => continue,
            Ok(Read::Missing(watch)) => {
                tracing::warn!(service = %service, zk_path = %config.path, "path does not exist; waiting for it");
                ctx.balancer.update(Vec::new());
                connected.set(1);
                last_update.set(unix_now());
                vec![watch]
            }
            Err(e) => {
                connected.set(0);
                ctx.metrics.discovery_error(&service, "zookeeper");
                tracing::warn!(service = %service, zk_path = %config.path, error = %e, "cannot read from ZooKeeper; last known backends keep serving");
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return,
                    r = conn.changed() => if r.is_err() { return },
                    _ = tokio::time::sleep(RETRY) => {}
                }
                continue;
            }
        };
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                // A new or reconnected session: re-list, since events during a disconnect may be lost.
                r = conn.changed() => if r.is_err() { return } else { break },
                _ = first_fired(&mut armed) => {
                    tokio::select! {
                        _ = ctx.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(COALESCE) => break,
                    }
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

/// Resolves when the first of `armed` fires; the others stay armed.
fn first_fired(armed: &mut [Armed]) -> impl Future<Output = ()> + '_ {
    std::future::poll_fn(move |cx| {
        if armed.iter_mut().any(|w| w.as_mut().poll(cx).is_ready()) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
}

/// Seconds since the Unix epoch, for timestamp gauges.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Waits for the session to change; false on shutdown.
async fn wait_conn(conn: &mut watch::Receiver<Conn>, ctx: &SourceContext) -> bool {
    tokio::select! {
        _ = ctx.shutdown.cancelled() => false,
        r = conn.changed() => r.is_ok(),
    }
}

/// Lists the path (arming the child watch) and reads every child.
async fn read(
    client: &zk::Client,
    config: &ZookeeperDiscovery,
    service: &str,
    ctx: &SourceContext,
    warned: &mut HashSet<(String, i64, i32)>,
) -> Result<Read, zk::Error> {
    let (children, watch) = match client.list_and_watch_children(&config.path).await {
        Ok(found) => found,
        Err(zk::Error::NoNode) => {
            let (stat, watch) = client.check_and_watch_stat(&config.path).await?;
            return Ok(if stat.is_some() {
                Read::Appeared
            } else {
                Read::Missing(Box::pin(watch.changed()))
            });
        }
        Err(e) => return Err(e),
    };
    // Every request is sent when its future is created, so the reads go out back to back.
    let base = config.path.trim_end_matches('/');
    let pending: Vec<_> = children
        .iter()
        .map(|child| client.get_and_watch_data(&format!("{base}/{child}")))
        .collect();
    let mut armed: Vec<Armed> = Vec::with_capacity(children.len() + 1);
    armed.push(Box::pin(watch.changed()));
    let mut backends = Vec::with_capacity(children.len());
    let mut seen = HashSet::with_capacity(children.len());
    for (child, reply) in children.iter().zip(pending) {
        let (data, stat, data_watch) = match reply.await {
            Ok(found) => found,
            // Deleted between the listing and the read (synapse#205): simply gone.
            Err(zk::Error::NoNode) => continue,
            Err(e) => return Err(e),
        };
        armed.push(Box::pin(data_watch.changed()));
        match decode::decode(child, &data, &config.decode) {
            Ok(mut backend) => {
                if let Some(port) = config.port_override {
                    backend.port = port;
                }
                backends.push(backend);
            }
            Err(e) => {
                let key = (child.clone(), stat.czxid, stat.version);
                if !warned.contains(&key) {
                    ctx.metrics.zk_skipped(service).inc();
                    tracing::warn!(service, zk_path = %config.path, node = %child, error = %e, "skipping malformed znode");
                    warned.insert(key);
                }
            }
        }
        seen.insert(child.clone());
    }
    warned.retain(|(child, _, _)| seen.contains(child));
    Ok(Read::Found(backends, armed))
}
