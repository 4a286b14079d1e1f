//! The agent: builds every service from a validated config, runs them, reloads them, and owns shutdown.
//!
//! Shutdown has two steps, like HAProxy's soft stop: first stop accepting (listeners close, discovery
//! stops), then give open connections up to a grace period before cutting them. A reload applies a new
//! config service by service: unchanged services are not touched, added ones start, removed ones stop
//! accepting and drain, changed ones get a new generation behind the same listener. A handover to a
//! successor process (binary upgrade) is a shutdown that leaves the znodes to the successor; the
//! ZooKeeper sessions close last in both, so registered nodes live through the drain.

mod persist;
mod service;
mod source;

pub use source::{Source, SourceError};

use crate::admin::{self, AdminState, ServiceInfo};
use crate::balance::Balancer;
use crate::config::Config;
use crate::metrics::Registry;
use crate::register::{RegisterChanges, Registrar};
use crate::upgrade::{Inherited, Listeners, Offer, Owner};
use crate::zk::Sessions;
use arc_swap::ArcSwap;
use service::{AgentHandles, RunningService};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
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
    /// Metrics could not be registered (a programming error, reported rather than panicking).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The config files could not be read again.
    #[error(transparent)]
    Source(#[from] SourceError),
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

/// The running services and the settings a reload may replace.
struct Core {
    running: Mutex<BTreeMap<String, RunningService>>,
    view: Arc<ArcSwap<BTreeMap<String, ServiceInfo>>>,
    shared: AgentHandles,
    registrar: Arc<Registrar>,
    /// The admin server's token, which a reload replaces.
    admin_token: Arc<arc_swap::ArcSwapOption<String>>,
    /// The admin settings that only a restart changes: listen address and upgrade socket.
    admin_fixed: (SocketAddr, Option<std::path::PathBuf>),
    /// The files [`Agent::reload`] reads again, when the agent was started from files.
    source: Option<Source>,
    /// The shutdown grace period of the config in force.
    grace: std::sync::Mutex<Duration>,
}

/// How a shutdown went.
#[derive(Debug, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Connections still open when the grace period ended (and were cut).
    pub cut: bool,
}

/// What a reload changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Services started.
    pub added: Vec<String>,
    /// Services stopped.
    pub removed: Vec<String>,
    /// Services given a new generation.
    pub changed: Vec<String>,
    /// Services left alone.
    pub unchanged: usize,
    /// What changed on the registration side.
    pub registration: RegisterChanges,
    /// `admin.token` was set, replaced or removed.
    pub token_changed: bool,
}

impl std::fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "added [{}], removed [{}], changed [{}], {} unchanged",
            self.added.join(", "),
            self.removed.join(", "),
            self.changed.join(", "),
            self.unchanged
        )?;
        if self.token_changed {
            write!(f, "; admin.token replaced")?;
        }
        let r = &self.registration;
        if r != &RegisterChanges::default() {
            write!(
                f,
                "; registration: added [{}], removed [{}], changed [{}], {} unchanged",
                r.added.join(", "),
                r.removed.join(", "),
                r.changed.join(", "),
                r.unchanged
            )?;
        }
        Ok(())
    }
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
        let registry = Registry::new();
        crate::metrics::register_build_info(&registry)?;
        let balance = Arc::new(crate::balance::BalanceMetrics::register(&registry)?);
        let proxy = Arc::new(crate::proxy::ProxyMetrics::register(&registry)?);
        let discovery = Arc::new(crate::discovery::DiscoveryMetrics::register(&registry)?);
        let register = Arc::new(crate::register::RegisterMetrics::register(&registry)?);
        let task_metrics = crate::supervise::TaskMetrics::register(&registry)?;
        let handovers = crate::upgrade::HandoverMetrics::register(&registry)?;
        let refused = admin::RefusalMetrics::register(&registry)?;
        let zk = crate::zk::ZkMetrics::register(&registry)?;
        let (sessions_stop, tasks) = (CancellationToken::new(), TaskTracker::new());
        let stop = sessions_stop.child_token();
        let zookeeper = Arc::new(Sessions::new(tasks.clone(), sessions_stop.clone(), zk));
        let shared = AgentHandles {
            registry,
            discovery,
            task_metrics,
            balance,
            proxy,
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
                    shared.tasks.spawn(offer.serve(
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
        let view = Arc::new(ArcSwap::from_pointee(infos(&running)));
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
            view,
            shared,
            registrar,
            admin_token,
            admin_fixed: (config.admin.listen, config.admin.upgrade_socket.clone()),
            grace: std::sync::Mutex::new(config.shutdown_grace),
            source,
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
        });
        let stop = core.shared.stop.clone();
        core.shared
            .tasks
            .spawn(admin::serve(admin_listener, state, stop));
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

    /// The bound address of a service's listener.
    pub fn service_addr(&self, name: &str) -> Option<SocketAddr> {
        self.core.view.load().get(name).map(|s| s.listen)
    }

    /// A service's balancer.
    pub fn balancer(&self, name: &str) -> Option<Arc<Balancer>> {
        self.core
            .view
            .load()
            .get(name)
            .map(|s| Arc::clone(&s.balancer))
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

impl Core {
    /// See [`Agent::reload`].
    async fn reload(&self) -> Result<ReloadSummary, AgentError> {
        let Some(source) = &self.source else {
            return Err(AgentError::NoSource);
        };
        let loaded = source.load();
        // Parsing peaks at tens of times the file's size; give that back now rather than keep it.
        crate::memory::release_freed();
        let config = loaded.inspect_err(
            |e| tracing::error!(error = %e, "reload rejected; the running config stays"),
        )?;
        self.apply(config)
            .await
            .inspect_err(|e| tracing::error!(error = %e, "reload failed; the running config stays"))
    }

    /// See [`Agent::apply`].
    async fn apply(&self, config: Config) -> Result<ReloadSummary, AgentError> {
        let mut running = self.running.lock().await;
        if config.services.is_empty() && !config.services_explicit && !running.is_empty() {
            let names: Vec<&str> = running.keys().map(String::as_str).collect();
            return Err(AgentError::WouldStopEverything {
                running: names.join(", "),
            });
        }
        let mut summary = ReloadSummary::default();
        // Certificates and keys are checked for every service first, so a bad file rejects the whole reload.
        for svc in config.services.values() {
            crate::proxy::TlsSetup::check(svc)?;
        }
        // Start what is new (or moved to another address) before touching anything that runs.
        let mut started = BTreeMap::new();
        for (name, svc) in &config.services {
            // The same listener when the address is unchanged, or names the port an ephemeral one got.
            let moved = running
                .get(name)
                .is_some_and(|r| r.config.listen != svc.listen && r.info.listen != svc.listen);
            if running.contains_key(name) && !moved {
                continue;
            }
            // A service that stops or moves away in this reload hands its socket over (a rename, a swap).
            let vacated = running
                .iter()
                .find(|(n, r)| r.vacates(config.services.get(*n), svc.listen));
            let result = match vacated {
                Some((_, from)) => RunningService::start_handed(name, svc, &self.shared, from),
                None => {
                    RunningService::start(name, svc, &self.shared, &mut Inherited::default()).await
                }
            };
            match result {
                Ok(r) => {
                    started.insert(name.clone(), r);
                }
                Err(e) => {
                    for (n, r) in &started {
                        r.stop(n);
                    }
                    return Err(e);
                }
            }
        }
        running.retain(|name, r| {
            let keep = config.services.contains_key(name) && !started.contains_key(name);
            if !keep {
                r.stop(name);
                if !config.services.contains_key(name) {
                    self.shared.registry.forget_service(name);
                    summary.removed.push(name.clone());
                }
            }
            keep
        });
        for (name, svc) in &config.services {
            if let Some(r) = running.get_mut(name) {
                if r.config == *svc {
                    summary.unchanged += 1;
                } else {
                    r.change(name, svc, &self.shared)?;
                    summary.changed.push(name.clone());
                }
            }
        }
        for (name, r) in started {
            summary.added.push(name.clone());
            running.insert(name, r);
        }
        self.view.store(Arc::new(infos(&running)));
        summary.token_changed = self.apply_admin(&config.admin);
        summary.registration = self.registrar.reload(config.register.as_ref()).await;
        *self.grace.lock().unwrap_or_else(|p| p.into_inner()) = config.shutdown_grace;
        tracing::info!(%summary, "config reloaded");
        Ok(summary)
    }

    /// Applies a reloaded `admin` section: a new token takes effect at once (the old one is refused from
    /// the next request); a new address or upgrade socket waits for a restart, and says so. True when
    /// the token changed.
    fn apply_admin(&self, admin: &crate::config::AdminConfig) -> bool {
        if (admin.listen, admin.upgrade_socket.clone()) != self.admin_fixed {
            tracing::warn!(listen = %admin.listen, "admin.listen and admin.upgrade_socket change only at a restart; the admin server keeps its current ones");
        }
        let old = self.admin_token.load_full();
        if old.as_deref() == admin.token.as_ref() {
            return false;
        }
        self.admin_token.store(admin.token.clone().map(Arc::new));
        match (&old, &admin.token) {
            (_, None) => tracing::warn!(
                "admin.token removed: state-changing admin endpoints no longer need a token"
            ),
            (None, Some(_)) => tracing::info!(
                "admin.token set: state-changing admin endpoints need it from now on"
            ),
            (Some(_), Some(_)) => {
                tracing::info!("admin.token replaced: the old token is refused from now on")
            }
        }
        true
    }
}

impl admin::Reload for Core {
    fn reload(
        self: Arc<Self>,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'static>> {
        Box::pin(async move {
            Core::reload(&self)
                .await
                .map(|summary| summary.to_string())
                .map_err(|e| e.to_string())
        })
    }
}

fn infos(running: &BTreeMap<String, RunningService>) -> BTreeMap<String, ServiceInfo> {
    running
        .iter()
        .map(|(n, r)| (n.clone(), r.info.clone()))
        .collect()
}
