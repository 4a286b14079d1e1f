//! The shipped monitoring: `examples/prometheus/alerts.yaml` passes promtool and its unit tests, and a real
//! Prometheus scraping sinew answers the dashboard's queries (`examples/grafana/sinew.json`): request rate,
//! error ratio and p99 per service, and which backend fails and why.

mod support;

use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::http::HttpBackend;
use support::process::free_port;
use support::{agent, dead_addr, greet, http_get, EchoBackend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool is installed (Debian package `prometheus`; bash .ci/run installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}: {text}");
    text
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = Path::new(ROOT).join("examples/prometheus");
    let checked = promtool(&["check", "rules", "alerts.yaml"], &dir);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(&["test", "rules", "alerts.test.yaml"], &dir);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// The dashboard's panels: (title, queries), template variables filled in for one Prometheus.
fn dashboard_queries() -> Vec<(String, Vec<String>)> {
    let path = Path::new(ROOT).join("examples/grafana/sinew.json");
    let text = std::fs::read_to_string(&path).expect("dashboard exists");
    let dash: Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let panels = dash["panels"].as_array().expect("panels");
    panels
        .iter()
        .filter_map(|p| {
            let targets = p["targets"].as_array()?;
            let exprs = targets
                .iter()
                .map(|t| {
                    t["expr"]
                        .as_str()
                        .expect("a target has an expr")
                        .replace("$__rate_interval", "1m")
                        .replace("$instance", ".*")
                        .replace("$service", ".*")
                        .replace("$job", ".*")
                })
                .collect();
            Some((p["title"].as_str()?.to_string(), exprs))
        })
        .collect()
}

#[test]
fn every_dashboard_query_parses_as_promql() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 15, "{} panels", queries.len());
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in queries.iter().flat_map(|(_, e)| e).enumerate() {
        rules += &format!("      - record: dashboard_query_{i}\n        expr: {expr:?}\n");
    }
    let dir = std::env::temp_dir().join(format!("sinew-dash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("dashboard.yaml"), rules).expect("write rules");
    promtool(&["check", "rules", "dashboard.yaml"], &dir);
    let _ = std::fs::remove_dir_all(dir);
}

/// A Prometheus server on loopback scraping one target every second, stopped by PID on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Self {
        let dir = std::env::temp_dir().join(format!("sinew-prometheus-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let rules = Path::new(ROOT).join("examples/prometheus/alerts.yaml");
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\nrule_files: [{rules:?}]\nscrape_configs:\n  - job_name: sinew\n    static_configs: [{{ targets: ['{target}'] }}]\n"
            ),
        )
        .expect("write prometheus.yml");
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "prometheus is installed (Debian package `prometheus`; bash .ci/run installs it)",
            );
        Self { child, addr, dir }
    }

    /// Runs an instant query; returns the result vector (panics on a query error).
    async fn query(&self, expr: &str) -> Vec<Value> {
        let (status, body) =
            http_get(self.addr, &format!("/api/v1/query?query={}", encode(expr))).await;
        let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert_eq!(status, 200, "{expr}: {body}");
        assert_eq!(json["status"], "success", "{expr}: {body}");
        json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The value of a query whose result is one sample.
    async fn scalar(&self, expr: &str) -> Option<f64> {
        let result = self.query(expr).await;
        result.first()?["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A GET that may fail (the server is still starting): its status, or `None`.
async fn try_get(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    String::from_utf8_lossy(&buf)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Polls an async check every 200 ms until it holds or `limit` passes.
async fn within<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_scraping_sinew_answers_rate_errors_and_p99_per_service() {
    let web = HttpBackend::start("web-1").await;
    let echo = EchoBackend::start("tcp-1").await;
    let dead = dead_addr().await;
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    mode: http\n    backends: [{}]\n  broken:\n    listen: 127.0.0.1:0\n    mode: http\n    backends: [{dead}]\n  tcp:\n    listen: 127.0.0.1:0\n    backends: [{}]\n",
        web.hostport(),
        echo.hostport()
    ))
    .await;
    let prom = Prometheus::start(agent.admin_addr());
    let p = &prom;
    assert!(
        within(Duration::from_secs(60), || async move {
            try_get(p.addr, "/-/ready").await == Some(200)
        })
        .await,
        "prometheus ready within 60 s"
    );
    // Two scrapes before any traffic, so every rate has its zero to start from.
    assert!(
        within(Duration::from_secs(30), || async move {
            p.scalar(r#"count_over_time(up{job="sinew"}[1m])"#).await >= Some(2.0)
        })
        .await,
        "prometheus scraped sinew twice"
    );

    let (web_addr, broken_addr) = (
        agent.service_addr("web").unwrap(),
        agent.service_addr("broken").unwrap(),
    );
    for i in 0..40 {
        let path = if i % 4 == 0 { "/status/500" } else { "/" };
        let (status, _) = http_get(web_addr, path).await;
        assert_eq!(status, if i % 4 == 0 { 500 } else { 200 });
    }
    for _ in 0..5 {
        let (status, _) = http_get(broken_addr, "/").await;
        assert!(status >= 500, "{status}");
    }
    for _ in 0..6 {
        assert_eq!(
            greet(agent.service_addr("tcp").unwrap()).await.as_deref(),
            Ok("tcp-1")
        );
    }
    let seen = r#"sum(sinew_service_requests_total{service="web"})"#;
    assert!(
        within(Duration::from_secs(30), || async move {
            p.scalar(seen).await == Some(40.0)
        })
        .await,
        "prometheus saw web's 40 requests"
    );
    assert!(
        within(Duration::from_secs(30), || async move {
            p.scalar(r#"sum(sinew_service_connections_total{service="tcp"})"#)
                .await
                == Some(6.0)
        })
        .await,
        "prometheus saw tcp's 6 connections"
    );

    // Rate, error ratio, p99 per service, as the alert rules and the dashboard write them.
    let rate = prom
        .scalar(r#"sum by (service) (rate(sinew_service_requests_total{service="web"}[1m]))"#)
        .await
        .expect("web's request rate");
    assert!(rate > 0.0, "{rate}");
    let ratio = prom
        .scalar(r#"sum by (service) (rate(sinew_service_requests_total{service="web",code="5xx"}[1m])) / sum by (service) (rate(sinew_service_requests_total{service="web"}[1m]))"#)
        .await
        .expect("web's error ratio");
    assert!(
        (ratio - 0.25).abs() < 0.01,
        "10 of 40 requests failed: {ratio}"
    );
    let p99 = prom
        .scalar(r#"histogram_quantile(0.99, sum by (service, le) (rate(sinew_service_request_duration_seconds_bucket{service="web"}[1m])))"#)
        .await
        .expect("web's p99");
    assert!(p99 > 0.0 && p99 < 5.0, "{p99}");
    let broken = prom
        .scalar(r#"sum(rate(sinew_service_requests_total{service="broken",code="5xx"}[1m])) / sum(rate(sinew_service_requests_total{service="broken"}[1m]))"#)
        .await
        .expect("broken's error ratio");
    assert!((broken - 1.0).abs() < 1e-9, "{broken}");

    // Which backend fails, and why: the dead one, failing to connect; the web backend's 500s by its own cause.
    let failing = prom
        .query("sum by (service, backend, cause) (sinew_backend_errors_total) > 0")
        .await;
    let causes: Vec<(String, String, String)> = failing
        .iter()
        .map(|s| {
            let m = &s["metric"];
            let field = |k: &str| m[k].as_str().unwrap_or_default().to_string();
            (field("service"), field("backend"), field("cause"))
        })
        .collect();
    assert!(
        causes.contains(&("broken".into(), dead.to_string(), "connect_failure".into())),
        "{causes:?}"
    );
    assert!(
        causes.contains(&("web".into(), web.hostport(), "http_5xx".into())),
        "{causes:?}"
    );
    assert!(
        prom.scalar(r#"sum(sinew_service_errors_total{service="broken"})"#)
            .await
            >= Some(5.0),
        "the broken service's failures are in the one errors family"
    );

    // Every dashboard query runs; the panels about what this test drove show data.
    let with_data = [
        "Requests per second",
        "5xx ratio",
        "Duration p50 / p99",
        "Answers by status class",
        "Failures by cause",
        "New client connections per second",
        "TCP connect time p99",
        "TCP connection duration p50 / p99",
        "Usable backends",
        "Backend failures by cause",
        "Backend response time p99 (HTTP)",
        "Backend states",
        "CPU",
        "Resident memory",
    ];
    for (title, exprs) in dashboard_queries() {
        let mut rows = 0;
        for expr in &exprs {
            rows += prom.query(expr).await.len();
        }
        if with_data.contains(&title.as_str()) {
            assert!(rows > 0, "dashboard panel {title:?} has no data: {exprs:?}");
        }
    }

    // The alert rules load and evaluate without error against sinew's real series.
    assert!(
        within(Duration::from_secs(20), || async move {
            let (_, body) = http_get(p.addr, "/api/v1/rules").await;
            let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let rules: Vec<&Value> = json["data"]["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .collect();
            rules.len() >= 12
                && rules.iter().all(|r| {
                    r["health"] == "ok"
                        && r["lastEvaluation"]
                            .as_str()
                            .is_some_and(|t| !t.starts_with("0001"))
                })
        })
        .await,
        "every alert rule evaluated with health ok"
    );
}
