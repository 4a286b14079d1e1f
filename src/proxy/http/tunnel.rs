//! Upgraded connections (WebSocket and other `Upgrade` protocols): once both sides have switched, bytes
//! are copied both ways like a TCP connection, and the backend stays counted as busy until it ends.

use crate::balance::Pick;
use crate::proxy::ServiceProxy;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// Runs the tunnel between the client's and the backend's upgraded connections on the service's tasks.
pub fn spawn(proxy: &ServiceProxy, client: OnUpgrade, upstream: OnUpgrade, pick: Pick) {
    let abort = proxy.abort.clone();
    let service = proxy.balancer.service().to_string();
    proxy.conns.spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(service = %service, backend = %pick.entry.key, error = %e, "upgrade failed");
                return;
            }
        };
        let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
        tokio::select! {
            r = crate::proxy::copy::bidirectional(&mut client, &mut upstream) => {
                if let Err(e) = r {
                    tracing::debug!(service = %service, backend = %pick.entry.key, error = %e, "tunnel ended with error");
                }
            }
            _ = abort.cancelled() => {}
        }
        drop(pick);
    });
}
