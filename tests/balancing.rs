//! Balancing over real loopback backends: distribution per algorithm, retries, no-backend handling.

mod support;

use std::collections::HashMap;
use std::time::Duration;
use support::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

fn service(balance: &str, backends: &[String]) -> String {
    format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    balance: {balance}\n    backends: [{}]\n    timeouts: {{ connect: 500ms, idle: 10s }}\n",
        backends.join(", ")
    )
}

async fn tally(addr: std::net::SocketAddr, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let name = greet(addr).await.expect("connection served");
        *counts.entry(name).or_insert(0) += 1;
    }
    counts
}

#[tokio::test]
async fn round_robin_respects_weights_exactly() {
    let (a, b, c) = (
        EchoBackend::start("a").await,
        EchoBackend::start("b").await,
        EchoBackend::start("c").await,
    );
    let list = [
        a.hostport(),
        format!("{{ host: 127.0.0.1, port: {}, weight: 2 }}", b.addr.port()),
        c.hostport(),
    ];
    let agent = agent(&service("round_robin", &list)).await;
    let counts = tally(agent.service_addr("web").unwrap(), 400).await;
    assert_eq!(
        (counts["a"], counts["b"], counts["c"]),
        (100, 200, 100),
        "{counts:?}"
    );
}

#[tokio::test]
async fn random_follows_weights() {
    let (a, b) = (EchoBackend::start("a").await, EchoBackend::start("b").await);
    let list = [
        a.hostport(),
        format!("{{ host: 127.0.0.1, port: {}, weight: 3 }}", b.addr.port()),
    ];
    let agent = agent(&service("random", &list)).await;
    let counts = tally(agent.service_addr("web").unwrap(), 800).await;
    let ratio = counts["b"] as f64 / counts["a"] as f64;
    // Expected 3.0; the bounds are over five standard deviations wide for 800 draws.
    assert!((2.2..4.2).contains(&ratio), "{counts:?}");
}

#[tokio::test]
async fn least_conn_sends_new_connections_to_the_least_loaded() {
    let (a, b) = (EchoBackend::start("a").await, EchoBackend::start("b").await);
    let list = [
        a.hostport(),
        format!("{{ host: 127.0.0.1, port: {}, weight: 3 }}", b.addr.port()),
    ];
    let agent = agent(&service("least_conn", &list)).await;
    let addr = agent.service_addr("web").unwrap();
    // Hold 8 connections open: with weights 1:3 least-conn must split them 2:6.
    let mut held = Vec::new();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        *counts.entry(read_line(&mut s).await.unwrap()).or_insert(0) += 1;
        held.push(s);
    }
    assert_eq!((counts["a"], counts["b"]), (2, 6), "{counts:?}");
    // Close the connections to b: the next ones go to b until it is level again.
    let balancer = agent.balancer("web").unwrap();
    drop(held);
    assert!(
        eventually(Duration::from_secs(10), || balancer
            .current()
            .entries()
            .iter()
            .all(|e| e.stats.load.get() == 0))
        .await
    );
}

#[tokio::test]
async fn connect_failure_retries_on_another_backend() {
    let live = EchoBackend::start("live").await;
    let dead = dead_addr().await;
    let agent = agent(&service(
        "round_robin",
        &[dead.to_string(), live.hostport()],
    ))
    .await;
    let counts = tally(agent.service_addr("web").unwrap(), 20).await;
    assert_eq!(counts["live"], 20);
    let (_, body) = http_get(agent.admin_addr(), "/metrics").await;
    let failures = metric(
        &body,
        &format!(
            "sinew_backend_connect_failures_total{{backend=\"{dead}\",name=\"\",service=\"web\"}}"
        ),
    );
    assert_eq!(
        failures,
        Some(10.0),
        "half the picks hit the dead backend first"
    );
    assert_eq!(
        metric(&body, "sinew_service_retries_total{service=\"web\"}"),
        Some(10.0)
    );
}

#[tokio::test]
async fn no_backend_closes_the_client_at_once_and_counts_it() {
    let (d1, d2) = (dead_addr().await, dead_addr().await);
    let agent = agent(&service("round_robin", &[d1.to_string(), d2.to_string()])).await;
    let mut s = TcpStream::connect(agent.service_addr("web").unwrap())
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .expect("closed promptly");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    let (_, body) = http_get(agent.admin_addr(), "/metrics").await;
    assert_eq!(
        metric(&body, "sinew_service_no_backend_total{service=\"web\"}"),
        Some(1.0)
    );
}
