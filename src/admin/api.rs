//! `/api/services` and `/ready`: read-only views of every service.

use super::AdminState;
use crate::balance::{Balancer, ServiceView};
use crate::config::Mode;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;

/// A running service as the admin server sees it.
#[derive(Clone)]
pub struct ServiceInfo {
    /// The bound listener address.
    pub listen: SocketAddr,
    /// Proxy mode.
    pub mode: Mode,
    /// Where backends come from, for operators (`static`, `file:PATH`, `zookeeper:HOSTS/PATH`).
    pub discovery: String,
    /// The service's balancer.
    pub balancer: Arc<Balancer>,
}

#[derive(Serialize)]
pub(super) struct ServiceJson {
    listen: SocketAddr,
    mode: &'static str,
    discovery: String,
    #[serde(flatten)]
    view: ServiceView,
}

#[derive(Serialize)]
pub(super) struct ServicesJson {
    services: Vec<ServiceJson>,
}

pub(super) fn services(state: &AdminState) -> ServicesJson {
    let services = state
        .services
        .load()
        .values()
        .map(|s| ServiceJson {
            listen: s.listen,
            mode: s.mode.name(),
            discovery: s.discovery.clone(),
            view: s.balancer.view(),
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
