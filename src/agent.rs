//! The agent: builds every service from a validated config, runs them, and owns shutdown.
//!
//! Shutdown has two steps, like HAProxy's soft stop: first stop accepting (listeners close, discovery
//! stops), then give open connections up to a grace period before cutting them.

use crate::admin::{self, AdminState, ServiceInfo};
use crate::balance::{checker, Balancer, Fallback, Origin, Policy};
use crate::config::Config;
use crate::discovery::{self, DiscoveryError, SourceContext};
use crate::metrics::Metrics;
use crate::proxy::{self, Lifecycle, ServiceProxy};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A listener could not be bound.
    #[error("{what}: cannot listen on {addr}: {source}")]
    Bind {
        /// `services.NAME` or `admin`.
        what: String,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A discovery source could not start.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// Metrics could not be registered (a programming error, reported rather than panicking).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// A running agent.
pub struct Agent {
    services: BTreeMap<String, ServiceInfo>,
    admin_addr: SocketAddr,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    abort: CancellationToken,
    tasks: TaskTracker,
    conns: TaskTracker,
}

/// How a shutdown went.
#[derive(Debug, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Connections still open when the grace period ended (and were cut).
    pub cut: bool,
}

impl Agent {
    /// Binds every listener, starts discovery and the admin server.
    pub async fn start(config: Config) -> Result<Self, AgentError> {
        let metrics = Arc::new(Metrics::new()?);
        let stop = CancellationToken::new();
        let abort = CancellationToken::new();
        let tasks = TaskTracker::new();
        let conns = TaskTracker::new();
        let mut services = BTreeMap::new();
        let mut listeners = Vec::new();
        for (name, svc) in &config.services {
            let listener =
                TcpListener::bind(svc.listen)
                    .await
                    .map_err(|source| AgentError::Bind {
                        what: format!("services.{name}"),
                        addr: svc.listen,
                        source,
                    })?;
            let listen = listener.local_addr().map_err(|source| AgentError::Bind {
                what: format!("services.{name}"),
                addr: svc.listen,
                source,
            })?;
            let fallback = Fallback {
                defaults: discovery::to_backends(&svc.default_servers, &Origin::Default),
                keep_defaults: svc.keep_default_servers,
                use_previous: svc.use_previous_backends,
            };
            let policy = Policy {
                panic_threshold: svc.panic_threshold,
                slow_start: svc.slow_start,
                max_connections: svc.max_connections,
            };
            let balancer = Arc::new(
                Balancer::new(name, svc.balance, Arc::clone(&metrics))
                    .with_fallback(fallback)
                    .with_policy(policy)
                    .with_outlier(svc.outlier)
                    .with_queue(svc.max_queue, svc.timeouts.queue),
            );
            if svc.health_check.is_some() || svc.outlier.is_some() || !svc.slow_start.is_zero() {
                tasks.spawn(checker::run(
                    Arc::clone(&balancer),
                    svc.health_check.clone(),
                    stop.clone(),
                ));
            }
            let ctx = SourceContext {
                balancer: Arc::clone(&balancer),
                metrics: Arc::clone(&metrics),
                shutdown: stop.clone(),
            };
            discovery::start(svc, ctx, &tasks)?;
            let life = Lifecycle {
                stop: stop.clone(),
                abort: abort.clone(),
                conns: conns.clone(),
            };
            let proxy = Arc::new(ServiceProxy::new(
                Arc::clone(&balancer),
                svc,
                &metrics,
                life,
            ));
            listeners.push((listener, proxy));
            tracing::info!(service = %name, listen = %listen, mode = svc.mode.name(), balance = svc.balance.name(), "service configured");
            services.insert(
                name.clone(),
                ServiceInfo {
                    listen,
                    mode: svc.mode,
                    balancer,
                },
            );
        }
        let admin_listener = TcpListener::bind(config.admin.listen)
            .await
            .map_err(|source| AgentError::Bind {
                what: "admin".into(),
                addr: config.admin.listen,
                source,
            })?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|source| AgentError::Bind {
                what: "admin".into(),
                addr: config.admin.listen,
                source,
            })?;
        for (listener, proxy) in listeners {
            tasks.spawn(proxy::serve(listener, proxy));
        }
        let state = Arc::new(AdminState {
            services: services.clone(),
            metrics: Arc::clone(&metrics),
        });
        tasks.spawn(admin::serve(admin_listener, state, stop.clone()));
        tracing::info!(admin = %admin_addr, services = services.len(), "sinew started");
        Ok(Self {
            services,
            admin_addr,
            metrics,
            stop,
            abort,
            tasks,
            conns,
        })
    }

    /// The bound address of a service's listener.
    pub fn service_addr(&self, name: &str) -> Option<SocketAddr> {
        self.services.get(name).map(|s| s.listen)
    }

    /// A service's balancer.
    pub fn balancer(&self, name: &str) -> Option<Arc<Balancer>> {
        self.services.get(name).map(|s| Arc::clone(&s.balancer))
    }

    /// The bound address of the admin server.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The agent's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Stops accepting, waits up to `grace` for open connections, then cuts the rest.
    pub async fn shutdown(self, grace: Duration) -> ShutdownReport {
        tracing::info!(grace = ?grace, "stopping: listeners closed, draining connections");
        self.stop.cancel();
        self.tasks.close();
        self.conns.close();
        let cut = tokio::time::timeout(grace, self.conns.wait())
            .await
            .is_err();
        if cut {
            tracing::warn!("grace period over: cutting remaining connections");
            self.abort.cancel();
            self.conns.wait().await;
        }
        self.tasks.wait().await;
        tracing::info!(cut, "stopped");
        ShutdownReport { cut }
    }
}
