//! Hostile and careless clients, and stopping under load: a connection flood beyond
//! `max_client_connections` is refused cleanly while the admitted ones keep working, and a connection
//! task that panics gives its place back; state-changing admin endpoints can demand a token; web pages
//! cannot use the admin API through cross-site requests or DNS rebinding; SIGTERM-style shutdown loses
//! no in-flight HTTP request.

mod support;

use std::net::SocketAddr;
use std::time::Duration;
use support::http::HttpBackend;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn connections_beyond_the_limit_are_refused_and_the_others_served() {
    let backend = EchoBackend::start("a").await;
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  db:\n    listen: 127.0.0.1:0\n    backends: [{}]\n    max_client_connections: 3\n",
        backend.hostport()
    ))
    .await;
    let addr = agent.service_addr("db").unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        assert_eq!(read_line(&mut s).await.unwrap(), "a");
        held.push(s);
    }
    // A flood of extra connections: each is closed at once, none reaches the backend.
    for _ in 0..20 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .expect("closed promptly");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    }
    assert_eq!(backend.accepted(), 3);
    for s in held.iter_mut() {
        s.write_all(b"still served\n").await.unwrap();
        assert_eq!(read_line(s).await.unwrap(), "still served");
    }
    let (_, metrics) = http_get(agent.admin_addr(), "/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "sinew_service_rejected_connections_total{service=\"db\"}"
        ),
        Some(20.0)
    );
    drop(held);
    let mut ok = false;
    for _ in 0..50 {
        if greet(addr).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "room again once the held connections closed");
}

async fn request(addr: SocketAddr, head: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn state_changing_admin_endpoints_need_the_token() {
    let agent = agent(
        "admin: { listen: 127.0.0.1:0, token: s3cret }\nservices:\n  web:\n    listen: 127.0.0.1:0\n    backends: [127.0.0.1:1]\n",
    )
    .await;
    let admin = agent.admin_addr();
    let post = |auth: &str| {
        format!("POST /api/register/web/maintenance HTTP/1.1\r\nHost: {admin}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n")
    };
    assert!(request(admin, &post("")).await.starts_with("HTTP/1.1 401"));
    assert!(request(admin, &post("Authorization: Bearer wrong\r\n"))
        .await
        .starts_with("HTTP/1.1 401"));
    let with_token = request(admin, &post("Authorization: Bearer s3cret\r\n")).await;
    assert!(
        with_token.starts_with("HTTP/1.1 404"),
        "past the token check, nothing is registered: {with_token}"
    );
    assert_eq!(
        http_get(admin, "/metrics").await.0,
        200,
        "reading needs no token"
    );
}

/// The status line of `METHOD path` sent with the given extra header lines.
async fn admin_status(admin: SocketAddr, method: &str, path: &str, headers: &str) -> String {
    let head = format!(
        "{method} {path} HTTP/1.1\r\n{headers}Content-Type: text/plain\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let out = request(admin, &head).await;
    out.lines().next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn web_pages_cannot_use_the_admin_api_across_sites_or_by_dns_rebinding() {
    // No token: the default, where any page in a browser on this host could reach the API.
    let agent = agent(
        "admin: { listen: 127.0.0.1:0 }\nservices:\n  web:\n    listen: 127.0.0.1:0\n    backends: [127.0.0.1:1]\n",
    )
    .await;
    let admin = agent.admin_addr();
    let port = admin.port();
    let local = format!("Host: {admin}\r\n");
    // A cross-site form post (text/plain needs no preflight): refused before it reaches the endpoint.
    let evil = format!("{local}Origin: http://evil.example\r\n");
    for (method, path) in [
        ("POST", "/api/reload"),
        ("POST", "/api/register/web/maintenance"),
        ("DELETE", "/api/register/web/maintenance"),
    ] {
        let status = admin_status(admin, method, path, &evil).await;
        assert!(
            status.starts_with("HTTP/1.1 403"),
            "{method} {path}: {status}"
        );
    }
    // DNS rebinding: a page of evil.example re-pointed at 127.0.0.1 is same-origin with itself, but
    // its Host names its own domain. Reads are served whatever the Host, as scrapers use DNS names.
    let rebound = format!("Host: evil.example:{port}\r\nOrigin: http://evil.example:{port}\r\n");
    let status = admin_status(admin, "POST", "/api/register/web/maintenance", &rebound).await;
    assert!(status.starts_with("HTTP/1.1 403"), "{status}");
    for path in ["/api/services", "/metrics", "/"] {
        let status = admin_status(
            admin,
            "GET",
            path,
            &format!("Host: evil.example:{port}\r\n"),
        )
        .await;
        assert!(status.starts_with("HTTP/1.1 200"), "GET {path}: {status}");
    }
    // What must keep working: the status page's own requests, curl, `sinew status`, by IP or localhost.
    let page = format!("{local}Origin: http://{admin}\r\n");
    let status = admin_status(admin, "POST", "/api/register/web/maintenance", &page).await;
    assert!(
        status.starts_with("HTTP/1.1 404"),
        "same-origin, past the checks: {status}"
    );
    for host in [
        admin.to_string(),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ] {
        let status =
            admin_status(admin, "GET", "/api/services", &format!("Host: {host}\r\n")).await;
        assert!(status.starts_with("HTTP/1.1 200"), "Host {host}: {status}");
    }
    assert!(sinew::status::fetch(admin).await.is_ok(), "sinew status");
    let (_, metrics) = http_get(admin, "/metrics").await;
    let refused = |reason: &str| {
        metric(
            &metrics,
            &format!("sinew_admin_requests_refused_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(refused("origin"), Some(3.0), "{metrics}");
    assert_eq!(refused("host"), Some(1.0), "{metrics}");
}

#[tokio::test]
async fn the_admin_token_is_trusted_from_any_host() {
    let agent = agent(
        "admin: { listen: 127.0.0.1:0, token: s3cret }\nservices:\n  web:\n    listen: 127.0.0.1:0\n    backends: [127.0.0.1:1]\n",
    )
    .await;
    let admin = agent.admin_addr();
    // A scraper reaches the admin server by a DNS name and reads without the token; a script that
    // changes state by that name sends the token.
    let named = "Host: sinew.internal.example:3212\r\n";
    let status = admin_status(admin, "GET", "/metrics", named).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let status = admin_status(admin, "POST", "/api/register/web/maintenance", named).await;
    assert!(status.starts_with("HTTP/1.1 403"), "{status}");
    let with_token = format!("{named}Authorization: Bearer s3cret\r\n");
    let status = admin_status(admin, "POST", "/api/register/web/maintenance", &with_token).await;
    assert!(
        status.starts_with("HTTP/1.1 404"),
        "past the checks: {status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_loses_no_in_flight_request() {
    let backend = HttpBackend::slow("slow", Duration::from_millis(400)).await;
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    mode: http\n    backends: [{}]\n",
        backend.hostport()
    ))
    .await;
    let addr = agent.service_addr("web").unwrap();
    let mut requests = Vec::new();
    for _ in 0..10 {
        requests.push(tokio::spawn(async move {
            request(
                addr,
                "GET / HTTP/1.1\r\nHost: web\r\nConnection: keep-alive\r\n\r\n",
            )
            .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let report = agent.shutdown(Duration::from_secs(5)).await;
    assert!(!report.cut, "everything finished within the grace period");
    for r in requests {
        let out = r.await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(
            out.to_ascii_lowercase().contains("connection: close"),
            "keep-alive ends after the request: {out}"
        );
    }
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}

/// Opens `n` connections to `addr` and proves each is served (a TCP echo greets, an HTTP one answers a
/// keep-alive request); returns them open.
async fn served(addr: SocketAddr, n: usize, http: bool) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for i in 0..n {
        let mut s = TcpStream::connect(addr).await.unwrap();
        if http {
            s.write_all(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 512];
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .map_or(0, |r| r.unwrap_or(0));
            let got = String::from_utf8_lossy(&buf[..n]);
            assert!(got.starts_with("HTTP/1.1 200"), "connection {i}: {got:?}");
        } else {
            assert_eq!(
                read_line(&mut s).await,
                Ok("a".to_string()),
                "connection {i}"
            );
        }
        held.push(s);
    }
    held
}

#[tokio::test]
async fn a_connection_task_that_panics_gives_its_admission_slot_back() {
    let http = support::http::HttpBackend::start("a").await;
    let tcp = EchoBackend::start("a").await;
    for (mode, backend) in [("http", http.hostport()), ("tcp", tcp.hostport())] {
        let agent = agent(&format!(
            "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    mode: {mode}\n    backends: [{backend}]\n    max_client_connections: 2\n",
        ))
        .await;
        let addr = agent.service_addr("web").unwrap();
        for _ in 0..3 {
            sinew::fault::panic_once("connection", "web");
            let mut s = TcpStream::connect(addr).await.unwrap();
            let mut buf = [0u8; 8];
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .expect("the panicked task's connection closes");
            assert!(matches!(n, Ok(0) | Err(_)), "{mode}: {n:?}");
        }
        // Three tasks panicked; the limit of two still admits two at once.
        let held = served(addr, 2, mode == "http").await;
        let (_, metrics) = http_get(agent.admin_addr(), "/metrics").await;
        assert_eq!(
            metric(
                &metrics,
                "sinew_service_connections_active{service=\"web\"}"
            ),
            Some(2.0),
            "{mode}"
        );
        drop(held);
        agent.shutdown(Duration::from_secs(1)).await;
    }
}
