//! The PROXY protocol against real peers: nginx (`listen ... proxy_protocol`) reads what sinew sends
//! with `send_proxy: v1 | v2` in TCP and HTTP mode; HAProxy (`send-proxy-v2`) in front of a sinew
//! listener with `accept_proxy` gives sinew the original client, seen in `X-Forwarded-For` and the
//! access log. On a TLS listener the header comes before the handshake; a Nerve znode in a real
//! ZooKeeper can ask for the header itself. A bad or missing header closes the connection and is
//! counted.

mod support;

use std::net::SocketAddr;
use std::time::Duration;
use support::logged::Logged;
use support::process::{free_port, wait_listening};
use support::proxy_peers::{Haproxy, Nginx};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Sends one `Connection: close` GET from `source` (a loopback IP) to `to`; returns the client's own
/// address and the answer's body.
async fn get_from(source: &str, to: SocketAddr, path: &str) -> (SocketAddr, String) {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{source}:0").parse().expect("source"))
        .expect("bind source");
    let mut s = socket.connect(to).await.expect("connect");
    let me = s.local_addr().expect("local addr");
    let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("send");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("answer in time")
        .expect("read answer");
    let text = String::from_utf8_lossy(&buf).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (me, body.to_string())
}

fn addr(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().expect("addr")
}

#[tokio::test]
async fn nginx_reads_the_client_from_send_proxy_v1_and_v2_in_tcp_and_http_mode() {
    let nginx = Nginx::start().await;
    let ports = [free_port(), free_port(), free_port(), free_port()];
    let mut yaml = String::from("admin: { listen: 127.0.0.1:0 }\nservices:\n");
    for (i, (mode, version)) in [("tcp", "v1"), ("tcp", "v2"), ("http", "v1"), ("http", "v2")]
        .iter()
        .enumerate()
    {
        yaml += &format!(
            "  s{i}: {{ listen: 127.0.0.1:{}, mode: {mode}, send_proxy: {version}, backends: [{}] }}\n",
            ports[i], nginx.addr
        );
    }
    let _agent = support::agent(&yaml).await;
    for (i, port) in ports.iter().enumerate() {
        // Two clients in turn: in HTTP mode the second must not get the first one's pooled
        // connection (whose header named the first client).
        for source in ["127.0.0.2", "127.0.0.3"] {
            let (me, body) = get_from(source, addr(*port), "/").await;
            assert_eq!(body, me.to_string(), "service s{i}");
        }
    }
}

#[tokio::test]
async fn on_a_tls_listener_the_header_comes_before_the_handshake_and_is_passed_on() {
    let nginx = Nginx::start().await;
    let ca = support::tls::ca("proxy-protocol");
    let cert = support::tls::leaf(&ca, "pp-listen", &["127.0.0.1"]);
    let port = free_port();
    let _agent = support::agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  s: {{ listen: 127.0.0.1:{port}, mode: tcp, accept_proxy: true, send_proxy: v1, tls_listen: {{ cert: {}, key: {} }}, backends: [{}] }}\n",
        cert.0.display(),
        cert.1.display(),
        nginx.addr
    ))
    .await;
    let mut s = TcpStream::connect(addr(port)).await.expect("connect");
    s.write_all(b"PROXY TCP4 192.0.2.9 127.0.0.1 4242 443\r\n")
        .await
        .expect("send the header in the clear");
    let mut tls = support::tls::tls_over(s, &ca)
        .await
        .expect("TLS after the header");
    tls.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut buf = Vec::new();
    // What came counts, whether the stream ended with a TLS close_notify or not.
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.ends_with("\r\n\r\n192.0.2.9:4242"),
        "nginx saw the client the header named: {text}"
    );
}

#[tokio::test]
async fn haproxy_send_proxy_v2_gives_sinew_the_original_client() {
    let backend = support::http::HttpBackend::start("b1").await;
    let port = free_port();
    let sinew = Logged::start(
        "proxy-protocol-accept",
        &format!(
            "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:{port}\n    mode: http\n    accept_proxy: true\n    backends: [{}]\n    http: {{ access_log: true }}\n",
            backend.hostport()
        ),
        "info",
    );
    wait_listening(addr(port)).await;
    let haproxy = Haproxy::start(addr(port)).await;
    let (me, body) = get_from("127.0.0.2", haproxy.addr, "/headers").await;
    assert!(
        body.lines().any(|l| l == "x-forwarded-for: 127.0.0.2"),
        "the backend sees the client HAProxy saw, not HAProxy: {body}"
    );
    let client = me.to_string();
    let lines = sinew
        .wait_for(1, |l| {
            l["target"] == "sinew::access" && l["client"] == client.as_str()
        })
        .await;
    let line = &lines[0];
    assert_eq!(line["path"], "/headers", "{line}");
}

/// An in-process sinew with an admin listener and one `accept_proxy` TCP service; returns the
/// service's and the admin's addresses.
async fn accepting(
    header_read: &str,
) -> (
    sinew::agent::Agent,
    SocketAddr,
    SocketAddr,
    support::EchoBackend,
) {
    let backend = support::EchoBackend::start("b1").await;
    let (port, admin) = (free_port(), free_port());
    let agent = support::agent(&format!(
        "admin: {{ listen: 127.0.0.1:{admin} }}\nservices:\n  pp:\n    listen: 127.0.0.1:{port}\n    accept_proxy: true\n    timeouts: {{ header_read: {header_read} }}\n    backends: [{}]\n",
        backend.hostport()
    ))
    .await;
    (agent, addr(port), addr(admin), backend)
}

/// The `sinew_proxy_protocol_errors_total` count of service `pp` for `cause`.
async fn errors(admin: SocketAddr, cause: &str) -> f64 {
    let (_, body) = support::http_get(admin, "/metrics").await;
    support::metric(
        &body,
        &format!("sinew_proxy_protocol_errors_total{{cause=\"{cause}\",service=\"pp\"}}"),
    )
    .unwrap_or(0.0)
}

/// Reads until the end of the stream (or 5 s); what came.
async fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    buf
}

#[tokio::test]
async fn a_v1_header_is_read_and_a_malformed_one_closes_the_connection_and_is_counted() {
    let (_agent, service, admin, backend) = accepting("5s").await;
    // A good v1 header, then the client's own bytes: the backend greets and echoes them.
    let mut s = TcpStream::connect(service).await.expect("connect");
    s.write_all(b"PROXY TCP4 192.0.2.7 127.0.0.1 4000 80\r\nhello\n")
        .await
        .expect("send");
    s.shutdown().await.expect("shutdown");
    assert_eq!(read_all(&mut s).await, b"b1\nhello\n");

    let before = backend.accepted();
    for (bad, cause) in [
        (&b"GET / HTTP/1.1\r\n\r\n"[..], "missing"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 80\r\n", "malformed"),
    ] {
        let mut s = TcpStream::connect(service).await.expect("connect");
        s.write_all(bad).await.expect("send");
        assert!(read_all(&mut s).await.is_empty(), "closed at once: {bad:?}");
        assert_eq!(errors(admin, cause).await, 1.0, "{cause}");
    }
    assert_eq!(
        backend.accepted(),
        before,
        "no backend connection for a bad header"
    );
}

#[tokio::test]
async fn a_silent_client_is_closed_after_the_header_timeout() {
    let (_agent, service, admin, backend) = accepting("300ms").await;
    let mut s = TcpStream::connect(service).await.expect("connect");
    let started = std::time::Instant::now();
    assert!(read_all(&mut s).await.is_empty());
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(4),
        "closed by the timeout, not the test's: {waited:?}"
    );
    assert_eq!(errors(admin, "timeout").await, 1.0);
    assert_eq!(backend.accepted(), 0);
}

#[tokio::test]
async fn health_checks_of_a_send_proxy_service_start_with_a_local_header() {
    use tokio::net::TcpListener;
    for (version, want) in [
        ("v1", b"PROXY UNKNOWN\r\n".to_vec()),
        ("v2", b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00".to_vec()),
    ] {
        let backend = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = free_port();
        let _agent = support::agent(&format!(
            "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  hc:\n    listen: 127.0.0.1:{port}\n    send_proxy: {version}\n    backends: [{}]\n    health_check: {{ type: tcp, interval: 100ms }}\n",
            backend.local_addr().expect("addr")
        ))
        .await;
        let (mut check, _) = tokio::time::timeout(Duration::from_secs(5), backend.accept())
            .await
            .expect("a check connects")
            .expect("accept");
        assert_eq!(read_all(&mut check).await, want, "{version}");
    }
}

#[tokio::test]
async fn a_znode_asking_for_send_proxy_v2_gets_the_header() {
    use support::zk::{put, ZooKeeper};
    const PATH: &str = "/nerve/services/pp/services";
    let zk = ZooKeeper::start().await;
    let nginx = Nginx::start().await;
    let client = zk.client().await;
    let znode = format!(
        r#"{{"host":"127.0.0.1","port":{},"name":"i-nginx","haproxy_server_options":"send-proxy-v2 check"}}"#,
        nginx.addr.port()
    );
    put(&client, &format!("{PATH}/i-nginx"), znode.as_bytes()).await;
    let port = free_port();
    let agent = support::agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  pp:\n    listen: 127.0.0.1:{port}\n    mode: http\n    discovery:\n      zookeeper: {{ hosts: [{}], path: {PATH} }}\n",
        zk.address()
    ))
    .await;
    let routed = || {
        agent
            .balancer("pp")
            .map_or(0, |b| b.current().entries().len())
    };
    assert!(
        support::eventually(Duration::from_secs(5), || routed() == 1).await,
        "the znode's backend is routed"
    );
    let (me, body) = get_from("127.0.0.4", addr(port), "/").await;
    assert_eq!(
        body,
        me.to_string(),
        "nginx read the v2 header the znode asked for"
    );
}
