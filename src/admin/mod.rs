//! The admin server: the status page (`/`), `/metrics` (Prometheus), `/ready`, `/api/services` (JSON),
//! `/api/config`, `/api/log-level` and `POST /api/reload`. Requests pass the checks of `guard` first (DNS rebinding, cross-site
//! requests, the token).

mod api;
mod config;
mod guard;
mod history;
mod log_level;
mod quantile;
mod reload;

pub use api::{ServiceInfo, ServiceJson, ServicesJson};
pub use guard::RefusalMetrics;
pub use history::History;
pub use log_level::LogFilterMetrics;

use crate::metrics::Registry;
use crate::register::Registrar;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST, ORIGIN};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

use tokio_util::sync::CancellationToken;

/// What `POST /api/reload` calls: a reload of the config from the files the agent started from.
pub trait Reload: Send + Sync {
    /// Reads the files again and applies them: a summary of what changed, or why the running config
    /// stays. Runs to its end as a task of its own, whatever becomes of the request that asked.
    fn reload(self: Arc<Self>) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;
    /// Reads and validates the files as a reload would and applies nothing: how they differ from the
    /// running config (one change a line), or why a reload would reject them.
    fn dry_run(self: Arc<Self>) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;
}

/// What the admin server reads.
pub struct AdminState {
    /// Every service by name (replaced on reload).
    pub services: Arc<ArcSwap<BTreeMap<String, ServiceInfo>>>,
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// Refused requests, by reason.
    pub refused: RefusalMetrics,
    /// What `POST /api/reload` calls; `None` when there are no config files to read again.
    pub reload: Option<Arc<dyn Reload>>,
    /// The registration side, when configured.
    pub registrar: Option<Arc<Registrar>>,
    /// Required bearer token of state-changing requests, when set (replaced on reload).
    pub token: Arc<arc_swap::ArcSwapOption<String>>,
    /// The last minutes of every service's traffic, sampled by [`History::run`].
    pub history: Arc<History>,
    /// The config in force (replaced on reload), for `GET /api/config`.
    pub config: Arc<ArcSwap<crate::config::Config>>,
    /// Changes of the log filter, counted.
    pub log_filter: LogFilterMetrics,
}

/// The status page: one self-contained HTML file that polls `/api/services`.
const STATUS_PAGE: &str = include_str!("status.html");

/// How long `POST /api/reload` waits for the reload to finish.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// A request that takes longer than this to arrive is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Descriptors held back for the admin API, released one at a time when the process is out of them,
/// so an operator can still read `/metrics` and `/api` while the proxy is full.
const SPARE_DESCRIPTORS: usize = 4;

/// Serves the admin API until `stop` fires.
pub async fn accept_loop(
    listener: Arc<TcpListener>,
    state: Arc<AdminState>,
    stop: CancellationToken,
) {
    if let Ok(addr) = listener.local_addr() {
        if exposed(addr, state.token.load().is_some()) {
            tracing::warn!(admin = %addr, "the admin API listens beyond loopback without admin.token: anyone who can reach it can reload the config and take services out of ZooKeeper; set admin.token or listen on 127.0.0.1");
        }
    }
    let spare = Arc::new(crate::fdlimit::Spare::new(SPARE_DESCRIPTORS));
    let warnings = crate::ratelog::RateLimited::default();
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                // Out of descriptors: one held back is closed and the accept tried again at once (the
                // connection is still in the backlog); it is taken back when that connection ends.
                Err(e)
                    if crate::resource::Resource::of_error(&e)
                        .is_some_and(crate::resource::Resource::is_descriptors)
                        && spare.release() =>
                {
                    continue
                }
                Err(e) => {
                    if let Some(suppressed) = warnings.allow() {
                        tracing::warn!(error = %e, suppressed, "admin accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        spare.refill();
        let state = Arc::clone(&state);
        let stop = stop.clone();
        let spare = Arc::clone(&spare);
        tokio::spawn(async move {
            let svc = service_fn(move |mut req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(route(&state, &mut req).await) }
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                r = conn => if let Err(e) = r { tracing::debug!(error = %e, "admin connection error") },
                _ = stop.cancelled() => {}
            }
            // This connection's descriptor is closed by now: it goes back to the spare set.
            spare.refill();
        });
    }
}

/// True when the admin API is reachable beyond this host and asks no token.
fn exposed(addr: std::net::SocketAddr, has_token: bool) -> bool {
    !addr.ip().is_loopback() && !has_token
}

async fn route(state: &AdminState, req: &mut Request<Incoming>) -> Response<Full<Bytes>> {
    // `/api/config` shows the whole topology: guarded as if it changed state.
    let changes_state = (req.method() != Method::GET && req.method() != Method::HEAD)
        || req.uri().path() == config::PATH;
    let token = token(state, req);
    let header = |name| {
        req.headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    // An absolute-form request line carries the authority in place of Host.
    let host = header(HOST).or_else(|| req.uri().authority().map(|a| a.as_str()));
    if let Err(refusal) = guard::admit(host, header(ORIGIN), changes_state, token) {
        state.refused.count(refusal);
        // Counted, and logged at debug level only: a hostile page could repeat them at will.
        tracing::debug!(method = %req.method(), path = req.uri().path(), host, origin = header(ORIGIN), reason = refusal.reason(), "admin request refused");
        let status = match refusal {
            guard::Refusal::Token => StatusCode::UNAUTHORIZED,
            guard::Refusal::Host | guard::Refusal::Origin => StatusCode::FORBIDDEN,
        };
        return text(status, format!("{refusal}\n"));
    }
    if let Some(rest) = req.uri().path().strip_prefix("/api/register") {
        return register(state, req.method(), rest);
    }
    if req.uri().path() == "/api/log-level" {
        return log_level::serve(req, &state.log_filter).await;
    }
    if req.uri().path() == "/api/reload" {
        return if req.method() == Method::POST {
            reload::serve(state, req.uri().query()).await
        } else {
            text(
                StatusCode::METHOD_NOT_ALLOWED,
                "use POST /api/reload\n".into(),
            )
        };
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET is supported\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => {
            let mut r = text(StatusCode::OK, state.registry.render());
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/ready" => {
            let waiting = api::waiting(state);
            if waiting.is_empty() {
                text(StatusCode::OK, "ready\n".into())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("waiting for first backends: {}\n", waiting.join(", ")),
                )
            }
        }
        config::PATH => config::serve(state),
        "/api/services" => {
            let body = serde_json::to_string_pretty(&api::services(state))
                .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
            let mut r = text(StatusCode::OK, body);
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        "/" => {
            let mut r = text(StatusCode::OK, STATUS_PAGE.into());
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /metrics, /ready or /api/services\n".into(),
        ),
    }
}

/// Whether a token is configured (as of now: a reload may replace it) and the request carries it.
fn token(state: &AdminState, req: &Request<Incoming>) -> guard::Token {
    let Some(token) = state.token.load_full() else {
        return guard::Token::NotConfigured;
    };
    let given = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Compare in constant time so the token cannot be guessed byte by byte.
    let valid = given.is_some_and(|g| {
        g.len() == token.len()
            && g.bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if valid {
        guard::Token::Valid
    } else {
        guard::Token::Missing
    }
}

/// `GET /api/register`, and `POST`/`DELETE /api/register/{service}/maintenance`.
fn register(state: &AdminState, method: &Method, rest: &str) -> Response<Full<Bytes>> {
    let Some(registrar) = state.registrar.as_ref().filter(|r| r.configured()) else {
        return text(
            StatusCode::NOT_FOUND,
            "no services are registered (no register section)\n".into(),
        );
    };
    if rest.is_empty() || rest == "/" {
        let body = serde_json::to_string_pretty(&registrar.view()).unwrap_or_default();
        let mut r = text(StatusCode::OK, body);
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return r;
    }
    let Some(service) = rest
        .strip_prefix('/')
        .and_then(|r| r.strip_suffix("/maintenance"))
    else {
        return text(
            StatusCode::NOT_FOUND,
            "try /api/register or /api/register/SERVICE/maintenance\n".into(),
        );
    };
    let on = match *method {
        Method::POST => true,
        Method::DELETE => false,
        _ => {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "use POST (enter) or DELETE (leave)\n".into(),
            )
        }
    };
    if registrar.set_maintenance(service, on) {
        let what = if on {
            "in maintenance: znode removed"
        } else {
            "out of maintenance"
        };
        tracing::info!(
            service,
            maintenance = on,
            "maintenance changed through the admin API"
        );
        text(StatusCode::OK, format!("{service}: {what}\n"))
    } else {
        text(
            StatusCode::NOT_FOUND,
            format!("no registered service named {service:?}\n"),
        )
    }
}

/// Reloads the config files and reports the outcome. The reload runs as a task of its own, so a
/// request that times out or goes away never leaves it half applied.
async fn reload(state: &AdminState) -> Response<Full<Bytes>> {
    let Some(reloader) = &state.reload else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "reload is not available: sinew was not started from a config file\n".into(),
        );
    };
    let running = tokio::spawn(Arc::clone(reloader).reload());
    match tokio::time::timeout(RELOAD_TIMEOUT, running).await {
        Ok(Ok(Ok(summary))) => text(StatusCode::OK, format!("reloaded: {summary}\n")),
        Ok(Ok(Err(error))) => text(
            StatusCode::BAD_REQUEST,
            format!("reload rejected, running config kept: {error}\n"),
        ),
        _ => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "reload did not complete\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_admin_api_beyond_loopback_without_a_token_is_exposed() {
        let addr = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        assert!(!exposed(addr("127.0.0.1:3210"), false));
        assert!(!exposed(addr("[::1]:3210"), false));
        assert!(exposed(addr("0.0.0.0:3210"), false));
        assert!(exposed(addr("10.1.2.3:3210"), false));
        assert!(!exposed(addr("0.0.0.0:3210"), true));
    }
}
