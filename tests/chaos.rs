//! Fault injection under load: every case runs a bounded client loop against sinew with real backends
//! and a real ZooKeeper, breaks something (ZooKeeper, a backend, the network, a background task) while
//! the loop runs, and counts every request: zero failures unless the case says otherwise.

mod support;

#[path = "chaos/backend.rs"]
mod backend;
#[path = "chaos/lifecycle.rs"]
mod lifecycle;
#[path = "chaos/partition.rs"]
mod partition;
#[path = "chaos/tasks.rs"]
mod tasks;
#[path = "chaos/zookeeper.rs"]
mod zookeeper;

use sinew::agent::Agent;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use support::http::HttpBackend;
use support::load::{http_get_once, Load};
use support::netns;
use support::pyhttp::PyHttp;
use support::zk::{connect_within, nerve, put, remove, ZooKeeper};
use support::*;

const PATH: &str = "/nerve/services/web/services";

/// A TCP load on `addr`: each request is a new connection that reads the backend's greeting.
fn tcp_load(addr: SocketAddr, max_time: Duration) -> Load {
    Load::start(2, 100_000, max_time, move || greet(addr))
}

/// An HTTP load on `addr`: each request is `GET /name` on a new connection.
fn http_load(addr: SocketAddr, max_time: Duration) -> Load {
    Load::start(2, 100_000, max_time, move || http_get_once(addr, "/name"))
}

/// Starts an agent with one service `web` discovered from ZooKeeper at `hosts`.
async fn zk_agent(hosts: &str, extra: &str) -> Agent {
    agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    discovery:\n      zookeeper: {{ hosts: [{hosts}], path: {PATH}, session_timeout: 1s }}\n{extra}"
    ))
    .await
}

/// The backends of `web`, as sorted `host:port`.
fn backends(agent: &Agent) -> Vec<String> {
    backends_of(agent, "web")
}

/// The backends of `service`, as sorted `host:port`.
fn backends_of(agent: &Agent, service: &str) -> Vec<String> {
    let mut b: Vec<String> = agent
        .balancer(service)
        .unwrap()
        .current()
        .entries()
        .iter()
        .map(|e| format!("{}:{}", e.backend.host, e.backend.port))
        .collect();
    b.sort_unstable();
    b
}

/// Waits until `web`'s backends are `want` (any order).
async fn wait_backends(agent: &Agent, want: &[&str], within: Duration) {
    wait_backends_of(agent, "web", want, within).await;
}

/// Waits until `service`'s backends are `want` (any order).
async fn wait_backends_of(agent: &Agent, service: &str, want: &[&str], within: Duration) {
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort_unstable();
    let ok = eventually(within, || backends_of(agent, service) == want).await;
    assert!(
        ok,
        "backends {:?}, expected {want:?}",
        backends_of(agent, service)
    );
}

/// A backend's state (`up`, `down`, ...) in `/api/services`.
async fn state(agent: &Agent, backend: &str) -> String {
    let (_, body) = http_get(agent.admin_addr(), "/api/services").await;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    json["services"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == backend)
        .map(|b| b["state"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

/// Polls a backend's state until it is `want`; the time it took, or None after `within`.
async fn wait_state(
    agent: &Agent,
    backend: &str,
    want: &str,
    within: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if state(agent, backend).await == want {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// Connection attempts sinew made to a backend so far (opened and failed).
async fn attempts(agent: &Agent, backend: &str) -> f64 {
    let (_, body) = http_get(agent.admin_addr(), "/metrics").await;
    [
        "sinew_backend_connections_total",
        "sinew_backend_http_connections_opened_total",
        "sinew_backend_connect_failures_total",
    ]
    .iter()
    .filter_map(|m| {
        // The pool's families carry no instance name.
        let name = if m.contains("http_connections") {
            ""
        } else {
            "name=\"\","
        };
        metric(
            &body,
            &format!("{m}{{backend=\"{backend}\",{name}service=\"web\"}}"),
        )
    })
    .sum()
}

/// One sample of a metric of the agent.
async fn agent_metric(agent: &Agent, series: &str) -> Option<f64> {
    let (_, body) = http_get(agent.admin_addr(), "/metrics").await;
    metric(&body, series)
}

/// A free port on 127.0.0.1 as an address.
fn loopback_port() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, process::free_port()))
}

/// Polls an async check every 50 ms until it holds or `within` passes.
async fn eventually_async<F, Fut>(within: Duration, check: F) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < within {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check().await
}

/// A POST with an empty body; the status and body.
async fn post(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        status,
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    )
}

/// Sorting in an expression.
trait TapSort {
    fn tap_sort(self) -> Self;
}

impl TapSort for Vec<String> {
    fn tap_sort(mut self) -> Self {
        self.sort_unstable();
        self
    }
}
