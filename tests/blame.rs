//! Client faults are the client's: a request body framed wrongly, a client that resets, closes or stalls
//! in the middle of its body, or goes away before its answer, is answered (400, 408) or dropped and
//! counted as a client error, and never charged to a backend: no ejection, no failed connect, no
//! 5xx, no latency, and both backends keep taking traffic.

mod support;

use std::net::SocketAddr;
use std::time::Duration;
use support::http::{web_service, HttpBackend};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Outlier detection that ejects after two failures in a row, and no retries (each request reaches
/// one backend once).
const STRICT: &str =
    "    retries: { attempts: 0 }\n    outlier: { consecutive_failures: 2, base_ejection: 30s }\n";

struct Setup {
    agent: sinew::agent::Agent,
    backends: [HttpBackend; 2],
}

impl Setup {
    /// Two backends behind `web`, whose request timeout is `request`.
    async fn start(request: &str) -> Self {
        let backends = [HttpBackend::start("a").await, HttpBackend::start("b").await];
        let agent = agent(&web_service(
            &[backends[0].hostport(), backends[1].hostport()],
            &format!("{STRICT}    timeouts: {{ request: {request} }}\n"),
        ))
        .await;
        Self { agent, backends }
    }

    fn addr(&self) -> SocketAddr {
        self.agent.service_addr("web").unwrap()
    }

    async fn metrics(&self) -> String {
        http_get(self.agent.admin_addr(), "/metrics").await.1
    }

    async fn client_errors(&self, kind: &str) -> f64 {
        let series =
            format!("sinew_service_client_errors_total{{kind=\"{kind}\",service=\"web\"}}");
        metric(&self.metrics().await, &series).unwrap_or(0.0)
    }

    /// Neither backend was charged: no ejection, no failed connect, no 5xx, both `up` in the API, and
    /// both take their share of ten plain requests.
    async fn assert_backends_unharmed(&self) {
        let metrics = self.metrics().await;
        for b in &self.backends {
            let labels = format!("{{backend=\"{}\",name=\"\",service=\"web\"}}", b.hostport());
            for name in [
                "sinew_backend_ejections_total",
                "sinew_backend_connect_failures_total",
            ] {
                assert_eq!(
                    metric(&metrics, &format!("{name}{labels}")),
                    Some(0.0),
                    "{name} of {}",
                    b.hostport()
                );
            }
            let five = format!(
                "sinew_backend_http_responses_total{{backend=\"{}\",name=\"\",service=\"web\",code=\"5xx\"}}",
                b.hostport()
            );
            assert_eq!(metric(&metrics, &five).unwrap_or(0.0), 0.0, "{five}");
        }
        let (_, api) = http_get(self.agent.admin_addr(), "/api/services").await;
        let json: serde_json::Value = serde_json::from_str(&api).unwrap();
        for b in json["services"][0]["backends"].as_array().unwrap() {
            assert_eq!(b["state"], "up", "{b}");
        }
        let before = [self.backends[0].requests(), self.backends[1].requests()];
        for _ in 0..10 {
            let (status, _) = http_get(self.addr(), "/").await;
            assert_eq!(status, 200);
        }
        for (i, b) in self.backends.iter().enumerate() {
            assert!(
                b.requests() > before[i],
                "backend {} still takes traffic",
                b.hostport()
            );
        }
    }
}

/// Sends `bytes`, then reads the answer until the agent closes or `within` passes.
async fn send(addr: SocketAddr, bytes: &[u8], within: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(within, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Closes `s` with a reset (`SO_LINGER` 0) instead of the end of the stream.
fn reset(s: TcpStream) {
    rustix::net::sockopt::set_socket_linger(&s, Some(Duration::ZERO)).unwrap();
    drop(s);
}

fn sinew_error(response: &str) -> Option<&str> {
    response
        .lines()
        .find_map(|l| l.strip_prefix("x-sinew-error: "))
}

#[tokio::test]
async fn a_malformed_chunked_body_is_a_client_error_and_ejects_no_backend() {
    let setup = Setup::start("400ms").await;
    for _ in 0..10 {
        let out = send(
            setup.addr(),
            b"POST /drain HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            Duration::from_secs(5),
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");
        assert_eq!(sinew_error(&out), Some("bad_request_body"), "{out}");
    }
    assert_eq!(setup.client_errors("bad_request_body").await, 10.0);
    setup.assert_backends_unharmed().await;
}

#[tokio::test]
async fn a_client_that_resets_or_closes_mid_body_ejects_no_backend() {
    let setup = Setup::start("400ms").await;
    // Larger than `http.max_retry_body`: streamed to the backend as it comes.
    let head = b"POST /drain HTTP/1.1\r\nHost: web\r\nContent-Length: 1000000\r\n\r\n";
    for round in 0..10 {
        let mut s = TcpStream::connect(setup.addr()).await.unwrap();
        s.write_all(head).await.unwrap();
        s.write_all(&[b'x'; 8192]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        if round % 2 == 0 {
            // A reset: the agent's next read of the body fails.
            reset(s);
        } else {
            // The end of the stream in the middle of the body: the client can still read its answer.
            s.shutdown().await.unwrap();
            let mut out = String::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await;
            assert!(out.starts_with("HTTP/1.1 400"), "{out}");
            assert_eq!(sinew_error(&out), Some("client_aborted"), "{out}");
        }
    }
    let mut counted = 0.0;
    for _ in 0..50 {
        counted = setup.client_errors("client_aborted").await;
        if counted >= 10.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(counted, 10.0);
    setup.assert_backends_unharmed().await;
}

#[tokio::test]
async fn a_client_that_stalls_its_body_gets_408_and_ejects_no_backend() {
    let setup = Setup::start("400ms").await;
    for _ in 0..4 {
        let mut s = TcpStream::connect(setup.addr()).await.unwrap();
        s.write_all(
            b"POST /drain HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        )
        .await
        .unwrap();
        // ... and nothing more: the backend waits for the rest until the request timeout.
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        let out = String::from_utf8_lossy(&out);
        assert!(out.starts_with("HTTP/1.1 408"), "{out}");
        assert_eq!(sinew_error(&out), Some("body_timeout"), "{out}");
    }
    assert_eq!(setup.client_errors("body_timeout").await, 4.0);
    setup.assert_backends_unharmed().await;
}

#[tokio::test]
async fn a_client_that_leaves_before_its_answer_charges_no_backend() {
    let setup = Setup::start("400ms").await;
    for i in 0..10 {
        let mut s = TcpStream::connect(setup.addr()).await.unwrap();
        // Alternately on sinew's own path and (chunked, streamed) on hyper's.
        let request: &[u8] = if i % 2 == 0 {
            b"GET /slow/200 HTTP/1.1\r\nHost: web\r\n\r\n"
        } else {
            b"POST /slow/200 HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        };
        s.write_all(request).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        reset(s);
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    setup.assert_backends_unharmed().await;
}

#[tokio::test]
async fn a_slow_upload_is_not_counted_as_backend_latency() {
    let setup = Setup::start("5s").await;
    let mut s = TcpStream::connect(setup.addr()).await.unwrap();
    s.write_all(b"POST /drain HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    // 600 ms in all, within the request timeout.
    for _ in 0..3 {
        s.write_all(b"5\r\nhello\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("15 bytes\n"), "{out}");
    let metrics = setup.metrics().await;
    let took: f64 = setup
        .backends
        .iter()
        .filter_map(|b| {
            metric(
                &metrics,
                &format!(
                    "sinew_backend_http_response_duration_seconds_sum{{backend=\"{}\",name=\"\",service=\"web\"}}",
                    b.hostport()
                ),
            )
        })
        .sum();
    assert!(
        took < 0.3,
        "the backend answered at once after the body; counted {took} s"
    );
}
