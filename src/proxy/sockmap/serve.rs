//! One TCP client connection served on the sockmap path: the bytes sinew owes the backend first,
//! then the kernel pair until the connection ends, with the same metrics and causes as the copy loop.

use super::pair::{write_all, End, Pair};
use crate::metrics::BackendMetrics;
use crate::proxy::connlog::cause;
use crate::proxy::{Cause, ServiceProxy};
use tokio::net::TcpStream;

/// Most reads that empty a receive queue before pairing; a stream that keeps it filling longer stays
/// on the copy loop.
const DRAIN_READS: usize = 16;

/// Reads what `from` has queued and writes it to `to`, until `from` has nothing more for now: the
/// byte count, or `None` when `from` kept sending past [`DRAIN_READS`] reads or ended its stream.
async fn drain(from: &TcpStream, to: &TcpStream) -> std::io::Result<Option<u64>> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut moved = 0;
    for _ in 0..DRAIN_READS {
        match from.try_read(&mut buf) {
            Ok(0) => return Ok(None),
            Ok(n) => {
                write_all(to, &buf[..n]).await?;
                moved += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(Some(moved)),
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// How a spliced connection ended, for the connection log.
pub struct Served {
    /// The termination cause (`connlog::cause`).
    pub cause: &'static str,
    /// Bytes from the client after the pair was made.
    pub from_client: u64,
    /// Bytes to the client.
    pub to_client: u64,
    /// The error that ended it, if one did.
    pub error: Option<String>,
}

/// A connection that failed before the kernel pair was made: counted and logged as a reset.
fn failed(proxy: &ServiceProxy, backend_key: &str, e: &std::io::Error) -> Served {
    let service = proxy.balancer.service();
    tracing::debug!(service = %service, backend = backend_key, error = %e, "connection ended with error");
    proxy.red.error(Cause::Reset);
    Served {
        cause: cause::ERROR,
        from_client: 0,
        to_client: 0,
        error: Some(e.to_string()),
    }
}

/// Serves `client` and `backend` on the kernel path after writing `owed` (early data sinew read
/// itself) to the backend. `None` when the pair could not be made: the caller runs the copy loop
/// (nothing was lost: the sockets are as they were, with `owed` sent).
pub async fn serve(
    proxy: &ServiceProxy,
    client: &TcpStream,
    backend: &TcpStream,
    owed: &[u8],
    stats: &BackendMetrics,
    backend_key: &str,
) -> Option<Served> {
    let service = proxy.balancer.service();
    if let Err(e) = write_all(backend, owed).await {
        return Some(failed(proxy, backend_key, &e));
    }
    stats.sent.inc_by(owed.len() as u64);
    let kernel = super::kernel().ok()?;
    // The kernel would send a partly read segment whole again: sinew empties both receive queues
    // first (whatever arrives after comes in whole segments).
    let drained = async {
        let up = drain(client, backend).await?;
        stats.sent.inc_by(up.unwrap_or(0));
        let down = drain(backend, client).await?;
        stats.received.inc_by(down.unwrap_or(0));
        Ok::<_, std::io::Error>(up.is_some() && down.is_some())
    };
    match drained.await {
        Ok(true) => {}
        // Still streaming, or already at an end of stream: the copy loop goes on from here.
        Ok(false) => return None,
        Err(e) => return Some(failed(proxy, backend_key, &e)),
    }
    let pair = match Pair::join(kernel, client, backend) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(service = %service, backend = backend_key, error = %e, "sockmap pairing failed; copying this connection");
            return None;
        }
    };
    let spliced = tokio::select! {
        s = pair.run(proxy.timeouts.idle) => Some(s),
        _ = proxy.abort.cancelled() => None,
    };
    // Out of the maps before the sockets close.
    let totals = pair.totals();
    drop(pair);
    stats.sent.inc_by(totals.0);
    stats.received.inc_by(totals.1);
    if let Some(s) = spliced.as_ref().filter(|s| s.relayed > 0) {
        tracing::debug!(service = %service, backend = backend_key, bytes = s.relayed, "bytes reached sinew on the sockmap path and were forwarded");
    }
    let (cause, error) = match spliced.map(|s| s.end) {
        None => (cause::SHUTDOWN, None),
        Some(End::Done) => (cause::DONE, None),
        Some(End::Idle) => {
            proxy.metrics.idle_timeouts.inc();
            proxy.red.error(Cause::IdleTimeout);
            tracing::debug!(service = %service, backend = backend_key, "idle timeout");
            (cause::IDLE_TIMEOUT, None)
        }
        Some(End::Error(e)) => {
            proxy.red.error(Cause::Reset);
            tracing::debug!(service = %service, backend = backend_key, error = %e, "connection ended with error");
            (cause::ERROR, Some(e.to_string()))
        }
    };
    Some(Served {
        cause,
        from_client: totals.0,
        to_client: totals.1,
        error,
    })
}
