//! The TCP fast paths' shared checks (`tcp_fastpath: sockmap` and `io_uring`): echo, half-close, a
//! 1 MB transfer both ways, idle timeout, byte metrics, connection counts, reload, drain and the
//! shutdown cut, a PROXY header first, a client reset, and the config refusals. Each check takes the
//! path's name; a test binary per path wraps each in a test of its own.

use super::{agent, greet, http_get, metric, read_line, EchoBackend};
use sinew::agent::Agent;
use sinew::config::{Config, Format};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A config with one service `db` on fast path `path` in front of `backend`, idle timeout `idle`.
pub fn yaml(path: &str, backend: &str, idle: &str) -> String {
    format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  db:\n    listen: 127.0.0.1:0\n    tcp_fastpath: {path}\n    balance: least_conn\n    backends: [{backend}]\n    timeouts: {{ connect: 1s, idle: {idle} }}\n"
    )
}

/// Starts the agent, or `None` (with the reason printed) when the kernel refused `path` and service
/// `db` runs the copy loop; a gauge that names neither fails the test.
pub async fn fast_agent(path: &str, yaml: &str) -> Option<Agent> {
    let agent = agent(yaml).await;
    let body = http_get(agent.admin_addr(), "/metrics").await.1;
    let gauge = |p: &str| {
        metric(
            &body,
            &format!("sinew_tcp_fastpath{{path=\"{p}\",service=\"db\"}}"),
        )
    };
    if gauge(path) == Some(1.0) {
        return Some(agent);
    }
    assert_eq!(
        gauge("copy"),
        Some(1.0),
        "db runs neither {path} nor copy: {body}"
    );
    eprintln!("SKIPPED: the kernel refused tcp_fastpath {path}; db runs the copy loop (see the agent's warning)");
    None
}

/// Sends `data` on `s` and half-closes while reading everything that comes back until the end of
/// stream, within `limit` (else fails naming `what`).
pub async fn send_half_close_read(
    s: TcpStream,
    data: &[u8],
    limit: Duration,
    what: &str,
) -> Vec<u8> {
    let (mut rd, mut wr) = s.into_split();
    let send = async {
        wr.write_all(data).await.unwrap();
        wr.shutdown().await.unwrap();
    };
    let recv = async {
        let mut got = Vec::new();
        rd.read_to_end(&mut got).await.unwrap();
        got
    };
    let ((), got) = tokio::time::timeout(limit, async { tokio::join!(send, recv) })
        .await
        .unwrap_or_else(|_| panic!("stalled: {what}"));
    got
}

/// FNV-1a of `bytes`.
pub fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The `/metrics` body once service `db` has no open connection (polled for up to 2 s: a connection's
/// totals are counted as its task ends, just after its client saw EOF); fails the test otherwise.
pub async fn metrics_when_idle(agent: &Agent, backend: &str) -> String {
    let active = format!(
        "sinew_backend_connections_active{{backend=\"{backend}\",name=\"\",service=\"db\"}}"
    );
    let mut body = String::new();
    for _ in 0..100 {
        body = http_get(agent.admin_addr(), "/metrics").await.1;
        if metric(&body, &active) == Some(0.0) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("connections still open: {body}");
}

/// The backend's byte counters for service `db`: (sent to it, received from it).
pub fn backend_bytes(body: &str, backend: &str) -> (Option<f64>, Option<f64>) {
    let sent =
        format!("sinew_backend_sent_bytes_total{{backend=\"{backend}\",name=\"\",service=\"db\"}}");
    let received = sent.replace("sent_bytes", "received_bytes");
    (metric(body, &sent), metric(body, &received))
}

/// Five connections each send 1 MB and half-close; all of it comes back, then EOF; each is counted
/// while open, and the byte counters hold the totals.
pub async fn megabyte_each_way(path: &str) {
    let backend = EchoBackend::start("a").await;
    let Some(agent) = fast_agent(path, &yaml(path, &backend.hostport(), "10s")).await else {
        return;
    };
    let addr = agent.service_addr("db").unwrap();
    let active = format!(
        "sinew_backend_connections_active{{backend=\"{}\",name=\"\",service=\"db\"}}",
        backend.hostport()
    );
    let mut expected = 0u64;
    for round in 0..5u32 {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 31 + round) as u8).collect();
        let mut s = TcpStream::connect(addr).await.unwrap();
        assert_eq!(read_line(&mut s).await.unwrap(), "a");
        let body = http_get(agent.admin_addr(), "/metrics").await.1;
        assert_eq!(metric(&body, &active), Some(1.0), "counted while open");
        // Half-close: the client is done, the echo of everything still comes back, then EOF.
        let what = format!("round {round}");
        let got = send_half_close_read(s, &data, Duration::from_secs(20), &what).await;
        assert_eq!(got.len(), data.len(), "round {round}");
        assert_eq!(checksum(&got), checksum(&data), "round {round}");
        expected += data.len() as u64;
    }
    let body = metrics_when_idle(&agent, &backend.hostport()).await;
    let (sent, received) = backend_bytes(&body, &backend.hostport());
    assert_eq!(sent, Some(expected as f64), "{body}");
    // The backend's greeting ("a\n") came back on each of the 5 connections too.
    assert_eq!(received, Some((expected + 5 * 2) as f64), "{body}");
}

/// Traffic keeps a connection open past one idle period; silence closes it after the period, counted.
pub async fn idle_timeout(path: &str) {
    let backend = EchoBackend::start("a").await;
    let Some(agent) = fast_agent(path, &yaml(path, &backend.hostport(), "400ms")).await else {
        return;
    };
    let addr = agent.service_addr("db").unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(read_line(&mut s).await.unwrap(), "a");
    // Traffic resets the clock: 3 echoes 200 ms apart outlast one idle period.
    let started = std::time::Instant::now();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.write_all(b"ping\n").await.unwrap();
        assert_eq!(read_line(&mut s).await.unwrap(), "ping");
    }
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .expect("closed by the idle timeout");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    let body = http_get(agent.admin_addr(), "/metrics").await.1;
    assert_eq!(
        metric(&body, "sinew_service_idle_timeouts_total{service=\"db\"}"),
        Some(1.0)
    );
}

/// A reload sends new connections to the new backend and keeps the open one; shutdown lets it work
/// through the grace period and cuts it at the end.
pub async fn reload_then_shutdown_cut(path: &str) {
    let a = EchoBackend::start("a").await;
    let b = EchoBackend::start("b").await;
    let Some(agent) = fast_agent(path, &yaml(path, &a.hostport(), "10s")).await else {
        return;
    };
    let addr = agent.service_addr("db").unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(read_line(&mut s).await.unwrap(), "a");
    let config = Config::parse(
        &yaml(path, &b.hostport(), "10s"),
        Format::Yaml,
        Path::new("test.yaml"),
    )
    .unwrap();
    agent.apply(config).await.unwrap();
    assert_eq!(
        greet(addr).await.unwrap(),
        "b",
        "new connections go to the new backend"
    );
    s.write_all(b"still here\n").await.unwrap();
    assert_eq!(
        read_line(&mut s).await.unwrap(),
        "still here",
        "the open one stays"
    );
    // Drain: the connection works during the grace period and is cut at its end.
    let shutdown = tokio::spawn(agent.shutdown(Duration::from_millis(500)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(b"draining\n").await.unwrap();
    assert_eq!(read_line(&mut s).await.unwrap(), "draining");
    let report = shutdown.await.unwrap();
    assert!(report.cut, "the open connection was cut");
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .expect("closed at the cut");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
}

/// A handover waits for the open connection (which keeps working) and ends, uncut, when it closes.
pub async fn handover_drains(path: &str) {
    let backend = EchoBackend::start("a").await;
    let Some(agent) = fast_agent(path, &yaml(path, &backend.hostport(), "10s")).await else {
        return;
    };
    let addr = agent.service_addr("db").unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(read_line(&mut s).await.unwrap(), "a");
    let handover = tokio::spawn(agent.hand_over(Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(b"after the handover\n").await.unwrap();
    assert_eq!(read_line(&mut s).await.unwrap(), "after the handover");
    assert!(
        !handover.is_finished(),
        "the open connection holds the drain"
    );
    drop(s);
    let report = tokio::time::timeout(Duration::from_secs(5), handover)
        .await
        .expect("the drain ends when the connection closes")
        .unwrap();
    assert!(!report.cut, "nothing was cut");
}

/// With `send_proxy: v1` the backend gets the PROXY header, then the client's 300 KB whole.
pub async fn proxy_header_first(path: &str) {
    // A backend that sends back everything it received once the client is done.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut got = Vec::new();
            if s.read_to_end(&mut got).await.is_ok() {
                let _ = s.write_all(&got).await;
            }
        }
    });
    let config = yaml(path, &backend.to_string(), "10s").replace(
        "    balance: least_conn\n",
        "    balance: least_conn\n    send_proxy: v1\n",
    );
    let Some(agent) = fast_agent(path, &config).await else {
        return;
    };
    let addr = agent.service_addr("db").unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&data).await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut back))
        .await
        .expect("answered in time")
        .unwrap();
    let header_end = back
        .iter()
        .position(|&b| b == b'\n')
        .expect("a header line")
        + 1;
    let header = String::from_utf8_lossy(&back[..header_end]);
    assert!(
        header.starts_with("PROXY TCP4 127.0.0.1 127.0.0.1 "),
        "{header}"
    );
    assert_eq!(back.len() - header_end, data.len());
    assert_eq!(checksum(&back[header_end..]), checksum(&data));
}

/// Clients that reset while the backend still sends end their connections at once, not at the idle
/// timeout.
pub async fn client_reset_ends_at_once(path: &str) {
    // A backend that sends more than the socket buffers hold, then ends its stream.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let chunk = vec![7u8; 64 * 1024];
                for _ in 0..128 {
                    if s.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
                let _ = s.shutdown().await;
            });
        }
    });
    let Some(agent) = fast_agent(path, &yaml(path, &backend.to_string(), "60s")).await else {
        return;
    };
    let addr = agent.service_addr("db").unwrap();
    let active = "sinew_service_connections_active{service=\"db\"}";
    for _ in 0..4 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut first = [0u8; 1024];
        s.read_exact(&mut first).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Gone with unread bytes: a reset, as a load generator that stops does.
        rustix::net::sockopt::set_socket_linger(&s, Some(Duration::ZERO)).unwrap();
        drop(s);
    }
    let mut ended = false;
    for _ in 0..150 {
        let body = http_get(agent.admin_addr(), "/metrics").await.1;
        if metric(&body, active) == Some(0.0) {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        ended,
        "connections whose client reset end at once, not after the 60 s idle timeout"
    );
}

/// `tcp_fastpath: <path>` is refused at load with TLS on either side, and for an HTTP service unless
/// the path is io_uring, the message naming the field and the path; a path that does not exist is
/// refused naming this one.
pub fn refused_for_http_and_tls(path: &str) {
    let tls = "cannot carry TLS";
    let http = if path == "io_uring" {
        None
    } else {
        Some(format!("{path} applies to mode tcp only"))
    };
    let cases = [
        ("mode: http", http),
        (
            "tls_upstream: { ca_file: /etc/ssl/certs/ca-certificates.crt }",
            Some(format!("{path} {tls}")),
        ),
        (
            "tls_listen: { cert: /tmp/c.pem, key: /tmp/k.pem }",
            Some(format!("{path} {tls}")),
        ),
    ];
    for (extra, want) in cases {
        let text = format!(
            "services:\n  db:\n    listen: 127.0.0.1:1\n    tcp_fastpath: {path}\n    {extra}\n    backends: [127.0.0.1:2]\n"
        );
        let parsed = Config::parse(&text, Format::Yaml, Path::new("test.yaml"));
        let Some(want) = want else {
            assert!(parsed.is_ok(), "{extra}: {:?}", parsed.err());
            continue;
        };
        let e = parsed.unwrap_err().to_string();
        assert!(
            e.contains("services.db.tcp_fastpath") && e.contains(&want),
            "{extra}: {e}"
        );
    }
    let e = Config::parse(
        "services:\n  db:\n    listen: 127.0.0.1:1\n    tcp_fastpath: splice\n    backends: [127.0.0.1:2]\n",
        Format::Yaml,
        Path::new("test.yaml"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("tcp_fastpath") && e.contains(path), "{e}");
}
