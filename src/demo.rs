//! `sinew demo`: three tiny HTTP backends on loopback and sinew balancing over them, no ZooKeeper needed.

use crate::agent::{Agent, AgentError};
use crate::config::{AdminConfig, Algorithm, BackendAddr, Config, ServiceConfig};
use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Response;
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Number of demo backends.
pub const BACKENDS: usize = 3;

/// Starts one demo backend that answers every request with its own name; returns its address.
pub async fn backend(name: String, stop: CancellationToken) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = stop.cancelled() => return,
                r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
            };
            let body = Bytes::from(format!("hello from {name} ({addr})\n"));
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    let body = body.clone();
                    async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// The config the demo runs: one TCP service over the demo backends.
pub fn config(
    listen: SocketAddr,
    admin: SocketAddr,
    backends: &[SocketAddr],
    balance: Algorithm,
) -> Config {
    let mut service = ServiceConfig::new(Some(listen));
    service.balance = balance;
    service.backends = backends
        .iter()
        .enumerate()
        .map(|(i, a)| BackendAddr {
            host: a.ip().to_string(),
            port: a.port(),
            weight: if i == 0 { 2 } else { 1 },
            name: None,
            labels: Default::default(),
        })
        .collect();
    service.timeouts.idle = Duration::from_secs(60);
    Config {
        admin: AdminConfig {
            listen: admin,
            token: None,
            upgrade_socket: None,
        },
        shutdown_grace: Duration::from_secs(2),
        state_file: None,
        file_output: None,
        threads: None,
        register: None,
        locality: None,
        services: BTreeMap::from([("demo".to_string(), service)]),
        http_frontends: BTreeMap::new(),
        services_explicit: true,
    }
}

/// Starts the demo backends and an agent in front of them, printing what to try.
pub async fn start(
    listen: SocketAddr,
    admin: SocketAddr,
    stop: CancellationToken,
) -> Result<Agent, AgentError> {
    let mut addrs = Vec::with_capacity(BACKENDS);
    for i in 1..=BACKENDS {
        let addr = backend(format!("backend-{i}"), stop.clone())
            .await
            .map_err(|source| AgentError::Bind {
                what: format!("demo backend-{i}"),
                addr: listen,
                source,
            })?;
        addrs.push(addr);
    }
    let agent = Agent::start(config(listen, admin, &addrs, Algorithm::RoundRobin)).await?;
    let svc = agent.service_addr("demo").unwrap_or(listen);
    println!("sinew demo: service `demo` on {svc}, round-robin over {BACKENDS} backends (backend-1 has weight 2)");
    println!();
    println!("  for i in 1 2 3 4 5 6 7 8; do curl -s http://{svc}/; done");
    println!("  curl -s http://{}/api/services", agent.admin_addr());
    println!(
        "  curl -s http://{}/metrics | grep sinew_backend_connections_total",
        agent.admin_addr()
    );
    println!();
    println!("Ctrl-C stops it.");
    Ok(agent)
}
