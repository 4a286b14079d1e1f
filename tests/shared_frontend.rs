//! Shared HTTP frontends: one listener routing requests to services by host, host domain, path prefix
//! and path regex, else to a default service, else a 503 with a metric; routed requests get the
//! service's own balancing and metrics; a reload that changes a route takes effect on an open
//! keep-alive connection; a service without a listener of its own is reached through a frontend, and
//! a reload gives it one or takes it away without disturbing it; and a Synapse config with a shared
//! frontend routes the same way, also to a service without a port.

mod support;

use sinew::agent::Agent;
use sinew::config::{Config, Format};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use support::http::HttpBackend;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A keep-alive HTTP/1.1 client connection.
struct Client {
    s: TcpStream,
}

impl Client {
    async fn open(addr: SocketAddr) -> Self {
        Self {
            s: TcpStream::connect(addr).await.expect("connect"),
        }
    }

    /// Sends `GET path` with `Host: host` (none when empty) and reads the response: (status, body).
    async fn get(&mut self, host: &str, path: &str) -> (u16, String) {
        let host = if host.is_empty() {
            String::new()
        } else {
            format!("Host: {host}\r\n")
        };
        let req = format!("GET {path} HTTP/1.1\r\n{host}\r\n");
        self.s.write_all(req.as_bytes()).await.expect("send");
        let mut buf = Vec::new();
        let read = async {
            loop {
                let mut chunk = [0u8; 4096];
                let n = self.s.read(&mut chunk).await.expect("read");
                assert!(n > 0, "connection closed mid-response: {buf:?}");
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().expect("length"))
                        })
                        .expect("content-length");
                    if body.len() >= len {
                        let status = head.split_whitespace().nth(1).expect("status");
                        return (
                            status.parse().expect("status code"),
                            body[..len].to_string(),
                        );
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("response in time")
    }
}

/// Two HTTP services, `a` and `b` (one backend each), then `frontend` (the `http_frontends` entries).
fn config(a: &HttpBackend, b: &HttpBackend, frontend: &str) -> Config {
    let yaml = format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  a: {{ listen: 127.0.0.1:0, mode: http, backends: [{}] }}\n  b: {{ listen: 127.0.0.1:0, mode: http, backends: [{}] }}\nhttp_frontends:\n  web:\n    listen: 127.0.0.1:0\n{frontend}",
        a.hostport(),
        b.hostport()
    );
    Config::parse(&yaml, Format::Yaml, Path::new("front.yaml")).expect("valid config")
}

async fn metrics(agent: &Agent) -> String {
    http_get(agent.admin_addr(), "/metrics").await.1
}

const RULES: &str = "    routes:
      - service: a
        when: [{ match: host, values: [a.example.com] }]
      - service: b
        when: [{ match: host_domain, values: [b.example.com], ignore_case: true }]
      - service: a
        when: [{ match: path_prefix, values: [/alpha] }]
      - service: b
        when:
          - { match: path_regex, values: ['^/v[0-9]+/beta$'] }
          - { match: host_prefix, values: [internal.], negate: true }
";

#[tokio::test]
async fn requests_are_routed_by_host_domain_path_and_regex_and_counted() {
    let (a, b) = (
        HttpBackend::start("alpha").await,
        HttpBackend::start("beta").await,
    );
    let agent = Agent::start(config(&a, &b, RULES)).await.unwrap();
    let addr = agent.frontend_addr("web").await.expect("frontend runs");
    let mut c = Client::open(addr).await;
    for (host, path, want) in [
        ("a.example.com", "/", "alpha"),
        ("www.B.Example.com:8080", "/", "beta"),
        ("other.org", "/alpha/x", "alpha"),
        ("other.org", "/v2/beta", "beta"),
    ] {
        assert_eq!(
            c.get(host, path).await,
            (200, want.to_string()),
            "{host} {path}"
        );
    }
    // `hdr(host)` is exact, port included, as in HAProxy; a negated condition vetoes a rule.
    let (status, body) = c.get("a.example.com:80", "/").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("frontend web: no route matches"), "{body}");
    assert_eq!(c.get("internal.x", "/v2/beta").await.0, 503);
    assert_eq!(c.get("", "/nothing").await.0, 503);
    let m = metrics(&agent).await;
    assert_eq!(
        metric(
            &m,
            "sinew_frontend_requests_total{frontend=\"web\",service=\"a\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &m,
            "sinew_frontend_requests_total{frontend=\"web\",service=\"b\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &m,
            "sinew_frontend_unrouted_total{frontend=\"web\",reason=\"no_match\"}"
        ),
        Some(3.0)
    );
    assert_eq!((a.requests(), b.requests()), (2, 2));
    agent.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn unmatched_requests_go_to_the_default_service_with_its_own_handling() {
    let (a, b) = (
        HttpBackend::start("alpha").await,
        HttpBackend::start("beta").await,
    );
    let agent = Agent::start(config(&a, &b, &format!("{RULES}    default_service: b\n")))
        .await
        .unwrap();
    let addr = agent.frontend_addr("web").await.unwrap();
    let mut c = Client::open(addr).await;
    assert_eq!(c.get("nowhere.org", "/").await, (200, "beta".to_string()));
    // The routed request is the service's: its error answers and HTTP metrics.
    let (status, _) = c.get("a.example.com", "/status/502").await;
    assert_eq!(status, 502);
    let m = metrics(&agent).await;
    assert_eq!(
        metric(
            &m,
            "sinew_frontend_unrouted_total{frontend=\"web\",reason=\"no_match\"}"
        ),
        Some(0.0)
    );
    let a_5xx = format!(
        "sinew_backend_http_responses_total{{backend=\"{}\",name=\"\",service=\"a\",code=\"5xx\"}}",
        a.hostport()
    );
    assert_eq!(
        metric(&m, &a_5xx),
        Some(1.0),
        "service a's own backend metrics"
    );
    agent.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_routed_request_to_a_dead_backend_gets_the_services_own_502() {
    let a = HttpBackend::start("alpha").await;
    let dead = dead_addr().await;
    let yaml = format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  a: {{ listen: 127.0.0.1:0, mode: http, backends: [{}] }}\n  gone: {{ listen: 127.0.0.1:0, mode: http, backends: [{dead}], retries: {{ attempts: 0 }} }}\nhttp_frontends:\n  web:\n    listen: 127.0.0.1:0\n    routes: [{{ service: gone, when: [{{ match: path_prefix, values: [/gone] }}] }}]\n    default_service: a\n",
        a.hostport()
    );
    let agent = Agent::start(Config::parse(&yaml, Format::Yaml, Path::new("f.yaml")).unwrap())
        .await
        .unwrap();
    let mut c = Client::open(agent.frontend_addr("web").await.unwrap()).await;
    let (status, body) = c.get("x", "/gone").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("service gone"), "{body}");
    assert_eq!(c.get("x", "/").await, (200, "alpha".to_string()));
    agent.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_reload_that_changes_a_route_applies_on_an_open_keep_alive_connection() {
    let (a, b) = (
        HttpBackend::start("alpha").await,
        HttpBackend::start("beta").await,
    );
    let rule = |service: &str| {
        format!("    routes: [{{ service: {service}, when: [{{ match: host, values: [x.example.com] }}] }}]\n")
    };
    let agent = Agent::start(config(&a, &b, &rule("a"))).await.unwrap();
    let addr = agent.frontend_addr("web").await.unwrap();
    let mut c = Client::open(addr).await;
    assert_eq!(c.get("x.example.com", "/").await.1, "alpha");
    agent.apply(config(&a, &b, &rule("b"))).await.unwrap();
    assert_eq!(
        agent.frontend_addr("web").await,
        Some(addr),
        "same listener"
    );
    assert_eq!(
        c.get("x.example.com", "/").await.1,
        "beta",
        "same connection, new route"
    );
    // A frontend removed by a reload stops accepting.
    let mut without = config(&a, &b, &rule("b"));
    without.http_frontends.clear();
    agent.apply(without).await.unwrap();
    assert!(agent.frontend_addr("web").await.is_none());
    assert!(
        eventually(Duration::from_secs(10), || std::net::TcpStream::connect(
            addr
        )
        .is_err())
        .await,
        "the removed frontend's listener closed"
    );
    agent.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_synapse_config_with_a_shared_frontend_routes_by_host() {
    let (a, b) = (
        HttpBackend::start("alpha").await,
        HttpBackend::start("beta").await,
    );
    let port = support::process::free_port();
    let service = |name: &str, backend: &HttpBackend, extra: &str| {
        format!(
            "  {name}:\n    discovery: {{ method: base }}\n    default_servers: [{{ name: one, host: 127.0.0.1, port: {} }}]\n    haproxy:\n      port: {}\n      backend: [\"mode http\"]\n{extra}",
            backend.addr.port(),
            support::process::free_port(),
        )
    };
    let yaml = format!(
        "haproxy:\n  shared_frontend:\n    - \"bind 127.0.0.1:{port}\"\n    - \"mode http\"\nservices:\n{}{}",
        service(
            "service1",
            &a,
            "      shared_frontend:\n        - \"acl is_service1 hdr_dom(host) -i service1.lb.example.com\"\n        - \"use_backend service1 if is_service1\"\n",
        ),
        service(
            "service2",
            &b,
            "      backend_name: two\n      shared_frontend:\n        - \"acl is_service2 hdr_dom(host) -i service2.lb.example.com\"\n        - \"use_backend two if is_service2\"\n",
        ),
    );
    let t = sinew::config::synapse::parse(&yaml, Path::new("synapse.yaml")).expect("translates");
    let agent = Agent::start(t.config).await.unwrap();
    let addr = agent.frontend_addr("shared-frontend").await.unwrap();
    assert_eq!(addr.port(), port);
    let mut c = Client::open(addr).await;
    assert_eq!(c.get("service1.lb.example.com", "/").await.1, "alpha");
    assert_eq!(c.get("SERVICE2.lb.example.com:80", "/").await.1, "beta");
    assert_eq!(c.get("other", "/").await.0, 503);
    agent.shutdown(Duration::from_secs(1)).await;

    // A service's lines without the top-level section, or naming an unknown backend: errors.
    let no_top = yaml.replacen("shared_frontend:", "extra:", 1);
    let e = sinew::config::synapse::parse(&no_top, Path::new("synapse.yaml")).unwrap_err();
    assert!(
        e.to_string()
            .contains("services.service1.haproxy.shared_frontend: the top-level"),
        "{e}"
    );
    let bad = yaml.replace("use_backend two", "use_backend service2");
    let e = sinew::config::synapse::parse(&bad, Path::new("synapse.yaml")).unwrap_err();
    assert!(
        e.to_string().contains("services.service2.haproxy.shared_frontend: \"use_backend service2 if is_service2\": no service has backend \"service2\""),
        "{e}"
    );
}

/// Service `a` without a listener of its own (with `listen` when given) and `b` on its own, both
/// reached through frontend `web` by `Host`.
fn portless(a: &HttpBackend, b: &HttpBackend, listen: Option<&str>) -> Config {
    let listen = listen.map_or(String::new(), |l| format!("listen: {l}, "));
    let yaml = format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  a: {{ {listen}mode: http, backends: [{}] }}\n  b: {{ listen: 127.0.0.1:0, mode: http, backends: [{}] }}\nhttp_frontends:\n  web:\n    listen: 127.0.0.1:0\n    routes: [{{ service: a, when: [{{ match: host, values: [a.example.com] }}] }}]\n    default_service: b\n",
        a.hostport(),
        b.hostport()
    );
    Config::parse(&yaml, Format::Yaml, Path::new("front.yaml")).expect("valid config")
}

/// `a`'s entry in `/api/services`: (listen, frontends).
async fn api_entry(agent: &Agent, name: &str) -> (serde_json::Value, serde_json::Value) {
    let body = http_get(agent.admin_addr(), "/api/services").await.1;
    let api: serde_json::Value = serde_json::from_str(&body).expect("json");
    let svc = api["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|s| s["name"] == name)
        .expect("listed")
        .clone();
    (svc["listen"].clone(), svc["frontends"].clone())
}

#[tokio::test]
async fn a_service_without_listen_is_reached_through_the_frontend_only() {
    let (a, b) = (
        HttpBackend::start("alpha").await,
        HttpBackend::start("beta").await,
    );
    let agent = Agent::start(portless(&a, &b, None)).await.unwrap();
    assert_eq!(agent.service_addr("a"), None, "no listener of its own");
    assert!(agent.service_addr("b").is_some());
    let mut c = Client::open(agent.frontend_addr("web").await.unwrap()).await;
    assert_eq!(
        c.get("a.example.com", "/").await,
        (200, "alpha".to_string())
    );
    assert_eq!(c.get("other", "/").await, (200, "beta".to_string()));
    let (listen, frontends) = api_entry(&agent, "a").await;
    assert_eq!(listen, serde_json::Value::Null);
    assert_eq!(frontends, serde_json::json!(["web"]));
    let m = metrics(&agent).await;
    assert_eq!(
        metric(
            &m,
            "sinew_frontend_requests_total{frontend=\"web\",service=\"a\"}"
        ),
        Some(1.0)
    );
    let a_2xx = format!(
        "sinew_backend_http_responses_total{{backend=\"{}\",name=\"\",service=\"a\",code=\"2xx\"}}",
        a.hostport()
    );
    assert_eq!(
        metric(&m, &a_2xx),
        Some(1.0),
        "the service's own backend metrics"
    );
    for service in ["a", "b"] {
        let requests =
            format!("sinew_service_requests_total{{code=\"2xx\",service=\"{service}\"}}");
        assert_eq!(
            metric(&m, &requests),
            Some(1.0),
            "counted under the routed service: {requests}"
        );
    }
    agent.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_reload_gives_a_portless_service_a_listener_and_takes_it_away_undisturbed() {
    let (a, b) = (
        HttpBackend::start("alpha").await,
        HttpBackend::start("beta").await,
    );
    let agent = Agent::start(portless(&a, &b, None)).await.unwrap();
    let front = agent.frontend_addr("web").await.unwrap();
    let balancer = agent.balancer("a").expect("a runs");
    let mut c = Client::open(front).await;
    assert_eq!(c.get("a.example.com", "/").await.1, "alpha");
    // A request in flight through the frontend while the listener is added.
    let mut slow = Client::open(front).await;
    let in_flight = tokio::spawn(async move { slow.get("a.example.com", "/slow/300").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let summary = agent
        .apply(portless(&a, &b, Some("127.0.0.1:0")))
        .await
        .unwrap();
    assert_eq!(summary.changed, ["a"]);
    let own = agent.service_addr("a").expect("a listens now");
    assert_eq!(in_flight.await.unwrap(), (200, "alpha".to_string()));
    assert!(
        std::sync::Arc::ptr_eq(&balancer, &agent.balancer("a").unwrap()),
        "same generation: backends and their state kept"
    );
    assert_eq!(Client::open(own).await.get("x", "/").await.1, "alpha");
    assert_eq!(
        c.get("a.example.com", "/").await.1,
        "alpha",
        "frontend still routes"
    );
    assert_eq!(
        api_entry(&agent, "a").await.0,
        serde_json::json!(own.to_string())
    );

    // Taken away again: the listener closes, the frontend keeps routing to the same generation.
    agent.apply(portless(&a, &b, None)).await.unwrap();
    assert_eq!(agent.service_addr("a"), None);
    assert!(
        eventually(Duration::from_secs(10), || std::net::TcpStream::connect(
            own
        )
        .is_err())
        .await,
        "the service's listener closed"
    );
    assert!(std::sync::Arc::ptr_eq(
        &balancer,
        &agent.balancer("a").unwrap()
    ));
    assert_eq!(c.get("a.example.com", "/").await.1, "alpha");
    assert_eq!(a.requests(), 5);
    agent.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_synapse_service_without_a_port_is_reached_through_the_shared_frontend() {
    let (a, b) = (
        HttpBackend::start("alpha").await,
        HttpBackend::start("beta").await,
    );
    let port = support::process::free_port();
    let yaml = format!(
        "haproxy:\n  shared_frontend:\n    - \"bind 127.0.0.1:{port}\"\n    - \"acl is_two hdr(host) two.example.com\"\n    - \"use_backend two if is_two\"\nservices:\n  one:\n    default_servers: [{{ name: a, host: 127.0.0.1, port: {} }}]\n    discovery: {{ method: base }}\n    haproxy:\n      backend: [\"mode http\"]\n      shared_frontend: [\"default_backend one\"]\n  two:\n    default_servers: [{{ name: b, host: 127.0.0.1, port: {} }}]\n    discovery: {{ method: base }}\n    haproxy:\n      backend: [\"mode http\"]\n  three:\n    default_servers: [{{ name: b, host: 127.0.0.1, port: {} }}]\n    discovery: {{ method: base }}\n    haproxy:\n      backend: [\"mode http\"]\n",
        a.addr.port(),
        b.addr.port(),
        b.addr.port(),
    );
    let t = sinew::config::synapse::parse(&yaml, Path::new("synapse.yaml")).expect("translates");
    // `one` has its own shared_frontend lines, `two` is named by the top level's use_backend; `three`,
    // reached by nothing, is skipped as before.
    assert_eq!(t.config.services.keys().collect::<Vec<_>>(), ["one", "two"]);
    assert!(t.config.services.values().all(|s| s.listen.is_none()));
    assert!(
        t.warnings
            .iter()
            .any(|w| w.level == sinew::config::Level::Error
                && w.message
                    .starts_with("services.three: no haproxy.port and no shared frontend")),
        "{:?}",
        t.warnings
    );
    let agent = Agent::start(t.config).await.unwrap();
    let mut c = Client::open(agent.frontend_addr("shared-frontend").await.unwrap()).await;
    assert_eq!(c.get("two.example.com", "/").await.1, "beta");
    assert_eq!(c.get("other", "/").await.1, "alpha");
    assert_eq!(agent.service_addr("one"), None);
    agent.shutdown(Duration::from_secs(1)).await;
}
