//! One HTTP request through sinew: clean the head, pick a backend, send, retry what may be retried,
//! answer precisely when nothing works.

use super::access;
use super::answer::{fail, respond};
use super::body::{boxed, full, Progress, ProxyBody, Tracked, UpBody};
use super::errors::LocalReply;
use super::upstream::Failure;
use super::{headers, retry, Client, HttpProxy};
use crate::balance::{Pick, Tries, Unavailable};
use crate::config::SendProxy;
use crate::config::UpstreamProtocol;
use crate::metrics::BackendCause;
use crate::proxy::blame::{blame, Blame, ClientBody, Seen};
use crate::proxy::{Peer, Recording, ServiceProxy};
use crate::proxy_protocol::Header;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Incoming};
use hyper::header::{HeaderValue, HOST};
use hyper::http::request::Parts;
use hyper::{Request, Response, Uri, Version};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The request body as far as retries are concerned.
enum ReqBody {
    /// Small enough to keep: every attempt gets a copy.
    Replayable(Bytes),
    /// Streamed through: only the first attempt can send it; `Progress` says how far the client got.
    Streaming(Option<Incoming>, Arc<Progress>),
}

/// What one attempt sends as the request body.
enum AttemptBody {
    /// The whole body, in memory.
    Bytes(Bytes),
    /// A body streamed from the client, and how far the client got with it.
    Stream(ProxyBody, Arc<Progress>),
}

impl AttemptBody {
    /// As a body for hyper's client.
    fn into_body(self) -> ProxyBody {
        match self {
            Self::Bytes(b) => full(b),
            Self::Stream(s, _) => s,
        }
    }

    /// How far the client got with this body (an in-memory one is whole).
    fn progress(&self) -> Option<Arc<Progress>> {
        match self {
            Self::Bytes(_) => None,
            Self::Stream(_, p) => Some(Arc::clone(p)),
        }
    }
}

/// A response from a backend, with the backend's pick (its in-flight count).
pub(super) struct Exchanged {
    /// The backend's response.
    pub(super) resp: Response<UpBody>,
    /// The backend it came from.
    pub(super) pick: Pick,
    /// When its head came.
    pub(super) at: Instant,
}

/// What one attempt came to. Not boxed: it lives on the stack for one attempt, and a box would be an
/// allocation per request.
#[allow(clippy::large_enum_variant)]
enum Attempt {
    Response(Exchanged),
    Failed(LocalReply),
}

impl Attempt {
    /// What the attempt came to, for the retry decision.
    fn outcome(&self) -> retry::Outcome {
        match self {
            Self::Response(exchanged) => retry::Outcome::Answered(exchanged.resp.status()),
            Self::Failed(failure) => retry::Outcome::Failed(*failure),
        }
    }
}

/// Serves one request from hyper's server.
pub async fn handle(
    mut req: Request<Incoming>,
    proxy: Arc<ServiceProxy>,
    http: &HttpProxy,
    peer: Peer,
) -> Response<ProxyBody> {
    let record = proxy.red.request(Instant::now());
    let _active = http.budget.request();
    let client_upgrade = headers::is_upgrade(&req).then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let body = match prepare(body, http.options.max_retry_body).await {
        Ok(b) => b,
        Err(failure) => {
            let seen = access::Seen::new(peer.addr);
            return fail(&proxy, http, failure, &parts, record, 0, &seen);
        }
    };
    forward(parts, body, client_upgrade, record, proxy, http, peer).await
}

/// Serves one request whose body is in memory, from sinew's own HTTP/1 server path; its first byte
/// came at `started`.
pub async fn handle_buffered(
    parts: Parts,
    body: Bytes,
    started: Instant,
    proxy: Arc<ServiceProxy>,
    http: &HttpProxy,
    peer: Peer,
) -> Response<ProxyBody> {
    let record = proxy.red.request(started);
    let _active = http.budget.request();
    let body = ReqBody::Replayable(body);
    forward(parts, body, None, record, proxy, http, peer).await
}

/// Cleans the head, then sends to backends until an answer worth passing on, or none is left (the
/// caller holds the request's place in the retry budget).
async fn forward(
    mut parts: Parts,
    mut body: ReqBody,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    record: Recording,
    proxy: Arc<ServiceProxy>,
    http: &HttpProxy,
    peer: Peer,
) -> Response<ProxyBody> {
    let upgrade = client_upgrade.is_some();
    // The target's authority (absolute form, or HTTP/2's `:authority`) wins over a `Host` field
    // (RFC 9112 section 3.2.2).
    if let Some(value) = parts
        .uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        parts.headers.insert(HOST, value);
    }
    headers::strip_hop_by_hop(&mut parts.headers, upgrade);
    if http.options.forwarded_headers {
        headers::add_forwarded(&mut parts.headers, peer.addr, &http.options);
    }
    if http.options.via {
        headers::add_via(&mut parts.headers);
    }
    let idempotent = headers::is_idempotent(&parts.method, &parts.headers);

    let key = proxy
        .hashes_client()
        .then(|| hash_key(&proxy, &parts, peer.addr));
    let set = proxy.balancer.current();
    let retries = &proxy.retries;
    let mut tries = Tries::new(retries.attempts);
    let mut last = LocalReply::NoBackend;
    let mut last_response: Option<Exchanged> = None;
    let mut _retry_slot = None;
    let mut seen = access::Seen::new(peer.addr);
    while tries.left() {
        let attempt = tries.made();
        if attempt > 0 {
            match http.budget.try_retry() {
                Some(slot) => _retry_slot = Some(slot),
                None => {
                    http.metrics.budget_exhausted.inc();
                    break;
                }
            }
            tokio::time::sleep(retry::backoff(
                attempt,
                retries.backoff.base,
                retries.backoff.max,
            ))
            .await;
            proxy.metrics.retries.inc();
        }
        // Prefer a backend not tried yet; with none left, HAProxy-style, try again where it failed.
        let queued = Instant::now();
        let picked = tries.pick(&proxy.balancer, &set, key).await;
        // Also when the attempt starts: one clock read for both.
        let picked_at = Instant::now();
        seen.timing.queue += picked_at.saturating_duration_since(queued);
        let pick = match picked {
            Ok(p) => p,
            Err(Unavailable::QueueFull) => {
                last = LocalReply::QueueFull;
                break;
            }
            Err(Unavailable::QueueTimeout) => {
                last = LocalReply::QueueTimeout;
                break;
            }
            // No backend left untried: HAProxy-style, try again where it failed.
            Err(Unavailable::NoBackend) => match (tries.made() == 0, set.pick(&[])) {
                (false, Some(p)) => p,
                _ => break,
            },
        };
        let attempt_body = match &mut body {
            ReqBody::Replayable(bytes) => AttemptBody::Bytes(bytes.clone()),
            ReqBody::Streaming(stream, progress) => match stream.take() {
                Some(s) => AttemptBody::Stream(
                    boxed(Tracked::new(s, Arc::clone(progress))),
                    Arc::clone(progress),
                ),
                None => break,
            },
        };
        tries.record(&pick);
        let request = retry::Request {
            idempotent,
            replayable: matches!(body, ReqBody::Replayable(_)),
            tries_left: tries.left(),
        };
        let header = peer.header_for(proxy.send_proxy, &pick.entry.backend);
        let attempted = send(
            http,
            &proxy,
            &parts,
            attempt_body,
            pick,
            picked_at,
            upgrade,
            idempotent,
            header,
        )
        .await;
        let again = retry::again(attempted.outcome(), request, retries);
        match attempted {
            Attempt::Failed(failure) => last = failure,
            Attempt::Response(exchanged) => {
                seen.timing.head = Some(exchanged.at.saturating_duration_since(record.started()));
                seen.timing.connect = exchanged
                    .resp
                    .extensions()
                    .get()
                    .map(|c: &access::Connected| c.0);
                last_response = Some(exchanged);
            }
        }
        if !again {
            break;
        }
    }
    seen.bytes_in = match &body {
        ReqBody::Replayable(bytes) => bytes.len() as u64,
        ReqBody::Streaming(_, progress) => progress.bytes(),
    };
    // The last response received is passed on, whether or not it was one worth retrying.
    match last_response {
        Some(exchanged) => respond(
            &proxy,
            http,
            exchanged,
            client_upgrade,
            &parts,
            record,
            tries.made(),
            &seen,
        ),
        None => fail(&proxy, http, last, &parts, record, tries.made(), &seen),
    }
}

/// `timeout` after `start`, or far enough away to never come when that is past the clock's range.
fn deadline(start: Instant, timeout: Duration) -> Instant {
    start
        .checked_add(timeout)
        .unwrap_or_else(|| start + Duration::from_secs(FOREVER_SECS))
}

/// About thirty years: a deadline that never comes.
const FOREVER_SECS: u64 = 30 * 365 * 24 * 3600;

/// Reads a small body into memory so it can be replayed; larger or unsized bodies stream.
async fn prepare(body: Incoming, max: usize) -> Result<ReqBody, LocalReply> {
    if body.is_end_stream() {
        return Ok(ReqBody::Replayable(Bytes::new()));
    }
    match body.size_hint().exact() {
        Some(n) if n <= max as u64 => Limited::new(body, max)
            .collect()
            .await
            .map(|c| ReqBody::Replayable(c.to_bytes()))
            .map_err(|_| LocalReply::BadRequestBody),
        _ => Ok(ReqBody::Streaming(Some(body), Arc::default())),
    }
}

/// Sends one attempt to `pick`'s backend (a new connection starts with `header`).
#[allow(clippy::too_many_arguments)]
async fn send(
    http: &HttpProxy,
    proxy: &ServiceProxy,
    parts: &Parts,
    body: AttemptBody,
    pick: Pick,
    sent: Instant,
    upgrade: bool,
    idempotent: bool,
    header: Option<(SendProxy, Header)>,
) -> Attempt {
    let balancer = &proxy.balancer;
    let timeout = proxy.timeouts.request;
    let due = deadline(sent, timeout);
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let progress = body.progress();
    let exchanged = match (&http.client, body) {
        (Client::Http1(upstream), AttemptBody::Bytes(bytes))
            if !upgrade && bytes.len() <= super::h1::MAX_BODY =>
        {
            let exchange = upstream.exchange(proxy, &pick, parts, path, &bytes, idempotent, header);
            tokio::time::timeout_at(due, exchange).await
        }
        (Client::Http1(upstream), body) => {
            let Ok(uri) = Uri::try_from(path) else {
                return Attempt::Failed(LocalReply::BadRequest);
            };
            let req = hyper_request(parts, body, Version::HTTP_11, uri);
            // Boxed here and below: hyper's request state is larger than the own client's, and
            // would otherwise size every request's future (and each client connection's task).
            Box::pin(tokio::time::timeout_at(
                due,
                upstream.send(proxy, &pick, req, header),
            ))
            .await
        }
        // hyper's pooled client dials `host:port` only; refused at load for static backends.
        (Client::Hyper(_), _) if pick.entry.backend.is_unix() => Ok(Err(Failure::connect(
            &std::io::Error::from(crate::proxy::unix::UnixError::Http2),
        ))),
        (Client::Hyper(client), body) => {
            let version = match http.protocol {
                UpstreamProtocol::Http1 => Version::HTTP_11,
                UpstreamProtocol::Http2 => Version::HTTP_2,
            };
            let uri = Uri::builder()
                .scheme("http")
                .authority(pick.entry.key.as_str())
                .path_and_query(path)
                .build();
            let Ok(uri) = uri else {
                return Attempt::Failed(LocalReply::BadRequest);
            };
            let req = hyper_request(parts, body, version, uri);
            Box::pin(tokio::time::timeout_at(due, client.request(req)))
                .await
                .map(|r| {
                    r.map(|resp| resp.map(UpBody::Hyper)).map_err(|e| {
                        if e.is_connect() {
                            Failure::connect(&e)
                        } else {
                            Failure::exchange(e)
                        }
                    })
                })
        }
    };
    let failure = match exchanged {
        Ok(Ok(resp)) => {
            // The backend's time starts when it has the whole request: a client that takes its time
            // sending the body does not make the backend look slow.
            let from = progress
                .as_ref()
                .and_then(|p| p.ended())
                .map_or(sent, |ended| ended.max(sent));
            let at = Instant::now();
            let took = at.saturating_duration_since(from);
            if let Some(stats) = &pick.entry.stats.metrics.http {
                stats.response_seconds.observe(took.as_secs_f64());
                stats.response_class(resp.status().as_u16()).inc();
            }
            pick.entry.rtt.observe(took);
            if resp.status().is_server_error() {
                pick.entry.stats.metrics.error(BackendCause::Http5xx);
            }
            balancer.observe(&pick.entry, !resp.status().is_server_error());
            return Attempt::Response(Exchanged { resp, pick, at });
        }
        Ok(Err(failure)) => failure,
        Err(_) => Failure {
            seen: Seen::ResponseTimeout,
            error: "no response head within timeouts.request".into(),
        },
    };
    let client = progress.map_or(ClientBody::Sent, |p| p.state());
    let service = balancer.service();
    let backend = &pick.entry.key;
    let error = failure.error;
    match blame(failure.seen, client) {
        Blame::Client(fault) => {
            tracing::debug!(service, %backend, error, ?fault, "request failed by the client");
            Attempt::Failed(LocalReply::of_client(fault))
        }
        Blame::Local(resource) => {
            proxy.faults.local_error(resource.label());
            if let Some(suppressed) = proxy.warnings.allow() {
                tracing::warn!(service, %backend, error, suppressed, "cannot connect to a backend: out of a local resource; the backend is not charged");
            }
            Attempt::Failed(LocalReply::LocalLimit)
        }
        Blame::Backend => {
            balancer.observe(&pick.entry, false);
            let stats = &pick.entry.stats.metrics;
            stats.error(match failure.seen {
                Seen::ConnectFailed(_) => BackendCause::ConnectFailure,
                Seen::ConnectTimeout => BackendCause::ConnectTimeout,
                Seen::ExchangeFailed => BackendCause::Reset,
                Seen::ResponseTimeout => BackendCause::Timeout,
            });
            match failure.seen {
                Seen::ResponseTimeout => {
                    pick.entry.rtt.observe(timeout);
                    Attempt::Failed(LocalReply::Timeout)
                }
                Seen::ConnectFailed(_) | Seen::ConnectTimeout => {
                    stats.connect_failures.inc();
                    tracing::debug!(service, %backend, error, "connect failed");
                    Attempt::Failed(LocalReply::ConnectFailure)
                }
                Seen::ExchangeFailed => {
                    tracing::debug!(service, %backend, error, "request failed");
                    Attempt::Failed(LocalReply::Reset)
                }
            }
        }
    }
}

/// A request for hyper's client: the method and headers of `parts`, with `body`, `version` and `uri`.
fn hyper_request(
    parts: &Parts,
    body: AttemptBody,
    version: Version,
    uri: Uri,
) -> Request<ProxyBody> {
    let mut req = Request::new(body.into_body());
    *req.method_mut() = parts.method.clone();
    *req.headers_mut() = parts.headers.clone();
    *req.version_mut() = version;
    *req.uri_mut() = uri;
    req
}

/// The hash key of a request: `hash_header`'s value when configured and present, else the client address.
fn hash_key(proxy: &ServiceProxy, parts: &Parts, peer: SocketAddr) -> u64 {
    let header = proxy
        .hash_header
        .as_ref()
        .and_then(|h| parts.headers.get(h));
    match header {
        Some(value) => crate::balance::hash::hash(value.as_bytes()),
        None => crate::balance::hash::hash(peer.ip().to_string().as_bytes()),
    }
}
