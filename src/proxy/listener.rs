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

use super::admission::{holding, Slot};
use super::blame::Resource;
use super::{http, tcp, ListenTls, Peer, ServiceProxy};
use crate::proxy_protocol::Header;
use crate::ratelog::RateLimited;
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

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
                let metrics = &proxy.metrics;
                // Taken here, before the task runs, so a burst cannot slip past the limit; the task
                // holds it and gives it back when it ends, however it ends.
                let Some(slot) = Slot::take(metrics, proxy.max_clients) else {
                    // Closed before any byte is read: the flood costs a socket for a moment, nothing more.
                    metrics.rejected.inc();
                    drop(stream);
                    continue;
                };
                metrics.connections.inc();
                let conns = proxy.conns.clone();
                if !inherits_nodelay {
                    let _ = stream.set_nodelay(true);
                }
                if proxy.accept_proxy {
                    // Boxed: the header is read first, then the connection is served as any other.
                    conns.spawn(holding(slot, Box::pin(accept_proxy(stream, peer, proxy))));
                    continue;
                }
                let peer = Peer::accepted(&stream, peer, bound, &proxy);
                // One task type per kind of connection, so each task is only as large as its own state.
                match (proxy.tls.listen.clone(), proxy.http.is_some()) {
                    (Some(tls), _) => {
                        conns.spawn(holding(slot, serve_tls(tls, stream, peer, proxy)))
                    }
                    (None, true) => match super::uring::local_for(proxy.fastpath) {
                        Some(engine) => {
                            let Some(stream) = onto_ring(engine, stream) else {
                                continue;
                            };
                            conns.spawn(holding(slot, http::serve_connection(stream, peer, proxy)))
                        }
                        None => {
                            conns.spawn(holding(slot, http::serve_connection(stream, peer, proxy)))
                        }
                    },
                    (None, false) => {
                        conns.spawn(holding(slot, tcp::handle_plain(stream, peer, proxy)))
                    }
                };
            }
            Err(e) => {
                let resource = Resource::of_error(&e);
                let kind = resource.map_or("other", Resource::label);
                slot.load().faults.accept_error(kind);
                if let Some(suppressed) = warnings.allow() {
                    tracing::warn!(service = %service, error = %e, kind, suppressed, "accept failed");
                }
                tokio::time::sleep(accept_pause(resource)).await;
            }
        }
    }
    tracing::info!(service = %service, "listener closed");
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
}
