//! Discovery: the sources that tell a service's [`Balancer`](crate::balance::Balancer) which backends exist.
//!
//! Every source ends in the same call, `Balancer::update`, with a complete list of backends. A source
//! that cannot read (a malformed file, an unreachable ZooKeeper) keeps quiet rather than reporting an
//! empty list, so the last known good set keeps serving.

pub mod dns;
mod file;
mod metrics;
pub mod zookeeper;

pub use metrics::{DiscoveryMetrics, ZkDiscoveryMetrics, ZK_REQUEST_KINDS};

use crate::balance::{Backend, Balancer, Origin};
use crate::config::{BackendAddr, DiscoveryConfig, ServiceConfig};
use crate::supervise::TaskMetrics;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Everything a source needs to run.
#[derive(Clone)]
pub struct SourceContext {
    /// The service's balancer.
    pub balancer: Arc<Balancer>,
    /// Discovery's metric families.
    pub metrics: Arc<DiscoveryMetrics>,
    /// The panic and stall counters of background tasks.
    pub task_metrics: TaskMetrics,
    /// Cancelled when the agent stops.
    pub shutdown: CancellationToken,
    /// The agent's ZooKeeper sessions, one per ensemble.
    pub zookeeper: Arc<crate::zk::Sessions>,
}

/// Starts the discovery source of one service: static backends are installed at once, dynamic sources
/// run as tasks on `tasks` until `ctx.shutdown` fires.
pub fn start(config: &ServiceConfig, ctx: SourceContext, tasks: &TaskTracker) {
    match &config.discovery {
        None => {
            ctx.balancer
                .update(to_backends(&config.backends, &Origin::Static));
        }
        Some(DiscoveryConfig::File(path)) => {
            let (path, panics) = (path.clone(), ctx.task_metrics.panics("file_discovery"));
            let name = format!("file discovery of {}", ctx.balancer.service());
            crate::supervise::spawn(tasks, name, panics, move || {
                file::run(path.clone(), ctx.clone())
            });
        }
        Some(DiscoveryConfig::Dns(dns)) => {
            let (wanted, _) = watch::channel(Some(dns::servers(&dns.servers)));
            resolve(Arc::new(wanted), dns.interval, ctx, tasks);
        }
        Some(DiscoveryConfig::Zookeeper(zk)) => {
            let sink = match zk.resolve_interval {
                None => Sink::Balancer(Arc::clone(&ctx.balancer)),
                Some(interval) => {
                    let wanted = Arc::new(watch::channel(None).0);
                    resolve(Arc::clone(&wanted), interval, ctx.clone(), tasks);
                    Sink::Resolve(wanted)
                }
            };
            let sessions = Arc::clone(&ctx.zookeeper);
            let (zk, panics) = (zk.clone(), ctx.task_metrics.panics("zookeeper_discovery"));
            let name = format!("zookeeper discovery of {}", ctx.balancer.service());
            let busy = crate::supervise::Busy::default();
            crate::supervise::watchdog(
                tasks,
                name.clone(),
                busy.clone(),
                ctx.task_metrics.stalls("zookeeper_discovery"),
                ctx.shutdown.clone(),
            );
            crate::supervise::spawn(tasks, name, panics, move || {
                let (zk, ctx, sink) = (zk.clone(), ctx.clone(), sink.clone());
                zookeeper::run(zk, ctx, sink, Arc::clone(&sessions), busy.clone())
            });
        }
    }
}

/// Runs the resolver of a service's host names on `tasks`, fed by `wanted`.
fn resolve(
    wanted: Arc<watch::Sender<dns::Wanted>>,
    interval: std::time::Duration,
    ctx: SourceContext,
    tasks: &TaskTracker,
) {
    let panics = ctx.task_metrics.panics("dns_discovery");
    let name = format!("dns discovery of {}", ctx.balancer.service());
    crate::supervise::spawn(tasks, name, panics, move || {
        // The sender lives as long as the resolver, so a fixed list is never taken for a closed source.
        let (wanted, ctx) = (Arc::clone(&wanted), ctx.clone());
        async move {
            let changes = wanted.subscribe();
            dns::run(changes, interval, ctx, Arc::new(dns::System)).await;
        }
    });
}

/// Where a source hands each complete list of backends it reads.
#[derive(Clone)]
pub enum Sink {
    /// Straight to the service's balancer.
    Balancer(Arc<Balancer>),
    /// To the service's resolver, which turns their host names into addresses first.
    Resolve(Arc<watch::Sender<dns::Wanted>>),
}

impl Sink {
    /// Hands `backends` on; true when the balancer swapped in a new set (always false for a
    /// resolver, whose swap comes later).
    pub fn update(&self, backends: Vec<Backend>) -> bool {
        match self {
            Sink::Balancer(balancer) => balancer.update(backends),
            Sink::Resolve(wanted) => {
                wanted.send_replace(Some(backends));
                false
            }
        }
    }
}

/// The gauge that is 1 while a ZooKeeper service's watch is armed on a connected session, for views;
/// `None` for other sources.
pub fn zookeeper_connected(
    name: &str,
    config: &ServiceConfig,
    metrics: &DiscoveryMetrics,
) -> Option<prometheus::IntGauge> {
    matches!(config.discovery, Some(DiscoveryConfig::Zookeeper(_)))
        .then(|| metrics.zk_service_connected(name))
}

/// Where a service's backends come from, in one line for operators.
pub fn describe(config: &ServiceConfig) -> String {
    match &config.discovery {
        None => "static".into(),
        Some(DiscoveryConfig::File(path)) => format!("file:{}", path.display()),
        Some(DiscoveryConfig::Zookeeper(zk)) => {
            let resolve = if zk.resolve_interval.is_some() {
                " (resolved)"
            } else {
                ""
            };
            format!(
                "zookeeper:{}{}{resolve}",
                crate::zk::cluster(&zk.hosts),
                zk.path
            )
        }
        Some(DiscoveryConfig::Dns(dns)) => {
            let names: Vec<String> = dns
                .servers
                .iter()
                .map(|s| format!("{}:{}", s.host, s.port))
                .collect();
            format!("dns:{}", names.join(","))
        }
    }
}

/// Turns configured addresses into backends of the given origin.
pub fn to_backends(addrs: &[BackendAddr], origin: &Origin) -> Vec<Backend> {
    addrs
        .iter()
        .map(|a| Backend {
            name: a.name.clone(),
            ..Backend::new(a.host.clone(), a.port, a.weight, origin.clone())
        })
        .collect()
}
