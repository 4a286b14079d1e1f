//! HTTP mode against real HTTP backends: pooling, per-request balancing, each error status, retries and
//! the budget, headers and limits, h2c with trailers, upgrades, slowloris.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::time::Duration;
use support::http::{web_service, HttpBackend};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type TestClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn h2_client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

struct Reply {
    status: StatusCode,
    sinew_error: Option<String>,
    body: String,
}

async fn send(
    client: &TestClient,
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: &'static str,
) -> Reply {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .unwrap()
        .unwrap();
    let status = resp.status();
    let sinew_error = resp
        .headers()
        .get("x-sinew-error")
        .map(|v| v.to_str().unwrap().to_string());
    let body =
        String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned();
    Reply {
        status,
        sinew_error,
        body,
    }
}

async fn get(client: &TestClient, addr: SocketAddr, path: &str) -> Reply {
    send(client, addr, Method::GET, path, "").await
}

async fn metrics(agent: &sinew::agent::Agent) -> String {
    http_get(agent.admin_addr(), "/metrics").await.1
}

#[tokio::test]
async fn requests_balance_per_request_over_pooled_connections() {
    let (a, b) = (HttpBackend::start("a").await, HttpBackend::start("b").await);
    let agent = agent(&web_service(&[a.hostport(), b.hostport()], "")).await;
    let addr = agent.service_addr("web").unwrap();
    let c = client();
    let mut names = Vec::new();
    for _ in 0..20 {
        let r = get(&c, addr, "/").await;
        assert_eq!(r.status, 200);
        names.push(r.body);
    }
    assert_eq!(
        names.iter().filter(|n| *n == "a").count(),
        10,
        "per request, not per connection: {names:?}"
    );
    assert_eq!(a.requests() + b.requests(), 20);
    assert!(
        a.connections() <= 2 && b.connections() <= 2,
        "keep-alive reuse: {} {}",
        a.connections(),
        b.connections()
    );
    let body = metrics(&agent).await;
    let a_2xx = format!(
        "sinew_backend_http_responses_total{{backend=\"{}\",name=\"\",service=\"web\",code=\"2xx\"}}",
        a.hostport()
    );
    assert_eq!(metric(&body, &a_2xx), Some(10.0));
    let opened = format!(
        "sinew_backend_http_connections_opened_total{{backend=\"{}\",service=\"web\"}}",
        a.hostport()
    );
    let open = format!(
        "sinew_backend_http_connections_open{{backend=\"{}\",service=\"web\"}}",
        a.hostport()
    );
    assert_eq!(
        metric(&body, &opened),
        Some(a.connections() as f64),
        "every backend connection is counted"
    );
    assert!(
        metric(&body, &open).unwrap_or(0.0) >= 1.0,
        "the pooled connection stays open"
    );
}

/// Responses without a body (HEAD, 204) give their connection back to the pool like any other, and
/// an idle pooled connection is closed once `pool_idle` has passed.
#[tokio::test]
async fn bodiless_responses_reuse_the_connection_and_idle_ones_expire() {
    let a = HttpBackend::start("a").await;
    let agent = agent(&web_service(
        &[a.hostport()],
        "    timeouts: { pool_idle: 500ms }\n",
    ))
    .await;
    let addr = agent.service_addr("web").unwrap();
    let c = client();
    for _ in 0..5 {
        assert_eq!(send(&c, addr, Method::HEAD, "/", "").await.status, 200);
        assert_eq!(get(&c, addr, "/status/204").await.status, 204);
        assert_eq!(get(&c, addr, "/").await.body, "a");
    }
    assert_eq!(a.requests(), 15);
    assert_eq!(
        a.connections(),
        1,
        "every request reused the first connection"
    );
    let open = format!(
        "sinew_backend_http_connections_open{{backend=\"{}\",service=\"web\"}}",
        a.hostport()
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while metric(&metrics(&agent).await, &open) != Some(0.0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the idle connection outlived pool_idle"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(&c, addr, "/").await.body, "a");
    assert_eq!(
        a.connections(),
        2,
        "a new connection after the idle one closed"
    );
}

#[tokio::test]
async fn each_failure_has_its_status_and_marker() {
    let dead = dead_addr().await;
    let slow = HttpBackend::start("slow").await;
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  dead:\n    listen: 127.0.0.1:0\n    mode: http\n    backends: [{dead}]\n  slow:\n    listen: 127.0.0.1:0\n    mode: http\n    backends: [{}]\n    timeouts: {{ request: 200ms }}\n  empty:\n    listen: 127.0.0.1:0\n    mode: http\n    discovery: {{ file: /nonexistent/sinew.json }}\n",
        slow.hostport()
    ))
    .await;
    let c = client();
    let r = get(&c, agent.service_addr("dead").unwrap(), "/").await;
    assert_eq!(
        (r.status.as_u16(), r.sinew_error.as_deref()),
        (502, Some("connect_failure"))
    );
    assert!(r.body.contains("service dead"), "{}", r.body);
    let r = get(&c, agent.service_addr("slow").unwrap(), "/slow/2000").await;
    assert_eq!(
        (r.status.as_u16(), r.sinew_error.as_deref()),
        (504, Some("timeout"))
    );
    let r = get(&c, agent.service_addr("empty").unwrap(), "/").await;
    assert_eq!(
        (r.status.as_u16(), r.sinew_error.as_deref()),
        (503, Some("no_backend"))
    );
    // A backend's own error passes through untouched.
    let r = get(&c, agent.service_addr("slow").unwrap(), "/status/500").await;
    assert_eq!((r.status.as_u16(), r.sinew_error), (500, None));
    let body = metrics(&agent).await;
    assert_eq!(
        metric(
            &body,
            "sinew_http_errors_total{cause=\"timeout\",service=\"slow\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn idempotent_requests_retry_on_gateway_errors_and_posts_do_not() {
    let (sick, good) = (
        HttpBackend::sick("sick").await,
        HttpBackend::start("good").await,
    );
    let agent = agent(&web_service(
        &[sick.hostport(), good.hostport()],
        "    retries: { attempts: 2, on: [gateway_error], backoff: { base: 1ms, max: 5ms } }\n",
    ))
    .await;
    let addr = agent.service_addr("web").unwrap();
    let c = client();
    for _ in 0..10 {
        assert_eq!(
            get(&c, addr, "/").await.status,
            200,
            "GET is retried on the good backend"
        );
    }
    let mut post_503 = 0;
    for _ in 0..10 {
        if send(&c, addr, Method::POST, "/", "x").await.status == 503 {
            post_503 += 1;
        }
    }
    assert_eq!(
        post_503, 5,
        "POST goes to the sick backend every other time and is not retried"
    );
    // An Idempotency-Key makes a POST retryable.
    for _ in 0..4 {
        let req = Request::post(format!("http://{addr}/"))
            .header("idempotency-key", "k")
            .body(Full::new(Bytes::from_static(b"x")))
            .unwrap();
        assert_eq!(c.request(req).await.unwrap().status(), 200);
    }
}

#[tokio::test]
async fn retry_budget_caps_retries() {
    let (sick, good) = (
        HttpBackend::sick("sick").await,
        HttpBackend::start("good").await,
    );
    let agent = agent(&web_service(
        &[sick.hostport(), good.hostport()],
        "    retries: { attempts: 2, on: [5xx], budget_percent: 0, min_concurrent: 0 }\n",
    ))
    .await;
    let addr = agent.service_addr("web").unwrap();
    let c = client();
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..6 {
            v.push(get(&c, addr, "/").await.status.as_u16());
        }
        v
    };
    assert_eq!(
        statuses.iter().filter(|s| **s == 503).count(),
        3,
        "{statuses:?}"
    );
    let body = metrics(&agent).await;
    assert_eq!(
        metric(
            &body,
            "sinew_http_retry_budget_exhausted_total{service=\"web\"}"
        ),
        Some(3.0)
    );
}

/// A backend that reads a request head and closes the connection without answering.
async fn resetting_backend() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
        }
    });
    (addr, task)
}

#[tokio::test]
async fn resets_are_retried_for_idempotent_requests_only() {
    let (reset, task) = resetting_backend().await;
    let good = HttpBackend::start("good").await;
    let agent = agent(&web_service(
        &[reset.to_string(), good.hostport()],
        "    retries: { attempts: 2, on: [reset], backoff: { base: 1ms, max: 2ms } }\n",
    ))
    .await;
    let addr = agent.service_addr("web").unwrap();
    let c = client();
    for _ in 0..6 {
        assert_eq!(get(&c, addr, "/").await.status, 200);
    }
    let mut resets = 0;
    for _ in 0..6 {
        let r = send(&c, addr, Method::POST, "/", "x").await;
        if r.status == 502 {
            assert_eq!(r.sinew_error.as_deref(), Some("reset"));
            resets += 1;
        }
    }
    assert_eq!(resets, 3);
    task.abort();
}

#[tokio::test]
async fn stale_pooled_connections_are_retried_transparently() {
    // A backend that answers one request per connection with keep-alive, then closes the socket.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                if s.read(&mut buf).await.unwrap_or(0) > 0 {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
        }
    });
    let agent = agent(&web_service(
        &[addr.to_string()],
        "    retries: { attempts: 0 }\n",
    ))
    .await;
    let c = client();
    for _ in 0..5 {
        let r = get(&c, agent.service_addr("web").unwrap(), "/").await;
        assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "ok"));
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    task.abort();
}

#[tokio::test]
async fn headers_are_forwarded_cleanly() {
    let backend = HttpBackend::start("a").await;
    let agent = agent(&web_service(
        &[backend.hostport()],
        "    http: { via: true }\n",
    ))
    .await;
    let mut s = TcpStream::connect(agent.service_addr("web").unwrap())
        .await
        .unwrap();
    s.write_all(b"GET /headers HTTP/1.1\r\nHost: web.local\r\nConnection: keep-alive, x-private\r\nx-private: 1\r\nkeep-alive: 5\r\nx-forwarded-for: 10.1.1.1\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).to_lowercase();
    assert!(text.contains("host: web.local"), "{text}");
    assert!(
        text.contains("x-forwarded-for: 10.1.1.1, 127.0.0.1"),
        "{text}"
    );
    assert!(text.contains("x-forwarded-proto: http"), "{text}");
    assert!(text.contains("via: 1.1 sinew"), "{text}");
    assert!(
        !text.contains("x-private") && !text.contains("keep-alive: 5"),
        "{text}"
    );
}

#[tokio::test]
async fn oversized_heads_get_431() {
    let backend = HttpBackend::start("a").await;
    let agent = agent(&web_service(
        &[backend.hostport()],
        "    http: { max_headers: 20 }\n",
    ))
    .await;
    let mut req = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..40 {
        req.push_str(&format!("x-h{i}: v\r\n"));
    }
    req.push_str("\r\n");
    let mut s = TcpStream::connect(agent.service_addr("web").unwrap())
        .await
        .unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
}

#[tokio::test]
async fn slowloris_is_cut_after_header_read() {
    let backend = HttpBackend::start("a").await;
    let agent = agent(&web_service(
        &[backend.hostport()],
        "    timeouts: { header_read: 300ms }\n",
    ))
    .await;
    let mut s = TcpStream::connect(agent.service_addr("web").unwrap())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let mut closed = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if s.write_all(b"x-drip: 1\r\n").await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
            if n == 0 || String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408") {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "a dribbling client is cut");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(backend.requests(), 0);
}

#[tokio::test]
async fn large_bodies_stream_both_ways() {
    let backend = HttpBackend::start("a").await;
    let agent = agent(&web_service(&[backend.hostport()], "")).await;
    let payload = Bytes::from(vec![7u8; 8 * 1024 * 1024]);
    let req = Request::post(format!(
        "http://{}/echo",
        agent.service_addr("web").unwrap()
    ))
    .body(Full::new(payload.clone()))
    .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let echoed = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload);
}

#[tokio::test]
async fn h2c_with_trailers_passes_through() {
    let backend = HttpBackend::start("a").await;
    let agent = agent(&web_service(
        &[backend.hostport()],
        "    upstream_protocol: http2\n",
    ))
    .await;
    let req = Request::post(format!(
        "http://{}/trailers",
        agent.service_addr("web").unwrap()
    ))
    .header("te", "trailers")
    .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
    .unwrap();
    let resp = h2_client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers arrive");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    assert_eq!(collected.to_bytes(), Bytes::from_static(b"payload"));
}

#[tokio::test]
async fn upgrades_are_tunnelled() {
    let backend = HttpBackend::start("a").await;
    let agent = agent(&web_service(&[backend.hostport()], "")).await;
    let mut s = TcpStream::connect(agent.service_addr("web").unwrap())
        .await
        .unwrap();
    s.write_all(
        b"GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    s.write_all(b"ping over the tunnel").await.unwrap();
    let mut got = vec![0u8; 20];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"ping over the tunnel");
}

#[tokio::test]
async fn curl_works_as_an_outside_client() {
    let backend = HttpBackend::start("from-curl").await;
    let agent = agent(&web_service(&[backend.hostport()], "")).await;
    let url = format!("http://{}/", agent.service_addr("web").unwrap());
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", &url])
        .output()
        .await;
    let out = out.expect("curl is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from-curl");
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", "--http2-prior-knowledge", &url])
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "from-curl",
        "h2c prior knowledge"
    );
}

#[tokio::test]
async fn expect_100_continue_is_honoured() {
    let backend = HttpBackend::start("a").await;
    let agent = agent(&web_service(&[backend.hostport()], "")).await;
    let mut s = TcpStream::connect(agent.service_addr("web").unwrap())
        .await
        .unwrap();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100 Continue"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    s.write_all(b"hello").await.unwrap();
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).ends_with("hello") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_streams_through_the_binary_in_bounded_memory() {
    use support::process::*;
    let backend = HttpBackend::start("a").await;
    let (port, admin) = (free_port(), free_port());
    let config = temp_file(
        "stream.yaml",
        &format!(
            "admin: {{ listen: 127.0.0.1:{admin} }}\nservices:\n  web:\n    listen: 127.0.0.1:{port}\n    mode: http\n    backends: [{}]\n",
            backend.hostport()
        ),
    );
    let sinew = Proc::run(&config);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_listening(addr).await;
    let baseline = sinew.rss_kib();
    assert!(baseline > 0, "RSS is readable from /proc");
    // 256 MiB up and back down, produced and consumed in 1 MiB chunks.
    const CHUNKS: usize = 256;
    let chunk = Bytes::from(vec![1u8; 1 << 20]);
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, std::io::Error>>(2);
    tokio::spawn(async move {
        for _ in 0..CHUNKS {
            if tx
                .send(Ok(hyper::body::Frame::data(chunk.clone())))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let body = http_body_util::StreamBody::new(ReceiverStream(rx));
    let client: Client<_, http_body_util::StreamBody<ReceiverStream>> =
        Client::builder(TokioExecutor::new()).build_http();
    let req = Request::post(format!("http://{addr}/echo"))
        .body(body)
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let mut body = resp.into_body();
    let (mut received, mut peak) = (0usize, 0u64);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            received += data.len();
        }
        peak = peak.max(sinew.rss_kib());
    }
    assert_eq!(received, CHUNKS << 20);
    eprintln!("sinew RSS: {baseline} KiB at rest, {peak} KiB peak while streaming");
    assert!(
        peak < baseline + 48 * 1024,
        "RSS grew from {baseline} KiB to {peak} KiB while streaming 256 MiB"
    );
}

/// An mpsc receiver as a `Stream`, so a test can produce a body chunk by chunk.
struct ReceiverStream(
    tokio::sync::mpsc::Receiver<Result<hyper::body::Frame<Bytes>, std::io::Error>>,
);

impl futures_core::Stream for ReceiverStream {
    type Item = Result<hyper::body::Frame<Bytes>, std::io::Error>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}
