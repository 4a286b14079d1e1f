//! Registration against a real ZooKeeper: the znode follows the service's health byte for byte in
//! Nerve's format, survives a session expiry, honours maintenance, and one sinew's registration is
//! another sinew's discovery.

mod support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::http::HttpBackend;
use support::register::*;
use support::zk::ZooKeeper;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_znode_follows_health_in_nerves_exact_format() {
    let zk = ZooKeeper::start().await;
    let backend = EchoBackend::start("web").await;
    let addr = backend.addr;
    let agent = agent(&register(
        &zk,
        addr.port(),
        "[{ type: tcp, timeout: 200ms, rise: 1, fall: 2 }]",
    ))
    .await;
    let client = zk.client().await;
    let n = wait_nodes(&client, 1, Duration::from_secs(5)).await;
    assert!(
        n[0].0.starts_with("i-test_") && n[0].0.len() == "i-test_".len() + 10,
        "{n:?}"
    );
    assert_eq!(
        n[0].1,
        format!(
            r#"{{"host":"127.0.0.1","port":{},"name":"i-test"}}"#,
            addr.port()
        )
    );

    let admin = agent.admin_addr().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(support::process::BIN)
            .args(["status", "--admin", &admin])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("web "))
        .unwrap_or_default();
    assert!(
        text.contains("REGISTERED") && line.contains("up") && line.contains("i-test_"),
        "{text}"
    );

    drop(backend);
    wait_nodes(&client, 0, Duration::from_secs(2)).await;
    let (_, metrics) = http_get(agent.admin_addr(), "/metrics").await;
    assert_eq!(
        metric(&metrics, "sinew_register_up{service=\"web\"}"),
        Some(0.0)
    );
    let _back = EchoBackend::start_on(addr, "web").await;
    wait_nodes(&client, 1, Duration::from_secs(2)).await;

    // Maintenance removes the node while the service stays healthy.
    let maint = post(agent.admin_addr(), "POST", "/api/register/web/maintenance").await;
    assert!(maint.starts_with("HTTP/1.1 200"), "{maint}");
    wait_nodes(&client, 0, Duration::from_secs(2)).await;
    // The view is written at the end of the round that deleted the node: poll briefly.
    let mut view = String::new();
    for _ in 0..50 {
        view = http_get(agent.admin_addr(), "/api/register").await.1;
        if view.contains("\"maintenance\": true") && view.contains("\"up\": true") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        view.contains("\"maintenance\": true") && view.contains("\"up\": true"),
        "{view}"
    );
    post(
        agent.admin_addr(),
        "DELETE",
        "/api/register/web/maintenance",
    )
    .await;
    wait_nodes(&client, 1, Duration::from_secs(2)).await;
    assert!(
        post(agent.admin_addr(), "POST", "/api/register/nope/maintenance")
            .await
            .starts_with("HTTP/1.1 404")
    );

    // Shutdown deletes the node at once rather than waiting for the session to expire.
    agent.shutdown(Duration::from_secs(1)).await;
    wait_nodes(&client, 0, Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_znode_comes_back_after_a_session_expiry() {
    let zk = ZooKeeper::start().await;
    let backend = EchoBackend::start("web").await;
    let _agent = agent(&register(&zk, backend.addr.port(), "[{ type: tcp }]")).await;
    let client = zk.client().await;
    let before = wait_nodes(&client, 1, Duration::from_secs(5)).await;
    drop(client);
    zk.pause();
    tokio::time::sleep(Duration::from_secs(3)).await;
    zk.resume();
    let client = zk.client().await;
    // The old node goes with the expired session and exactly one new one replaces it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = nodes(&client).await;
        if now.len() == 1 && now[0].0 != before[0].0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not re-created: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sinew_registers_and_another_discovers_and_routes() {
    let zk = ZooKeeper::start().await;
    let backend = HttpBackend::start("registered").await;
    let _a = agent(&register(
        &zk,
        backend.addr.port(),
        "[{ type: http, uri: /status/200 }]",
    ))
    .await;
    let b = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    mode: http\n    discovery:\n      zookeeper: {{ hosts: [{}], path: {PATH} }}\n",
        zk.address()
    ))
    .await;
    let addr = b.service_addr("web").unwrap();
    let mut body = String::new();
    for _ in 0..250 {
        let (status, text) = http_get(addr, "/").await;
        if status == 200 {
            body = text;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(body, "registered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nerve_config_runs_and_sigterm_deregisters_before_the_listeners_close() {
    use support::process::*;
    let zk = ZooKeeper::start().await;
    let backend = EchoBackend::start("web").await;
    let nerve_conf = temp_file(
        "nerve.conf.json",
        &format!(
            r#"{{"instance_id": "i-nerve", "services": {{"web": {{"host": "127.0.0.1", "port": {}, "reporter_type": "zookeeper",
                "zk_hosts": ["{}"], "zk_path": "{PATH}", "check_interval": 0.1, "checks": [{{"type": "tcp", "timeout": 0.2}}]}}}}}}"#,
            backend.addr.port(),
            zk.address()
        ),
    );
    check_ok("--nerve-config", &nerve_conf);
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/nerve/nerve.conf.json");
    check_ok("--nerve-config", &example);

    let (port, admin) = (free_port(), free_port());
    let config = temp_file(
        "with-nerve.yaml",
        &format!("admin: {{ listen: 127.0.0.1:{admin} }}\nservices:\n  dep:\n    listen: 127.0.0.1:{port}\n    backends: [{}]\n", backend.hostport()),
    );
    let child = Proc(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&config)
            .arg("--nerve-config")
            .arg(&nerve_conf)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let listener: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_listening(listener).await;
    let client = zk.client().await;
    let n = wait_nodes(&client, 1, Duration::from_secs(5)).await;
    assert_eq!(
        n[0].1,
        format!(
            r#"{{"host":"127.0.0.1","port":{},"name":"i-nerve"}}"#,
            backend.addr.port()
        )
    );

    child.signal("-TERM");
    wait_nodes(&client, 0, Duration::from_secs(1)).await;
    assert!(
        tokio::net::TcpStream::connect(listener).await.is_ok(),
        "the listener still accepts during the drain"
    );
}
