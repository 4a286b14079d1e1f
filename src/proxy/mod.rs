//! Proxying: local listeners and the forwarding of client connections (TCP) or requests (HTTP) to
//! picked backends.

mod admission;
mod blame;
mod connlog;
mod copy;
mod early;
mod http;
mod io;
mod listener;
mod metrics;
mod peer;
mod red;
pub mod sockmap;
mod tcp;
pub mod tls;
pub(crate) mod unix;
pub mod uring;

pub use http::route::{self, Frontend, FrontendMetrics, RouteError, Router};
/// The HTTP/1 wire parsers, for the fuzz targets and their regression tests only.
#[doc(hidden)]
pub use http::wire;
pub use http::PoolMetrics;
pub use listener::accept_loop;
pub use metrics::{FaultMetrics, HttpMetrics, ProxyMetrics, ServiceMetrics, TlsMetrics};
pub use peer::Peer;
pub use red::{Cause, Recording, ServiceRed};
pub use tls::{ListenTls, UpstreamTls};

use crate::balance::Balancer;
use crate::config::{Mode, Retries, ServiceConfig, TcpFastpath, Timeouts};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the forwarding path of one service needs.
pub struct ServiceProxy {
    /// Picks backends.
    pub balancer: Arc<Balancer>,
    /// The service's client-connection metric children.
    pub metrics: ServiceMetrics,
    /// The service's requests, connections and failures as its clients see them.
    pub red: Arc<ServiceRed>,
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
    /// TCP mode: log each closed client connection (target `sinew::connection`).
    pub connection_log: bool,
    /// The PROXY protocol header written first to every backend (`send_proxy`).
    pub send_proxy: Option<crate::config::SendProxy>,
    /// Read a PROXY protocol header first on every client connection (`accept_proxy`).
    pub accept_proxy: bool,
    /// Some backend connection may start with a PROXY header (the service's `send_proxy`, or a
    /// ZooKeeper backend's `send-proxy` server option), so accepted connections note their local address.
    pub may_send_proxy: bool,
    /// TCP mode: how the bytes move; `tcp_fastpath` as asked, or `copy` where the kernel refused it.
    pub fastpath: TcpFastpath,
    http: Option<Arc<http::HttpProxy>>,
    tls: TlsSetup,
    warnings: crate::ratelog::RateLimited,
    faults: FaultMetrics,
}

/// The path `service`'s bytes take when it asks for `wanted`: that one, or the copy loop where the
/// kernel refuses it (logged). Either way the `sinew_tcp_fastpath` gauge says which.
fn fastpath(service: &str, wanted: TcpFastpath, metrics: &ProxyMetrics) -> TcpFastpath {
    let refused = match wanted {
        TcpFastpath::Copy => None,
        TcpFastpath::Sockmap => sockmap::kernel().err().map(ToString::to_string),
        TcpFastpath::IoUring => uring::engine().err().map(|e| e.to_string()),
    };
    let path = match refused {
        None => wanted,
        Some(error) => {
            tracing::warn!(
                service,
                path = wanted.label(),
                error,
                "tcp_fastpath unavailable (the kernel refused it); the service runs the copy loop"
            );
            TcpFastpath::Copy
        }
    };
    metrics.fastpath(service, path);
    path
}

/// The path an HTTP service's sockets take when it asks for `wanted`: io_uring runs the sockets on the
/// engine of the runtime's own thread, so it needs a one-thread runtime (`threads: 1`); elsewhere, or
/// where the kernel refuses it, they stay on tokio's reactor (logged).
fn http_fastpath(service: &str, wanted: TcpFastpath, metrics: &ProxyMetrics) -> TcpFastpath {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let one_thread =
        Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::CurrentThread);
    if wanted == TcpFastpath::IoUring && !one_thread {
        tracing::warn!(
            service,
            "tcp_fastpath io_uring in mode http needs threads: 1; the service's sockets stay on tokio's reactor"
        );
        metrics.fastpath(service, TcpFastpath::Copy);
        return TcpFastpath::Copy;
    }
    fastpath(service, wanted, metrics)
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
        metrics: &ProxyMetrics,
        life: Lifecycle,
        tls: TlsSetup,
    ) -> Self {
        let faults = metrics.faults(balancer.service());
        let red = metrics.red(balancer.service(), config.mode);
        let service_metrics = metrics.service(balancer.service());
        let http = (config.mode == Mode::Http).then(|| {
            Arc::new(http::HttpProxy::new(
                balancer.service(),
                config,
                metrics,
                tls.upstream.clone(),
            ))
        });
        let fastpath = match config.mode {
            Mode::Tcp => fastpath(balancer.service(), config.tcp_fastpath, metrics),
            Mode::Http => http_fastpath(balancer.service(), config.tcp_fastpath, metrics),
        };
        Self {
            fastpath,
            balancer,
            metrics: service_metrics,
            red,
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
            connection_log: config.connection_log,
            send_proxy: config.send_proxy,
            accept_proxy: config.accept_proxy,
            may_send_proxy: config.send_proxy.is_some()
                || matches!(
                    config.discovery,
                    Some(crate::config::DiscoveryConfig::Zookeeper(_))
                ),
            http,
            tls,
            warnings: crate::ratelog::RateLimited::default(),
            faults,
        }
    }
}

/// A service's TLS, built from its config before anything starts (bad files fail the start or reload).
#[derive(Default)]
pub struct TlsSetup {
    /// Towards the backends.
    pub upstream: Option<Arc<UpstreamTls>>,
    /// On the listener.
    pub listen: Option<Arc<ListenTls>>,
}

impl TlsSetup {
    /// Starts watching the certificate, key and CA files of both sides, until `stop`.
    pub fn watch(&self, service: &str, tasks: &TaskTracker, stop: CancellationToken) {
        if let Some(up) = &self.upstream {
            tasks.spawn(Arc::clone(up.config()).watch(service.to_string(), stop.clone()));
        }
        if let Some(listen) = &self.listen {
            tasks.spawn(Arc::clone(listen.config()).watch(service.to_string(), stop));
        }
    }

    /// Checks that the certificates, keys and CAs a service's config names can be used.
    pub fn check(config: &ServiceConfig) -> Result<(), tls::TlsError> {
        if let Some(t) = &config.tls_upstream {
            tls::client_config(t)?;
        }
        if let Some(l) = &config.tls_listen {
            tls::server_config(l)?;
        }
        Ok(())
    }

    /// Reads the certificates and keys a service's config names.
    pub fn load(
        service: &str,
        config: &ServiceConfig,
        metrics: TlsMetrics,
    ) -> Result<Self, tls::TlsError> {
        metrics.forget_expiry();
        let upstream = match &config.tls_upstream {
            Some(t) => {
                if !t.verify {
                    tracing::warn!(
                        service,
                        "tls_upstream.verify is false: backend certificates are NOT verified"
                    );
                }
                let files = [&t.ca_file, &t.client_cert, &t.client_key]
                    .into_iter()
                    .flatten()
                    .cloned()
                    .collect();
                let cfg = t.clone();
                let reloading = tls::Reloading::load(
                    "upstream",
                    files,
                    metrics.clone(),
                    Box::new(move || tls::client_config(&cfg)),
                )?;
                Some(Arc::new(UpstreamTls::new(
                    reloading,
                    t.server_name.clone(),
                    config.timeouts.connect,
                    metrics.clone(),
                )))
            }
            None => None,
        };
        let listen = match &config.tls_listen {
            Some(l) => {
                let files = [Some(&l.cert), Some(&l.key), l.client_ca.as_ref()]
                    .into_iter()
                    .flatten()
                    .cloned()
                    .collect();
                let cfg = l.clone();
                let reloading = tls::Reloading::load(
                    "listen",
                    files,
                    metrics.clone(),
                    Box::new(move || tls::server_config(&cfg)),
                )?;
                Some(Arc::new(ListenTls::new(reloading, metrics)))
            }
            None => None,
        };
        Ok(Self { upstream, listen })
    }
}
