//! The binary end to end: `check` errors, `run` with SIGTERM drain, `demo`, and the admin endpoints
//! (including `promtool check metrics`), plus idle timeout and half-close on the data path.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::process::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[test]
fn check_rejects_broken_configs_with_a_precise_message() {
    let cases = [
        ("services:\n  web:\n    listen: 127.0.0.1:99999\n    backends: [127.0.0.1:1]\n", "services.web.listen: invalid socket address \"127.0.0.1:99999\""),
        ("services:\n  web:\n    listen: 127.0.0.1:4001\n    backends: [127.0.0.1:1]\n    balance: fastest\n", "services.web.balance: unknown variant `fastest`"),
        ("services:\n  web:\n    listen: 127.0.0.1:4001\n", "services.web: no backends"),
        ("services:\n  web:\n    listen: 127.0.0.1:4001\n    backends: [127.0.0.1:1]\n    timeout: { connect: 1s }\n", "unknown field `timeout`"),
    ];
    for (i, (yaml, expected)) in cases.iter().enumerate() {
        let path = temp_file(&format!("bad{i}.yaml"), yaml);
        let out = Command::new(BIN)
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i} must fail");
        assert!(
            stderr.contains(&format!("{}: ", path.display())),
            "names the file: {stderr}"
        );
        assert!(stderr.contains(expected), "case {i}: {stderr}");
    }
    let good = temp_file(
        "good.yaml",
        "services:\n  web:\n    listen: 127.0.0.1:4001\n    backends: [127.0.0.1:1]\n",
    );
    check_ok("--config", &good);
}

#[tokio::test]
async fn sigterm_stops_accepting_and_drains_open_connections() {
    let backend = EchoBackend::start("a").await;
    let (port, admin) = (free_port(), free_port());
    let config = temp_file(
        "run.yaml",
        &format!(
            "admin: {{ listen: 127.0.0.1:{admin} }}\nshutdown_grace: 10s\nservices:\n  web:\n    listen: 127.0.0.1:{port}\n    backends: [{}]\n",
            backend.hostport()
        ),
    );
    let child = Proc(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&config)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_listening(addr).await;
    let mut open = TcpStream::connect(addr).await.unwrap();
    assert_eq!(read_line(&mut open).await.unwrap(), "a");

    child.signal("-TERM");
    let mut refused = false;
    for _ in 0..100 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "the listener closes on SIGTERM");
    open.write_all(b"in flight\n").await.unwrap();
    assert_eq!(
        read_line(&mut open).await.unwrap(),
        "in flight",
        "open connections keep working"
    );
    open.shutdown().await.unwrap();
    let mut rest = Vec::new();
    open.read_to_end(&mut rest).await.unwrap();

    let mut child = child;
    let status = tokio::task::spawn_blocking(move || {
        let s = child.0.wait();
        (s, child)
    })
    .await
    .unwrap()
    .0
    .unwrap();
    assert!(status.success(), "exits 0 once drained: {status}");
}

#[tokio::test]
async fn demo_balances_over_its_backends() {
    let (port, admin) = (free_port(), free_port());
    let mut child = Proc(
        Command::new(BIN)
            .args([
                "demo",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--admin",
                &format!("127.0.0.1:{admin}"),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let first = tokio::task::spawn_blocking(move || BufReader::new(stdout).lines().next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(first.contains("sinew demo"), "{first}");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..8 {
        let (status, body) = http_get(addr, "/").await;
        assert_eq!(status, 200);
        seen.insert(
            body.split_whitespace()
                .nth(2)
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    child.signal("-INT");
}

#[tokio::test]
async fn metrics_pass_promtool_and_api_lists_services() {
    let backend = EchoBackend::start("a").await;
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    backends: [{}, 127.0.0.1:1]\n  www:\n    listen: 127.0.0.1:0\n    mode: http\n    backends: [127.0.0.1:1]\n",
        backend.hostport()
    ))
    .await;
    for _ in 0..4 {
        let _ = greet(agent.service_addr("web").unwrap()).await;
    }
    let (status, _) = http_get(agent.service_addr("www").unwrap(), "/").await;
    assert_eq!(status, 502);
    let (status, body) = http_get(agent.admin_addr(), "/metrics").await;
    assert_eq!(status, 200);
    for family in [
        "sinew_backend_connections_total",
        "sinew_backend_connections_active",
        "sinew_backend_sent_bytes_total",
        "sinew_backend_received_bytes_total",
        "sinew_backend_connect_failures_total",
        "sinew_backend_up",
        "sinew_backend_http_responses_total",
        "sinew_backend_http_response_duration_seconds",
        "sinew_service_retries_total",
        "sinew_service_backends",
        "sinew_service_backend_swaps_total",
    ] {
        assert!(
            body.contains(&format!("# TYPE {family} ")),
            "{family} missing"
        );
    }
    assert_eq!(
        metric(&body, "sinew_service_backends{service=\"web\"}"),
        Some(2.0)
    );
    support::promtool_check_metrics(&body);

    let (status, api) = http_get(agent.admin_addr(), "/api/services").await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&api).unwrap();
    let web = &json["services"][0];
    assert_eq!(web["name"], "web");
    assert_eq!(web["balance"], "round_robin");
    assert_eq!(
        web["listen"],
        agent.service_addr("web").unwrap().to_string()
    );
    assert_eq!(web["backends"][0]["address"], backend.hostport());
    assert_eq!(web["backends"][0]["weight"], 1);
    assert_eq!(web["backends"][0]["origin"], "static");
    assert_eq!(http_get(agent.admin_addr(), "/ready").await.0, 200);
    assert_eq!(http_get(agent.admin_addr(), "/nope").await.0, 404);
}

#[tokio::test]
async fn ready_waits_for_the_first_backends() {
    let agent = agent(
        "admin: { listen: 127.0.0.1:0 }\nservices:\n  web:\n    listen: 127.0.0.1:0\n    discovery: { file: /nonexistent/sinew/backends.json }\n",
    )
    .await;
    let (status, body) = http_get(agent.admin_addr(), "/ready").await;
    assert_eq!(status, 503);
    assert!(body.contains("web"), "{body}");
}

#[tokio::test]
async fn idle_connections_are_closed_and_half_close_is_honoured() {
    let backend = EchoBackend::start("a").await;
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    backends: [{}]\n    timeouts: {{ connect: 1s, idle: 300ms }}\n",
        backend.hostport()
    ))
    .await;
    let addr = agent.service_addr("web").unwrap();

    // Half-close: the client finishes sending, and still gets every byte back, then EOF.
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(read_line(&mut s).await.unwrap(), "a");
    s.write_all(b"last words\n").await.unwrap();
    s.shutdown().await.unwrap();
    let mut rest = String::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rest, "last words\n");

    // Idle: a silent connection is closed after the idle timeout, not before.
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(read_line(&mut s).await.unwrap(), "a");
    let started = std::time::Instant::now();
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed too early: {:?}",
        started.elapsed()
    );
    let (_, body) = http_get(agent.admin_addr(), "/metrics").await;
    assert_eq!(
        metric(&body, "sinew_service_idle_timeouts_total{service=\"web\"}"),
        Some(1.0)
    );
}
