//! The accept loop of one service's local listener.

use super::{tcp, ServiceProxy};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Accepts connections until `stop` fires, spawning one forwarding task per connection on `conns`.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<ServiceProxy>,
    stop: CancellationToken,
    conns: TaskTracker,
) {
    let service = proxy.balancer.service().to_string();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _peer)) => {
                conns.spawn(tcp::handle(stream, Arc::clone(&proxy)));
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
