//! Shared helpers for integration tests: loopback backends, an in-process agent, a raw HTTP GET.
#![allow(dead_code)] // each test binary uses a different subset

pub mod chromium;
pub mod dns;
pub mod fastpath;
pub mod http;
pub mod load;
pub mod logged;
pub mod netns;
pub mod process;
pub mod proxy_peers;
pub mod pyhttp;
pub mod rabbitmq;
pub mod register;
pub mod relay;
pub mod tls;
pub mod unix;
pub mod zk;

use sinew::agent::Agent;
use sinew::config::{Config, Format};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Greets a connection with `greeting`, echoes what it sends until its end, then shuts the writing side
/// down: the connection handler of the echo backends, on TCP and on Unix sockets.
pub async fn greet_then_echo<S>(mut s: S, greeting: String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if s.write_all(greeting.as_bytes()).await.is_err() {
        return;
    }
    let (mut r, mut w) = tokio::io::split(s);
    let _ = tokio::io::copy(&mut r, &mut w).await;
    let _ = w.shutdown().await;
}

/// A TCP backend on loopback that greets each connection with `<name>\n` and then echoes until EOF.
pub struct EchoBackend {
    /// Its address.
    pub addr: SocketAddr,
    /// Its name, sent as the first line.
    pub name: String,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl EchoBackend {
    /// Starts a backend on an ephemeral loopback port.
    pub async fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        Self::serve(listener, name)
    }

    /// Starts a backend on a given address (e.g. to bring a stopped one back).
    pub async fn start_on(addr: SocketAddr, name: &str) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind backend");
        Self::serve(listener, name)
    }

    fn serve(listener: TcpListener, name: &str) -> Self {
        let addr = listener.local_addr().expect("local addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let greeting = format!("{name}\n");
        let count = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    continue;
                };
                count.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(greet_then_echo(s, greeting.clone()));
            }
        });
        Self {
            addr,
            name: name.to_string(),
            accepted,
            task,
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// `host:port` for configs.
    pub fn hostport(&self) -> String {
        self.addr.to_string()
    }

    /// Stops accepting (open connections keep running).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A loopback address that nothing listens on: its port stays bound, without listening and without
/// `SO_REUSEADDR`, until the test process ends, so connections to it are refused and no other socket
/// of the process (a backend, a ZooKeeper, a listener of a test running beside) can take the port.
pub async fn dead_addr() -> SocketAddr {
    use rustix::net::{bind, getsockname, socket, AddressFamily, SocketType};
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).expect("socket");
    bind(&fd, &SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
    let addr = getsockname(&fd)
        .ok()
        .and_then(|a| SocketAddr::try_from(a).ok())
        .expect("bound address");
    // Held until the process ends.
    std::mem::forget(fd);
    addr
}

/// Parses a YAML config and starts an agent with it.
pub async fn agent(yaml: &str) -> Agent {
    let config = Config::parse(yaml, Format::Yaml, Path::new("test.yaml")).expect("valid config");
    Agent::start(config).await.expect("agent starts")
}

/// Connects to `addr` and returns the greeting line (the backend's name), or an error string.
pub async fn greet(addr: SocketAddr) -> Result<String, String> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timeout".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    read_line(&mut s).await
}

/// Reads one `\n`-terminated line (without the newline).
pub async fn read_line(s: &mut TcpStream) -> Result<String, String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte))
            .await
            .map_err(|_| "read timeout".to_string())?
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!("eof after {:?}", String::from_utf8_lossy(&line)));
        }
        if byte[0] == b'\n' {
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
        line.push(byte[0]);
    }
}

/// A minimal HTTP/1.1 GET; returns (status, body), a chunked body decoded.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let (status, head, body) = http_exchange(addr, &req).await;
    (status, decode_chunked_if_needed(&head, body))
}

/// Sends `request` (whole, asking for `Connection: close`) and reads the answer to its end within 5 s;
/// returns the status, the head and the body as sent.
pub async fn http_exchange(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("send");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("response in time")
        .expect("read response");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_string(), body.to_string())
}

fn decode_chunked_if_needed(raw: &str, body: String) -> String {
    if !raw
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body;
    }
    let mut out = String::new();
    let mut rest = body.as_str();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// Polls `check` every 20 ms until it holds or `limit` passes.
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

/// Reads one sample of a metric (exact label set, as rendered) from a `/metrics` body.
pub fn metric(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Asserts `promtool check metrics` accepts `body` (a `/metrics` answer).
pub fn promtool_check_metrics(body: &str) {
    use std::process::{Command, Stdio};
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (Debian package `prometheus`; bash .ci/run installs it)");
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), body.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
