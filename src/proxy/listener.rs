//! The accept loop of one service's local listener.

use super::{http, tcp, ServiceProxy};
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Accepts connections until `stop` fires, handing each to the service's current proxy in `slot`
/// (a reload swaps the proxy without closing the listener).
pub async fn serve(
    listener: TcpListener,
    slot: Arc<ArcSwap<ServiceProxy>>,
    stop: CancellationToken,
) {
    let service = slot.load().balancer.service().to_string();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                let proxy = slot.load_full();
                let metrics = proxy.balancer.metrics();
                if proxy
                    .max_clients
                    .is_some_and(|max| metrics.active.get() >= i64::from(max))
                {
                    // Closed before any byte is read: the flood costs a socket for a moment, nothing more.
                    metrics.rejected.inc();
                    drop(stream);
                    continue;
                }
                // Counted here, before the task runs, so a burst cannot slip past the limit; the
                // connection's task takes the count down when it ends.
                metrics.connections.inc();
                metrics.active.inc();
                let conns = proxy.conns.clone();
                if proxy.http.is_some() {
                    conns.spawn(http::serve(stream, peer, proxy));
                } else {
                    conns.spawn(tcp::handle(stream, proxy));
                }
            }
            Err(e) => {
                // Out of file descriptors or a transient kernel error: back off briefly instead of spinning.
                tracing::warn!(service = %service, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    tracing::info!(service = %service, "listener closed");
}
