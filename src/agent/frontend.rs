//! Running shared HTTP frontends: each one's listener and router, started with the services and
//! re-routed on every reload, after the services are applied, so that its rules reach the services'
//! current proxy slots.

use super::service::{AgentHandles, RunningService};
use super::AgentError;
use crate::config::HttpFrontend;
use crate::proxy::{route, Frontend, Router, ServiceProxy};
use crate::upgrade::{Inherited, Owner};
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// A frontend that is running.
pub struct RunningFrontend {
    /// The config it runs with.
    pub config: HttpFrontend,
    /// The address its listener is bound to.
    pub listen: SocketAddr,
    frontend: Arc<Frontend>,
}

/// Listening sockets bound for frontends a reload starts, by name.
pub type Bound = BTreeMap<String, TcpListener>;

/// Binds the listeners of the frontends in `wanted` that are not running at their address yet.
pub async fn bind_new(
    running: &BTreeMap<String, RunningFrontend>,
    wanted: &BTreeMap<String, HttpFrontend>,
    inherited: &mut Inherited,
) -> Result<Bound, AgentError> {
    let mut bound = Bound::new();
    for (name, config) in wanted {
        let same = running
            .get(name)
            .is_some_and(|r| r.config.listen == config.listen || r.listen == config.listen);
        if same {
            continue;
        }
        let socket = inherited
            .listen(Owner::Frontend(name.clone()), config.listen)
            .await
            .map_err(|source| AgentError::Bind {
                what: format!("http_frontends.{name}"),
                addr: config.listen,
                source,
            })?;
        bound.insert(name.clone(), socket);
    }
    Ok(bound)
}

/// Makes the running frontends those of `wanted`: removed ones stop, those in `bound` start on their
/// new socket (a moved one replaces the old), and every other one gets a router built from its config
/// and the running services.
pub fn apply(
    frontends: &mut BTreeMap<String, RunningFrontend>,
    wanted: &BTreeMap<String, HttpFrontend>,
    mut bound: Bound,
    services: &BTreeMap<String, RunningService>,
    shared: &AgentHandles,
) -> Result<(), AgentError> {
    frontends.retain(|name, f| {
        let keep = wanted.contains_key(name) && !bound.contains_key(name);
        if !keep {
            f.frontend.stop.cancel();
            tracing::info!(frontend = %name, "frontend stopped");
        }
        keep
    });
    for (name, config) in wanted {
        let router = router(name, config, services, shared)?;
        match (frontends.get_mut(name), bound.remove(name)) {
            (_, Some(socket)) => {
                let f = RunningFrontend::start(name, config, router, socket, shared)?;
                frontends.insert(name.clone(), f);
            }
            (Some(f), None) => {
                f.frontend.router.store(Arc::new(router));
                f.config = config.clone();
            }
            (None, None) => {}
        }
    }
    Ok(())
}

/// The router of frontend `name`, reaching the running services' proxy slots.
fn router(
    name: &str,
    config: &HttpFrontend,
    services: &BTreeMap<String, RunningService>,
    shared: &AgentHandles,
) -> Result<Router, AgentError> {
    let slot_of = |s: &str| -> Option<Arc<ArcSwap<ServiceProxy>>> {
        services.get(s).map(RunningService::slot)
    };
    Ok(Router::new(name, config, slot_of, &shared.frontends)?)
}

impl RunningFrontend {
    /// Starts the accept loop on `socket`.
    fn start(
        name: &str,
        config: &HttpFrontend,
        router: Router,
        socket: TcpListener,
        shared: &AgentHandles,
    ) -> Result<Self, AgentError> {
        let listen = socket.local_addr().map_err(|source| AgentError::Bind {
            what: format!("http_frontends.{name}"),
            addr: config.listen,
            source,
        })?;
        let handles = (
            shared.stop.child_token(),
            shared.abort.clone(),
            shared.conns.clone(),
        );
        let frontend = Arc::new(Frontend::new(name, router, handles, &shared.frontends));
        let socket = Arc::new(socket);
        shared
            .listeners
            .insert(Owner::Frontend(name.to_string()), config.listen, &socket);
        shared
            .tasks
            .spawn(route::accept_loop(socket, Arc::clone(&frontend)));
        tracing::info!(frontend = %name, listen = %listen, routes = config.routes.len(), "frontend started");
        Ok(Self {
            config: config.clone(),
            listen,
            frontend,
        })
    }
}
