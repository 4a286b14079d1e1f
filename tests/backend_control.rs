//! Runtime control of single backends through the admin API and `sinew backend`: drain lets open
//! connections and requests finish while new ones avoid the backend, across ZooKeeper churn and
//! reloads until `enable`; weight, disable, the error answers and the admin token.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use sinew::agent::Agent;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use support::http::{keep_alive, HttpBackend};
use support::process::BIN;
use support::zk::{nerve, put, remove, ZooKeeper};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const PATH: &str = "/nerve/services/web/services";

/// One admin API request; (status, body).
async fn admin(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let (status, _, body) = support::http_exchange(addr, &req).await;
    (status, body)
}

/// Runs `sinew backend ARGS...` against `admin` with `env` set; (success, stdout, stderr).
async fn cli(admin: SocketAddr, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["backend", "--admin", &admin.to_string()])
        .args(args)
        .env_remove(sinew::control::TOKEN_ENV);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run sinew backend"))
        .await
        .expect("cli task");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The greetings of `n` new connections through `addr`, each closed after its greeting.
async fn greetings(addr: SocketAddr, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(greet(addr).await.expect("greeting"));
    }
    out
}

/// Opens connections through `addr` until one is greeted by `name` (at most 10), and keeps it open.
async fn hold(addr: SocketAddr, name: &str) -> TcpStream {
    for _ in 0..10 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        if read_line(&mut s).await.expect("greeting") == name {
            return s;
        }
    }
    panic!("no connection reached {name}");
}

/// A backend's state in `/api/services` (first service).
async fn state(admin_addr: SocketAddr, backend: SocketAddr) -> serde_json::Value {
    let (_, body) = http_get(admin_addr, "/api/services").await;
    let doc: serde_json::Value = serde_json::from_str(&body).expect("json");
    doc["services"][0]["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .find(|b| b["address"] == backend.to_string())
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

/// Writes the config file of a service `web` discovered in ZooKeeper at `hosts`, plus `extra`.
fn write_zk_config(path: &Path, hosts: &str, extra: &str) {
    let yaml = format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    discovery:\n      zookeeper: {{ hosts: [{hosts}], path: {PATH}, session_timeout: 1s }}\n{extra}",
    );
    std::fs::write(path, yaml).expect("write config");
}

async fn wait_backends(agent: &Agent, n: usize) {
    let b = || {
        agent
            .balancer("web")
            .expect("web")
            .current()
            .entries()
            .len()
    };
    assert!(
        eventually(Duration::from_secs(10), || b() == n).await,
        "{} backends, expected {n}",
        b()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_backend_finishes_open_connections_and_stays_drained_across_churn_and_reload() {
    let zk = ZooKeeper::start().await;
    let (a, b) = (EchoBackend::start("a").await, EchoBackend::start("b").await);
    let client = zk.client().await;
    let node_a = format!("{PATH}/i-a_0000000001");
    put(&client, &node_a, &nerve("127.0.0.1", a.addr.port(), "i-a")).await;
    put(
        &client,
        &format!("{PATH}/i-b_0000000002"),
        &nerve("127.0.0.1", b.addr.port(), "i-b"),
    )
    .await;
    let path = support::process::temp_file("backend-control.yaml", "");
    write_zk_config(&path, &zk.address(), "");
    let source = sinew::agent::Source {
        config: Some(path.clone()),
        ..Default::default()
    };
    let agent = Agent::start_with(
        source.load().expect("config"),
        Some(source),
        sinew::upgrade::Inherited::default(),
        false,
    )
    .await
    .expect("agent");
    wait_backends(&agent, 2).await;
    let (web, admin_addr) = (agent.service_addr("web").expect("web"), agent.admin_addr());

    let mut open = hold(web, "a").await;
    // Drained through the CLI, by the backend's discovered name.
    let (ok, out, err) = cli(admin_addr, &["drain", "web", "i-a"], &[]).await;
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        format!(
            "web {}: drain; no new connections or requests, 1 open finish",
            a.addr
        )
    );
    open.write_all(b"still here\n").await.expect("write");
    assert_eq!(read_line(&mut open).await.expect("echo"), "still here");
    assert!(greetings(web, 10).await.iter().all(|g| g == "b"));
    let view = state(admin_addr, a.addr).await;
    assert_eq!(
        (view["state"].as_str(), view["admin_state"].as_str()),
        (Some("drain"), Some("drain"))
    );
    let metrics = http_get(admin_addr, "/metrics").await.1;
    let up = format!(
        "sinew_backend_up{{backend=\"{}\",name=\"i-a\",service=\"web\"}}",
        a.addr
    );
    assert_eq!(metric(&metrics, &up), Some(0.0));
    assert_eq!(
        metric(
            &metrics,
            r#"sinew_backend_admin_actions_total{action="drain",service="web"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&metrics, r#"sinew_backend_admin_overrides{service="web"}"#),
        Some(1.0)
    );
    drop(open);

    // The znode goes away and comes back: the backend is still drained.
    remove(&client, &node_a).await;
    wait_backends(&agent, 1).await;
    let (_, json) = http_get(admin_addr, "/api/overrides").await;
    let json: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(
        json["services"]["web"][0],
        serde_json::json!({"address": a.addr.to_string(), "admin_state": "drain",
            "weight_override": null, "in_set": false})
    );
    let (ok, list, _) = cli(admin_addr, &["list"], &[]).await;
    assert!(ok);
    let row: Vec<String> = list
        .lines()
        .nth(1)
        .expect("a row")
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(row, ["web", &a.addr.to_string(), "drain", "-", "no"]);
    put(&client, &node_a, &nerve("127.0.0.1", a.addr.port(), "i-a")).await;
    wait_backends(&agent, 2).await;
    assert!(greetings(web, 10).await.iter().all(|g| g == "b"));

    // A reload that builds the service anew keeps it drained.
    let before = agent.balancer("web").expect("web");
    write_zk_config(&path, &zk.address(), "    balance: least_conn\n");
    let (status, body) = admin(admin_addr, "POST", "/api/reload", None).await;
    assert_eq!(status, 200, "{body}");
    let after = agent.balancer("web").expect("web");
    assert!(
        !Arc::ptr_eq(&before, &after),
        "the reload built a new balancer"
    );
    wait_backends(&agent, 2).await;
    assert!(greetings(web, 10).await.iter().all(|g| g == "b"));
    assert_eq!(
        state(admin_addr, a.addr).await["state"].as_str(),
        Some("drain")
    );

    // Enabled: traffic returns.
    let (status, body) = admin(
        admin_addr,
        "POST",
        &format!("/api/services/web/backends/{}/enable", a.addr),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let seen = greetings(web, 10).await;
    assert!(seen.iter().any(|g| g == "a"), "{seen:?}");
    let metrics = http_get(admin_addr, "/metrics").await.1;
    assert_eq!(metric(&metrics, &up), Some(1.0));
    assert_eq!(
        metric(&metrics, r#"sinew_backend_admin_overrides{service="web"}"#),
        Some(0.0)
    );
    agent.shutdown(Duration::from_secs(1)).await;
}

/// Sends `GET path` on an HTTP/1.1 keep-alive connection; (status, body).
async fn send(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    path: &str,
) -> (u16, String) {
    let req = hyper::Request::get(path)
        .header("host", "web")
        .body(Empty::new())
        .expect("request");
    sender.ready().await.expect("connection ready");
    let resp = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req))
        .await
        .expect("answer in time")
        .expect("answer");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_http_backend_finishes_its_request_and_keep_alive_moves_on() {
    let (a, b) = (HttpBackend::start("a").await, HttpBackend::start("b").await);
    let agent = agent(&support::http::web_service(
        &[a.hostport(), b.hostport()],
        "",
    ))
    .await;
    let (web, admin_addr) = (agent.service_addr("web").expect("web"), agent.admin_addr());
    let path =
        |who: &HttpBackend, verb: &str| format!("/api/services/web/backends/{}/{verb}", who.addr);
    // Weight 0 on b: the slow request below must reach a.
    assert_eq!(
        admin(admin_addr, "PUT", &path(&b, "weight/0"), None)
            .await
            .0,
        200
    );
    let mut client = keep_alive(web).await;
    let mut slow_client = keep_alive(web).await;
    let slow = tokio::spawn(async move { send(&mut slow_client, "/slow/500").await });
    assert!(eventually(Duration::from_secs(5), || a.requests() == 1).await);
    assert_eq!(
        admin(admin_addr, "POST", &path(&b, "enable"), None).await.0,
        200
    );
    let (status, body) = admin(admin_addr, "POST", &path(&a, "drain"), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("1 open finish"), "{body}");
    assert_eq!(
        slow.await.expect("slow request"),
        (200, "a".to_string()),
        "the open request finishes"
    );
    for _ in 0..10 {
        assert_eq!(send(&mut client, "/").await, (200, "b".to_string()));
    }
    let mut fresh = keep_alive(web).await;
    for _ in 0..5 {
        assert_eq!(send(&mut fresh, "/").await, (200, "b".to_string()));
    }
    assert_eq!(a.requests(), 1, "nothing new reached the drained backend");
    agent.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_sets_round_robin_proportions_and_disable_takes_a_backend_out() {
    let (a, b) = (EchoBackend::start("a").await, EchoBackend::start("b").await);
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    backends: [{}, {}]\n",
        a.hostport(),
        b.hostport()
    ))
    .await;
    let (web, admin_addr) = (agent.service_addr("web").expect("web"), agent.admin_addr());
    let (ok, out, err) = cli(admin_addr, &["weight", "web", &a.hostport(), "3"], &[]).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("web {}: weight 3", a.addr));
    // 40 connections are ten whole rounds of the 3:1 schedule.
    let seen = greetings(web, 40).await;
    let on_a = seen.iter().filter(|g| *g == "a").count();
    assert_eq!((on_a, seen.len() - on_a), (30, 10));
    let view = state(admin_addr, a.addr).await;
    assert_eq!(
        (view["weight"].as_u64(), view["weight_override"].as_u64()),
        (Some(1), Some(3))
    );

    let (ok, _, err) = cli(admin_addr, &["disable", "web", &b.hostport()], &[]).await;
    assert!(ok, "{err}");
    assert!(greetings(web, 10).await.iter().all(|g| g == "a"));
    let view = state(admin_addr, b.addr).await;
    assert_eq!(
        (view["state"].as_str(), view["admin_state"].as_str()),
        (Some("maintenance"), Some("disable"))
    );
    // `sinew status SERVICE` shows both overrides.
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(BIN)
            .args(["status", "--admin", &admin_addr.to_string(), "web"])
            .output()
            .expect("run sinew status")
    })
    .await
    .expect("status task");
    let out = String::from_utf8_lossy(&status.stdout);
    let line = |addr: SocketAddr| {
        let prefix = addr.to_string();
        out.lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or("")
            .to_string()
    };
    assert!(line(a.addr).contains("3 (was 1)"), "{out}");
    assert!(line(b.addr).contains("maintenance (operator)"), "{out}");
    // And so does the status page, in the backend's state and weight cells.
    let url = format!("http://{admin_addr}/");
    let dom = tokio::task::spawn_blocking(move || support::chromium::render(&url))
        .await
        .expect("render");
    let row = |addr: SocketAddr| support::chromium::backend_row(&dom, &addr.to_string());
    assert!(row(a.addr).contains("3 (operator; discovered 1)"), "{dom}");
    assert!(
        row(b.addr).contains("state maintenance") && row(b.addr).contains("(operator disable)"),
        "{dom}"
    );
    agent.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_the_token_is_required_when_set() {
    let a = EchoBackend::start("a").await;
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0, token: s3cret }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    backends: [{}]\n",
        a.hostport()
    ))
    .await;
    let admin_addr = agent.admin_addr();
    let base = format!("/api/services/web/backends/{}", a.addr);
    let t = Some("s3cret");
    let (status, body) = admin(
        admin_addr,
        "POST",
        "/api/services/nope/backends/1.2.3.4:5/drain",
        t,
    )
    .await;
    assert_eq!(
        (status, body.trim()),
        (404, r#"no service named "nope" (services: web)"#)
    );
    let (status, body) = admin(
        admin_addr,
        "POST",
        "/api/services/web/backends/10.9.9.9:80/drain",
        t,
    )
    .await;
    assert_eq!(status, 404);
    assert!(
        body.contains(r#"has no backend "10.9.9.9:80""#) && body.contains(&a.hostport()),
        "{body}"
    );
    for bad in ["257", "x", "-1"] {
        let (status, body) = admin(admin_addr, "PUT", &format!("{base}/weight/{bad}"), t).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("from 0 to 256"), "{body}");
    }
    assert_eq!(
        admin(admin_addr, "GET", &format!("{base}/drain"), t)
            .await
            .0,
        405
    );
    assert_eq!(
        admin(admin_addr, "POST", &format!("{base}/weight/2"), t)
            .await
            .0,
        405
    );
    assert_eq!(
        admin(admin_addr, "POST", &format!("{base}/reboot"), t)
            .await
            .0,
        404
    );

    // Without the token: refused, and nothing changes.
    assert_eq!(
        admin(admin_addr, "POST", &format!("{base}/drain"), None)
            .await
            .0,
        401
    );
    let (ok, _, err) = cli(admin_addr, &["drain", "web", &a.hostport()], &[]).await;
    assert!(!ok && err.contains("HTTP 401"), "{err}");
    assert_eq!(agent.balancer("web").expect("web").overrides().len(), 0);
    // With it, from the flag or the environment.
    let (ok, _, err) = cli(
        admin_addr,
        &["--token", "s3cret", "drain", "web", &a.hostport()],
        &[],
    )
    .await;
    assert!(ok, "{err}");
    let (ok, out, err) = cli(
        admin_addr,
        &["enable", "web", &a.hostport()],
        &[(sinew::control::TOKEN_ENV, "s3cret")],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("no override"), "{out}");
    let (ok, out, _) = cli(admin_addr, &["list"], &[]).await;
    assert!(ok);
    assert_eq!(out.trim(), "no overrides in force");
    agent.shutdown(Duration::from_secs(1)).await;
}
