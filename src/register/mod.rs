//! Registration (the Nerve side): health-checks this host's services and keeps one ephemeral znode per
//! healthy instance in ZooKeeper, in Nerve's format.
//!
//! Each service runs in its own task (see `task`): up (every check up, not in maintenance) means the
//! znode exists; anything else means it is deleted at once. The ZooKeeper session is shared with
//! discovery; after a session expiry the node is created again on the new session. On shutdown every node
//! is deleted first; on a handover to a successor process (binary upgrade) the nodes are left for the
//! successor to replace. A reload applies a new `register` section service by service: added ones start,
//! removed ones delete their node and stop, changed ones are updated in place (or restarted when their
//! node moves), unchanged ones are not touched.

mod checks;
mod metrics;
mod task;
mod znode;

pub use metrics::RegisterMetrics;

use crate::config::register::{Register, Registration};
use crate::supervise::TaskMetrics;
use crate::zk::Sessions;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the admin API shows of a registered service.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RegisteredView {
    /// Service name.
    pub name: String,
    /// Every check up.
    pub up: bool,
    /// Held out of ZooKeeper by an operator.
    pub maintenance: bool,
    /// The znode while registered.
    pub znode: Option<String>,
    /// Per check: kind, up, and the last failure.
    pub checks: Vec<CheckView>,
}

/// One check's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckView {
    /// Check kind.
    pub kind: String,
    /// Up after rise/fall.
    pub up: bool,
    /// The reason of the last failure, if the last run failed.
    pub last_error: Option<String>,
}

/// A running service task and what steers it.
struct Handle {
    config: watch::Sender<Registration>,
    maintenance: watch::Sender<bool>,
    view: Arc<Mutex<RegisteredView>>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Handle {
    /// Deletes the node and waits for the task to end.
    async fn stop(self) {
        self.stop.cancel();
        self.tasks.wait().await;
    }
}

/// What a reload changed on the registration side.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RegisterChanges {
    /// Services that started registering.
    pub added: Vec<String>,
    /// Services whose znode was deleted and whose checks stopped.
    pub removed: Vec<String>,
    /// Services updated (checks restarted, znode data rewritten) or moved to another znode location.
    pub changed: Vec<String>,
    /// Services left alone.
    pub unchanged: usize,
}

/// The registration side of the agent.
pub struct Registrar {
    services: Mutex<BTreeMap<String, Handle>>,
    /// The `register` section in force (`None`: no section).
    config: Mutex<Option<Register>>,
    sessions: Arc<Sessions>,
    metrics: Arc<RegisterMetrics>,
    task_metrics: TaskMetrics,
    stop: CancellationToken,
    handover: CancellationToken,
}

impl Registrar {
    /// Starts one task per registered service.
    pub fn start(
        config: Option<&Register>,
        sessions: &Arc<Sessions>,
        metrics: &Arc<RegisterMetrics>,
        task_metrics: &TaskMetrics,
    ) -> Self {
        let registrar = Self {
            services: Mutex::new(BTreeMap::new()),
            config: Mutex::new(config.cloned()),
            sessions: Arc::clone(sessions),
            metrics: Arc::clone(metrics),
            task_metrics: task_metrics.clone(),
            stop: CancellationToken::new(),
            handover: CancellationToken::new(),
        };
        if let Some(config) = config {
            let mut services = registrar.lock();
            for (name, r) in &config.services {
                services.insert(name.clone(), registrar.spawn(config, name, r, false));
            }
        }
        registrar
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Handle>> {
        self.services.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn spawn(&self, config: &Register, name: &str, r: &Registration, maintenance: bool) -> Handle {
        let (config_tx, config_rx) = watch::channel(r.clone());
        let (maintenance_tx, maintenance_rx) = watch::channel(maintenance);
        let view = Arc::new(Mutex::new(RegisteredView {
            name: name.to_string(),
            maintenance,
            ..Default::default()
        }));
        let conn = self.sessions.get(&r.zk_hosts, r.session_timeout);
        let ctx = task::Ctx {
            name: name.to_string(),
            instance: instance_id(config),
            view: Arc::clone(&view),
            metrics: Arc::clone(&self.metrics),
            handover: self.handover.clone(),
            busy: crate::supervise::Busy::default(),
        };
        let (stop, tasks) = (self.stop.child_token(), TaskTracker::new());
        let token = stop.clone();
        crate::supervise::watchdog(
            &tasks,
            format!("registration of {name}"),
            ctx.busy.clone(),
            self.task_metrics.stalls("registration"),
            stop.clone(),
        );
        crate::supervise::spawn(
            &tasks,
            format!("registration of {name}"),
            self.task_metrics.panics("registration"),
            move || {
                task::run(
                    ctx.clone(),
                    config_rx.clone(),
                    conn.clone(),
                    maintenance_rx.clone(),
                    token.clone(),
                )
            },
        );
        tasks.close();
        Handle {
            config: config_tx,
            maintenance: maintenance_tx,
            view,
            stop,
            tasks,
        }
    }

    /// Applies a new `register` section (`None`: none). A service whose znode location (`zk_hosts`,
    /// `zk_path`, `session_timeout`) or instance id changes is restarted: its old node is deleted, the new
    /// one created once its checks pass. Any other change is applied in place: the node keeps its name.
    pub async fn reload(&self, config: Option<&Register>) -> RegisterChanges {
        let mut changes = RegisterChanges::default();
        let empty = Register::default();
        let new = config.unwrap_or(&empty);
        let old = std::mem::replace(
            &mut *self.config.lock().unwrap_or_else(|p| p.into_inner()),
            config.cloned(),
        )
        .unwrap_or_default();
        let moved_instance = instance_id(&old) != instance_id(new);
        let mut stopping = Vec::new();
        let mut restarted = Vec::new();
        {
            let mut services = self.lock();
            let names: Vec<String> = services.keys().cloned().collect();
            for name in names {
                let before = old.services.get(&name);
                match new.services.get(&name) {
                    None => {
                        changes.removed.push(name.clone());
                        stopping.extend(services.remove(&name));
                    }
                    Some(r) if moved_instance || before.is_some_and(|b| moved(b, r)) => {
                        changes.changed.push(name.clone());
                        if let Some(h) = services.remove(&name) {
                            restarted.push((name, *h.maintenance.borrow()));
                            stopping.push(h);
                        }
                    }
                    Some(r) if before == Some(r) => changes.unchanged += 1,
                    Some(r) => {
                        changes.changed.push(name.clone());
                        if let Some(h) = services.get(&name) {
                            h.config.send_replace(r.clone());
                        }
                    }
                }
            }
        }
        // Old nodes go before their replacements are created, so a moved service is never listed twice.
        for h in stopping {
            h.stop().await;
        }
        let mut services = self.lock();
        for (name, maintenance) in restarted {
            if let Some(r) = new.services.get(&name) {
                services.insert(name.clone(), self.spawn(new, &name, r, maintenance));
            }
        }
        for (name, r) in &new.services {
            if !services.contains_key(name) {
                changes.added.push(name.clone());
                services.insert(name.clone(), self.spawn(new, name, r, false));
            }
        }
        changes
    }

    /// Puts a service in or out of maintenance; false when there is no such service.
    pub fn set_maintenance(&self, service: &str, on: bool) -> bool {
        match self.lock().get(service) {
            Some(h) => {
                h.maintenance.send_replace(on);
                true
            }
            None => false,
        }
    }

    /// Every registered service's state.
    pub fn view(&self) -> Vec<RegisteredView> {
        self.lock()
            .values()
            .map(|h| h.view.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect()
    }

    /// True when a `register` section is in force (even one without services).
    pub fn configured(&self) -> bool {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    async fn wait_all(&self) {
        let tasks: Vec<TaskTracker> = self.lock().values().map(|h| h.tasks.clone()).collect();
        for t in tasks {
            t.wait().await;
        }
    }

    /// Stops checking and leaves every znode to a successor process: waits up to `limit` until each is
    /// gone (the successor registering the same instance replaces it); false when some were still there.
    pub async fn hand_over(&self, limit: Duration) -> bool {
        self.handover.cancel();
        let replaced = tokio::time::timeout(limit, self.wait_all()).await.is_ok();
        self.stop.cancel();
        self.wait_all().await;
        replaced
    }

    /// Deletes every znode and stops checking; returns the drain period of the `register` section in
    /// force, if any.
    pub async fn shutdown(&self) -> Option<Duration> {
        self.stop.cancel();
        self.wait_all().await;
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|c| c.drain)
    }
}

/// True when the service's node must move: another ensemble, session or parent path.
fn moved(old: &Registration, new: &Registration) -> bool {
    old.zk_hosts != new.zk_hosts
        || old.zk_path != new.zk_path
        || old.session_timeout != new.session_timeout
}

fn instance_id(config: &Register) -> String {
    config.instance_id.clone().unwrap_or_else(hostname)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "sinew".into())
}
