//! TCP forwarding: pick a backend, connect (retrying others on failure), then copy both ways until
//! both sides are done or the connection has been idle too long.

use super::blame::{blame, os_error, Blame, ClientBody, Resource, Seen};
use super::connlog::{cause, Connection};
use super::io::{Activity, Metered};
use super::uring::Progress;
use super::{Cause, Peer, ServiceProxy};
use crate::balance::{BackendSet, Pick, Target, Tries, Unavailable};
use crate::config::{SendProxy, TcpFastpath};
use crate::metrics::BackendCause;
use crate::proxy_protocol::Header;
use std::any::Any;
use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::Instant;

/// Why a client connection got no backend.
enum Unconnected {
    /// No backend could be reached: none usable, all failed, or the queue turned it away.
    Unreachable(Cause),
    /// This host ran out of a resource connecting (no other backend is tried: it would fail the same way).
    Local(Resource),
}

/// A connected stream, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + std::any::Any {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// Serves one plain TCP client connection to the end; what the client has sent already goes to the
/// backend with the connect (see `early.rs`).
pub async fn handle_plain(client: TcpStream, peer: Peer, proxy: Arc<ServiceProxy>) {
    let early = super::early::take_ready(&client);
    relay(client, peer, proxy, early, true).await
}

/// Serves one client connection (TLS terminated by the listener) to the end.
pub async fn handle<C: Io>(client: C, peer: Peer, proxy: Arc<ServiceProxy>) {
    relay(client, peer, proxy, Vec::new(), false).await
}

/// Serves `client`, which has sent `early` already; `plain` when it is a plain socket (no TLS session
/// to end with its own alert before the close).
async fn relay<C: Io>(
    client: C,
    peer: Peer,
    proxy: Arc<ServiceProxy>,
    mut early: Vec<u8>,
    plain: bool,
) {
    let accepted = Instant::now();
    let _open = proxy.red.connection(accepted);
    let metrics = &proxy.metrics;
    let mut log = proxy
        .connection_log
        .then(|| Connection::new(proxy.balancer.service(), peer.addr));
    crate::fault::point("connection", proxy.balancer.service()).await;
    let set = proxy.balancer.current();
    let key = proxy
        .hashes_client()
        .then(|| crate::balance::hash::hash(peer.addr.ip().to_string().as_bytes()));
    // Boxed: connecting (queue, timeout, dial) takes more state than copying, and only for a moment;
    // unboxed it would size the task for the connection's whole life.
    let (backend, pick, sent) = match Box::pin(connect(&set, &proxy, key, &early, &peer)).await {
        Ok(connected) => connected,
        Err(Unconnected::Unreachable(cause)) => {
            metrics.no_backend.inc();
            proxy.red.error(cause);
            if let Some(suppressed) = proxy.warnings.allow() {
                tracing::warn!(
                    service = %proxy.balancer.service(),
                    backends = set.entries().len(),
                    suppressed,
                    "no backend reachable; client connection closed"
                );
            }
            if let Some(log) = &log {
                log.log(cause::NO_BACKEND);
            }
            return;
        }
        Err(Unconnected::Local(resource)) => {
            proxy.red.error(Cause::LocalLimit);
            if let Some(suppressed) = proxy.warnings.allow() {
                tracing::warn!(
                    service = %proxy.balancer.service(),
                    resource = resource.label(),
                    suppressed,
                    "cannot connect to a backend: out of a local resource; client connection closed, the backend is not charged"
                );
            }
            if let Some(log) = &log {
                log.log(cause::LOCAL_LIMIT);
            }
            return;
        }
    };
    proxy.red.connected(accepted);
    if let Some(log) = &mut log {
        log.upstream = Some(pick.entry.key.clone());
        log.connect = Some(log.age());
    }
    let early_len = early.len() as u64;
    let stats = &pick.entry.stats.metrics;
    stats.connections.inc();
    let mut sent = sent;
    // The kernel path, for plain TCP on both sides (a Unix-socket backend runs the copy loop).
    let (c, b): (&dyn Any, &dyn Any) = (&client, &*backend);
    let sockmap = proxy.fastpath == TcpFastpath::Sockmap;
    if let (true, Some(c), Some(b)) = (sockmap, c.downcast_ref(), b.downcast_ref()) {
        stats.sent.inc_by(sent as u64);
        let key = pick.entry.key.to_string();
        let served = super::sockmap::serve(&proxy, c, b, &early[sent..], stats, &key).await;
        if let Some(served) = served {
            if let Some(log) = &mut log {
                log.from_client = early_len + served.from_client;
                log.to_client = served.to_client;
                log.error = served.error;
                log.log(served.cause);
            }
            return;
        }
        // Not paired: the early bytes went out (and were counted), the copy loop takes over.
        sent = 0;
        early.clear();
    }
    let activity = Activity::new();
    stats.sent.inc_by(sent as u64);
    let engine =
        (proxy.fastpath == TcpFastpath::IoUring && is_socket(&client) && is_socket(&*backend))
            .then(|| super::uring::engine().ok().filter(|e| e.running()))
            .flatten();
    let (termination, from_client, to_client) = if let Some(engine) = engine {
        let progress = Progress::new(
            Arc::clone(&activity),
            Some(stats.sent.clone()),
            Some(stats.received.clone()),
        );
        let mut backend = backend;
        let copy = async {
            send_rest(&mut backend, early, sent, stats).await?;
            let client = socket(Box::new(client))?;
            let backend = socket(backend)?;
            engine.copy(client, backend, Arc::clone(&progress)).await
        };
        let termination = watch(copy, &activity, &proxy, &pick, &mut log).await;
        // After a timeout or the shutdown cut the engine may still be winding the copy down: the log
        // has the bytes moved until now, the byte metrics every byte.
        (termination, progress.from_client(), progress.from_backend())
    } else {
        let mut client = Metered::new(client, Some(stats.sent.clone()), Arc::clone(&activity));
        let mut backend =
            Metered::new(backend, Some(stats.received.clone()), Arc::clone(&activity));
        let copy = async {
            send_rest(&mut backend, early, sent, stats).await?;
            // Both sockets are closed as soon as the copy ends (when this function returns).
            if plain && proxy.tls.upstream.is_none() {
                super::copy::bidirectional_closing(&mut client, &mut backend).await
            } else {
                super::copy::bidirectional(&mut client, &mut backend).await
            }
        };
        let termination = watch(copy, &activity, &proxy, &pick, &mut log).await;
        (termination, client.read(), backend.read())
    };
    if let Some(log) = &mut log {
        log.from_client = early_len + from_client;
        log.to_client = to_client;
        log.log(termination);
    }
}

/// Waits for `copy` to end, the connection to be idle too long or the agent to cut connections;
/// returns the connection's termination cause, counting it.
async fn watch<T>(
    copy: impl Future<Output = io::Result<T>>,
    activity: &Activity,
    proxy: &ServiceProxy,
    pick: &Pick,
    log: &mut Option<Connection>,
) -> &'static str {
    tokio::select! {
        r = copy => match r {
            Ok(_) => cause::DONE,
            Err(e) => {
                proxy.red.error(Cause::Reset);
                tracing::debug!(service = %proxy.balancer.service(), backend = %pick.entry.key, error = %e, "connection ended with error");
                if let Some(log) = log {
                    log.error = Some(e.to_string());
                }
                cause::ERROR
            }
        },
        _ = activity.idle(proxy.timeouts.idle) => {
            proxy.metrics.idle_timeouts.inc();
            proxy.red.error(Cause::IdleTimeout);
            tracing::debug!(service = %proxy.balancer.service(), backend = %pick.entry.key, "idle timeout");
            cause::IDLE_TIMEOUT
        }
        _ = proxy.abort.cancelled() => cause::SHUTDOWN,
    }
}

/// Writes to `backend` what of the client's first bytes `early` the connect did not send (`sent`),
/// counting it, and lets go of them.
async fn send_rest<W: AsyncWrite + Unpin + ?Sized>(
    backend: &mut W,
    early: Vec<u8>,
    sent: usize,
    stats: &crate::metrics::backend::BackendMetrics,
) -> io::Result<()> {
    if sent < early.len() {
        backend.write_all(&early[sent..]).await?;
        stats.sent.inc_by((early.len() - sent) as u64);
    }
    Ok(())
}

/// True for a plain TCP or Unix socket, which the io_uring engine can take.
pub(crate) fn is_socket(stream: &dyn Any) -> bool {
    stream.is::<TcpStream>() || stream.is::<UnixStream>()
}

/// The socket of a plain stream (see [`is_socket`]), taken out of tokio's reactor.
pub(crate) fn socket(stream: Box<dyn Any>) -> io::Result<OwnedFd> {
    let stream = match stream.downcast::<TcpStream>() {
        Ok(tcp) => return Ok(tcp.into_std()?.into()),
        Err(other) => other,
    };
    match stream.downcast::<UnixStream>() {
        Ok(unix) => Ok(unix.into_std()?.into()),
        Err(_) => Err(io::Error::other("not a plain socket")),
    }
}

/// Connects to a backend of `set`, trying up to `1 + retries.attempts` distinct backends.
/// Returns the stream, the pick and how many bytes of `early` went out with the connect, or why there
/// is none.
async fn connect(
    set: &BackendSet,
    proxy: &ServiceProxy,
    key: Option<u64>,
    early: &[u8],
    peer: &Peer,
) -> Result<(Box<dyn Io>, Pick, usize), Unconnected> {
    let mut tries = Tries::new(proxy.retries.attempts);
    while tries.left() {
        let pick = match tries.pick(&proxy.balancer, set, key).await {
            Ok(p) => p,
            // With nothing tried yet this is "no backend" or a queue rejection; later, all were tried.
            Err(unavailable) => {
                return Err(Unconnected::Unreachable(unreachable(
                    unavailable,
                    tries.made(),
                )))
            }
        };
        let started = tokio::time::Instant::now();
        if tries.made() > 0 {
            proxy.metrics.retries.inc();
        }
        let header = peer.header_for(proxy.send_proxy, &pick.entry.backend);
        let dialing = dial_sending(
            proxy,
            &pick.entry.target,
            &pick.entry.backend.host,
            early,
            header,
        );
        let (seen, error) = match tokio::time::timeout(proxy.timeouts.connect, dialing).await {
            Ok(Ok((stream, sent))) => {
                proxy.balancer.observe(&pick.entry, true);
                pick.entry.rtt.observe(started.elapsed());
                return Ok((stream, pick, sent));
            }
            Ok(Err(e)) => (Seen::ConnectFailed(os_error(&e)), e.to_string()),
            Err(_) => (Seen::ConnectTimeout, "connect timeout".to_string()),
        };
        // Nothing of the client's body is in play while connecting.
        match blame(seen, ClientBody::Sent) {
            Blame::Local(resource) => {
                proxy.faults.local_error(resource.label());
                tracing::debug!(service = %proxy.balancer.service(), backend = %pick.entry.key, error, "connect failed for a local resource limit");
                return Err(Unconnected::Local(resource));
            }
            Blame::Backend | Blame::Client(_) => {
                let stats = &pick.entry.stats.metrics;
                stats.connect_failures.inc();
                stats.error(match seen {
                    Seen::ConnectTimeout => BackendCause::ConnectTimeout,
                    _ => BackendCause::ConnectFailure,
                });
                proxy.balancer.observe(&pick.entry, false);
                tracing::debug!(service = %proxy.balancer.service(), backend = %pick.entry.key, error, "connect failed");
            }
        }
        tries.record(&pick);
    }
    Err(Unconnected::Unreachable(Cause::ConnectFailure))
}

/// The cause of a connection that got no backend from the balancer after `tried` failed connects.
fn unreachable(unavailable: Unavailable, tried: u32) -> Cause {
    match (unavailable, tried) {
        (Unavailable::QueueFull, _) => Cause::QueueFull,
        (Unavailable::QueueTimeout, _) => Cause::QueueTimeout,
        (Unavailable::NoBackend, 0) => Cause::NoBackend,
        // Every usable backend was tried and refused.
        (Unavailable::NoBackend, _) => Cause::ConnectFailure,
    }
}

/// Connects to a backend, writes `header` first when one is due (before any TLS, as HAProxy does),
/// with TLS when the service originates it (the handshake counts as part of the connect, so a backend
/// that fails it is retried like one that refuses). A Unix socket gets none of TCP's options, and no
/// TLS (refused at load for static backends).
pub(crate) async fn dial(
    proxy: &ServiceProxy,
    target: &Target,
    host: &str,
    header: Option<(SendProxy, Header)>,
) -> io::Result<Box<dyn Io>> {
    let mut stream = match target {
        Target::Addr(addr) => TcpStream::connect(addr).await?,
        Target::Name(name) => TcpStream::connect(name.as_str()).await?,
        Target::Unix(_) if proxy.tls.upstream.is_some() => {
            return Err(super::unix::UnixError::Tls.into())
        }
        Target::Unix(path) => {
            let mut stream = super::unix::connect(path).await?;
            if let Some((version, header)) = header {
                crate::proxy_protocol::write_header(&mut stream, version, header).await?;
            }
            return Ok(Box::new(stream));
        }
    };
    let _ = stream.set_nodelay(true);
    if let Some((version, header)) = header {
        crate::proxy_protocol::write_header(&mut stream, version, header).await?;
    }
    match &proxy.tls.upstream {
        Some(tls) => Ok(Box::new(tls.connect(host, stream).await?)),
        None => Ok(Box::new(stream)),
    }
}

/// [`dial`], sending what it can of `early` at once on a plain connection to an address without a
/// PROXY header; returns how many bytes went.
async fn dial_sending(
    proxy: &ServiceProxy,
    target: &Target,
    host: &str,
    early: &[u8],
    header: Option<(SendProxy, Header)>,
) -> io::Result<(Box<dyn Io>, usize)> {
    match target {
        Target::Addr(addr) if proxy.tls.upstream.is_none() && header.is_none() => {
            let (stream, sent) = super::early::connect(*addr, early).await?;
            Ok((Box::new(stream), sent))
        }
        _ => Ok((dial(proxy, target, host, header).await?, 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_without_a_backend_counts_under_its_cause() {
        let table = [
            (Unavailable::NoBackend, 0, Cause::NoBackend),
            (Unavailable::NoBackend, 2, Cause::ConnectFailure),
            (Unavailable::QueueFull, 0, Cause::QueueFull),
            (Unavailable::QueueTimeout, 1, Cause::QueueTimeout),
        ];
        for (unavailable, tried, want) in table {
            assert_eq!(
                unreachable(unavailable, tried),
                want,
                "{unavailable:?} after {tried}"
            );
        }
    }
}
