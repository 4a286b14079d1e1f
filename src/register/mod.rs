//! Registration (the Nerve side): health-checks this host's services and keeps one ephemeral znode per
//! healthy instance in ZooKeeper, in Nerve's format.
//!
//! Each service runs in its own task: a round of checks every `check_interval` (jittered), Nerve's
//! rise/fall per check, up when every check is up. Up (and not in maintenance) means the znode exists;
//! anything else means it is deleted at once. The ZooKeeper session is shared with discovery; after a
//! session expiry the node is created again on the new session. On shutdown every node is deleted first;
//! on a handover to a successor process (binary upgrade) the nodes are left for the successor to replace.

mod checks;
mod znode;

use crate::balance::health::CheckState;
use crate::config::register::{Register, Registration};
use crate::discovery::zookeeper::session::{Conn, Sessions};
use crate::metrics::Metrics;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zookeeper_client as zk;

/// What the admin API shows of a registered service.
#[derive(Debug, Clone, Default, Serialize)]
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
#[derive(Debug, Clone, Serialize)]
pub struct CheckView {
    /// Check kind.
    pub kind: String,
    /// Up after rise/fall.
    pub up: bool,
    /// The reason of the last failure, if the last run failed.
    pub last_error: Option<String>,
}

struct Handle {
    maintenance: watch::Sender<bool>,
    view: Arc<Mutex<RegisteredView>>,
}

/// The registration side of the agent.
pub struct Registrar {
    services: BTreeMap<String, Handle>,
    stop: CancellationToken,
    handover: CancellationToken,
    tasks: TaskTracker,
    drain: Duration,
}

impl Registrar {
    /// Starts one task per registered service.
    pub fn start(config: &Register, sessions: &Sessions, metrics: &Arc<Metrics>) -> Self {
        let (stop, handover) = (CancellationToken::new(), CancellationToken::new());
        let tasks = TaskTracker::new();
        let instance = config.instance_id.clone().unwrap_or_else(hostname);
        let mut services = BTreeMap::new();
        for (name, r) in &config.services {
            let (tx, rx) = watch::channel(false);
            let view = Arc::new(Mutex::new(RegisteredView {
                name: name.clone(),
                ..Default::default()
            }));
            let conn = sessions.get(&r.zk_hosts, r.session_timeout);
            let ctx = Ctx {
                name: name.clone(),
                instance: instance.clone(),
                reg: r.clone(),
                view: Arc::clone(&view),
                metrics: Arc::clone(metrics),
                handover: handover.clone(),
            };
            let (stop, panics) = (stop.clone(), metrics.task_panics("registration"));
            crate::supervise::spawn(
                &tasks,
                format!("registration of {name}"),
                panics,
                move || run(ctx.clone(), conn.clone(), rx.clone(), stop.clone()),
            );
            services.insert(
                name.clone(),
                Handle {
                    maintenance: tx,
                    view,
                },
            );
        }
        tasks.close();
        Self {
            services,
            stop,
            handover,
            tasks,
            drain: config.drain,
        }
    }

    /// Puts a service in or out of maintenance; false when there is no such service.
    pub fn set_maintenance(&self, service: &str, on: bool) -> bool {
        match self.services.get(service) {
            Some(h) => {
                h.maintenance.send_replace(on);
                true
            }
            None => false,
        }
    }

    /// Every registered service's state.
    pub fn view(&self) -> Vec<RegisteredView> {
        self.services
            .values()
            .map(|h| h.view.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect()
    }

    /// Stops checking and leaves every znode to a successor process: waits up to `limit` until each is
    /// gone (the successor registering the same instance replaces it); false when some were still there.
    pub async fn hand_over(&self, limit: Duration) -> bool {
        self.handover.cancel();
        let replaced = tokio::time::timeout(limit, self.tasks.wait()).await.is_ok();
        self.stop.cancel();
        self.tasks.wait().await;
        replaced
    }

    /// Deletes every znode and stops checking; returns the configured drain period.
    pub async fn shutdown(&self) -> Duration {
        self.stop.cancel();
        self.tasks.wait().await;
        self.drain
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "sinew".into())
}

#[derive(Clone)]
struct Ctx {
    name: String,
    instance: String,
    reg: Registration,
    view: Arc<Mutex<RegisteredView>>,
    metrics: Arc<Metrics>,
    /// Cancelled when a successor process takes over: leave the node to it.
    handover: CancellationToken,
}

/// The registered node: its path and the session that owns it.
struct Node {
    path: String,
    session: zk::SessionId,
}

async fn run(
    ctx: Ctx,
    mut conn: watch::Receiver<Conn>,
    mut maintenance: watch::Receiver<bool>,
    stop: CancellationToken,
) {
    let mut states: Vec<CheckState> = ctx
        .reg
        .checks
        .iter()
        .map(|_| CheckState::new(false))
        .collect();
    let mut errors: Vec<Option<String>> = vec![None; states.len()];
    let mut node: Option<Node> = None;
    let mut was_up = false;
    let up_gauge = ctx.metrics.register_up(&ctx.name);
    let registered = ctx.metrics.register_znode(&ctx.name);
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ctx.handover.cancelled() => {
                if let Some(n) = node.take() {
                    wait_replaced(&ctx, &conn, &n, &stop).await;
                }
                registered.set(0);
                return;
            }
            _ = tokio::time::sleep_until(next) => {
                for (i, check) in ctx.reg.checks.iter().enumerate() {
                    let result = checks::run(check, &ctx.reg.host, ctx.reg.port).await;
                    if let Err(e) = &result {
                        ctx.metrics.register_check_failure(&ctx.name, kind(check)).inc();
                        if errors[i].as_deref() != Some(e.as_str()) && states[i].up {
                            tracing::warn!(service = %ctx.name, check = kind(check), error = %e, "registration check failed");
                        }
                    }
                    errors[i] = result.err();
                    states[i].record(errors[i].is_none(), check.rise, check.fall);
                }
                next = tokio::time::Instant::now() + ctx.reg.check_interval.mul_f64(0.9 + 0.2 * fastrand::f64());
            }
            r = maintenance.changed() => if r.is_err() { break },
            r = conn.changed() => if r.is_err() { break },
        }
        let up = states.iter().all(|s| s.up);
        if up != was_up {
            ctx.metrics
                .register_transition(&ctx.name, if up { "up" } else { "down" });
            tracing::info!(service = %ctx.name, up, "registered service changed state");
            was_up = up;
        }
        up_gauge.set(i64::from(up));
        let in_maintenance = *maintenance.borrow();
        let client = conn.borrow().client.clone();
        reconcile(&ctx, client.as_ref(), up && !in_maintenance, &mut node).await;
        registered.set(i64::from(node.is_some()));
        let mut view = ctx.view.lock().unwrap_or_else(|p| p.into_inner());
        view.up = up;
        view.maintenance = in_maintenance;
        view.znode = node.as_ref().map(|n| n.path.clone());
        view.checks = ctx
            .reg
            .checks
            .iter()
            .zip(&states)
            .zip(&errors)
            .map(|((c, s), e)| CheckView {
                kind: kind(c).into(),
                up: s.up,
                last_error: e.clone(),
            })
            .collect();
    }
    let client = conn.borrow().client.clone();
    if let (Some(n), Some(client)) = (node.take(), client) {
        if n.session == client.session_id() {
            match znode::delete(&client, &n.path).await {
                Ok(()) => tracing::info!(service = %ctx.name, znode = %n.path, "deregistered"),
                Err(e) => {
                    tracing::warn!(service = %ctx.name, error = %e, "cannot delete the znode; it goes with the session")
                }
            }
        }
    }
    registered.set(0);
}

/// How often a handed-over node is looked at while the successor has not replaced it.
const HANDOVER_POLL: Duration = Duration::from_millis(100);

/// Waits until `node` is gone: replaced by a successor registering the same instance, or gone with its
/// session. Until then it stays registered, so consumers never see the instance missing.
async fn wait_replaced(
    ctx: &Ctx,
    conn: &watch::Receiver<Conn>,
    node: &Node,
    stop: &CancellationToken,
) {
    loop {
        let client = conn.borrow().client.clone();
        let Some(client) = client.filter(|c| c.session_id() == node.session) else {
            return;
        };
        match client.check_stat(&node.path).await {
            Ok(None) => {
                tracing::info!(service = %ctx.name, znode = %node.path, "znode replaced by the successor");
                return;
            }
            Ok(Some(_)) => {}
            Err(e) => {
                tracing::debug!(service = %ctx.name, error = %e, "cannot look at the handed-over znode")
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(HANDOVER_POLL) => {}
        }
    }
}

/// Brings ZooKeeper in line with `desired`: creates the node (again, on a new session) or deletes it.
async fn reconcile(ctx: &Ctx, client: Option<&zk::Client>, desired: bool, node: &mut Option<Node>) {
    let Some(client) = client else {
        // No session: an ephemeral node of an expired session is gone with it.
        if node.is_some() {
            *node = None;
        }
        return;
    };
    let session = client.session_id();
    if node.as_ref().is_some_and(|n| n.session != session) {
        *node = None;
    }
    match (desired, node.as_ref()) {
        (true, None) => match znode::create(client, &ctx.reg, &ctx.instance).await {
            Ok(path) => {
                tracing::info!(service = %ctx.name, znode = %path, "registered");
                *node = Some(Node { path, session });
            }
            Err(e) => {
                tracing::warn!(service = %ctx.name, error = %e, "cannot register in ZooKeeper; retrying")
            }
        },
        (false, Some(n)) => match znode::delete(client, &n.path).await {
            Ok(()) => {
                tracing::info!(service = %ctx.name, znode = %n.path, "deregistered");
                *node = None;
            }
            Err(e) => {
                tracing::warn!(service = %ctx.name, error = %e, "cannot delete the znode; retrying")
            }
        },
        _ => {}
    }
}

fn kind(check: &crate::config::register::Check) -> &'static str {
    match check.kind {
        crate::config::register::CheckKind::Tcp => "tcp",
        crate::config::register::CheckKind::Http => "http",
        crate::config::register::CheckKind::Exec => "exec",
        crate::config::register::CheckKind::Redis => "redis",
        crate::config::register::CheckKind::Rabbitmq => "rabbitmq",
    }
}
