//! The accept loop of one service's local listener.
//!
//! Out of descriptors (`EMFILE`, `ENFILE`), `accept` fails at once for as long as the condition lasts:
//! the loop then pauses accepting for a moment, as HAProxy and Envoy do, leaving new connections in
//! the kernel's backlog rather than spinning, and says so once a second with a count, not once per
//! failure.
//!
//! `TCP_NODELAY` is set once on the listening socket: Linux copies it into every socket accepted from
//! it, so an accept costs no `setsockopt(2)` of its own (HAProxy sets it per accepted socket; the
//! result is the same). Where the listener refuses it, each accepted socket gets it as before.
//!
//! An HTTP service on the io_uring engine takes the rest of its backlog after each accept without
//! tokio (up to [`MAX_ACCEPT`] per wake-up, as HAProxy's `tune.maxaccept`): those sockets go straight
//! onto the ring, with no registration in tokio's epoll to make and take back (two `epoll_ctl` per
//! connection).

use super::admission::{holding, Slot};
use super::blame::Resource;
use super::{http, tcp, ListenTls, Peer, ServiceProxy};
use crate::proxy_protocol::Header;
use crate::ratelog::RateLimited;
use arc_swap::ArcSwap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Most connections an HTTP service on the ring takes from its backlog per wake-up of the loop.
const MAX_ACCEPT: usize = 64;

/// Accepts connections until `stop` fires, handing each to the service's current proxy in `slot`
/// (a reload swaps the proxy without closing the listener). The socket closes when this returns, unless
/// a successor process holds it too (binary upgrade).
pub async fn accept_loop(
    listener: Arc<TcpListener>,
    slot: Arc<ArcSwap<ServiceProxy>>,
    stop: CancellationToken,
) {
    let service = slot.load().balancer.service().to_string();
    let bound = listener.local_addr().ok();
    let warnings = RateLimited::default();
    let inherits_nodelay = nodelay_inherited(&listener);
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                let proxy = slot.load_full();
                let Some(slot) = admit(&proxy, &stream, inherits_nodelay) else {
                    continue;
                };
                let conns = proxy.conns.clone();
                if proxy.accept_proxy {
                    // Boxed: the header is read first, then the connection is served as any other.
                    conns.spawn(holding(slot, Box::pin(accept_proxy(stream, peer, proxy))));
                    continue;
                }
                let peer = Peer::accepted(&stream, peer, bound, &proxy);
                if let Some(engine) = ring_http(&proxy) {
                    let Some(stream) = onto_ring(engine, stream) else {
                        continue;
                    };
                    conns.spawn(holding(
                        slot,
                        http::serve_connection(stream, peer, Arc::clone(&proxy)),
                    ));
                    let taken = accept_backlog(&listener, MAX_ACCEPT - 1, |fd, from| {
                        serve_on_ring(engine, fd, from, bound, inherits_nodelay, &proxy)
                    });
                    if let Err(e) = taken {
                        accept_failed(&e, &proxy, &service, &warnings).await;
                    }
                    continue;
                }
                // One task type per kind of connection, so each task is only as large as its own state.
                match (proxy.tls.listen.clone(), proxy.http.is_some()) {
                    (Some(tls), _) => {
                        conns.spawn(holding(slot, serve_tls(tls, stream, peer, proxy)))
                    }
                    (None, true) => {
                        conns.spawn(holding(slot, http::serve_connection(stream, peer, proxy)))
                    }
                    (None, false) => {
                        conns.spawn(holding(slot, tcp::handle_plain(stream, peer, proxy)))
                    }
                };
            }
            Err(e) => accept_failed(&e, &slot.load_full(), &service, &warnings).await,
        }
    }
    tracing::info!(service = %service, "listener closed");
}

/// Counts and logs (rate limited) a failed accept, then pauses accepting.
async fn accept_failed(e: &io::Error, proxy: &ServiceProxy, service: &str, warnings: &RateLimited) {
    let resource = Resource::of_error(e);
    let kind = resource.map_or("other", Resource::label);
    proxy.faults.accept_error(kind);
    if let Some(suppressed) = warnings.allow() {
        tracing::warn!(service = %service, error = %e, kind, suppressed, "accept failed");
    }
    tokio::time::sleep(accept_pause(resource)).await;
}

/// The engine an accepted connection of `proxy` goes onto when it is a plain HTTP service on the ring
/// (no TLS to terminate, no PROXY header to read first).
fn ring_http(proxy: &ServiceProxy) -> Option<&'static super::uring::Engine> {
    if proxy.http.is_none() || proxy.tls.listen.is_some() || proxy.accept_proxy {
        return None;
    }
    super::uring::local_for(proxy.fastpath)
}

/// Takes up to `max` connections waiting in `listener`'s backlog, without tokio's reactor, handing
/// each to `each` with its client's address; stops once none is left. An error other than that ends it
/// and is returned (a connection reset while it waited is skipped).
fn accept_backlog(
    listener: &TcpListener,
    max: usize,
    mut each: impl FnMut(OwnedFd, SocketAddr),
) -> io::Result<()> {
    use rustix::io::Errno;
    use rustix::net::SocketFlags;
    for _ in 0..max {
        match rustix::net::acceptfrom_with(listener, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC) {
            Ok((fd, Some(from))) => match SocketAddr::try_from(from) {
                Ok(from) => each(fd, from),
                // Not an IP peer: never on a TCP listener; the socket closes.
                Err(_) => continue,
            },
            Ok((_, None)) => continue,
            Err(Errno::AGAIN) => return Ok(()),
            Err(Errno::CONNABORTED | Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Serves a connection taken from the backlog by [`accept_backlog`] on `engine`'s ring, as the loop
/// serves one it accepted: within the service's client limit, counted, with `TCP_NODELAY`.
fn serve_on_ring(
    engine: &'static super::uring::Engine,
    fd: OwnedFd,
    from: SocketAddr,
    bound: Option<SocketAddr>,
    inherits_nodelay: bool,
    proxy: &Arc<ServiceProxy>,
) {
    let Some(slot) = admit(proxy, &fd, inherits_nodelay) else {
        return;
    };
    let peer = Peer::accepted(&fd, from, bound, proxy);
    let stream = engine.stream(fd);
    let serve = http::serve_connection(stream, peer, Arc::clone(proxy));
    proxy.conns.spawn(holding(slot, serve));
}

/// Admits an accepted `socket` within the service's client limit: its slot, counted, with
/// `TCP_NODELAY` set when the listener could not pass it on; `None` (counted as rejected) at the
/// limit, and the caller closes the socket. The slot is taken here, before the connection's task runs,
/// so a burst cannot slip past the limit; the task holds it and gives it back when it ends, however it
/// ends.
fn admit(proxy: &ServiceProxy, socket: impl AsFd, inherits_nodelay: bool) -> Option<Slot> {
    let metrics = &proxy.metrics;
    let Some(slot) = Slot::take(metrics, proxy.max_clients) else {
        // Closed before any byte is read: the flood costs a socket for a moment, nothing more.
        metrics.rejected.inc();
        return None;
    };
    metrics.connections.inc();
    if !inherits_nodelay {
        let _ = rustix::net::sockopt::set_tcp_nodelay(socket, true);
    }
    Some(slot)
}

/// Sets `TCP_NODELAY` on `listener` for its accepted sockets to inherit; false when it cannot be set.
fn nodelay_inherited(listener: &TcpListener) -> bool {
    rustix::net::sockopt::set_tcp_nodelay(listener, true).is_ok()
}

/// How long the listener stops accepting after a failed accept: out of descriptors, until some are
/// likely to have been freed; otherwise (a transient kernel error), just enough not to spin.
pub(super) fn accept_pause(resource: Option<Resource>) -> Duration {
    match resource {
        Some(r) if r.is_descriptors() => Duration::from_millis(100),
        Some(_) => Duration::from_millis(50),
        None => Duration::from_millis(20),
    }
}

/// Serves one accepted connection on an `accept_proxy` listener: its PROXY header first (before any
/// TLS, as HAProxy reads it), within the head timeout; the addresses it carries are the client's from
/// then on. A connection without a good header is closed and counted.
async fn accept_proxy(mut stream: TcpStream, from: SocketAddr, proxy: Arc<ServiceProxy>) {
    let service = proxy.balancer.service();
    let limit = proxy.timeouts.header_read;
    let peer = match crate::proxy_protocol::read_header(&mut stream, limit).await {
        Ok(Header::Proxy(a)) => Peer {
            addr: a.source,
            local: Some(a.destination),
        },
        // LOCAL / UNKNOWN: the connection is the sending proxy's own (a health check, say).
        Ok(Header::Local) => Peer {
            addr: from,
            local: stream.local_addr().ok(),
        },
        Err(e) => {
            proxy.faults.proxy_protocol_error(e.cause());
            tracing::debug!(service, peer = %from, error = %e, "client connection closed: bad PROXY protocol header");
            return;
        }
    };
    match (proxy.tls.listen.clone(), proxy.http.is_some()) {
        (Some(tls), _) => serve_tls(tls, stream, peer, proxy).await,
        (None, true) => match super::uring::local_for(proxy.fastpath) {
            // Onto the ring once the header is read, as the listener does without one.
            Some(engine) => {
                if let Some(stream) = onto_ring(engine, stream) {
                    http::serve_connection(stream, peer, proxy).await;
                }
            }
            None => http::serve_connection(stream, peer, proxy).await,
        },
        (None, false) => tcp::handle_plain(stream, peer, proxy).await,
    }
}

/// `stream` out of tokio's reactor and onto `engine`'s ring; `None` (the socket closed) if it cannot
/// leave the reactor.
fn onto_ring(
    engine: &'static super::uring::Engine,
    stream: TcpStream,
) -> Option<super::uring::RingStream> {
    let stream = stream.into_std().ok()?;
    Some(engine.stream(stream.into()))
}

/// Serves one accepted connection on a listener that terminates TLS.
async fn serve_tls(tls: Arc<ListenTls>, stream: TcpStream, peer: Peer, proxy: Arc<ServiceProxy>) {
    let stream = match tls.accept(stream).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(service = %proxy.balancer.service(), peer = %peer.addr, error = %e, "TLS handshake with a client failed");
            return;
        }
    };
    if proxy.http.is_some() {
        http::serve_connection(stream, peer, proxy).await;
    } else {
        tcp::handle(stream, peer, proxy).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn accepted(listener: &TcpListener) -> TcpStream {
        let addr = listener.local_addr().unwrap();
        let (_client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        accepted.unwrap().0
    }

    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay_from_the_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        assert!(
            !accepted(&listener).await.nodelay().unwrap(),
            "without it on the listener, an accepted socket has Nagle on"
        );
        assert!(nodelay_inherited(&listener));
        assert!(accepted(&listener).await.nodelay().unwrap());
    }

    #[tokio::test]
    async fn the_backlog_is_taken_up_to_the_limit_and_then_until_it_is_empty() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Connected once the kernel has queued them: nobody accepts yet.
        let clients: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let mut taken = Vec::new();
        accept_backlog(&listener, 2, |fd, from| taken.push((fd, from))).unwrap();
        assert_eq!(taken.len(), 2, "no more than the limit at once");
        accept_backlog(&listener, 64, |fd, from| taken.push((fd, from))).unwrap();
        assert_eq!(taken.len(), 3, "then the rest, stopping once none is left");
        let mut from: Vec<_> = taken.iter().map(|(_, from)| *from).collect();
        let mut expected: Vec<_> = clients.iter().map(|c| c.local_addr().unwrap()).collect();
        from.sort();
        expected.sort();
        assert_eq!(from, expected, "each with its client's address");
        for (fd, _) in taken {
            let flags = rustix::io::fcntl_getfd(&fd).unwrap();
            assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
            // Non-blocking: with nothing sent yet, a read says so rather than waiting.
            let mut socket = std::net::TcpStream::from(fd);
            let read = std::io::Read::read(&mut socket, &mut [0; 1]);
            assert_eq!(read.unwrap_err().kind(), io::ErrorKind::WouldBlock);
        }
        accept_backlog(&listener, 64, |_, _| panic!("nothing is waiting")).unwrap();
    }
}
