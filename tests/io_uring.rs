//! TCP mode on the io_uring engine (`tcp_fastpath: io_uring`): the fast paths' shared checks
//! (`support::fastpath`: echo, half-close, a 1 MB transfer both ways, idle timeout, byte metrics,
//! connection counts, drain and the shutdown cut, reload keeping open connections, a PROXY header
//! first, a client reset, the config refusals), then the engine's own: many connections at once, slow
//! readers that must not starve the shared buffer ring, the connection log's byte counts, and a
//! Unix-socket backend; and an HTTP service's sockets on the ring (`threads: 1`), both sides. Where the kernel refuses io_uring (the service's `sinew_tcp_fastpath` gauge
//! says `copy`) each test says so and passes.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use sinew::agent::Agent;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::fastpath::{
    self, backend_bytes, fast_agent, metrics_when_idle, send_half_close_read, yaml,
};
use support::http::{keep_alive, HttpBackend};
use support::logged::Logged;
use support::process::{free_port, wait_listening};
use support::unix::{socket_dir, UnixEcho};
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// The path under test.
const PATH: &str = "io_uring";

#[tokio::test]
async fn a_megabyte_each_way_arrives_whole_with_half_close_and_counted() {
    fastpath::megabyte_each_way(PATH).await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_idle_timeout_not_before() {
    fastpath::idle_timeout(PATH).await;
}

#[tokio::test]
async fn reload_keeps_open_connections_and_shutdown_cuts_them_after_the_grace() {
    fastpath::reload_then_shutdown_cut(PATH).await;
}

#[test]
fn io_uring_is_refused_with_tls_and_taken_for_http() {
    fastpath::refused_for_http_and_tls(PATH);
}

#[tokio::test]
async fn a_handover_drains_an_open_connection_until_it_closes() {
    fastpath::handover_drains(PATH).await;
}

#[tokio::test]
async fn a_proxy_header_goes_first_then_the_ring_carries_the_stream() {
    fastpath::proxy_header_first(PATH).await;
}

#[tokio::test]
async fn a_client_that_resets_while_the_backend_still_sends_ends_its_connection_at_once() {
    fastpath::client_reset_ends_at_once(PATH).await;
}

/// Clients at once on the many-connections test.
const CLIENTS: usize = 64;
/// Request/response round trips per client.
const ROUNDS: usize = 20;

// On a runtime of several threads, as `threads: 2` runs sinew: the engine is a thread of its own (the
// other tests here run on one thread, whose engine is a task of that thread).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_clients_at_once_get_their_exact_bytes_back_and_are_counted() {
    let backend = EchoBackend::start("a").await;
    let Some(agent) = fast_agent(PATH, &yaml(PATH, &backend.hostport(), "30s")).await else {
        return;
    };
    let addr = agent.service_addr("db").unwrap();
    let mut clients = JoinSet::new();
    for client in 0..CLIENTS {
        clients.spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            assert_eq!(read_line(&mut s).await.unwrap(), "a");
            let mut sent = 0u64;
            for round in 0..ROUNDS {
                // Each message is its client's and round's own, of a length of its own.
                let pad = "x".repeat((client * ROUNDS + round) % 97);
                let line = format!("client {client} round {round} {pad}");
                s.write_all(format!("{line}\n").as_bytes()).await.unwrap();
                assert_eq!(read_line(&mut s).await.unwrap(), line);
                sent += line.len() as u64 + 1;
            }
            s.shutdown().await.unwrap();
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).await.unwrap();
            assert!(
                rest.is_empty(),
                "client {client}: {rest:?} after the last answer"
            );
            sent
        });
    }
    let total: u64 = tokio::time::timeout(Duration::from_secs(60), clients.join_all())
        .await
        .expect("every client done within 60 s")
        .into_iter()
        .sum();
    assert_eq!(backend.accepted(), CLIENTS);
    let body = metrics_when_idle(&agent, &backend.hostport()).await;
    let (sent, received) = backend_bytes(&body, &backend.hostport());
    assert_eq!(sent, Some(total as f64), "{body}");
    // The greeting ("a\n") came back on every connection too.
    assert_eq!(
        received,
        Some((total + 2 * CLIENTS as u64) as f64),
        "{body}"
    );
    assert_eq!(
        metric(&body, "sinew_service_connections_total{service=\"db\"}"),
        Some(CLIENTS as f64),
        "{body}"
    );
}

/// Slow readers on the slow-reader test.
const SLOW: usize = 4;
/// Bytes each slow reader asks for: together three times the engine's buffer ring (1024 buffers of
/// 16 KiB), so that queueing without bound would hold every buffer even after the sockets' own
/// buffers took their share.
const BIG: usize = 12 << 20;

/// A backend that answers a first line `big` with [`BIG`] bytes (byte `i` is `i % 251`) and its end
/// of stream, and echoes any other line and everything after it.
async fn big_or_echo_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut r = BufReader::new(r);
                let mut line = String::new();
                if r.read_line(&mut line).await.is_err() {
                    return;
                }
                if line == "big\n" {
                    let chunk: Vec<u8> = (0..251 * 256).map(|i| (i % 251) as u8).collect();
                    let mut left = BIG;
                    while left > 0 {
                        let n = left.min(chunk.len());
                        if w.write_all(&chunk[..n]).await.is_err() {
                            return;
                        }
                        left -= n;
                    }
                } else if w.write_all(line.as_bytes()).await.is_ok() {
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// Starts service `db` on io_uring in front of [`big_or_echo_backend`] (or `None` where the kernel
/// refuses io_uring), and opens `count` connections to it that each ask for [`BIG`] bytes and read
/// nothing; returns the agent, the service's address and the slow readers.
async fn slow_readers(count: usize) -> Option<(Agent, SocketAddr, Vec<TcpStream>)> {
    let backend = big_or_echo_backend().await;
    let agent = fast_agent(PATH, &yaml(PATH, &backend.to_string(), "30s")).await?;
    let addr = agent.service_addr("db").unwrap();
    let mut slow = Vec::new();
    for _ in 0..count {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"big\n").await.unwrap();
        slow.push(s);
    }
    Some((agent, addr, slow))
}

/// Makes 20 round trips 100 ms apart on a new connection to `addr`, each answered within 5 s.
async fn round_trips(addr: SocketAddr) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    for round in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let line = format!("ping {round}");
        s.write_all(format!("{line}\n").as_bytes()).await.unwrap();
        let got = read_line(&mut s).await;
        assert_eq!(
            got.as_deref(),
            Ok(line.as_str()),
            "round {round}: stalled behind the slow readers"
        );
    }
}

#[tokio::test]
async fn slow_readers_do_not_stall_another_connection_of_the_service() {
    let Some((_agent, addr, slow)) = slow_readers(SLOW).await else {
        return;
    };
    // The slow readers read nothing for 2 s, while another connection makes its round trips.
    round_trips(addr).await;
    // Then each slow reader gets its answer whole.
    for (n, mut s) in slow.into_iter().enumerate() {
        let mut got = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let read = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("slow reader {n} stalled after {got} bytes"))
                .unwrap();
            if read == 0 {
                break;
            }
            for (i, b) in buf[..read].iter().enumerate() {
                assert_eq!(
                    *b,
                    ((got + i) % 251) as u8,
                    "slow reader {n}, byte {}",
                    got + i
                );
            }
            got += read;
        }
        assert_eq!(got, BIG, "slow reader {n}");
    }
}

/// Slow readers on the many-slow-readers test: more than a 1024-buffer ring allows at two each.
const MANY_SLOW: usize = 600;

// Each direction whose reader stalls holds two buffers; past 512 of them the shared ring is dry, and
// the receives that find it so take buffers of their own instead of waiting for a slow reader (an
// engine without that fallback stalls here: 400 slow readers pass, 520 and 600 stall the round trips).
// Needs about 4 descriptors per slow reader.
#[tokio::test]
async fn hundreds_of_slow_readers_do_not_stall_another_connection_of_the_service() {
    let Some((agent, addr, slow)) = slow_readers(MANY_SLOW).await else {
        return;
    };
    // Time for every slow reader's socket buffers, then its two ring buffers, to fill.
    tokio::time::sleep(Duration::from_secs(2)).await;
    round_trips(addr).await;
    let body = http_get(agent.admin_addr(), "/metrics").await.1;
    // Tests running beside this one have engines of their own, counted in the same gauge.
    let buffers = metric(&body, "sinew_uring_buffers").unwrap_or(0.0);
    assert!(buffers >= 512.0, "the ring grew to its size: {buffers}");
    let own = metric(&body, "sinew_uring_own_buffers_total").unwrap_or(0.0);
    assert!(
        own > 0.0,
        "receives past the ring's size are counted: {own}"
    );
    drop(slow);
}

/// Sends `BYTES` on a new connection to `addr` (the first ones before the greeting can arrive), half
/// closes, and reads the greeting and the echo to the end; returns the client's address.
async fn exchange(addr: SocketAddr) -> String {
    const BYTES: usize = 100_000;
    let data: Vec<u8> = (0..BYTES).map(|i| (i % 253) as u8).collect();
    let s = TcpStream::connect(addr).await.unwrap();
    let client = s.local_addr().unwrap().to_string();
    let got = send_half_close_read(s, &data, Duration::from_secs(10), "the echo").await;
    assert_eq!(got.len(), 2 + BYTES);
    assert_eq!(&got[2..], &data[..]);
    client
}

#[tokio::test]
async fn the_connection_log_counts_the_same_bytes_as_on_the_copy_loop() {
    let backend = EchoBackend::start("a").await;
    let (admin, copy, ring) = (free_port(), free_port(), free_port());
    let config = format!(
        "admin: {{ listen: 127.0.0.1:{admin} }}\nservices:\n  copy:\n    listen: 127.0.0.1:{copy}\n    backends: [{b}]\n    connection_log: true\n  db:\n    listen: 127.0.0.1:{ring}\n    tcp_fastpath: io_uring\n    backends: [{b}]\n    connection_log: true\n",
        b = backend.hostport()
    );
    let sinew = Logged::start("uring-connection-log", &config, "info");
    let at = |p: u16| -> SocketAddr { ([127, 0, 0, 1], p).into() };
    for port in [admin, copy, ring] {
        wait_listening(at(port)).await;
    }
    let body = http_get(at(admin), "/metrics").await.1;
    if metric(
        &body,
        "sinew_tcp_fastpath{path=\"io_uring\",service=\"db\"}",
    ) != Some(1.0)
    {
        assert_eq!(
            metric(&body, "sinew_tcp_fastpath{path=\"copy\",service=\"db\"}"),
            Some(1.0),
            "{body}"
        );
        eprintln!("SKIPPED: the kernel refused io_uring; db runs the copy loop");
        return;
    }
    let clients = [exchange(at(copy)).await, exchange(at(ring)).await];
    let lines = sinew
        .wait_for(2, |l| {
            l["target"] == "sinew::connection" && clients.iter().any(|c| l["client"] == *c)
        })
        .await;
    let line = |client: &str| {
        lines
            .iter()
            .find(|l| l["client"] == client)
            .unwrap_or_else(|| panic!("no line for {client}: {lines:#?}"))
    };
    let (on_copy, on_ring) = (line(&clients[0]), line(&clients[1]));
    assert_eq!(on_copy["service"], "copy");
    assert_eq!(on_ring["service"], "db");
    for key in ["bytes_in", "bytes_out", "termination", "upstream"] {
        assert_eq!(
            on_ring[key], on_copy[key],
            "{key}: {on_ring} against {on_copy}"
        );
    }
    assert_eq!(on_ring["bytes_in"], 100_000);
    assert_eq!(on_ring["bytes_out"], 100_002);
    assert_eq!(on_ring["termination"], "done");
}

/// How often the engine's thread (`sinew-uring`) has slept and woken: it sleeps in the ring's wait
/// between completions, so bytes it moves raise the count, and a connection on the copy loop does not.
fn engine_wakeups() -> u64 {
    let tasks = std::fs::read_dir("/proc/self/task").expect("/proc/self/task");
    let engine = tasks
        .filter_map(Result::ok)
        .find(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "sinew-uring")
        })
        .expect("the sinew-uring thread runs");
    let status = std::fs::read_to_string(engine.path().join("status")).expect("its status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("voluntary_ctxt_switches")
}

// On a runtime of several threads, so the engine is the `sinew-uring` thread whose wake-ups show it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_socket_backend_is_carried_by_the_ring() {
    let dir = socket_dir("uring");
    let sock = dir.join("echo.sock");
    let _backend = UnixEcho::start(&sock, "u");
    let key = format!("unix:{}", sock.display());
    let config = yaml(PATH, &format!("\"{key}\""), "10s");
    let Some(agent) = fast_agent(PATH, &config).await else {
        return;
    };
    let addr = agent.service_addr("db").unwrap();
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7) as u8).collect();
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(read_line(&mut s).await.unwrap(), "u");
    let wakeups = engine_wakeups();
    // A half-close reaches the Unix backend, whose end of stream comes back.
    let got = send_half_close_read(s, &data, Duration::from_secs(20), "the echo").await;
    assert_eq!(got.len(), data.len());
    assert_eq!(fastpath::checksum(&got), fastpath::checksum(&data));
    assert!(
        engine_wakeups() > wakeups,
        "the engine's thread moved the bytes"
    );
    let body = metrics_when_idle(&agent, &key).await;
    let (sent, received) = backend_bytes(&body, &key);
    assert_eq!(sent, Some(data.len() as f64), "{body}");
    assert_eq!(received, Some(data.len() as f64 + 2.0), "{body}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Held by each test of an HTTP service on the ring, so `sinew_uring_sockets` (summed over every
/// thread's engine) counts one test's sockets.
static HTTP_ON_THE_RING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The engines' `sinew_uring_sockets` as `agent` reports it.
async fn sockets_on_the_ring(agent: &Agent) -> Option<f64> {
    metric(
        &http_get(agent.admin_addr(), "/metrics").await.1,
        "sinew_uring_sockets",
    )
}

/// An agent with the HTTP service `web` on `backends` whose sockets ride the ring, then `extra`, or
/// `None` (said) where the kernel refuses io_uring.
async fn http_on_the_ring(backends: &[String], extra: &str) -> Option<Agent> {
    let yaml =
        support::http::web_service(backends, &format!("    tcp_fastpath: io_uring\n{extra}"));
    let agent = agent(&yaml).await;
    let body = http_get(agent.admin_addr(), "/metrics").await.1;
    if metric(
        &body,
        "sinew_tcp_fastpath{path=\"io_uring\",service=\"web\"}",
    ) == Some(1.0)
    {
        return Some(agent);
    }
    eprintln!("SKIPPED: the kernel refused io_uring; web runs on tokio's sockets");
    None
}

/// Sends `method path` with `body` on `client`; returns the status and the whole body.
async fn send(
    client: &mut SendRequest<Full<Bytes>>,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "web")
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let exchange = async {
        let resp = client.send_request(req).await.expect("response");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, body.to_vec())
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("answered in time")
}

// With `threads: 1` (a one-thread runtime, as here) an io_uring HTTP service's client and backend
// sockets are on the runtime's engine.
#[tokio::test]
async fn http_keep_alive_requests_and_bodies_ride_the_ring_on_both_sides() {
    let _alone = HTTP_ON_THE_RING.lock().await;
    let a = HttpBackend::start("a").await;
    let Some(agent) = http_on_the_ring(&[a.hostport()], "").await else {
        return;
    };
    let web = agent.service_addr("web").expect("web");
    let mut client = keep_alive(web).await;
    for _ in 0..50 {
        assert_eq!(
            send(&mut client, "GET", "/", Vec::new()).await,
            (200, b"a".to_vec())
        );
    }
    assert_eq!(
        sockets_on_the_ring(&agent).await,
        Some(2.0),
        "the client's socket and the pooled backend socket are on the engine"
    );
    // Bodies on sinew's own path (in memory) and, past 64 KiB, streamed through hyper's client.
    for len in [10_000u32, 3_000_000] {
        let body: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        let (status, echoed) = send(&mut client, "POST", "/echo", body.clone()).await;
        assert_eq!(status, 200);
        assert!(
            echoed == body,
            "a {len}-byte body comes back whole and in order"
        );
    }
    assert_eq!(a.requests(), 52);
}

/// A backend that answers one request per connection, keep-alive as far as its head says, then
/// closes the connection; counts the connections it accepted.
async fn answers_once_then_closes() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn a_pooled_backend_connection_the_backend_closed_is_seen_closed_and_replaced() {
    let _alone = HTTP_ON_THE_RING.lock().await;
    let (backend, accepted) = answers_once_then_closes().await;
    let Some(agent) = http_on_the_ring(&[backend.to_string()], "").await else {
        return;
    };
    let web = agent.service_addr("web").expect("web");
    let mut client = keep_alive(web).await;
    for round in 1..=3 {
        assert_eq!(
            send(&mut client, "POST", "/", b"not idempotent".to_vec()).await,
            (200, b"ok".to_vec()),
            "round {round}"
        );
        // The backend's close reaches the pooled socket's receive before the next request.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        accepted.load(Ordering::Relaxed),
        3,
        "one connection per request"
    );
}

#[tokio::test]
async fn an_accept_proxy_http_client_goes_onto_the_ring_after_its_header() {
    let _alone = HTTP_ON_THE_RING.lock().await;
    let a = HttpBackend::start("a").await;
    let Some(agent) = http_on_the_ring(&[a.hostport()], "    accept_proxy: true\n").await else {
        return;
    };
    let web = agent.service_addr("web").expect("web");
    let mut s = TcpStream::connect(web).await.expect("connect");
    s.write_all(b"PROXY TCP4 192.0.2.1 192.0.2.2 5555 80\r\nGET / HTTP/1.1\r\nHost: web\r\n\r\n")
        .await
        .expect("send");
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.ends_with(b"\r\n\r\na") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(
            n > 0,
            "answered before the end: {}",
            String::from_utf8_lossy(&head)
        );
        head.extend_from_slice(&buf[..n]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    assert_eq!(
        sockets_on_the_ring(&agent).await,
        Some(2.0),
        "the client's socket and the pooled backend socket are on the engine"
    );
}

/// Connects `count` clients to `addr` without yielding, so every one waits in the listener's backlog
/// when the service's accept loop next runs; returns them as tokio streams.
fn queued_clients(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    (0..count)
        .map(|_| {
            let s = std::net::TcpStream::connect(addr).expect("connect");
            s.set_nonblocking(true).expect("non-blocking");
            TcpStream::from_std(s).expect("into tokio")
        })
        .collect()
}

/// Sends one `Connection: close` request on `s`; the whole answer, or what came before it ended
/// (nothing for a connection closed at once).
async fn ask_once(mut s: TcpStream) -> Vec<u8> {
    let _ = s
        .write_all(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let read = s.read_to_end(&mut answer);
    let _ = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("answered or closed in time");
    answer
}

// After each accept the listener takes the rest of its backlog without tokio's reactor, straight onto
// the ring: those connections are served, counted and held to the client limit like any other.
#[tokio::test]
async fn a_backlog_of_http_clients_goes_onto_the_ring_within_the_client_limit() {
    let _alone = HTTP_ON_THE_RING.lock().await;
    let a = HttpBackend::start("a").await;
    let Some(agent) = http_on_the_ring(&[a.hostport()], "    max_client_connections: 30\n").await
    else {
        return;
    };
    let web = agent.service_addr("web").expect("web");
    let metrics = || async { http_get(agent.admin_addr(), "/metrics").await.1 };
    let count = |body: &str, name: &str| metric(body, &format!("{name}{{service=\"web\"}}"));
    let before = metrics().await;
    let (accepted, rejected) = (
        count(&before, "sinew_service_connections_total").unwrap_or(0.0),
        count(&before, "sinew_service_rejected_connections_total").unwrap_or(0.0),
    );
    let clients = queued_clients(web, 40);
    let answers: Vec<Vec<u8>> = {
        let mut asked = JoinSet::new();
        for s in clients {
            asked.spawn(ask_once(s));
        }
        asked.join_all().await
    };
    let served = answers
        .iter()
        .filter(|a| a.starts_with(b"HTTP/1.1 200") && a.ends_with(b"\r\n\r\na"))
        .count();
    let closed = answers.iter().filter(|a| a.is_empty()).count();
    assert_eq!(
        (served, closed),
        (30, 10),
        "the first 30 are served, the rest closed at once"
    );
    assert_eq!(a.requests(), 30);
    let after = metrics().await;
    assert_eq!(
        count(&after, "sinew_service_connections_total"),
        Some(accepted + 30.0),
        "{after}"
    );
    assert_eq!(
        count(&after, "sinew_service_rejected_connections_total"),
        Some(rejected + 10.0),
        "{after}"
    );
}
