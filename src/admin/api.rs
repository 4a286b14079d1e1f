//! `/api/services` and `/ready`: read-only views of every service.

use super::AdminState;
use crate::balance::{Balancer, ServiceView};
use crate::config::Mode;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

/// A running service as the admin server sees it.
#[derive(Clone)]
pub struct ServiceInfo {
    /// The bound address of the service's own listener; none when it is reached through frontends only.
    pub listen: Option<SocketAddr>,
    /// The shared HTTP frontends that route requests to it.
    pub frontends: Vec<String>,
    /// Proxy mode.
    pub mode: Mode,
    /// Where backends come from, for operators (`static`, `file:PATH`, `zookeeper:HOSTS/PATH`).
    pub discovery: String,
    /// For ZooKeeper discovery: 1 while its watch is armed on a connected session.
    pub zookeeper_connected: Option<prometheus::IntGauge>,
    /// The service's balancer.
    pub balancer: Arc<Balancer>,
}

/// One service in `/api/services`: its listener and discovery, and its balancer's view.
#[derive(Debug, Serialize, Deserialize)]
pub struct ServiceJson {
    /// The bound address of the service's own listener; `null` when it is reached through frontends only.
    pub listen: Option<SocketAddr>,
    /// The shared HTTP frontends that route requests to it.
    #[serde(default)]
    pub frontends: Vec<String>,
    /// Proxy mode (`tcp`, `http`).
    pub mode: Cow<'static, str>,
    /// Where backends come from, for operators.
    pub discovery: String,
    /// For ZooKeeper discovery: whether its watch is armed on a connected session; `null` for other
    /// sources.
    #[serde(default)]
    pub zookeeper_connected: Option<bool>,
    /// The balancer's view: name, algorithm, counts and backends.
    #[serde(flatten)]
    pub view: ServiceView,
}

/// The document `/api/services` serves.
#[derive(Debug, Serialize, Deserialize)]
pub struct ServicesJson {
    /// Every service, by name.
    pub services: Vec<ServiceJson>,
}

pub(super) fn services(state: &AdminState) -> ServicesJson {
    let services = state
        .services
        .load()
        .values()
        .map(|s| ServiceJson {
            listen: s.listen,
            frontends: s.frontends.clone(),
            mode: s.mode.name().into(),
            discovery: s.discovery.clone(),
            zookeeper_connected: s.zookeeper_connected.as_ref().map(|g| g.get() == 1),
            view: {
                let mut view = s.balancer.view();
                state.history.fill(&mut view);
                view
            },
        })
        .collect();
    ServicesJson { services }
}

/// Services whose discovery has not reported yet.
pub(super) fn waiting(state: &AdminState) -> Vec<String> {
    state
        .services
        .load()
        .iter()
        .filter(|(_, s)| s.balancer.view().last_update_unix.is_none())
        .map(|(n, _)| n.clone())
        .collect()
}
