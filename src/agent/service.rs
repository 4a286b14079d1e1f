//! One running service: its listener, and the current generation of its balancer, discovery and proxy.
//!
//! A reload that changes a service keeps the listener (same address) and swaps in a new generation:
//! new connections use it at once, open TCP connections finish on the old one, open HTTP connections
//! finish their request and close so their clients reconnect to the new one.

use super::AgentError;
use crate::admin::ServiceInfo;
use crate::balance::{checker, Balancer, Fallback, Origin, Policy};
use crate::config::ServiceConfig;
use crate::discovery::{self, SourceContext};
use crate::metrics::Registry;
use crate::proxy::{self, Lifecycle, ServiceProxy, TlsSetup};
use crate::upgrade::{Inherited, Listeners, Owner};
use crate::zk::Sessions;
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::{Arc, Weak};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What every service shares with the agent.
#[derive(Clone)]
pub struct AgentHandles {
    /// The registry every metric family is registered in.
    pub registry: Registry,
    /// Discovery's metric families.
    pub discovery: Arc<crate::discovery::DiscoveryMetrics>,
    /// The panic and stall counters of background tasks.
    pub task_metrics: crate::supervise::TaskMetrics,
    /// Balancing's metric families.
    pub balance: Arc<crate::balance::BalanceMetrics>,
    /// Operators' backend overrides, per service, kept across reloads.
    pub overrides: Arc<crate::balance::overrides::Overrides>,
    /// The proxy's metric families.
    pub proxy: Arc<crate::proxy::ProxyMetrics>,
    /// The shared HTTP frontends' metric families.
    pub frontends: Arc<crate::proxy::FrontendMetrics>,
    /// Cancelled when the agent stops.
    pub stop: CancellationToken,
    /// Cancelled when open connections must be cut.
    pub abort: CancellationToken,
    /// Background tasks (listeners, discovery, checks).
    pub tasks: TaskTracker,
    /// Connection tasks.
    pub conns: TaskTracker,
    /// ZooKeeper sessions, one per ensemble, shared by every service.
    pub zookeeper: Arc<Sessions>,
    /// Set when the agent hands over to a successor process, before `stop`.
    pub handover: Arc<std::sync::atomic::AtomicBool>,
    /// Every listening socket, for a successor process to take over.
    pub listeners: Listeners,
    /// Backend sets from the state file, each used once when its service first starts.
    pub initial:
        Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<crate::balance::Backend>>>>,
    /// This host's zone and region under the config in force, for services routing by locality.
    pub locality: Arc<arc_swap::ArcSwapOption<crate::config::HostLocality>>,
}

/// A service that is running.
pub struct RunningService {
    /// The config it runs with.
    pub config: ServiceConfig,
    /// What the admin server shows.
    pub info: ServiceInfo,
    slot: Arc<ArcSwap<ServiceProxy>>,
    generation: CancellationToken,
    /// The service's own listener; none while it is reached through frontends only.
    listener: Option<Listening>,
}

/// A service's own listener: its accept loop's stop token and its socket.
struct Listening {
    stop: CancellationToken,
    /// The listening socket, held weakly so that it closes when the accept loop stops.
    socket: Weak<TcpListener>,
}

impl RunningService {
    /// Binds the listener (when the config gives one) and starts the first generation.
    pub async fn start(
        name: &str,
        config: &ServiceConfig,
        shared: &AgentHandles,
        inherited: &mut Inherited,
    ) -> Result<Self, AgentError> {
        let socket = match config.listen {
            Some(listen) => Some(bind(name, listen, inherited).await?),
            None => None,
        };
        Self::start_on(name, config, shared, socket)
    }

    /// Starts the first generation, and the accept loop on `socket` when there is one.
    pub fn start_on(
        name: &str,
        config: &ServiceConfig,
        shared: &AgentHandles,
        socket: Option<TcpListener>,
    ) -> Result<Self, AgentError> {
        let tls = TlsSetup::load(name, config, shared.proxy.tls(name))?;
        let generation = shared.stop.child_token();
        tls.watch(name, &shared.tasks, generation.clone());
        let (proxy, balancer) = build(name, config, shared, &generation, tls);
        let mut service = Self {
            config: config.clone(),
            info: ServiceInfo {
                listen: None,
                frontends: Vec::new(),
                mode: config.mode,
                discovery: discovery::describe(config),
                zookeeper_connected: discovery::zookeeper_connected(
                    name,
                    config,
                    &shared.discovery,
                ),
                balancer,
            },
            slot: Arc::new(ArcSwap::new(proxy)),
            generation,
            listener: None,
        };
        if let (Some(socket), Some(configured)) = (socket, config.listen) {
            service.attach(name, configured, socket, shared)?;
        }
        let listen = service
            .info
            .listen
            .map_or("-".to_string(), |a| a.to_string());
        tracing::info!(service = %name, listen = %listen, mode = config.mode.name(), balance = config.balance.name(), "service started");
        Ok(service)
    }

    /// Starts accepting on `socket`, configured as `configured`, into the current generation (the
    /// service had no listener).
    pub fn attach(
        &mut self,
        name: &str,
        configured: SocketAddr,
        socket: TcpListener,
        shared: &AgentHandles,
    ) -> Result<(), AgentError> {
        let listen = socket.local_addr().map_err(|source| AgentError::Bind {
            what: format!("services.{name}"),
            addr: configured,
            source,
        })?;
        let stop = shared.stop.child_token();
        let socket = Arc::new(socket);
        let weak = Arc::downgrade(&socket);
        shared
            .listeners
            .insert(Owner::Service(name.to_string()), configured, &socket);
        shared.tasks.spawn(proxy::accept_loop(
            socket,
            Arc::clone(&self.slot),
            stop.clone(),
        ));
        tracing::info!(service = %name, listen = %listen, "service listening");
        self.info.listen = Some(listen);
        self.listener = Some(Listening { stop, socket: weak });
        Ok(())
    }

    /// Closes the service's own listener, if it has one; the service keeps running for its frontends,
    /// and connections accepted before finish on their own.
    pub fn detach(&mut self, name: &str) {
        if let Some(l) = self.listener.take() {
            l.stop.cancel();
            tracing::info!(service = %name, "service listener closed; reached through frontends only");
        }
        self.info.listen = None;
    }

    /// The listening socket of this service, duplicated for `name`, which starts on the same address in
    /// the reload that stops this one or moves it away: the address changes hands without a moment
    /// unbound, and without "address in use".
    pub fn hand_socket(&self, name: &str, listen: SocketAddr) -> Result<TcpListener, AgentError> {
        let bind_err = |source| AgentError::Bind {
            what: format!("services.{name}"),
            addr: listen,
            source,
        };
        let gone = || std::io::Error::new(std::io::ErrorKind::NotFound, "the socket closed");
        let socket = self
            .listener
            .as_ref()
            .and_then(|l| l.socket.upgrade())
            .ok_or_else(gone)
            .map_err(bind_err)?;
        // A second descriptor of the same socket: the old accept loop closes its own when it stops.
        let fd = socket.as_fd().try_clone_to_owned().map_err(bind_err)?;
        let socket = TcpListener::from_std(std::net::TcpListener::from(fd)).map_err(bind_err)?;
        tracing::info!(service = %name, listen = %listen, "listening socket handed over from a service this reload stops");
        Ok(socket)
    }

    /// The slot holding the service's current proxy, which a change swaps.
    pub fn slot(&self) -> Arc<ArcSwap<ServiceProxy>> {
        Arc::clone(&self.slot)
    }

    /// True when this service stops listening on `listen` under `next` (removed when `None`), so a
    /// service starting there may take its socket over.
    pub fn vacates(&self, next: Option<&ServiceConfig>, listen: SocketAddr) -> bool {
        listen.port() != 0
            && self.info.listen == Some(listen)
            && next.is_none_or(|n| !self.keeps_listener(n.listen))
    }

    /// True when `listen` (the address a new config gives) is the one this service listens on now:
    /// the same configured address, or the port an ephemeral one got.
    pub fn keeps_listener(&self, listen: Option<SocketAddr>) -> bool {
        listen.is_some() && (listen == self.config.listen || listen == self.info.listen)
    }

    /// True when `listen` gives this service, which has no listener, one.
    pub fn gains_listener(&self, listen: Option<SocketAddr>) -> bool {
        self.listener.is_none() && listen.is_some()
    }

    /// True when `listen` moves this service's listener from one address to another, which restarts it.
    pub fn moves_to(&self, listen: Option<SocketAddr>) -> bool {
        self.listener.is_some() && listen.is_some() && !self.keeps_listener(listen)
    }

    /// Swaps in a generation built from `config` (the listener is the caller's: [`Self::attach`],
    /// [`Self::detach`]); the old one winds down.
    pub fn change(
        &mut self,
        name: &str,
        config: &ServiceConfig,
        shared: &AgentHandles,
    ) -> Result<(), AgentError> {
        let tls = TlsSetup::load(name, config, shared.proxy.tls(name))?;
        let generation = shared.stop.child_token();
        tls.watch(name, &shared.tasks, generation.clone());
        let (proxy, balancer) = build(name, config, shared, &generation, tls);
        self.slot.store(proxy);
        self.generation.cancel();
        self.generation = generation;
        self.info = ServiceInfo {
            listen: self.info.listen,
            frontends: Vec::new(),
            mode: config.mode,
            discovery: discovery::describe(config),
            zookeeper_connected: discovery::zookeeper_connected(name, config, &shared.discovery),
            balancer,
        };
        self.config = config.clone();
        tracing::info!(service = %name, "service changed");
        Ok(())
    }

    /// Closes the listener and winds the service down; open connections finish on their own.
    pub fn stop(&self, name: &str) {
        if let Some(l) = &self.listener {
            l.stop.cancel();
        }
        self.generation.cancel();
        tracing::info!(service = %name, "service removed");
    }
}

/// Binds service `name`'s listener on `listen` (or takes over an inherited socket bound there).
pub async fn bind(
    name: &str,
    listen: SocketAddr,
    inherited: &mut Inherited,
) -> Result<TcpListener, AgentError> {
    inherited
        .listen(Owner::Service(name.to_string()), listen)
        .await
        .map_err(|source| AgentError::Bind {
            what: format!("services.{name}"),
            addr: listen,
            source,
        })
}

/// Builds a generation: balancer, discovery source, health checker and proxy, all stopped by `generation`.
fn build(
    name: &str,
    svc: &ServiceConfig,
    shared: &AgentHandles,
    generation: &CancellationToken,
    tls: TlsSetup,
) -> (Arc<ServiceProxy>, Arc<Balancer>) {
    let fallback = Fallback {
        defaults: discovery::to_backends(&svc.default_servers, &Origin::Default),
        keep_defaults: svc.keep_default_servers,
        use_previous: svc.use_previous_backends,
    };
    let policy = Policy {
        panic_threshold: svc.panic_threshold,
        slow_start: svc.slow_start,
        max_connections: svc.max_connections,
    };
    let balancer = Arc::new(
        Balancer::new(name, svc.balance, Arc::clone(&shared.balance))
            .with_clients(shared.proxy.service(name).active)
            .with_fallback(fallback)
            .with_policy(policy)
            .with_outlier(svc.outlier)
            .with_ewma_decay(svc.ewma_decay)
            .with_locality(crate::balance::locality::Settings::new(
                shared.locality.load().as_deref(),
                svc.locality_routing.as_ref(),
                &shared.balance,
                name,
            ))
            .with_queue(svc.max_queue, svc.timeouts.queue)
            .with_http_metrics(svc.mode == crate::config::Mode::Http)
            .with_overrides(shared.overrides.service(name)),
    );
    if svc.health_check.is_some() || svc.outlier.is_some() || !svc.slow_start.is_zero() {
        let (b, check, stop) = (
            Arc::clone(&balancer),
            svc.health_check.clone(),
            generation.clone(),
        );
        let send_proxy = svc.send_proxy;
        let check_tls = tls
            .upstream
            .clone()
            .map(|t| t as Arc<dyn crate::health::probe::CheckTls>);
        let panics = shared.task_metrics.panics("health_checker");
        crate::supervise::spawn(
            &shared.tasks,
            format!("health checks of {name}"),
            panics,
            move || {
                checker::run(
                    Arc::clone(&b),
                    check.clone(),
                    check_tls.clone(),
                    send_proxy,
                    stop.clone(),
                )
            },
        );
    }
    if svc.discovery.is_some() {
        let saved = shared
            .initial
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        if let Some(backends) = saved.filter(|b| !b.is_empty()) {
            tracing::info!(service = %name, backends = backends.len(), "serving the state file's backends until discovery reports");
            balancer.update(backends);
        } else if balancer.serve_defaults() {
            // A source may take long to report, or never (a missing file, an unreachable ensemble).
            tracing::info!(service = %name, "serving the default servers until discovery reports");
        }
    }
    let ctx = SourceContext {
        balancer: Arc::clone(&balancer),
        metrics: Arc::clone(&shared.discovery),
        task_metrics: shared.task_metrics.clone(),
        shutdown: generation.clone(),
        zookeeper: Arc::clone(&shared.zookeeper),
    };
    discovery::start(svc, ctx, &shared.tasks);
    let life = Lifecycle {
        stop: generation.clone(),
        abort: shared.abort.clone(),
        conns: shared.conns.clone(),
        handover: Arc::clone(&shared.handover),
    };
    let proxy = Arc::new(ServiceProxy::new(
        Arc::clone(&balancer),
        svc,
        &shared.proxy,
        life,
        tls,
    ));
    (proxy, balancer)
}
