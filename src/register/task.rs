//! One registered service's task: a round of checks every `check_interval` (jittered), Nerve's rise/fall
//! per check, and ZooKeeper brought in line after each round or event. A new config for the same znode
//! location arrives on a watch: changed checks start again (from the service's current verdict, so a
//! reload alone never takes a healthy service out), changed data is written into the existing node.

use super::{checks, znode, CheckView, RegisterMetrics, RegisteredView};
use crate::config::register::{Check, CheckKind, Registration};
use crate::health::CheckState;
use crate::zk::Conn;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use zookeeper_client as zk;

/// What a service task needs besides its config.
#[derive(Clone)]
pub(super) struct Ctx {
    pub name: String,
    pub instance: String,
    pub view: Arc<Mutex<RegisteredView>>,
    pub metrics: Arc<RegisterMetrics>,
    /// Cancelled when a successor process takes over: leave the node to it.
    pub handover: CancellationToken,
    /// Each round of checks, marked for the watchdog.
    pub busy: crate::supervise::Busy,
}

/// The registered node: its path, the session that owns it, and the data written into it.
struct Node {
    path: String,
    session: zk::SessionId,
    data: Vec<u8>,
}

/// Runs until `stop` (deleting the node) or a handover (leaving it to the successor).
pub(super) async fn run(
    ctx: Ctx,
    mut config: watch::Receiver<Registration>,
    mut conn: watch::Receiver<Conn>,
    mut maintenance: watch::Receiver<bool>,
    stop: CancellationToken,
) {
    let mut reg = config.borrow_and_update().clone();
    let mut states: Vec<CheckState> = reg.checks.iter().map(|_| CheckState::new(false)).collect();
    let mut errors: Vec<Option<String>> = vec![None; states.len()];
    let mut node: Option<Node> = None;
    let mut was_up = false;
    let up_gauge = ctx.metrics.up(&ctx.name);
    let registered = ctx.metrics.znode(&ctx.name);
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
                // The checks run one after the other, each within its timeout: twice their sum is ample.
                let limit: Duration = reg.checks.iter().map(|c| c.timeout * 2).sum();
                let _working = ctx.busy.start(limit);
                crate::fault::point("registration", &ctx.name).await;
                for (i, check) in reg.checks.iter().enumerate() {
                    let result = checks::run(check, &reg.host, reg.port).await;
                    if let Err(e) = &result {
                        ctx.metrics.check_failure(&ctx.name, kind(check)).inc();
                        if errors[i].as_deref() != Some(e.as_str()) && states[i].up {
                            tracing::warn!(service = %ctx.name, check = kind(check), error = %e, "registration check failed");
                        }
                    }
                    errors[i] = result.err();
                    states[i].record(errors[i].is_none(), check.rise, check.fall);
                }
                next = tokio::time::Instant::now() + reg.check_interval.mul_f64(0.9 + 0.2 * fastrand::f64());
            }
            r = config.changed() => {
                if r.is_err() { break }
                let new = config.borrow_and_update().clone();
                if new.checks != reg.checks || new.check_interval != reg.check_interval {
                    let up = states.iter().all(|s| s.up);
                    states = new.checks.iter().map(|_| CheckState::new(up)).collect();
                    errors = vec![None; states.len()];
                    next = tokio::time::Instant::now();
                    tracing::info!(service = %ctx.name, up, "registration checks changed; they start again from the current verdict");
                }
                reg = new;
            }
            r = maintenance.changed() => if r.is_err() { break },
            r = conn.changed() => if r.is_err() { break },
        }
        let up = states.iter().all(|s| s.up);
        if up != was_up {
            ctx.metrics
                .transition(&ctx.name, if up { "up" } else { "down" });
            tracing::info!(service = %ctx.name, up, "registered service changed state");
            was_up = up;
        }
        up_gauge.set(i64::from(up));
        let in_maintenance = *maintenance.borrow();
        let client = conn.borrow().session.clone();
        reconcile(
            &ctx,
            &reg,
            client.as_ref(),
            up && !in_maintenance,
            &mut node,
        )
        .await;
        registered.set(i64::from(node.is_some()));
        let mut view = ctx.view.lock().unwrap_or_else(|p| p.into_inner());
        view.up = up;
        view.maintenance = in_maintenance;
        view.znode = node.as_ref().map(|n| n.path.clone());
        view.checks = reg
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
    let client = conn.borrow().session.clone();
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
    up_gauge.set(0);
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
        let client = conn.borrow().session.clone();
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

/// Brings ZooKeeper in line with `desired`: creates the node (again, on a new session), writes new data
/// into it, or deletes it.
async fn reconcile(
    ctx: &Ctx,
    reg: &Registration,
    client: Option<&zk::Client>,
    desired: bool,
    node: &mut Option<Node>,
) {
    let Some(client) = client else {
        // No session: an ephemeral node of an expired session is gone with it.
        *node = None;
        return;
    };
    let session = client.session_id();
    if node.as_ref().is_some_and(|n| n.session != session) {
        *node = None;
    }
    match (desired, node.as_mut()) {
        (true, None) => match znode::create(client, reg, &ctx.instance).await {
            Ok(path) => {
                tracing::info!(service = %ctx.name, znode = %path, "registered");
                let data = znode::data(reg, &ctx.instance);
                *node = Some(Node {
                    path,
                    session,
                    data,
                });
            }
            Err(e) => {
                tracing::warn!(service = %ctx.name, error = %e, "cannot register in ZooKeeper; retrying")
            }
        },
        (true, Some(n)) => {
            let data = znode::data(reg, &ctx.instance);
            if n.data == data {
                return;
            }
            match znode::rewrite(client, &n.path, &data).await {
                Ok(()) => {
                    tracing::info!(service = %ctx.name, znode = %n.path, "znode data rewritten");
                    n.data = data;
                }
                // Gone behind our back: created again next round.
                Err(zk::Error::NoNode) => *node = None,
                Err(e) => {
                    tracing::warn!(service = %ctx.name, error = %e, "cannot rewrite the znode data; retrying")
                }
            }
        }
        (false, Some(n)) => match znode::delete(client, &n.path).await {
            Ok(()) => {
                tracing::info!(service = %ctx.name, znode = %n.path, "deregistered");
                *node = None;
            }
            Err(e) => {
                tracing::warn!(service = %ctx.name, error = %e, "cannot delete the znode; retrying")
            }
        },
        (false, None) => {}
    }
}

fn kind(check: &Check) -> &'static str {
    match check.kind {
        CheckKind::Tcp => "tcp",
        CheckKind::Http => "http",
        CheckKind::Exec => "exec",
        CheckKind::Redis => "redis",
        CheckKind::Rabbitmq => "rabbitmq",
    }
}
