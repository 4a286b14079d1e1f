//! The agent: builds every service from a validated config, runs them, reloads them, and owns shutdown.
//!
//! Shutdown has two steps, like HAProxy's soft stop: first stop accepting (listeners close, discovery
//! stops), then give open connections up to a grace period before cutting them. A reload applies a new
//! config service by service: unchanged services are not touched, added ones start, removed ones stop
//! accepting and drain, changed ones get a new generation behind the same listener. A handover to a
//! successor process (binary upgrade) is a shutdown that leaves the znodes to the successor; the
//! ZooKeeper sessions close last in both, so registered nodes live through the drain.

mod check;
mod frontend;
mod persist;
mod reload;
mod reload_metrics;
mod service;
mod source;
mod summary;

pub use check::{check, CheckError};
use reload::{infos, Core};
pub use source::{Source, SourceError};
pub use summary::ReloadSummary;

use crate::admin::{self, AdminState};
use crate::balance::Balancer;
use crate::config::Config;
use crate::metrics::Registry;
use crate::register::Registrar;
use crate::upgrade::{Inherited, Listeners, Offer, Owner};
use crate::zk::Sessions;
use arc_swap::ArcSwap;
use service::{AgentHandles, RunningService};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, Mutex};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the agent could not start or reload.
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
    /// A certificate or key could not be loaded.
    #[error(transparent)]
    Tls(#[from] crate::proxy::tls::TlsError),
    /// The upgrade socket could not be created.
    #[error(transparent)]
    Upgrade(#[from] crate::upgrade::UpgradeError),
    /// The new config has no services and does not say that none is meant (a truncated file).
    #[error("reload refused: the new config has no services and would stop every running one ({running}); a config meant to run none says `services: {{}}`")]
    WouldStopEverything {
        /// The running services, comma-separated.
        running: String,
    },
    /// A frontend's router could not be built.
    #[error(transparent)]
    Route(#[from] crate::proxy::RouteError),
    /// Metrics could not be registered (a programming error, reported rather than panicking).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The config files could not be read again.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The `file_output` directory cannot be created.
    #[error(transparent)]
    Persist(#[from] persist::PersistError),
    /// The running and the new config could not be compared.
    #[error(transparent)]
    Diff(#[from] crate::config::diff::DiffError),
    /// The agent was started from a config, not from files it could read again.
    #[error("reload is not available: sinew was not started from a config file")]
    NoSource,
}

/// A running agent.
pub struct Agent {
    /// What a reload reads and changes; shared with the admin server's `POST /api/reload`.
    core: Arc<Core>,
    admin_addr: SocketAddr,
    handover: std::sync::Mutex<Option<oneshot::Receiver<()>>>,
    /// Stops the ZooKeeper sessions, last of all, so that znodes live through the drain.
    sessions_stop: CancellationToken,
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
        Self::start_with(config, None, Inherited::default(), false).await
    }

    /// Like [`Agent::start`], with the files `config` was loaded from (which [`Agent::reload`] and
    /// `POST /api/reload` read again), using the listening sockets in `inherited` (from the process
    /// this one replaces, or from systemd) wherever the config listens on their addresses; the rest are
    /// bound. With `takeover`, the replaced process's upgrade socket is replaced too.
    pub async fn start_with(
        config: Config,
        source: Option<Source>,
        mut inherited: Inherited,
        takeover: bool,
    ) -> Result<Self, AgentError> {
        if let Some(output) = &config.file_output {
            persist::create_directory(output)?;
        }
        let registry = Registry::new();
        crate::metrics::register_build_info(&registry)?;
        crate::metrics::register_runtime_info(&registry)?;
        registry.process()?;
        let balance = Arc::new(crate::balance::BalanceMetrics::register(&registry)?);
        let overrides = Arc::new(crate::balance::overrides::Overrides::register(&registry)?);
        let proxy = Arc::new(crate::proxy::ProxyMetrics::register(&registry)?);
        let frontends = Arc::new(crate::proxy::FrontendMetrics::register(&registry)?);
        let discovery = Arc::new(crate::discovery::DiscoveryMetrics::register(&registry)?);
        let register = Arc::new(crate::register::RegisterMetrics::register(&registry)?);
        let task_metrics = crate::supervise::TaskMetrics::register(&registry)?;
        let handovers = crate::upgrade::HandoverMetrics::register(&registry)?;
        let refused = admin::RefusalMetrics::register(&registry)?;
        let reloads = reload_metrics::ReloadMetrics::register(&registry)?;
        let log_filter = admin::LogFilterMetrics::register(&registry)?;
        let zk = crate::zk::ZkMetrics::register(&registry)?;
        let (sessions_stop, tasks) = (CancellationToken::new(), TaskTracker::new());
        let stop = sessions_stop.child_token();
        let zookeeper = Arc::new(Sessions::new(tasks.clone(), sessions_stop.clone(), zk));
        let shared = AgentHandles {
            registry,
            discovery,
            task_metrics,
            balance,
            overrides,
            proxy,
            frontends,
            stop,
            abort: CancellationToken::new(),
            tasks,
            conns: TaskTracker::new(),
            zookeeper,
            listeners: Listeners::default(),
            handover: Arc::default(),
            initial: Arc::new(std::sync::Mutex::new(
                config
                    .state_file
                    .as_ref()
                    .map(persist::load)
                    .unwrap_or_default(),
            )),
            locality: Arc::new(config.host_locality().ok().flatten().map(Arc::new).into()),
        };
        let mut running = BTreeMap::new();
        for (name, svc) in &config.services {
            match RunningService::start(name, svc, &shared, &mut inherited).await {
                Ok(r) => {
                    running.insert(name.clone(), r);
                }
                Err(e) => {
                    sessions_stop.cancel();
                    return Err(e);
                }
            }
        }
        let mut frontends = BTreeMap::new();
        let started =
            match frontend::bind_new(&frontends, &config.http_frontends, &mut inherited).await {
                Ok(bound) => frontend::apply(
                    &mut frontends,
                    &config.http_frontends,
                    bound,
                    &running,
                    &shared,
                ),
                Err(e) => Err(e),
            };
        if let Err(e) = started {
            sessions_stop.cancel();
            return Err(e);
        }
        let admin_err = |source| AgentError::Bind {
            what: "admin".into(),
            addr: config.admin.listen,
            source,
        };
        let admin_listener = match inherited.listen(Owner::Admin, config.admin.listen).await {
            Ok(l) => Arc::new(l),
            Err(e) => {
                sessions_stop.cancel();
                return Err(admin_err(e));
            }
        };
        let admin_addr = admin_listener.local_addr().map_err(admin_err)?;
        shared
            .listeners
            .insert(Owner::Admin, config.admin.listen, &admin_listener);
        drop(inherited);
        let (handed_tx, handed_rx) = oneshot::channel();
        let mut handover = None;
        if let Some(path) = &config.admin.upgrade_socket {
            match Offer::bind(path, takeover) {
                Ok(offer) => {
                    shared.tasks.spawn(offer.answer_successors(
                        shared.listeners.clone(),
                        handed_tx,
                        handovers,
                        shared.stop.clone(),
                    ));
                    handover = Some(handed_rx);
                }
                Err(e) => {
                    sessions_stop.cancel();
                    return Err(e.into());
                }
            }
        }
        let view = Arc::new(ArcSwap::from_pointee(infos(
            &running,
            &config.http_frontends,
        )));
        let registrar = Arc::new(Registrar::start(
            config.register.as_ref(),
            &shared.zookeeper,
            &register,
            &shared.task_metrics,
        ));
        let admin_token = Arc::new(arc_swap::ArcSwapOption::from(
            config.admin.token.clone().map(Arc::new),
        ));
        if config.state_file.is_some() || config.file_output.is_some() {
            let (s, o) = (config.state_file.clone(), config.file_output.clone());
            shared
                .tasks
                .spawn(persist::run(Arc::clone(&view), s, o, shared.stop.clone()));
        }
        tracing::info!(admin = %admin_addr, services = running.len(), "sinew started");
        let core = Arc::new(Core {
            running: Mutex::new(running),
            frontends: Mutex::new(frontends),
            view,
            shared,
            registrar,
            admin_token,
            admin_fixed: (config.admin.listen, config.admin.upgrade_socket.clone()),
            threads: config.threads,
            grace: std::sync::Mutex::new(config.shutdown_grace),
            source,
            config: Arc::new(ArcSwap::from_pointee(config)),
            reloads,
        });
        let state = Arc::new(AdminState {
            services: Arc::clone(&core.view),
            registry: core.shared.registry.clone(),
            refused,
            reload: core
                .source
                .is_some()
                .then(|| Arc::clone(&core) as Arc<dyn admin::Reload>),
            registrar: Some(Arc::clone(&core.registrar)),
            token: Arc::clone(&core.admin_token),
            history: Arc::default(),
            config: Arc::clone(&core.config),
            log_filter,
        });
        let stop = core.shared.stop.clone();
        core.shared
            .tasks
            .spawn(Arc::clone(&state.history).run(Arc::clone(&core.view), stop.clone()));
        core.shared
            .tasks
            .spawn(admin::accept_loop(admin_listener, state, stop));
        Ok(Self {
            core,
            admin_addr,
            handover: std::sync::Mutex::new(handover),
            sessions_stop,
        })
    }

    /// Reads the config files the agent was started from again and applies them (as SIGHUP and
    /// `POST /api/reload` do); a broken file or a failed bind keeps the running config.
    pub async fn reload(&self) -> Result<ReloadSummary, AgentError> {
        self.core.reload().await
    }

    /// Reads the config files again and validates them as [`Agent::reload`] would, applies nothing, and
    /// returns how they differ from the config in force.
    pub async fn dry_run(&self) -> Result<crate::config::diff::ConfigDiff, AgentError> {
        self.core.dry_run().await
    }

    /// Applies a new config. Listeners of added or moved services are bound first: if one cannot be,
    /// nothing changes and the error is returned. A config without services that does not say
    /// `services: {}` is refused while services run. Admin address changes need a restart.
    pub async fn apply(&self, config: Config) -> Result<ReloadSummary, AgentError> {
        self.core.apply(config).await
    }

    /// The shutdown grace period of the config in force (the last one applied).
    pub fn grace(&self) -> Duration {
        *self.core.grace.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fires when a successor process took the listening sockets over and serves (see [`Agent::hand_over`]);
    /// `None` without `admin.upgrade_socket`. Taken once.
    pub fn take_handover(&self) -> Option<oneshot::Receiver<()>> {
        self.handover
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// The bound address of a service's own listener (none for a service reached through frontends only).
    pub fn service_addr(&self, name: &str) -> Option<SocketAddr> {
        self.core.view.load().get(name).and_then(|s| s.listen)
    }

    /// A service's balancer.
    pub fn balancer(&self, name: &str) -> Option<Arc<Balancer>> {
        self.core
            .view
            .load()
            .get(name)
            .map(|s| Arc::clone(&s.balancer))
    }

    /// The bound address of a shared HTTP frontend's listener.
    pub async fn frontend_addr(&self, name: &str) -> Option<SocketAddr> {
        self.core.frontends.lock().await.get(name).map(|f| f.listen)
    }

    /// The bound address of the admin server.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The registration side (without services when no `register` section is in force).
    pub fn registrar(&self) -> &Arc<Registrar> {
        &self.core.registrar
    }

    /// The agent's metrics registry.
    pub fn metrics(&self) -> &Registry {
        &self.core.shared.registry
    }

    /// Stops accepting, waits up to `grace` for open connections, then cuts the rest.
    pub async fn shutdown(self, grace: Duration) -> ShutdownReport {
        if let Some(drain) = self.core.registrar.shutdown().await {
            tracing::info!(drain = ?drain, "znodes deleted; draining before the listeners close");
            tokio::time::sleep(drain).await;
        }
        tracing::info!(grace = ?grace, "stopping: listeners closed, draining connections");
        let cut = self.drain(grace).await;
        self.finish(cut).await
    }

    /// Steps aside for a successor that took the listening sockets over: stops accepting and drains
    /// like [`Agent::shutdown`], but leaves the znodes to the successor. They stay until it registers the
    /// same instances (which replaces them) or `grace` ends; whatever is left goes with this process's
    /// ZooKeeper session when it exits.
    pub async fn hand_over(self, grace: Duration) -> ShutdownReport {
        tracing::info!(grace = ?grace, "handed over: listeners closed here, draining connections");
        self.core
            .shared
            .handover
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let (cut, replaced) = tokio::join!(self.drain(grace), self.core.registrar.hand_over(grace));
        if !replaced {
            tracing::warn!("the successor did not register every service within the grace period; this process's znodes go with its session");
        }
        self.finish(cut).await
    }

    /// Stops accepting and waits up to `grace` for open connections; true when some had to be cut.
    async fn drain(&self, grace: Duration) -> bool {
        let s = &self.core.shared;
        s.stop.cancel();
        s.tasks.close();
        s.conns.close();
        let cut = tokio::time::timeout(grace, s.conns.wait()).await.is_err();
        if cut {
            tracing::warn!("grace period over: cutting remaining connections");
            s.abort.cancel();
            s.conns.wait().await;
        }
        cut
    }

    /// Closes the ZooKeeper sessions and waits for every background task.
    async fn finish(self, cut: bool) -> ShutdownReport {
        self.sessions_stop.cancel();
        self.core.shared.tasks.wait().await;
        tracing::info!(cut, "stopped");
        ShutdownReport { cut }
    }
}
