//! Reloading: the running services and the settings a reload may replace, and how a new config is
//! applied to them service by service.

use super::frontend::{self, RunningFrontend};
use super::reload_metrics::{Mode, ReloadMetrics};
use super::service::{self, AgentHandles, RunningService};
use super::{AgentError, ReloadSummary, Source};
use crate::admin::{self, ServiceInfo};
use crate::config::diff::{self, ConfigDiff};
use crate::config::{Config, HttpFrontend, ServiceConfig};
use crate::register::Registrar;
use crate::upgrade::Inherited;
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// The running services and the settings a reload may replace.
pub(super) struct Core {
    pub(super) running: Mutex<BTreeMap<String, RunningService>>,
    /// The shared HTTP frontends, locked after `running`.
    pub(super) frontends: Mutex<BTreeMap<String, RunningFrontend>>,
    pub(super) view: Arc<ArcSwap<BTreeMap<String, ServiceInfo>>>,
    pub(super) shared: AgentHandles,
    pub(super) registrar: Arc<Registrar>,
    /// The admin server's token, which a reload replaces.
    pub(super) admin_token: Arc<arc_swap::ArcSwapOption<String>>,
    /// The admin settings that only a restart changes: listen address and upgrade socket.
    pub(super) admin_fixed: (SocketAddr, Option<std::path::PathBuf>),
    /// The runtime worker threads the process started with (`threads`), which only a restart changes.
    pub(super) threads: Option<std::num::NonZeroUsize>,
    /// The files [`Agent::reload`] reads again, when the agent was started from files.
    pub(super) source: Option<Source>,
    /// Reloads and dry runs, counted.
    pub(super) reloads: ReloadMetrics,
    /// The config in force: the last one applied.
    pub(super) config: Arc<ArcSwap<Config>>,
    /// The shutdown grace period of the config in force.
    pub(super) grace: std::sync::Mutex<Duration>,
}

impl Core {
    /// See [`Agent::reload`].
    pub(super) async fn reload(&self) -> Result<ReloadSummary, AgentError> {
        let Some(source) = &self.source else {
            return Err(AgentError::NoSource);
        };
        let loaded = source.load();
        // Parsing peaks at tens of times the file's size; give that back now rather than keep it.
        crate::memory::release_freed();
        let config = loaded.inspect_err(|e| {
            self.reloads.count(Mode::Reload, false);
            tracing::error!(error = %e, "reload rejected; the running config stays")
        })?;
        let applied = self.apply(config).await;
        self.reloads.count(Mode::Reload, applied.is_ok());
        applied
            .inspect_err(|e| tracing::error!(error = %e, "reload failed; the running config stays"))
    }

    /// See [`Agent::dry_run`].
    pub(super) async fn dry_run(&self) -> Result<ConfigDiff, AgentError> {
        let Some(source) = &self.source else {
            return Err(AgentError::NoSource);
        };
        let loaded = source.load();
        crate::memory::release_freed();
        let checked = match loaded {
            Ok(config) => admissible(&config, &*self.running.lock().await).map(|()| config),
            Err(e) => Err(e.into()),
        };
        self.reloads.count(Mode::DryRun, checked.is_ok());
        Ok(diff::diff(&self.config.load(), &checked?)?)
    }

    /// See [`Agent::apply`].
    pub(super) async fn apply(&self, config: Config) -> Result<ReloadSummary, AgentError> {
        let mut running = self.running.lock().await;
        admissible(&config, &running)?;
        // Computed before anything changes, logged once the new config is in force.
        let changes = diff::diff(&self.config.load(), &config);
        // A new host locality rebuilds every service routing by it.
        let host = config.host_locality().ok().flatten();
        let moved = self.config.load().host_locality().ok().flatten() != host;
        self.shared.locality.store(host.map(Arc::new));
        let mut summary = ReloadSummary::default();
        // Start what is new (or moved to another address), and bind the listeners services gain, before
        // touching anything that runs.
        let mut started = BTreeMap::new();
        let mut gained = BTreeMap::new();
        let stop_started = |started: &BTreeMap<String, RunningService>| {
            for (n, r) in started {
                r.stop(n);
            }
        };
        for (name, svc) in &config.services {
            let current = running.get(name);
            if current.is_some_and(|r| !r.moves_to(svc.listen) && !r.gains_listener(svc.listen)) {
                continue;
            }
            // A service that stops or moves away in this reload hands its socket over (a rename, a swap).
            let socket = match svc.listen {
                None => Ok(None),
                Some(listen) => match running
                    .iter()
                    .find(|(n, r)| r.vacates(config.services.get(*n), listen))
                {
                    Some((_, from)) => from.hand_socket(name, listen).map(Some),
                    None => service::bind(name, listen, &mut Inherited::default())
                        .await
                        .map(Some),
                },
            };
            let result = match (current, socket) {
                (_, Err(e)) => Err(e),
                // A service gaining a listener keeps running; the socket is attached below.
                (Some(r), Ok(Some(socket))) if r.gains_listener(svc.listen) => {
                    gained.insert(name.clone(), socket);
                    continue;
                }
                (_, Ok(socket)) => RunningService::start_on(name, svc, &self.shared, socket),
            };
            match result {
                Ok(r) => {
                    started.insert(name.clone(), r);
                }
                Err(e) => {
                    stop_started(&started);
                    return Err(e);
                }
            }
        }
        // New and moved frontends are bound before anything that runs changes, like services.
        let mut frontends = self.frontends.lock().await;
        let bound = frontend::bind_new(
            &frontends,
            &config.http_frontends,
            &mut Inherited::default(),
        )
        .await;
        let bound = match bound {
            Ok(b) => b,
            Err(e) => {
                stop_started(&started);
                return Err(e);
            }
        };
        running.retain(|name, r| {
            let keep = config.services.contains_key(name) && !started.contains_key(name);
            if !keep {
                r.stop(name);
                if !config.services.contains_key(name) {
                    self.shared.registry.forget_service(name);
                    self.shared.overrides.forget(name);
                    summary.removed.push(name.clone());
                }
            }
            keep
        });
        for (name, svc) in &config.services {
            if let Some(r) = running.get_mut(name) {
                let relisten = r.config.listen != svc.listen;
                match (gained.remove(name), svc.listen) {
                    (Some(socket), Some(listen)) => r.attach(name, listen, socket, &self.shared)?,
                    (_, None) => r.detach(name),
                    (None, Some(_)) => {}
                }
                let relocated = moved && svc.locality_routing.as_ref().is_some_and(|l| l.enabled);
                if r.config == *svc && !relocated {
                    summary.unchanged += 1;
                } else if relisten && same_but_listen(&r.config, svc) && !relocated {
                    r.config.listen = svc.listen;
                    summary.changed.push(name.clone());
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
        frontend::apply(
            &mut frontends,
            &config.http_frontends,
            bound,
            &running,
            &self.shared,
        )?;
        self.view
            .store(Arc::new(infos(&running, &config.http_frontends)));
        summary.token_changed = self.apply_admin(&config.admin);
        if config.threads != self.threads {
            tracing::warn!(
                threads = config.threads.map_or(0, |t| t.get()),
                "threads changes only at a restart (or a binary upgrade); the runtime keeps its current workers"
            );
        }
        summary.registration = self.registrar.reload(config.register.as_ref()).await;
        *self.grace.lock().unwrap_or_else(|p| p.into_inner()) = config.shutdown_grace;
        self.config.store(Arc::new(config));
        tracing::info!(%summary, "config reloaded");
        match changes {
            Ok(changes) => log_changes(&changes),
            Err(e) => tracing::warn!(error = %e, "the reload's changes cannot be listed"),
        }
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

    fn dry_run(
        self: Arc<Self>,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'static>> {
        Box::pin(async move {
            Core::dry_run(&self)
                .await
                .map(|changes| changes.to_string())
                .map_err(|e| e.to_string())
        })
    }
}

/// Checks what a reload must refuse before it changes anything: a config without services that does
/// not say it means none while services run, and certificates or keys that do not load.
fn admissible(
    config: &Config,
    running: &BTreeMap<String, RunningService>,
) -> Result<(), AgentError> {
    if config.services.is_empty() && !config.services_explicit && !running.is_empty() {
        let names: Vec<&str> = running.keys().map(String::as_str).collect();
        return Err(AgentError::WouldStopEverything {
            running: names.join(", "),
        });
    }
    // Certificates and keys are checked for every service first, so a bad file rejects the whole reload.
    for svc in config.services.values() {
        crate::proxy::TlsSetup::check(svc)?;
    }
    Ok(())
}

/// Logs what a reload changed: one line per changed service, one for the other settings.
fn log_changes(changes: &ConfigDiff) {
    for (service, fields) in &changes.changed {
        let fields = ConfigDiff::service_line(fields);
        tracing::info!(service = %service, changes = %fields, "reload changed the service's settings");
    }
    if !changes.settings.is_empty() {
        let fields = ConfigDiff::service_line(&changes.settings);
        tracing::info!(changes = %fields, "reload changed top-level settings");
    }
}

/// True when `a` and `b` differ in `listen` only, so the running generation serves on.
fn same_but_listen(a: &ServiceConfig, b: &ServiceConfig) -> bool {
    let mut a = a.clone();
    a.listen = b.listen;
    a == *b
}

/// The admin view of every running service, with the `frontends` that route to each.
pub(super) fn infos(
    running: &BTreeMap<String, RunningService>,
    frontends: &BTreeMap<String, HttpFrontend>,
) -> BTreeMap<String, ServiceInfo> {
    running
        .iter()
        .map(|(n, r)| {
            let mut info = r.info.clone();
            info.frontends = frontends
                .iter()
                .filter(|(_, f)| f.routes_to(n))
                .map(|(f, _)| f.clone())
                .collect();
            (n.clone(), info)
        })
        .collect()
}
