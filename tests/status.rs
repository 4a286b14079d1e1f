//! The operator's views: `sinew status` in a terminal, and the status page rendered by a real headless
//! browser, both following a backend that goes down.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;
use support::chromium::{render, run as chromium};
use support::process::BIN;
use support::*;

async fn wait_down(admin: SocketAddr) {
    for _ in 0..200 {
        if http_get(admin, "/api/services")
            .await
            .1
            .contains("\"down\"")
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the backend was never marked down");
}

fn status(args: &[&str]) -> String {
    let out = Command::new(BIN).arg("status").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn config(a: &EchoBackend, b: &EchoBackend) -> String {
    format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    backends: [{}, {}]\n    health_check: {{ interval: 100ms, rise: 1, fall: 1 }}\n",
        a.hostport(),
        b.hostport()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinew_status_prints_services_and_backends() {
    let (a, b) = (EchoBackend::start("a").await, EchoBackend::start("b").await);
    let agent = agent(&config(&a, &b)).await;
    let admin = agent.admin_addr().to_string();
    let overview = tokio::task::spawn_blocking({
        let admin = admin.clone();
        move || status(&["--admin", &admin])
    })
    .await
    .unwrap();
    assert!(
        overview.contains("web") && overview.contains("2/2"),
        "{overview}"
    );

    let dead = b.hostport();
    drop(b);
    wait_down(agent.admin_addr()).await;
    let (overview, detail, json) = tokio::task::spawn_blocking(move || {
        (
            status(&["--admin", &admin]),
            status(&["--admin", &admin, "web"]),
            status(&["--admin", &admin, "--json"]),
        )
    })
    .await
    .unwrap();
    assert!(overview.contains("1/2"), "{overview}");
    let line = detail
        .lines()
        .find(|l| l.starts_with(&dead))
        .unwrap_or_default();
    assert!(line.contains("down") && line.contains("FAIL"), "{detail}");
    assert!(detail.contains("backends from static"), "{detail}");
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed["services"][0]["name"], "web");

    let out = Command::new(BIN)
        .args(["status", "--admin", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin server at 127.0.0.1:1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_shows_services_and_follows_backend_state() {
    let (a, b) = (EchoBackend::start("a").await, EchoBackend::start("b").await);
    let agent = agent(&config(&a, &b)).await;
    let url = format!("http://{}/", agent.admin_addr());
    let dom = tokio::task::spawn_blocking({
        let url = url.clone();
        move || render(&url)
    })
    .await
    .unwrap();
    assert!(
        dom.contains("data-service=\"web\""),
        "the service is listed: {dom}"
    );
    let row = |dom: &str, addr: &str| {
        dom.split("<tr")
            .find(|r| r.contains(&format!("data-backend=\"{addr}\"")))
            .unwrap_or_default()
            .to_string()
    };
    assert!(row(&dom, &b.hostport()).contains("state up"), "{dom}");

    let dead = b.hostport();
    drop(b);
    wait_down(agent.admin_addr()).await;
    let dom = tokio::task::spawn_blocking(move || render(&url))
        .await
        .unwrap();
    assert!(row(&dom, &dead).contains("state down"), "{dom}");
    assert!(row(&dom, &a.hostport()).contains("state up"), "{dom}");
}

/// Where screenshots go: `SINEW_SHOTS` when set (to look at them), else a temporary directory.
fn shot_dir() -> std::path::PathBuf {
    let dir = std::env::var_os("SINEW_SHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("sinew-shots-{}", std::process::id()))
        });
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Takes a screenshot of `url` at `width` × `height` into `file` and checks it is a PNG.
fn screenshot(url: &str, file: &std::path::Path, width: u32, height: u32) {
    let _ = std::fs::remove_file(file);
    chromium(
        url,
        &[
            &format!("--screenshot={}", file.display()),
            &format!("--window-size={width},{height}"),
            "--hide-scrollbars",
        ],
    );
    let png = std::fs::read(file).unwrap_or_default();
    assert!(
        png.starts_with(b"\x89PNG"),
        "no screenshot at {}",
        file.display()
    );
}

/// The part of the DOM from `marker` to the next service section.
fn section<'a>(dom: &'a str, marker: &str) -> &'a str {
    let start = dom.find(marker).unwrap_or(dom.len());
    let rest = &dom[start..];
    let end = rest[1..].find("<section").map_or(rest.len(), |i| i + 1);
    &rest[..end]
}

fn traffic_config(web: &[String], api: &str, cache: &EchoBackend, dead: SocketAddr) -> String {
    format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    mode: http\n    backends: [{}]\n  api:\n    listen: 127.0.0.1:0\n    mode: http\n    backends: [{api}]\n  cache:\n    listen: 127.0.0.1:0\n    backends: [{}]\n  billing:\n    listen: 127.0.0.1:0\n    backends: [{dead}]\n    health_check: {{ interval: 100ms, rise: 1, fall: 1 }}\n",
        web.join(", "),
        cache.hostport(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_shows_traffic_sparklines_highlights_and_filters() {
    let web = [
        support::http::HttpBackend::start("w1").await,
        support::http::HttpBackend::start("w2").await,
    ];
    let api = support::http::HttpBackend::start("api").await;
    let cache = EchoBackend::start("cache").await;
    let dead = dead_addr().await;
    let hosts: Vec<String> = web.iter().map(|b| b.hostport()).collect();
    let agent = agent(&traffic_config(&hosts, &api.hostport(), &cache, dead)).await;
    let admin = agent.admin_addr();
    let (web_addr, api_addr) = (
        agent.service_addr("web").unwrap(),
        agent.service_addr("api").unwrap(),
    );
    // Bounded traffic: 40 requests to web (one in ten a 503), 10 to api, 5 connections to cache.
    for i in 0..40 {
        let path = if i % 10 == 0 { "/status/503" } else { "/" };
        http_get(web_addr, path).await;
    }
    for _ in 0..10 {
        http_get(api_addr, "/").await;
    }
    for _ in 0..5 {
        greet(agent.service_addr("cache").unwrap()).await.unwrap();
    }
    // Wait for a sample that holds the traffic (every 5 s) and for billing's backend to be down.
    let mut sampled = false;
    for _ in 0..150 {
        let body = http_get(admin, "/api/services").await.1;
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        let svc = |n: &str| {
            doc["services"]
                .as_array()
                .and_then(|l| l.iter().find(|s| s["name"] == n))
                .cloned()
                .unwrap_or_default()
        };
        let rps = svc("web")["traffic"]["rps"].as_f64().unwrap_or(0.0);
        if rps > 0.0 && svc("billing")["backends"][0]["state"] == "down" {
            sampled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sampled, "no sample with web's traffic");
    let url = format!("http://{admin}/");
    let dom = tokio::task::spawn_blocking({
        let url = url.clone();
        move || render(&url)
    })
    .await
    .unwrap();

    // Every HTTP backend shows its responses and a sparkline of them.
    let row = |dom: &str, addr: &str| {
        dom.split("<tr")
            .find(|r| r.contains(&format!("data-backend=\"{addr}\"")))
            .unwrap_or_default()
            .to_string()
    };
    let mut served = 0;
    for b in web.iter().chain([&api]) {
        let row = row(&dom, &b.hostport());
        let requests: u64 = row
            .split("class=\"num requests\">")
            .nth(1)
            .and_then(|r| r.split('<').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(requests > 0, "{} shows no requests: {row}", b.hostport());
        served += requests;
        assert!(
            row.contains("<polyline class=\"rps\""),
            "no sparkline: {row}"
        );
    }
    assert_eq!(served, 50, "{dom}");
    let web_section = section(&dom, "data-service=\"web\"");
    assert!(web_section.contains("req/s"), "{web_section}");
    assert!(
        web_section.contains("<polyline class=\"err\""),
        "web's 503s: {web_section}"
    );
    // The service without a usable backend is highlighted, and only that one.
    let billing = section(&dom, "data-service=\"billing\"");
    assert!(
        billing.starts_with("data-service=\"billing\" data-usable=\"0\""),
        "{billing}"
    );
    let opening = |name: &str| {
        dom.split("<section")
            .find(|s| s.contains(&format!("data-service=\"{name}\"")))
            .and_then(|s| s.split('>').next())
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        opening("billing").contains("service unusable"),
        "{}",
        opening("billing")
    );
    assert!(dom.contains("NO USABLE BACKEND"));
    for ok in ["web", "api", "cache"] {
        assert!(!opening(ok).contains("unusable"), "{}", opening(ok));
    }

    // The filter hides the others; the order follows the sort.
    let filtered = tokio::task::spawn_blocking({
        let url = format!("{url}?filter=api");
        move || render(&url)
    })
    .await
    .unwrap();
    assert!(filtered.contains("data-service=\"api\""), "{filtered}");
    for hidden in ["web", "cache", "billing"] {
        assert!(
            !filtered.contains(&format!("data-service=\"{hidden}\"")),
            "{filtered}"
        );
    }
    let by_rps = tokio::task::spawn_blocking({
        let url = format!("{url}?sort=rps");
        move || render(&url)
    })
    .await
    .unwrap();
    let pos = |n: &str| {
        by_rps
            .find(&format!("data-service=\"{n}\""))
            .unwrap_or(usize::MAX)
    };
    assert!(
        pos("web") < pos("api") && pos("api") < pos("billing"),
        "{by_rps}"
    );

    let dir = shot_dir();
    tokio::task::spawn_blocking(move || {
        screenshot(&url, &dir.join("status-wide.png"), 1800, 1100);
        screenshot(
            &format!("{url}?filter=web"),
            &dir.join("status-filter-web.png"),
            1400,
            500,
        );
        screenshot(
            &format!("{url}?sort=errors"),
            &dir.join("status-narrow.png"),
            900,
            1200,
        );
    })
    .await
    .unwrap();
}

/// `sinew status` with `args`, its standard output read by nobody: the read end is closed at once.
fn status_into_closed_pipe(args: &[&str]) -> std::process::Output {
    let mut child = Command::new(BIN)
        .arg("status")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinew_status_filters_json_survives_a_closed_pipe_and_says_os_errors_once() {
    let (a, b) = (EchoBackend::start("a").await, EchoBackend::start("b").await);
    let agent = agent(&config(&a, &b)).await;
    let admin = agent.admin_addr().to_string();
    // A server that resets every connection: the OS error under hyper's "connection error".
    let reset = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let reset_addr = reset.local_addr().unwrap().to_string();
    let resetter = tokio::spawn(async move {
        while let Ok((mut s, _)) = reset.accept().await {
            // The request is read first, so the reset meets a request in flight (not a connection
            // the client has not written to yet, which hyper reports as cancelled, with no OS error).
            let mut buf = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
            // A zero linger resets at once on drop; it is a non-zero one that would block.
            #[allow(deprecated)]
            let _ = s.set_linger(Some(Duration::ZERO));
            drop(s);
        }
    });
    tokio::task::spawn_blocking(move || {
        let one: serde_json::Value =
            serde_json::from_str(&status(&["--admin", &admin, "--json", "web"])).unwrap();
        assert_eq!(one["name"], "web");
        assert_eq!(one["backends"].as_array().map(Vec::len), Some(2), "{one}");
        let out = Command::new(BIN)
            .args(["status", "--admin", &admin, "--json", "nope"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("no service named \"nope\""));

        for args in [vec!["--admin", &admin], vec!["--admin", &admin, "--json"]] {
            let out = status_into_closed_pipe(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
            assert!(stderr.is_empty(), "{args:?}: {stderr}");
        }

        let out = Command::new(BIN)
            .args(["status", "--admin", &reset_addr])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(&format!("admin server at {reset_addr}")),
            "{stderr}"
        );
        assert_eq!(
            stderr.matches("os error").count(),
            1,
            "the OS error, once: {stderr}"
        );
    })
    .await
    .unwrap();
    resetter.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinew_status_shows_discovery_age_and_the_zookeeper_session() {
    let mut zk = support::zk::ZooKeeper::start().await;
    let backend = EchoBackend::start("a").await;
    let client = zk.client().await;
    support::zk::put(
        &client,
        "/status/web/a",
        &support::zk::nerve("127.0.0.1", backend.addr.port(), "a"),
    )
    .await;
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    discovery:\n      zookeeper: {{ hosts: [{}], path: /status/web }}\n  local:\n    listen: 127.0.0.1:0\n    backends: [{}]\n",
        zk.address(),
        backend.hostport(),
    ))
    .await;
    let admin = agent.admin_addr().to_string();
    let column = |out: &str, service: &str, header: &str| -> String {
        let mut lines = out.lines();
        let head = lines.next().unwrap_or_default();
        let at = head.find(header).unwrap_or(0);
        lines
            .find(|l| l.starts_with(service))
            .and_then(|l| l.get(at..))
            .and_then(|c| c.split_whitespace().next())
            .unwrap_or_default()
            .to_string()
    };
    let overview = |admin: String| async move {
        tokio::task::spawn_blocking(move || status(&["--admin", &admin]))
            .await
            .unwrap()
    };
    let mut out = String::new();
    for _ in 0..100 {
        out = overview(admin.clone()).await;
        if column(&out, "web", "ZOOKEEPER") == "connected" && column(&out, "web", "UP/") == "1/1" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(column(&out, "web", "ZOOKEEPER"), "connected", "{out}");
    assert!(column(&out, "web", "UPDATED").ends_with('s'), "{out}");
    assert_eq!(
        column(&out, "local", "ZOOKEEPER"),
        "-",
        "not from ZooKeeper: {out}"
    );
    let detail = tokio::task::spawn_blocking({
        let admin = admin.clone();
        move || status(&["--admin", &admin, "web"])
    })
    .await
    .unwrap();
    assert!(detail.contains("ZooKeeper session connected"), "{detail}");

    drop(client);
    zk.kill();
    for _ in 0..150 {
        out = overview(admin.clone()).await;
        if column(&out, "web", "ZOOKEEPER") == "LOST" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(column(&out, "web", "ZOOKEEPER"), "LOST", "{out}");
    // The page says so on that service, and on no other.
    let url = format!("http://{admin}/");
    let dom = tokio::task::spawn_blocking(move || {
        screenshot(
            &url,
            &shot_dir().join("status-zookeeper-lost.png"),
            1400,
            450,
        );
        render(&url)
    })
    .await
    .unwrap();
    assert!(
        section(&dom, "data-service=\"web\"").contains("ZOOKEEPER SESSION LOST"),
        "{dom}"
    );
    assert!(
        !section(&dom, "data-service=\"local\"").contains("ZooKeeper"),
        "{dom}"
    );
}
