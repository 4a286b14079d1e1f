//! Shared HTTP frontends: one listener whose requests are routed, each on its own, to a service by the
//! frontend's rules, then forwarded exactly as that service's own listener forwards them (its current
//! generation's balancer, retries, timeouts, health state and metrics).
//!
//! The rules and the services' proxy slots sit behind one [`ArcSwap`]: a reload swaps in a new
//! [`Router`] and the next request on every open keep-alive connection is routed by it; a service that
//! changed is reached through its own slot, so it too is current on the next request. Connections are
//! served by hyper's server (HTTP/1.1 with upgrades, h2c).

mod metrics;
mod rules;

pub use metrics::FrontendMetrics;
use rules::{Decision, Rules};

use super::body::{full, ProxyBody};
use super::forward;
use crate::config::{FrontendTimeouts, HttpFrontend};
use crate::proxy::blame::Resource;
use crate::proxy::io::{Activity, Metered};
use crate::proxy::ServiceProxy;
use arc_swap::ArcSwap;
use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus::IntCounter;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why a frontend's router could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// A `path_regex` pattern does not compile (validation refuses it first).
    #[error("http_frontends.{frontend}: {source}")]
    Regex {
        /// The frontend.
        frontend: String,
        /// The regex error.
        source: regex::Error,
    },
    /// A rule names a service that is not running.
    #[error("http_frontends.{frontend}: no running HTTP service named {service:?}")]
    UnknownService {
        /// The frontend.
        frontend: String,
        /// The service.
        service: String,
    },
}

/// A frontend's rules with the proxy slots of the services they name.
pub struct Router {
    name: String,
    rules: Rules,
    targets: Vec<Target>,
    unmatched: IntCounter,
    timeouts: FrontendTimeouts,
}

/// One service a router sends requests to.
struct Target {
    slot: Arc<ArcSwap<ServiceProxy>>,
    requests: IntCounter,
}

impl Router {
    /// Builds the router of frontend `name`, finding each service's proxy slot with `slot_of`.
    pub fn new(
        name: &str,
        frontend: &HttpFrontend,
        slot_of: impl Fn(&str) -> Option<Arc<ArcSwap<ServiceProxy>>>,
        metrics: &FrontendMetrics,
    ) -> Result<Self, RouteError> {
        let rules = Rules::compile(frontend).map_err(|source| RouteError::Regex {
            frontend: name.to_string(),
            source,
        })?;
        let mut targets = Vec::with_capacity(rules.services().len());
        for service in rules.services() {
            let slot = slot_of(service)
                .filter(|s| s.load().http.is_some())
                .ok_or_else(|| RouteError::UnknownService {
                    frontend: name.to_string(),
                    service: service.clone(),
                })?;
            targets.push(Target {
                slot,
                requests: metrics.requests.with_label_values(&[name, service]),
            });
        }
        Ok(Self {
            name: name.to_string(),
            rules,
            targets,
            unmatched: metrics.unrouted.with_label_values(&[name, "no_match"]),
            timeouts: frontend.timeouts,
        })
    }

    /// Routes and forwards one request.
    async fn handle(
        &self,
        req: Request<hyper::body::Incoming>,
        peer: crate::proxy::Peer,
    ) -> Response<ProxyBody> {
        let decision = {
            let host = req
                .uri()
                .authority()
                .map(|a| a.as_str())
                .or_else(|| req.headers().get(HOST).and_then(|v| v.to_str().ok()));
            self.rules.decide(host, req.uri().path())
        };
        let target = match decision {
            Decision::Rule(i) | Decision::Default(i) => &self.targets[i],
            Decision::NoMatch => {
                self.unmatched.inc();
                tracing::debug!(frontend = %self.name, path = %req.uri().path(), "no route matches and no default_service");
                return no_route(&self.name);
            }
        };
        target.requests.inc();
        let proxy = target.slot.load_full();
        match proxy.http.clone() {
            Some(http) => forward::handle(req, proxy, &http, peer).await,
            // Router::new refused a service without HTTP, and a reload rebuilds every router.
            None => no_route(&self.name),
        }
    }
}

/// The 503 for a request no rule routes, marked like sinew's other own answers.
fn no_route(frontend: &str) -> Response<ProxyBody> {
    let body = format!(
        "sinew: frontend {frontend}: no route matches this request and there is no default_service\n"
    );
    let mut r = Response::new(full(Bytes::from(body)));
    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert("x-sinew-error", HeaderValue::from_static("no_route"));
    r
}

/// A running frontend: its current router and what its connections need.
pub struct Frontend {
    /// The current rules and targets; a reload swaps them.
    pub router: ArcSwap<Router>,
    /// Cancelled when the frontend stops (removed by a reload, or the agent stops).
    pub stop: CancellationToken,
    /// Cancelled when open connections must be cut (the shutdown grace period is over).
    abort: CancellationToken,
    /// Every connection task of the agent, waited for on shutdown.
    conns: TaskTracker,
    connections: IntCounter,
}

impl Frontend {
    /// A frontend named `name` routing with `router`; it stops accepting with `stop`, its connections
    /// are cut with `abort` and tracked in `conns`.
    pub fn new(
        name: &str,
        router: Router,
        (stop, abort, conns): (CancellationToken, CancellationToken, TaskTracker),
        metrics: &FrontendMetrics,
    ) -> Self {
        Self {
            router: ArcSwap::from_pointee(router),
            stop,
            abort,
            conns,
            connections: metrics.connections.with_label_values(&[name]),
        }
    }
}

/// Accepts connections until the frontend stops.
pub async fn accept_loop(listener: Arc<TcpListener>, frontend: Arc<Frontend>) {
    let name = frontend.router.load().name.clone();
    let bound = listener.local_addr().ok();
    let warnings = crate::ratelog::RateLimited::default();
    loop {
        let accepted = tokio::select! {
            _ = frontend.stop.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                frontend.connections.inc();
                let _ = stream.set_nodelay(true);
                let f = Arc::clone(&frontend);
                // A routed service may send a PROXY header naming the address the client reached.
                let local = match bound {
                    Some(b) if !b.ip().is_unspecified() => Some(b),
                    _ => stream.local_addr().ok(),
                };
                let peer = crate::proxy::Peer { addr: peer, local };
                frontend.conns.spawn(serve(stream, peer, f));
            }
            Err(e) => {
                let resource = Resource::of_error(&e);
                if let Some(suppressed) = warnings.allow() {
                    tracing::warn!(frontend = %name, error = %e, suppressed, "accept failed");
                }
                tokio::time::sleep(crate::proxy::listener::accept_pause(resource)).await;
            }
        }
    }
    tracing::info!(frontend = %name, "frontend listener closed");
}

/// Serves one client connection until it closes, idles out, or the frontend stops; each request is
/// routed by the router current when it arrives.
async fn serve(stream: TcpStream, peer: crate::proxy::Peer, frontend: Arc<Frontend>) {
    let timeouts = frontend.router.load().timeouts;
    let activity = Activity::new();
    let io = TokioIo::new(Metered::new(stream, None, Arc::clone(&activity)));
    let svc = {
        let frontend = Arc::clone(&frontend);
        service_fn(move |req| {
            let router = frontend.router.load_full();
            async move { Ok::<_, Infallible>(router.handle(req, peer).await) }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let conn = builder.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(peer = %peer.addr, error = %e, "frontend client connection error");
            }
        }
        _ = activity.idle(timeouts.idle) => {}
        _ = frontend.stop.cancelled() => {
            // A request in progress finishes (with `Connection: close`); an idle connection closes now.
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = frontend.abort.cancelled() => {}
            }
        }
    }
}
