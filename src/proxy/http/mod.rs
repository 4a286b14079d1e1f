//! HTTP mode: a hyper server on the listener (HTTP/1.1 and h2c, detected per connection) and a pooled
//! client per service towards the backends (sinew's own HTTP/1.1 pool and client, or hyper's for HTTP/2);
//! balancing, retries and errors are per request.

mod access;
mod answer;
mod body;
mod budget;
mod errors;
mod forward;
mod front;
mod h1;
mod headers;
mod pool;
mod retry;
mod rewind;
pub mod route;
mod tunnel;
mod upstream;

/// The HTTP/1 wire parsers, for the fuzz targets and their regression tests only.
#[doc(hidden)]
pub use h1::wire;
pub use pool::PoolMetrics;

use super::io::{Activity, Metered};
use super::{Peer, ServiceProxy};
use crate::config::{HttpOptions, ServiceConfig, UpstreamProtocol};
use crate::proxy::{HttpMetrics, ProxyMetrics};
use body::ProxyBody;
use budget::Budget;
use bytes::BytesMut;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// How requests reach the backends.
enum Client {
    /// HTTP/1.1, plain or over TLS without `h2` in its ALPN: sinew's own pool.
    Http1(Arc<upstream::Upstream>),
    /// HTTP/2, or TLS that may negotiate it: hyper-util's pooled client.
    Hyper(Box<hyper_util::client::legacy::Client<pool::CountingConnector, ProxyBody>>),
}

/// The HTTP side of a service: upstream client pool, options and retry budget.
pub struct HttpProxy {
    client: Client,
    protocol: UpstreamProtocol,
    options: HttpOptions,
    budget: Budget,
    metrics: HttpMetrics,
}

impl HttpProxy {
    /// Builds the client pool and budget of one service.
    pub fn new(
        service: &str,
        config: &ServiceConfig,
        metrics: &ProxyMetrics,
        tls: Option<Arc<crate::proxy::UpstreamTls>>,
    ) -> Self {
        let may_h2 = config
            .tls_upstream
            .as_ref()
            .is_some_and(|t| t.alpn.iter().any(|p| p == "h2"));
        let client = if config.upstream_protocol == UpstreamProtocol::Http1 && !may_h2 {
            Client::Http1(upstream::Upstream::new(
                config.http.max_idle_per_backend,
                config.timeouts.pool_idle,
                metrics.pool(service),
            ))
        } else {
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            connector.set_connect_timeout(Some(config.timeouts.connect));
            connector.enforce_http(true);
            let mut builder = hyper_util::client::legacy::Client::builder(TokioExecutor::new());
            builder
                .pool_idle_timeout(config.timeouts.pool_idle)
                .pool_max_idle_per_host(config.http.max_idle_per_backend)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new());
            if config.upstream_protocol == UpstreamProtocol::Http2 {
                builder.http2_only(true);
            }
            Client::Hyper(Box::new(builder.build(pool::CountingConnector::new(
                connector,
                metrics.pool(service),
                tls,
            ))))
        };
        Self {
            client,
            protocol: config.upstream_protocol,
            options: config.http.clone(),
            budget: Budget::new(config.retries.budget_percent, config.retries.min_concurrent),
            metrics: metrics.http(service),
        }
    }
}

/// Serves one client connection in HTTP mode until it closes, idles out, or the agent stops: on
/// sinew's own HTTP/1 path, handed to hyper's server at the first request that path leaves to it.
pub async fn serve_connection<S>(stream: S, peer: Peer, proxy: Arc<ServiceProxy>)
where
    S: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + crate::proxy::io::WaitReadable
        + Unpin
        + Send
        + 'static,
{
    let metrics = &proxy.metrics;
    let Some(http) = proxy.http.as_ref() else {
        return;
    };
    crate::fault::point("connection", proxy.balancer.service()).await;
    let activity = Activity::new();
    let mut io = Metered::new(stream, None, Arc::clone(&activity));
    let mut buf = BytesMut::new();
    let ended = tokio::select! {
        ended = front::serve_own_path(&mut io, &mut buf, peer, &proxy, http) => ended,
        _ = activity.idle(proxy.timeouts.idle) => {
            metrics.idle_timeouts.inc();
            front::ConnectionFate::Closed
        }
        _ = proxy.abort.cancelled() => front::ConnectionFate::Closed,
    };
    if let front::ConnectionFate::Handoff = ended {
        let io = rewind::Rewind::new(buf.freeze(), io);
        // Boxed: hyper's connection state is large (with TLS, 1.5 KiB more than the own path's),
        // and few connections get here.
        Box::pin(serve_hyper(io, peer, &proxy, http, &activity)).await;
    }
}

/// Serves a connection with hyper's server (HTTP/1.1 with upgrades and `Expect`, streamed bodies, h2c).
async fn serve_hyper<S>(
    stream: S,
    peer: Peer,
    proxy: &Arc<ServiceProxy>,
    http: &Arc<HttpProxy>,
    activity: &Activity,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let metrics = &proxy.metrics;
    let io = TokioIo::new(stream);
    // Requests started on this connection: a stop waits for the next one (see below).
    let (started_tx, mut started) = tokio::sync::watch::channel(0u64);
    let svc = {
        let (proxy, http) = (Arc::clone(proxy), Arc::clone(http));
        service_fn(move |req| {
            started_tx.send_modify(|n| *n += 1);
            let (proxy, http) = (Arc::clone(&proxy), Arc::clone(&http));
            async move {
                let version = req.version();
                let stop = proxy.stop.clone();
                let mut response = forward::handle(req, proxy, &http, peer).await;
                // Answered after the listener closed: tell the client in the response itself, so it
                // never sends another request on a connection about to close.
                if stop.is_cancelled()
                    && version <= hyper::Version::HTTP_11
                    && response.status() != hyper::StatusCode::SWITCHING_PROTOCOLS
                {
                    response.headers_mut().insert(
                        hyper::header::CONNECTION,
                        hyper::header::HeaderValue::from_static("close"),
                    );
                }
                Ok::<_, Infallible>(response)
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(proxy.timeouts.header_read)
        .max_headers(http.options.max_headers)
        .max_buf_size(http.options.max_header_bytes)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let conn = builder.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(service = %proxy.balancer.service(), error = %e, "client connection error");
            }
        }
        _ = activity.idle(proxy.timeouts.idle) => metrics.idle_timeouts.inc(),
        _ = proxy.stop.cancelled() => {
            // Closing a connection between requests races with a client sending its next one. A
            // connection accepted just before the listener closed, with no request yet, gets that first
            // request (the client sent it in good time, and during a binary upgrade no other process
            // can answer it). On a handover every keep-alive connection waits for its next request and
            // answers it with `Connection: close` (set on every response made after the stop), like
            // HAProxy's idle-close-on-response: the successor serves new connections meanwhile.
            let seen = *started.borrow();
            let grace = grace_after_stop(proxy, seen);
            let next_request = async {
                if grace.is_some() {
                    let _ = started.wait_for(|n| *n > seen).await;
                }
            };
            let wait = tokio::time::timeout(grace.unwrap_or_default(), next_request);
            let closed = tokio::select! {
                _ = conn.as_mut() => true,
                _ = wait => false,
                _ = proxy.abort.cancelled() => true,
            };
            if !closed {
                conn.as_mut().graceful_shutdown();
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = proxy.abort.cancelled() => {}
                }
            }
        }
    }
}

/// After a stop, how long a client connection that has started `served` requests still waits for its
/// next one: on a handover every connection does (within the idle timeout), otherwise only one with no
/// request yet (within the header-read timeout); `None`: it closes at once.
fn grace_after_stop(proxy: &ServiceProxy, served: u64) -> Option<std::time::Duration> {
    match (proxy.handover.load(Ordering::SeqCst), served) {
        (true, _) => Some(proxy.timeouts.idle),
        (false, 0) => Some(proxy.timeouts.header_read),
        (false, _) => None,
    }
}
