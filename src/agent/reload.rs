//! Reloading: the running services and the settings a reload may replace, and how a new config is
//! applied to them service by service.

use super::service::{AgentHandles, RunningService};
use super::{AgentError, ReloadSummary, Source};
use crate::admin::{self, ServiceInfo};
use crate::config::Config;
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
        let config = loaded.inspect_err(
            |e| tracing::error!(error = %e, "reload rejected; the running config stays"),
        )?;
        self.apply(config)
            .await
            .inspect_err(|e| tracing::error!(error = %e, "reload failed; the running config stays"))
    }

    /// See [`Agent::apply`].
    pub(super) async fn apply(&self, config: Config) -> Result<ReloadSummary, AgentError> {
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
        if config.threads != self.threads {
            tracing::warn!(
                threads = config.threads.map_or(0, |t| t.get()),
                "threads changes only at a restart (or a binary upgrade); the runtime keeps its current workers"
            );
        }
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

/// The admin view of every running service.
pub(super) fn infos(running: &BTreeMap<String, RunningService>) -> BTreeMap<String, ServiceInfo> {
    running
        .iter()
        .map(|(n, r)| (n.clone(), r.info.clone()))
        .collect()
}
