//! The HTTP/1 upstream pool of a service that speaks HTTP/1.1 to its backends: idle keep-alive
//! connections by backend, each lent to one request at a time ([`Lease`]) and taken back once the
//! response has been read to its end, so no request needs a task of its own to wait until its
//! connection can be reused (as hyper-util's generic client spawns one per request).
//!
//! A request whose body is in memory is written, and its response read, by sinew's own HTTP/1 client
//! ([`super::h1`]) in the request's task; one that streams its body, or asks for an upgrade, is handed
//! with its connection to hyper's client, and that connection is not pooled again. A request that
//! finds an idle connection closed by the backend (the race every keep-alive pool has) is sent on
//! another one, or a new one, without counting as an attempt, when the backend cannot have acted on
//! it.
//!
//! With a PROXY header due to a backend (`send_proxy`), its connections are pooled per client
//! connection (the key holds the client's and the listener's address): a connection whose header named
//! one client never carries another client's request.

use super::access::Connected;
use super::body::{ProxyBody, UpBody};
use super::h1::{Conn, ResponseBody};
use super::pool::{Counted, PoolMetrics};
use crate::balance::Pick;
use crate::config::SendProxy;
use crate::proxy::blame::{os_error, Seen};
use crate::proxy::ServiceProxy;
use crate::proxy_protocol::Header;
use bytes::Bytes;
use hyper::client::conn::http1;
use hyper::http::request::Parts;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::time::Instant;

/// Why an exchange with a backend failed: what was seen, and the error to log.
#[derive(Debug)]
pub struct Failure {
    /// What went wrong, for [`crate::proxy::blame::blame`].
    pub seen: Seen,
    /// The error, for the log.
    pub error: String,
}

impl Failure {
    /// No connection could be made (refused, unreachable, out of descriptors, TLS handshake failed).
    pub fn connect(e: &(dyn std::error::Error + 'static)) -> Self {
        Self {
            seen: Seen::ConnectFailed(os_error(e)),
            error: e.to_string(),
        }
    }

    /// The connection failed after the request was sent, or before a response came.
    pub fn exchange(error: impl ToString) -> Self {
        Self {
            seen: Seen::ExchangeFailed,
            error: error.to_string(),
        }
    }
}

/// Idle connections of one service, by backend.
pub struct Upstream {
    idle: Mutex<IdleSet>,
    /// Most idle connections kept per backend.
    max_idle: usize,
    /// Idle connections older than this are closed.
    idle_timeout: Duration,
    metrics: PoolMetrics,
}

/// The idle connections, and whether a task is closing the expired ones (only while there are any, so
/// a service without idle connections costs no wake-ups).
#[derive(Default)]
struct IdleSet {
    /// By pool key; each list keeps its key too, so a lease shares it rather than allocating a copy.
    by_backend: HashMap<Arc<str>, (Arc<str>, Vec<Idle>)>,
    sweeping: bool,
}

/// A connection waiting for its next request.
struct Idle {
    conn: Conn,
    since: Instant,
}

/// A connection lent to one request: [`Lease::release`] gives it back to the pool; dropped
/// otherwise, it is closed.
pub struct Lease {
    conn: Conn,
    backend: Arc<str>,
    pool: Weak<Upstream>,
    /// Taken from the idle connections (not opened for this request).
    reused: bool,
}

impl Lease {
    /// Returns the connection to the pool.
    pub fn release(mut self) {
        if let Some(pool) = self.pool.upgrade() {
            self.conn.rest();
            pool.check_in(self.backend, self.conn);
        }
    }

    /// The connection.
    pub fn conn(&self) -> &Conn {
        &self.conn
    }

    /// The connection, to read from.
    pub fn conn_mut(&mut self) -> &mut Conn {
        &mut self.conn
    }
}

impl Upstream {
    /// An empty pool keeping up to `max_idle` connections per backend for up to `idle_timeout`.
    pub fn new(max_idle: usize, idle_timeout: Duration, metrics: PoolMetrics) -> Arc<Self> {
        Arc::new(Self {
            idle: Mutex::new(IdleSet::default()),
            max_idle,
            idle_timeout,
            metrics,
        })
    }

    /// Sends a request with an in-memory `body` to `pick`'s backend with sinew's own HTTP/1 client,
    /// on an idle connection or a new one (opened with `header` first); the response's body gives the
    /// connection back at its end.
    #[allow(clippy::too_many_arguments)]
    pub async fn exchange(
        self: &Arc<Self>,
        proxy: &ServiceProxy,
        pick: &Pick,
        parts: &Parts,
        path: &str,
        body: &Bytes,
        idempotent: bool,
        header: Option<(SendProxy, Header)>,
    ) -> Result<Response<UpBody>, Failure> {
        let key = pool_key(&pick.entry.key, header);
        let backend = key.as_ref();
        // After a stale idle connection, the request goes out once more, on a new connection.
        let mut fresh = false;
        loop {
            let idle = if fresh { None } else { self.check_out(backend) };
            let mut connected = None;
            let mut lease = match idle {
                Some(lease) => lease,
                // Boxed: connecting is rare next to reusing, and its state would otherwise make every
                // waiting request's future (and each idle client connection's task) larger.
                None => {
                    let opening = Instant::now();
                    let lease = Box::pin(self.open(proxy, pick, backend, header)).await?;
                    connected = Some(Connected(opening.elapsed()));
                    lease
                }
            };
            match lease.conn.exchange(parts, path, body).await {
                Ok(head) => {
                    let mut resp = Response::new(UpBody::Own(ResponseBody::new(
                        head.framing,
                        head.keep_alive,
                        lease,
                    )));
                    *resp.status_mut() = head.status;
                    *resp.headers_mut() = head.headers;
                    if let Some(connected) = connected {
                        resp.extensions_mut().insert(connected);
                    }
                    return Ok(resp);
                }
                Err(e) if lease.reused && e.is_stale(idempotent, lease.conn.is_tls()) => {
                    tracing::debug!(backend, error = %e, "idle connection had closed; resending");
                    fresh = true;
                }
                Err(e) => return Err(Failure::exchange(e)),
            }
        }
    }

    /// Sends `req` (a streamed body, or an upgrade) to `pick`'s backend with hyper's HTTP/1 client, on an
    /// idle connection or a new one (opened with `header` first), which is not pooled again.
    pub async fn send(
        self: &Arc<Self>,
        proxy: &ServiceProxy,
        pick: &Pick,
        mut req: Request<ProxyBody>,
        header: Option<(SendProxy, Header)>,
    ) -> Result<Response<UpBody>, Failure> {
        let key = pool_key(&pick.entry.key, header);
        let backend = key.as_ref();
        loop {
            let opening = Instant::now();
            let lease = match self.check_out(backend) {
                Some(lease) => lease,
                None => self.open(proxy, pick, backend, header).await?,
            };
            let connected = (!lease.reused).then(|| Connected(opening.elapsed()));
            let reused = lease.reused;
            let Some(io) = lease.conn.into_io() else {
                continue;
            };
            let (mut sender, conn) = http1::Builder::new()
                .handshake(TokioIo::new(io))
                .await
                .map_err(Failure::exchange)?;
            let key = pick.entry.key.clone();
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(backend = %key, error = %e, "backend connection ended with error");
                }
            });
            match sender.try_send_request(req).await {
                Ok(mut resp) => {
                    if let Some(connected) = connected {
                        resp.extensions_mut().insert(connected);
                    }
                    return Ok(resp.map(UpBody::Hyper));
                }
                Err(mut e) => match e.take_message() {
                    // Never written: the idle connection had closed. Another one takes it.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(Failure::exchange(e.into_error())),
                },
            }
        }
    }

    /// The most recently used idle connection to `backend` that is still open.
    fn check_out(self: &Arc<Self>, backend: &str) -> Option<Lease> {
        loop {
            let (key, mut idle) = {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                let (key, list) = idle.by_backend.get_mut(backend)?;
                (Arc::clone(key), list.pop()?)
            };
            if idle.since.elapsed() > self.idle_timeout || !idle.conn.is_usable() {
                continue;
            }
            return Some(Lease {
                conn: idle.conn,
                backend: key,
                pool: Arc::downgrade(self),
                reused: true,
            });
        }
    }

    /// Opens a connection to `pick`'s backend (TLS when the service originates it, `header` first),
    /// pooled under `key`.
    async fn open(
        self: &Arc<Self>,
        proxy: &ServiceProxy,
        pick: &Pick,
        key: &str,
        header: Option<(SendProxy, Header)>,
    ) -> Result<Lease, Failure> {
        let entry = &pick.entry;
        let dialing = crate::proxy::tcp::dial(proxy, &entry.target, &entry.backend.host, header);
        let stream = match tokio::time::timeout(proxy.timeouts.connect, dialing).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(Failure::connect(&e)),
            Err(_) => {
                return Err(Failure {
                    seen: Seen::ConnectTimeout,
                    error: "connect timeout".into(),
                })
            }
        };
        // On this thread's io_uring engine when the service asks for it (plain sockets only).
        let stream = match crate::proxy::uring::local_for(proxy.fastpath) {
            Some(engine) if crate::proxy::tcp::is_socket(&*stream) => {
                let fd = crate::proxy::tcp::socket(stream).map_err(|e| Failure::connect(&e))?;
                Box::new(engine.stream(fd)) as Box<dyn crate::proxy::tcp::Io>
            }
            _ => stream,
        };
        let labels = [self.metrics.service.as_str(), entry.key.as_str()];
        self.metrics.opened.with_label_values(&labels).inc();
        let open = self.metrics.open.with_label_values(&labels);
        Ok(Lease {
            conn: Conn::new(Counted::new(stream, open), proxy.tls.upstream.is_some()),
            backend: Arc::from(key),
            pool: Arc::downgrade(self),
            reused: false,
        })
    }

    /// Keeps `conn` as an idle connection of `backend`, unless the backend has enough idle ones
    /// already; starts the sweeping task if none runs.
    fn check_in(self: &Arc<Self>, backend: Arc<str>, conn: Conn) {
        if self.max_idle == 0 {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let (_, list) = idle
            .by_backend
            .entry(Arc::clone(&backend))
            .or_insert_with(|| (backend, Vec::new()));
        if list.len() < self.max_idle {
            list.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
        if !idle.sweeping {
            idle.sweeping = true;
            tokio::spawn(sweep(Arc::downgrade(self)));
        }
    }

    /// Closes idle connections that have expired or closed; false once none is left.
    fn sweep_once(&self) -> bool {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.by_backend.retain(|_, (_, list)| {
            list.retain_mut(|i| i.since.elapsed() <= self.idle_timeout && i.conn.is_usable());
            !list.is_empty()
        });
        idle.sweeping = !idle.by_backend.is_empty();
        idle.sweeping
    }
}

/// The pool key of connections to `backend`: the backend, and with a PROXY header naming a client,
/// that client's connection too.
fn pool_key(backend: &str, header: Option<(SendProxy, Header)>) -> Cow<'_, str> {
    match header {
        Some((_, Header::Proxy(a))) => {
            Cow::Owned(format!("{backend} {} {}", a.source, a.destination))
        }
        _ => Cow::Borrowed(backend),
    }
}

/// Closes expired idle connections every half `idle_timeout` while the pool lives and has any.
async fn sweep(pool: Weak<Upstream>) {
    let Some(every) = pool
        .upgrade()
        .map(|p| (p.idle_timeout / 2).max(Duration::from_millis(100)))
    else {
        return;
    };
    loop {
        tokio::time::sleep(every).await;
        match pool.upgrade() {
            Some(pool) if pool.sweep_once() => {}
            _ => return,
        }
    }
}
