//! TCP mode on the kernel path (`tcp_fastpath: sockmap`): the copy loop's checks again (echo,
//! half-close, a 1 MB transfer both ways, idle timeout, byte metrics, connection counts, drain and
//! the shutdown cut, reload keeping open connections) plus the config refusals.

mod support;

use sinew::config::{Config, Format};
use std::path::Path;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A config with one sockmap service `db` in front of `backend`, idle timeout `idle`.
fn yaml(backend: &str, idle: &str) -> String {
    format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  db:\n    listen: 127.0.0.1:0\n    tcp_fastpath: sockmap\n    balance: least_conn\n    backends: [{backend}]\n    timeouts: {{ connect: 1s, idle: {idle} }}\n"
    )
}

/// Starts the agent, or `None` (with the reason printed) when this kernel refuses the program.
async fn sockmap_agent(yaml: &str) -> Option<sinew::agent::Agent> {
    let agent = agent(yaml).await;
    let body = http_get(agent.admin_addr(), "/metrics").await.1;
    if metric(&body, "sinew_tcp_fastpath{path=\"sockmap\",service=\"db\"}") != Some(1.0) {
        eprintln!("SKIPPED: the kernel refused the sockmap program (see the agent's warning)");
        return None;
    }
    Some(agent)
}

/// FNV-1a of `bytes`.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[tokio::test]
async fn a_megabyte_each_way_arrives_whole_with_half_close_and_counted() {
    let backend = EchoBackend::start("a").await;
    let Some(agent) = sockmap_agent(&yaml(&backend.hostport(), "10s")).await else {
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
        let (mut rd, mut wr) = s.into_split();
        let send = async {
            wr.write_all(&data).await.unwrap();
            // Half-close: the client is done, the echo of everything still comes back, then EOF.
            wr.shutdown().await.unwrap();
        };
        let recv = async {
            let mut got = Vec::new();
            rd.read_to_end(&mut got).await.unwrap();
            got
        };
        let ((), got) =
            tokio::time::timeout(Duration::from_secs(20), async { tokio::join!(send, recv) })
                .await
                .unwrap_or_else(|_| panic!("stalled in round {round}"));
        assert_eq!(got.len(), data.len(), "round {round}");
        assert_eq!(checksum(&got), checksum(&data), "round {round}");
        expected += data.len() as u64;
    }
    let sent = format!(
        "sinew_backend_sent_bytes_total{{backend=\"{}\",name=\"\",service=\"db\"}}",
        backend.hostport()
    );
    let received = sent.replace("sent_bytes", "received_bytes");
    // The totals are counted as each connection's task ends, just after the client saw EOF.
    let mut body = String::new();
    for _ in 0..40 {
        body = http_get(agent.admin_addr(), "/metrics").await.1;
        if metric(&body, &active) == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metric(&body, &active), Some(0.0), "none open: {body}");
    assert_eq!(metric(&body, &sent), Some(expected as f64), "{body}");
    // The backend's greeting ("a\n") came back on each of the 5 connections too.
    assert_eq!(
        metric(&body, &received),
        Some((expected + 5 * 2) as f64),
        "{body}"
    );
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_idle_timeout_not_before() {
    let backend = EchoBackend::start("a").await;
    let Some(agent) = sockmap_agent(&yaml(&backend.hostport(), "400ms")).await else {
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

#[tokio::test]
async fn reload_keeps_open_connections_and_shutdown_cuts_them_after_the_grace() {
    let a = EchoBackend::start("a").await;
    let b = EchoBackend::start("b").await;
    let Some(agent) = sockmap_agent(&yaml(&a.hostport(), "10s")).await else {
        return;
    };
    let addr = agent.service_addr("db").unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(read_line(&mut s).await.unwrap(), "a");
    let config = Config::parse(
        &yaml(&b.hostport(), "10s"),
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

#[test]
fn sockmap_is_refused_for_http_and_tls_services() {
    let cases = [
        ("mode: http", "sockmap applies to mode tcp only"),
        (
            "tls_upstream: { ca_file: /etc/ssl/certs/ca-certificates.crt }",
            "cannot carry TLS",
        ),
    ];
    for (extra, want) in cases {
        let text = format!(
            "services:\n  db:\n    listen: 127.0.0.1:1\n    tcp_fastpath: sockmap\n    {extra}\n    backends: [127.0.0.1:2]\n"
        );
        let e = Config::parse(&text, Format::Yaml, Path::new("test.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("services.db.tcp_fastpath") && e.contains(want),
            "{e}"
        );
    }
    let e = Config::parse(
        "services:\n  db:\n    listen: 127.0.0.1:1\n    tcp_fastpath: splice\n    backends: [127.0.0.1:2]\n",
        Format::Yaml,
        Path::new("test.yaml"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("tcp_fastpath") && e.contains("sockmap"), "{e}");
}

#[tokio::test]
async fn a_handover_drains_an_open_connection_until_it_closes() {
    let backend = EchoBackend::start("a").await;
    let Some(agent) = sockmap_agent(&yaml(&backend.hostport(), "10s")).await else {
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

#[tokio::test]
async fn a_proxy_header_goes_first_then_the_kernel_carries_the_stream() {
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
    let config = yaml(&backend.to_string(), "10s").replace(
        "    tcp_fastpath: sockmap\n",
        "    tcp_fastpath: sockmap\n    send_proxy: v1\n",
    );
    let Some(agent) = sockmap_agent(&config).await else {
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

#[tokio::test]
async fn a_client_that_resets_while_the_backend_still_sends_ends_its_connection_at_once() {
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
    let Some(agent) = sockmap_agent(&yaml(&backend.to_string(), "60s")).await else {
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
