//! The operator's views: `sinew status` in a terminal, and the status page rendered by a real headless
//! browser, both following a backend that goes down.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;
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

/// Renders the page in headless Chromium, letting its scripts run, and returns the DOM.
fn render(url: &str) -> String {
    let profile = std::env::temp_dir().join(format!(
        "sinew-chromium-{}-{}",
        std::process::id(),
        fastrand_u32()
    ));
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=3000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .output()
        .expect("chromium is installed (Debian package `chromium`; bash .ci/run installs it)");
    let _ = std::fs::remove_dir_all(&profile);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fastrand_u32() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
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
