//! sinew's own HTTP/1 server path seen from the wire: pipelined requests, HTTP/1.0 clients, every way
//! a response body is delimited towards a client, bad request heads answered precisely (with a marker
//! and a metric), head timeouts, and a connection handed to hyper's server for what the own path
//! leaves to it (chunked uploads, upgrades) without losing a byte.

mod support;

use std::net::SocketAddr;
use std::time::Duration;
use support::http::{web_service, HttpBackend};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response read off the wire.
#[derive(Debug)]
struct Wire {
    /// Status line and header fields, lowercased.
    head: String,
    body: Vec<u8>,
    /// Trailer fields of a chunked body, lowercased.
    trailers: String,
}

impl Wire {
    fn body(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A raw client connection with what it has read and not yet consumed.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Self {
        Self {
            s: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, raw: &str) {
        self.s.write_all(raw.as_bytes()).await.unwrap();
    }

    /// Reads more; false at the end of the stream. Bounded by 5 s.
    async fn more(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout(Duration::from_secs(5), self.s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(_) => panic!("no answer within 5 s; read so far: {:?}", self.text()),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }

    /// Reads one line (without CRLF).
    async fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                return String::from_utf8_lossy(&line[..i]).into_owned();
            }
            assert!(self.more().await, "closed mid-line: {:?}", self.text());
        }
    }

    /// Reads `n` bytes.
    async fn bytes(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.more().await, "closed mid-body: {:?}", self.text());
        }
        self.buf.drain(..n).collect()
    }

    /// Reads one response to a request of `method`, delimited as its head says.
    async fn response(&mut self, method: &str) -> Wire {
        let mut head = String::new();
        loop {
            let line = self.line().await;
            if line.is_empty() {
                break;
            }
            head.push_str(&line.to_ascii_lowercase());
            head.push('\n');
        }
        let field = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                .map(str::to_string)
        };
        let status = &head[9..12];
        let (mut body, mut trailers) = (Vec::new(), String::new());
        if method == "HEAD" || status == "204" || status == "304" {
        } else if let Some(n) = field("content-length") {
            body = self.bytes(n.parse().unwrap()).await;
        } else if field("transfer-encoding").as_deref() == Some("chunked") {
            loop {
                let size = usize::from_str_radix(&self.line().await, 16).unwrap();
                if size == 0 {
                    break;
                }
                body.extend(self.bytes(size).await);
                assert_eq!(self.line().await, "");
            }
            loop {
                let line = self.line().await;
                if line.is_empty() {
                    break;
                }
                trailers.push_str(&line.to_ascii_lowercase());
                trailers.push('\n');
            }
        } else {
            while self.more().await {}
            body = std::mem::take(&mut self.buf);
        }
        Wire {
            head,
            body,
            trailers,
        }
    }

    /// True when the server closes the connection (within 5 s) with nothing more sent.
    async fn closed(&mut self) -> bool {
        !self.more().await && self.buf.is_empty()
    }
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let backend = HttpBackend::start("a").await;
    let agent = agent(&web_service(&[backend.hostport()], "")).await;
    let mut c = Conn::open(agent.service_addr("web").unwrap()).await;
    c.send(concat!(
        "GET /status/201 HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        "HEAD /status/200 HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /headers HTTP/1.1\r\nHost: x\r\nX-Mine: 1\r\n\r\n",
    ))
    .await;
    let first = c.response("GET").await;
    assert!(first.head.starts_with("http/1.1 201"), "{first:?}");
    assert_eq!(first.body(), "a");
    let echo = c.response("POST").await;
    assert_eq!(echo.body(), "hello", "{echo:?}");
    let head = c.response("HEAD").await;
    assert!(
        head.head.starts_with("http/1.1 200") && head.body.is_empty(),
        "{head:?}"
    );
    let headers = c.response("GET").await;
    assert!(headers.body().contains("x-mine: 1"), "{headers:?}");
    assert!(headers.head.contains("\ndate: "), "{headers:?}");
    assert_eq!(backend.requests(), 4);
}

#[tokio::test]
async fn http10_clients_get_http10_answers_and_their_keep_alive_choice() {
    let backend = HttpBackend::start("a").await;
    let agent = agent(&web_service(&[backend.hostport()], "")).await;
    let addr = agent.service_addr("web").unwrap();

    let mut c = Conn::open(addr).await;
    c.send("GET /status/200 HTTP/1.0\r\n\r\n").await;
    let r = c.response("GET").await;
    assert!(r.head.starts_with("http/1.0 200"), "{r:?}");
    assert!(
        c.closed().await,
        "HTTP/1.0 without keep-alive ends the connection"
    );

    let mut c = Conn::open(addr).await;
    for _ in 0..2 {
        c.send("GET /status/200 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .await;
        let r = c.response("GET").await;
        assert!(r.head.contains("connection: keep-alive"), "{r:?}");
        assert_eq!(r.body(), "a");
    }

    // A body of unknown length cannot be chunked for HTTP/1.0: it ends with the connection.
    let mut c = Conn::open(addr).await;
    c.send("GET /trailers HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await;
    let r = c.response("GET").await;
    assert!(!r.head.contains("transfer-encoding"), "{r:?}");
    assert_eq!(r.body(), "payload");
}

/// A backend answering every request (a head without body) with `response`, on keep-alive connections.
async fn fixed_backend(response: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n) = s.read(&mut chunk).await {
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..i + 4);
                        if s.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn chunked_bodies_and_trailers_reach_http11_clients() {
    let (backend, _task) = fixed_backend(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\nx-sum: 7\r\n\r\n",
    )
    .await;
    let agent = agent(&format!(
        "services:\n  web:\n    listen: 127.0.0.1:0\n    mode: http\n    backends: [{backend}]\n"
    ))
    .await;
    let mut c = Conn::open(agent.service_addr("web").unwrap()).await;
    for _ in 0..2 {
        c.send("GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n")
            .await;
        let r = c.response("GET").await;
        assert!(r.head.contains("transfer-encoding: chunked"), "{r:?}");
        assert_eq!(r.body(), "abcdefg");
        assert_eq!(r.trailers, "x-sum: 7\n", "{r:?}");
    }
}

#[tokio::test]
async fn bad_request_heads_get_400_with_a_marker_and_a_metric() {
    let backend = HttpBackend::start("a").await;
    let agent = agent(&web_service(&[backend.hostport()], "")).await;
    let addr = agent.service_addr("web").unwrap();
    for raw in [
        "G@T / HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length: 12x\r\n\r\n",
        "GET / HTTP/1.1\r\nBad Name: v\r\n\r\n",
    ] {
        let mut c = Conn::open(addr).await;
        c.send(raw).await;
        let r = c.response("GET").await;
        assert!(r.head.starts_with("http/1.1 400"), "{raw:?}: {r:?}");
        assert!(r.head.contains("x-sinew-error: bad_request"), "{r:?}");
        assert!(r.head.contains("connection: close"), "{r:?}");
        assert!(c.closed().await);
    }
    let metrics = http_get(agent.admin_addr(), "/metrics").await.1;
    assert!(
        metrics.contains(r#"sinew_http_errors_total{cause="bad_request",service="web"} 3"#),
        "{metrics}"
    );
    assert_eq!(backend.requests(), 0);
    let mut c = Conn::open(addr).await;
    c.send("GET /status/200 HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(c.response("GET").await.body(), "a");
}

#[tokio::test]
async fn a_connection_moves_to_hyper_for_what_the_own_path_leaves() {
    let backend = HttpBackend::start("a").await;
    let agent = agent(&web_service(&[backend.hostport()], "")).await;
    let mut c = Conn::open(agent.service_addr("web").unwrap()).await;
    // Own path, then a chunked upload pipelined behind it (hyper's), then a plain request (hyper's too:
    // the connection stays with it).
    c.send(concat!(
        "GET /status/200 HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "GET /status/202 HTTP/1.1\r\nHost: x\r\n\r\n",
    ))
    .await;
    assert_eq!(c.response("GET").await.body(), "a");
    assert_eq!(c.response("POST").await.body(), "hello");
    let last = c.response("GET").await;
    assert!(last.head.starts_with("http/1.1 202"), "{last:?}");
    // An upgrade after a plain request: the tunnel echoes.
    let mut c = Conn::open(agent.service_addr("web").unwrap()).await;
    c.send("GET /status/200 HTTP/1.1\r\nHost: x\r\n\r\n").await;
    c.response("GET").await;
    c.send("GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
        .await;
    let switched = c.response("HEAD").await;
    assert!(switched.head.starts_with("http/1.1 101"), "{switched:?}");
    c.send("ping").await;
    assert_eq!(c.bytes(4).await, b"ping");
}

#[tokio::test]
async fn request_heads_must_come_in_time_but_idle_keep_alive_waits() {
    let backend = HttpBackend::start("a").await;
    let agent = agent(&web_service(
        &[backend.hostport()],
        "    timeouts: { header_read: 300ms }\n",
    ))
    .await;
    let mut c = Conn::open(agent.service_addr("web").unwrap()).await;
    c.send("GET /status/200 HTTP/1.1\r\nHost: x\r\n\r\n").await;
    c.response("GET").await;
    // Quiet for longer than header_read between requests: the idle timeout's business, not this one's.
    tokio::time::sleep(Duration::from_millis(600)).await;
    c.send("GET /status/200 HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(c.response("GET").await.body(), "a");
    // A head begun and not finished is answered 408 and closed.
    let started = std::time::Instant::now();
    c.send("GET /status/200 HTTP/1.1\r\nHo").await;
    let r = c.response("GET").await;
    assert!(r.head.starts_with("http/1.1 408"), "{r:?}");
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert!(c.closed().await);
    assert_eq!(backend.requests(), 2);
    // A connection that never begins a request (a probe, a preconnect) is closed without an answer.
    let mut probe = Conn::open(agent.service_addr("web").unwrap()).await;
    assert!(
        probe.closed().await,
        "closed, and nothing sent: {:?}",
        probe.text()
    );
}

#[tokio::test]
async fn mangled_requests_never_take_routing_down() {
    let backend = HttpBackend::start("a").await;
    let agent = agent(&web_service(
        &[backend.hostport()],
        "    timeouts: { header_read: 200ms }\n",
    ))
    .await;
    let addr = agent.service_addr("web").unwrap();
    let valid =
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
    let mut rng = fastrand::Rng::with_seed(11);
    for _ in 0..200 {
        let mut input = valid.to_vec();
        for _ in 0..rng.usize(1..5) {
            let at = rng.usize(..input.len());
            match rng.u8(0..3) {
                0 => input[at] = rng.u8(..),
                1 => input.insert(at, *rng.choice(b"\r\n: \x00\xff9").unwrap_or(&b'x')),
                _ => {
                    input.remove(at);
                }
            }
        }
        let mut s = TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(&input).await;
        let _ = s.shutdown().await;
        let mut sink = Vec::new();
        // Each is answered or refused, and the connection closed.
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut sink)).await;
        assert!(
            read.is_ok(),
            "left hanging: {:?}",
            String::from_utf8_lossy(&input)
        );
    }
    let mut c = Conn::open(addr).await;
    c.send("GET /status/200 HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(c.response("GET").await.body(), "a");
}

#[tokio::test]
async fn the_target_authority_wins_and_whole_heads_are_held_to_the_limit() {
    let backend = HttpBackend::start("a").await;
    let agent = agent(&web_service(
        &[backend.hostport()],
        "    http: { max_header_bytes: 8192 }\n",
    ))
    .await;
    let addr = agent.service_addr("web").unwrap();
    let mut c = Conn::open(addr).await;
    c.send("GET http://other.example/headers HTTP/1.1\r\nHost: wrong\r\n\r\n")
        .await;
    let r = c.response("GET").await;
    assert!(r.body().contains("host: other.example\n"), "{r:?}");
    // Over the limit in one piece: 431, as if it had come in parts.
    let big = format!(
        "GET /status/200 HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "v".repeat(20_000)
    );
    let mut c = Conn::open(addr).await;
    c.send(&big).await;
    let r = c.response("GET").await;
    assert!(r.head.starts_with("http/1.1 431"), "{r:?}");
    assert!(r.head.contains("x-sinew-error: head_too_large"), "{r:?}");
}

#[tokio::test]
async fn a_closing_connection_reads_what_follows_so_its_answer_arrives() {
    let backend = HttpBackend::start("a").await;
    let agent = agent(&web_service(&[backend.hostport()], "")).await;
    let mut c = Conn::open(agent.service_addr("web").unwrap()).await;
    // A request that closes the connection, with 200 KB pipelined behind it that will never be read
    // as requests: the answer must still arrive whole (a close with unread bytes would reset it).
    let junk = format!("GET /x HTTP/1.1\r\nX-Pad: {}\r\n", "j".repeat(200_000));
    c.send(&format!(
        "GET /status/200 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n{junk}"
    ))
    .await;
    let r = c.response("GET").await;
    assert!(
        r.head.starts_with("http/1.1 200") && r.head.contains("connection: close"),
        "{r:?}"
    );
    assert_eq!(r.body(), "a");
    assert_eq!(backend.requests(), 1);
    // The unread bytes were drained, not answered with a reset: the client may still send a little
    // while it reads its answer, then sees a clean end of stream.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let more = c.s.write_all(b"more junk").await;
    assert!(more.is_ok(), "no reset: {more:?}");
    let mut rest = [0u8; 64];
    let end = tokio::time::timeout(Duration::from_secs(5), c.s.read(&mut rest))
        .await
        .expect("ends in time");
    assert!(matches!(end, Ok(0)), "a clean end of stream: {end:?}");
}
