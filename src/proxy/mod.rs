//! Proxying: local listeners and the forwarding of client connections (TCP) or requests (HTTP) to
//! picked backends.

mod http;
mod io;
mod listener;
mod ratelog;
mod tcp;
pub mod tls;
mod tls_reload;

pub use http::PoolMetrics;
pub use listener::serve;

use crate::balance::Balancer;
use crate::config::{Mode, Retries, ServiceConfig, Timeouts};
use crate::metrics::Metrics;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the forwarding path of one service needs.
pub struct ServiceProxy {
    /// Picks backends.
    pub balancer: Arc<Balancer>,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Retry policy.
    pub retries: Retries,
    /// Most client connections open at once.
    pub max_clients: Option<u32>,
    /// `balance: hash` in HTTP mode: the header hashed instead of the client address.
    pub hash_header: Option<hyper::header::HeaderName>,
    /// Cancelled when the agent stops accepting: HTTP connections finish their request and close.
    pub stop: CancellationToken,
    /// Cancelled when open connections must be cut (shutdown grace period over).
    pub abort: CancellationToken,
    /// Every connection task of the agent, waited for on shutdown.
    pub conns: TaskTracker,
    /// Set before `stop` when a successor took the listeners over: idle HTTP keep-alive connections
    /// then wait for their next request and answer it with `Connection: close` instead of closing.
    pub handover: Arc<AtomicBool>,
    http: Option<Arc<http::HttpProxy>>,
    tls: TlsSetup,
    warnings: ratelog::RateLimited,
}

/// The agent's shutdown handles, shared by every service.
#[derive(Clone)]
pub struct Lifecycle {
    /// Cancelled when the agent stops accepting.
    pub stop: CancellationToken,
    /// Cancelled when open connections must be cut.
    pub abort: CancellationToken,
    /// Tracks connection tasks.
    pub conns: TaskTracker,
    /// Set when the agent hands over to a successor process (before `stop`).
    pub handover: Arc<AtomicBool>,
}

impl ServiceProxy {
    /// True when picks need a hash key (`balance: hash`).
    pub fn hashes_client(&self) -> bool {
        self.balancer.algorithm() == crate::config::Algorithm::Hash
    }

    /// Builds the forwarding path of a service.
    pub fn new(
        balancer: Arc<Balancer>,
        config: &ServiceConfig,
        metrics: &Metrics,
        life: Lifecycle,
        tls: TlsSetup,
    ) -> Self {
        let http = (config.mode == Mode::Http).then(|| {
            Arc::new(http::HttpProxy::new(
                balancer.service(),
                config,
                metrics,
                tls.upstream.clone(),
            ))
        });
        Self {
            balancer,
            timeouts: config.timeouts,
            retries: config.retries.clone(),
            max_clients: config.max_client_connections,
            hash_header: config
                .hash_header
                .as_deref()
                .and_then(|h| hyper::header::HeaderName::from_bytes(h.as_bytes()).ok()),
            stop: life.stop,
            abort: life.abort,
            conns: life.conns,
            handover: life.handover,
            http,
            tls,
            warnings: ratelog::RateLimited::default(),
        }
    }
}

/// A service's TLS, built from its config before anything starts (bad files fail the start or reload).
#[derive(Default)]
pub struct TlsSetup {
    /// Towards the backends.
    pub upstream: Option<(tokio_rustls::TlsConnector, crate::config::TlsUpstream)>,
    /// On the listener.
    pub listen: Option<tokio_rustls::TlsAcceptor>,
    /// The listener's certificate, reloaded when its files change.
    pub listen_cert: Option<Arc<tls_reload::ReloadingCert>>,
}

impl TlsSetup {
    /// Starts watching the listener certificate's files, until `stop`.
    pub fn watch(
        &self,
        service: &str,
        failures: prometheus::IntCounter,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) {
        if let Some(cert) = &self.listen_cert {
            tasks.spawn(Arc::clone(cert).watch(service.to_string(), failures, stop));
        }
    }

    /// Reads the certificates and keys a service's config names.
    pub fn load(service: &str, config: &ServiceConfig) -> Result<Self, tls::TlsError> {
        let upstream = match &config.tls_upstream {
            Some(t) => {
                if !t.verify {
                    tracing::warn!(
                        service,
                        "tls_upstream.verify is false: backend certificates are NOT verified"
                    );
                }
                Some((
                    tokio_rustls::TlsConnector::from(tls::client_config(t)?),
                    t.clone(),
                ))
            }
            None => None,
        };
        let (listen, listen_cert) = match &config.tls_listen {
            Some(l) => {
                let cert = tls_reload::ReloadingCert::load(l.cert.clone(), l.key.clone())?;
                let acceptor =
                    tokio_rustls::TlsAcceptor::from(tls::server_config(l, Arc::clone(&cert))?);
                (Some(acceptor), Some(cert))
            }
            None => (None, None),
        };
        Ok(Self {
            upstream,
            listen,
            listen_cert,
        })
    }
}
