//! HTTP mode against scripted backends that answer with exact bytes: every response framing a backend
//! may use (length, chunked with trailers, until close, interim 1xx, HEAD), whether the connection is
//! kept for the next request accordingly, and malformed responses answered with 502 without harm to
//! the next request.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::http::web_service;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The service's extra fields: no retries, so each request reaches the backend once.
const NO_RETRIES: &str = "    retries: { attempts: 0 }\n";

type TestClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// A backend that answers the n-th request it reads (over all connections) with `script[n]`, and
/// closes the connection after it when the response is delimited by the close.
struct Scripted {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Scripted {
    async fn start(script: Vec<(&'static str, bool)>) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(script);
        let (acc, reqs) = (Arc::clone(&accepted), Arc::clone(&requests));
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                acc.fetch_add(1, Ordering::SeqCst);
                let (script, reqs) = (Arc::clone(&script), Arc::clone(&reqs));
                tokio::spawn(serve(s, script, reqs));
            }
        });
        Self {
            addr,
            accepted,
            requests,
            task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads requests (head and `Content-Length` body) and answers each from the script.
async fn serve(
    mut s: TcpStream,
    script: Arc<Vec<(&'static str, bool)>>,
    reqs: Arc<Mutex<Vec<String>>>,
) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let request: Vec<u8> = buf.drain(..head_end + length).collect();
        let n = {
            let mut reqs = reqs.lock().unwrap();
            reqs.push(String::from_utf8_lossy(&request).into_owned());
            reqs.len() - 1
        };
        let Some((response, close)) = script.get(n) else {
            return;
        };
        if s.write_all(response.as_bytes()).await.is_err() || *close {
            return;
        }
    }
}

/// An agent with one HTTP service on `backend` (no retries), its listener, and a client.
async fn through_sinew(backend: &Scripted) -> (sinew::agent::Agent, SocketAddr, TestClient) {
    let agent = agent(&web_service(&[backend.addr.to_string()], NO_RETRIES)).await;
    let web = agent.service_addr("web").unwrap();
    (
        agent,
        web,
        Client::builder(TokioExecutor::new()).build_http(),
    )
}

/// Sends a request through sinew; (status, body, trailer `x-sum` if any), status 0 when the
/// connection closed before a response head.
async fn send(
    c: &TestClient,
    addr: SocketAddr,
    method: Method,
    body: &'static str,
) -> (u16, String, Option<String>) {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}/p?q=1"))
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let resp = match tokio::time::timeout(Duration::from_secs(10), c.request(req))
        .await
        .expect("answer in time")
    {
        Ok(resp) => resp,
        Err(e) => return (0, format!("no response: {e}"), None),
    };
    let status = resp.status().as_u16();
    let collected = resp.into_body().collect().await;
    match collected {
        Ok(c) => {
            let trailer = c
                .trailers()
                .and_then(|t| t.get("x-sum"))
                .map(|v| v.to_str().unwrap().to_string());
            (
                status,
                String::from_utf8_lossy(&c.to_bytes()).into_owned(),
                trailer,
            )
        }
        Err(e) => (status, format!("body error: {e}"), None),
    }
}

#[tokio::test]
async fn every_response_framing_passes_and_reuse_follows_it() {
    let backend = Scripted::start(vec![
        ("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nlength", false),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n4;x=y\r\nchun\r\n3\r\nked\r\n0\r\nX-Sum: 7\r\n\r\n",
            false,
        ),
        ("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 7\r\n\r\ncreated", false),
        ("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n", false),
        ("HTTP/1.1 204 No Content\r\n\r\n", false),
        // Delimited by the close: the connection cannot be kept.
        ("HTTP/1.0 200 OK\r\n\r\nuntil close", true),
        ("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbye", true),
        ("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlast", false),
    ])
    .await;
    let (_agent, web, c) = through_sinew(&backend).await;

    assert_eq!(
        send(&c, web, Method::GET, "").await,
        (200, "length".into(), None)
    );
    assert_eq!(
        send(&c, web, Method::GET, "").await,
        (200, "chunked".into(), Some("7".into()))
    );
    assert_eq!(
        send(&c, web, Method::POST, "body").await,
        (201, "created".into(), None)
    );
    assert_eq!(
        send(&c, web, Method::HEAD, "").await,
        (200, "".into(), None)
    );
    assert_eq!(send(&c, web, Method::GET, "").await, (204, "".into(), None));
    assert_eq!(
        backend.accepted(),
        1,
        "length, chunked, 1xx, HEAD and 204 reuse one connection"
    );
    assert_eq!(
        send(&c, web, Method::GET, "").await,
        (200, "until close".into(), None)
    );
    assert_eq!(
        send(&c, web, Method::GET, "").await,
        (200, "bye".into(), None)
    );
    assert_eq!(
        send(&c, web, Method::GET, "").await,
        (200, "last".into(), None)
    );
    assert_eq!(
        backend.accepted(),
        3,
        "a close-delimited body and `Connection: close` end their connection"
    );

    let requests = backend.requests.lock().unwrap().clone();
    assert!(
        requests[0].starts_with("GET /p?q=1 HTTP/1.1\r\n"),
        "{}",
        requests[0]
    );
    assert!(
        requests[2].starts_with("POST /p?q=1 HTTP/1.1\r\n"),
        "{}",
        requests[2]
    );
    assert!(
        requests[2]
            .to_ascii_lowercase()
            .contains("content-length: 4\r\n"),
        "{}",
        requests[2]
    );
    assert!(requests[2].ends_with("\r\n\r\nbody"), "{}", requests[2]);
    assert!(
        requests[3].starts_with("HEAD /p?q=1 HTTP/1.1\r\n"),
        "{}",
        requests[3]
    );
}

#[tokio::test]
async fn malformed_responses_are_502_and_the_next_request_is_served() {
    let backend = Scripted::start(vec![
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
            false,
        ),
        ("SSH-2.0-OpenSSH_9.2\r\n\r\n", false),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            false,
        ),
        ("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", true),
        ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
    ])
    .await;
    let (agent, web, c) = through_sinew(&backend).await;

    assert_eq!(
        send(&c, web, Method::GET, "").await.0,
        502,
        "conflicting lengths"
    );
    assert_eq!(send(&c, web, Method::GET, "").await.0, 502, "not HTTP");
    // The heads are fine, the bodies are not: the client's connection is cut (before or after the
    // head, as far as the client can tell), never a body passed on as if complete.
    for what in ["bad chunk size", "body cut short"] {
        let (status, body, _) = send(&c, web, Method::GET, "").await;
        assert!(
            (status == 0 && body.starts_with("no response"))
                || (status == 200 && body.starts_with("body error")),
            "{what}: {status} {body}"
        );
    }
    assert_eq!(
        send(&c, web, Method::GET, "").await,
        (200, "ok".into(), None)
    );
    assert_eq!(backend.accepted(), 5, "no broken connection is reused");
    let text = http_get(agent.admin_addr(), "/metrics").await.1;
    assert!(text.contains("sinew_http_errors_total"), "errors counted");
}

#[tokio::test]
async fn a_request_lost_on_a_stale_connection_is_resent_once_on_a_new_one() {
    // The first three requests are answered after a pause (so sinew opens three connections, then
    // keeps them idle); every later request is met with a close, as a backend that crashes on it.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let (reqs, acc) = (Arc::clone(&requests), Arc::clone(&accepted));
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            acc.fetch_add(1, Ordering::SeqCst);
            let reqs = Arc::clone(&reqs);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while s.read(&mut buf).await.unwrap_or(0) > 0 {
                    if reqs.fetch_add(1, Ordering::SeqCst) >= 3 {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if s.write_all(ok).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let agent = agent(&web_service(&[addr.to_string()], NO_RETRIES)).await;
    let web = agent.service_addr("web").unwrap();
    let c: TestClient = Client::builder(TokioExecutor::new()).build_http();
    let first = futures_join3(
        send(&c, web, Method::GET, ""),
        send(&c, web, Method::GET, ""),
        send(&c, web, Method::GET, ""),
    )
    .await;
    assert!(first.iter().all(|r| r.0 == 200), "{first:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), 3);

    let (status, _, _) = send(&c, web, Method::GET, "").await;
    assert_eq!(status, 502);
    assert_eq!(
        requests.load(Ordering::SeqCst),
        5,
        "sent on one idle connection, then on one new one: not on every idle connection in turn"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 4);
    task.abort();
}

/// The three answers, in order.
async fn futures_join3<F: std::future::Future>(a: F, b: F, c: F) -> Vec<F::Output> {
    let (a, b, c) = tokio::join!(a, b, c);
    vec![a, b, c]
}
