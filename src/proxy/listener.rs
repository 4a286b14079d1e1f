//! The accept loop of one service's local listener.

use super::{http, tcp, ServiceProxy};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Accepts connections until the agent stops, spawning one forwarding task per connection.
pub async fn serve(listener: TcpListener, proxy: Arc<ServiceProxy>) {
    let service = proxy.balancer.service().to_string();
    loop {
        let accepted = tokio::select! {
            _ = proxy.stop.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                let p = Arc::clone(&proxy);
                if proxy.http.is_some() {
                    proxy.conns.spawn(http::serve(stream, peer, p));
                } else {
                    proxy.conns.spawn(tcp::handle(stream, p));
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
