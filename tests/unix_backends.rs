//! Unix-socket backends (`unix:/path`, `unix:@name`): reached in TCP and HTTP mode beside TCP
//! backends, half-close passed on, a missing socket counted as a connect failure and failing its
//! health check, added and removed by a backends file, and drained through the admin API by path.

mod support;

use sinew::agent::Agent;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::process::BIN;
use support::unix::{socket_dir, UnixEcho};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Python's `http.server` on a Unix socket (through `socketserver.UnixStreamServer`), HTTP/1.1 with
/// keep-alive: `GET /name` answers `name`, `GET /health` answers `ok`.
struct PyUnixHttp {
    child: Child,
}

const PY_SERVER: &str = r#"
import http.server, os, socketserver, sys
path, name = sys.argv[1], sys.argv[2].encode()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def address_string(self): return "unix"
    def log_message(self, *a): pass
    def do_GET(self):
        body = name if self.path == "/name" else b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
class S(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
S(path, H).serve_forever()
"#;

impl PyUnixHttp {
    async fn start(path: &Path, name: &str) -> Self {
        let child = Command::new("python3")
            .args(["-c", PY_SERVER])
            .arg(path)
            .arg(name)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python3");
        let server = Self { child };
        assert!(
            eventually(Duration::from_secs(10), || path.exists()).await,
            "python3 did not bind {}",
            path.display()
        );
        server
    }
}

impl Drop for PyUnixHttp {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// The value of `metric`'s series for `backend` (any other labels) in a `/metrics` body.
fn series(body: &str, metric: &str, backend: &str) -> Option<f64> {
    let label = format!("backend=\"{backend}\"");
    body.lines()
        .find(|l| l.starts_with(&format!("{metric}{{")) && l.contains(&label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The first service's first backend in `/api/services`, once `done` holds of it (at most 5 s).
async fn first_backend_check(
    admin: SocketAddr,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut backend = serde_json::Value::Null;
    for _ in 0..50 {
        let doc = http_get(admin, "/api/services").await.1;
        let json: serde_json::Value = serde_json::from_str(&doc).expect("json");
        backend = json["services"][0]["backends"][0].clone();
        if done(&backend) {
            return backend;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the check never got there: {backend}");
}

/// The greetings of `n` new connections through `addr`.
async fn greetings(addr: SocketAddr, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(greet(addr).await.expect("greeting"));
    }
    out
}

/// The keys of a service's current backends.
fn keys(agent: &Agent, service: &str) -> Vec<String> {
    let set = agent.balancer(service).expect("service").current();
    let mut keys: Vec<String> = set.entries().iter().map(|e| e.key.clone()).collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_mode_round_robins_between_a_unix_and_a_tcp_backend() {
    let dir = socket_dir("tcp");
    let sock = dir.join("app.sock");
    let _u = UnixEcho::start(&sock, "unix");
    let t = EchoBackend::start("tcp").await;
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    backends: [\"unix:{}\", {}]\n",
        sock.display(),
        t.hostport()
    ))
    .await;
    let web = agent.service_addr("web").expect("web");
    let seen = greetings(web, 6).await;
    assert_eq!(seen.iter().filter(|g| *g == "unix").count(), 3, "{seen:?}");
    assert_eq!(seen.iter().filter(|g| *g == "tcp").count(), 3, "{seen:?}");
    let metrics = http_get(agent.admin_addr(), "/metrics").await.1;
    let key = format!("unix:{}", sock.display());
    assert_eq!(
        series(&metrics, "sinew_backend_connections_total", &key),
        Some(3.0),
        "the backend label is the socket's unix:PATH"
    );
    agent.shutdown(Duration::from_secs(1)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_close_reaches_a_unix_backend_and_its_answer_comes_back() {
    let dir = socket_dir("half");
    let sock = dir.join("app.sock");
    let _u = UnixEcho::start(&sock, "unix");
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    backends: [\"unix:{}\"]\n",
        sock.display()
    ))
    .await;
    let mut s = TcpStream::connect(agent.service_addr("web").expect("web"))
        .await
        .expect("connect");
    assert_eq!(read_line(&mut s).await.expect("greeting"), "unix");
    s.write_all(b"written before the half-close")
        .await
        .expect("write");
    s.shutdown().await.expect("half-close");
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("the backend's EOF comes back")
        .expect("read");
    assert_eq!(rest, b"written before the half-close");
    agent.shutdown(Duration::from_secs(1)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abstract_socket_backend_is_reached_by_its_name() {
    let name = format!("sinew-test-{}", std::process::id());
    let _u = UnixEcho::start(Path::new(&format!("\0{name}")), "abstract");
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    backends: [\"unix:@{name}\"]\n"
    ))
    .await;
    let web = agent.service_addr("web").expect("web");
    assert_eq!(greet(web).await.as_deref(), Ok("abstract"));
    assert_eq!(keys(&agent, "web"), [format!("unix:@{name}")]);
    agent.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_mode_reaches_python_on_a_unix_socket_with_keep_alive_and_health_checks() {
    let dir = socket_dir("http");
    let sock = dir.join("py.sock");
    let _py = PyUnixHttp::start(&sock, "py").await;
    let key = format!("unix:{}", sock.display());
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    mode: http\n    backends: [\"{key}\"]\n    health_check: {{ type: http, path: /health, interval: 100ms, rise: 1, fall: 1 }}\n",
    ))
    .await;
    let web = agent.service_addr("web").expect("web");
    for _ in 0..5 {
        assert_eq!(http_get(web, "/name").await, (200, "py".to_string()));
    }
    let admin = agent.admin_addr();
    let check = first_backend_check(admin, |b| b["last_check"]["passed"] == true).await;
    assert_eq!(check["last_check"]["detail"], "HTTP 200", "{check}");
    let metrics = http_get(admin, "/metrics").await.1;
    assert_eq!(
        series(
            &metrics,
            "sinew_backend_http_connections_opened_total",
            &key
        ),
        Some(1.0),
        "five requests over one pooled connection"
    );
    agent.shutdown(Duration::from_secs(1)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_socket_is_a_connect_failure_and_fails_its_health_check() {
    let dir = socket_dir("missing");
    let sock = dir.join("gone.sock");
    let key = format!("unix:{}", sock.display());
    let t = EchoBackend::start("tcp").await;
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    backends: [\"{key}\", {}]\n    retries: {{ attempts: 1 }}\n",
        t.hostport()
    ))
    .await;
    let web = agent.service_addr("web").expect("web");
    let seen = greetings(web, 4).await;
    assert!(seen.iter().all(|g| g == "tcp"), "{seen:?}");
    let metrics = http_get(agent.admin_addr(), "/metrics").await.1;
    let failures = series(&metrics, "sinew_backend_connect_failures_total", &key);
    assert!(failures.is_some_and(|n| n >= 1.0), "{failures:?}");
    let cause = metrics
        .lines()
        .find(|l| {
            l.starts_with("sinew_backend_errors_total{")
                && l.contains(&format!("backend=\"{key}\""))
                && l.contains("cause=\"connect_failure\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert!(cause.is_some_and(|n| n >= 1.0), "{cause:?}");
    agent.shutdown(Duration::from_secs(1)).await;

    // With a health check, the missing socket is marked down, the check naming the path.
    let agent = support::agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    backends: [\"{key}\"]\n    health_check: {{ type: tcp, interval: 100ms, rise: 1, fall: 1 }}\n",
    ))
    .await;
    let backend = first_backend_check(agent.admin_addr(), |b| b["state"] == "down").await;
    assert_eq!(backend["address"], key.as_str(), "{backend}");
    let detail = backend["last_check"]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("gone.sock") && detail.contains("No such file"),
        "{detail}"
    );
    agent.shutdown(Duration::from_secs(1)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backends_file_adds_and_removes_a_socket_backend() {
    let dir = socket_dir("file");
    let sock = dir.join("app.sock");
    let _u = UnixEcho::start(&sock, "unix");
    let t = EchoBackend::start("tcp").await;
    let key = format!("unix:{}", sock.display());
    let file = dir.join("backends.json");
    std::fs::write(&file, format!("[\"{}\"]", t.hostport())).expect("write");
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    discovery: {{ file: {} }}\n",
        file.display()
    ))
    .await;
    let web = agent.service_addr("web").expect("web");
    assert!(
        eventually(Duration::from_secs(5), || keys(&agent, "web")
            == [t.hostport()])
        .await
    );

    std::fs::write(
        &file,
        format!(
            "[\"{}\", {{\"host\": \"{key}\", \"weight\": 2}}]",
            t.hostport()
        ),
    )
    .expect("write");
    let mut both = vec![t.hostport(), key.clone()];
    both.sort();
    assert!(eventually(Duration::from_secs(5), || keys(&agent, "web") == both).await);
    let seen = greetings(web, 6).await;
    assert_eq!(seen.iter().filter(|g| *g == "unix").count(), 4, "{seen:?}");

    std::fs::write(&file, format!("[\"{key}\"]")).expect("write");
    assert!(
        eventually(Duration::from_secs(5), || keys(&agent, "web")
            == [key.clone()])
        .await
    );
    assert!(greetings(web, 3).await.iter().all(|g| g == "unix"));
    agent.shutdown(Duration::from_secs(1)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_backend_is_drained_through_the_admin_api_and_the_cli_by_its_path() {
    let dir = socket_dir("drain");
    let sock = dir.join("app.sock");
    let _u = UnixEcho::start(&sock, "unix");
    let t = EchoBackend::start("tcp").await;
    let key = format!("unix:{}", sock.display());
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    backends: [\"{key}\", {}]\n",
        t.hostport()
    ))
    .await;
    let (web, admin) = (agent.service_addr("web").expect("web"), agent.admin_addr());

    // In the URL path the socket's slashes are percent-encoded.
    let encoded = key.replace('/', "%2F");
    let req = format!(
        "POST /api/services/web/backends/{encoded}/drain HTTP/1.1\r\nHost: {admin}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let (status, _, body) = http_exchange(admin, &req).await;
    assert_eq!(status, 200, "{body}");
    assert!(greetings(web, 4).await.iter().all(|g| g == "tcp"));

    // `sinew backend` takes the address as written and encodes it.
    let cli = |verb: &'static str| {
        let mut cmd = Command::new(BIN);
        cmd.args(["backend", "--admin", &admin.to_string(), verb, "web", &key])
            .env_remove(sinew::control::TOKEN_ENV);
        tokio::task::spawn_blocking(move || cmd.output().expect("run sinew backend"))
    };
    let out = cli("enable").await.expect("cli");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = greetings(web, 4).await;
    assert_eq!(seen.iter().filter(|g| *g == "unix").count(), 2, "{seen:?}");
    let out = cli("drain").await.expect("cli");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("web {key}: drain")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(greetings(web, 4).await.iter().all(|g| g == "tcp"));
    agent.shutdown(Duration::from_secs(1)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_output_writes_and_the_state_file_restores_a_socket_backend() {
    let dir = socket_dir("state");
    let sock = dir.join("app.sock");
    let _u = UnixEcho::start(&sock, "unix");
    let key = format!("unix:{}", sock.display());
    let file = dir.join("backends.json");
    std::fs::write(&file, format!("[\"{key}\"]")).expect("write");
    let yaml = format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nstate_file: {{ path: {d}/state.json }}\nfile_output: {{ directory: {d}/out }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    discovery: {{ file: {f} }}\n",
        d = dir.display(),
        f = file.display()
    );
    let first = agent(&yaml).await;
    let written = || std::fs::read_to_string(dir.join("out/web.json")).unwrap_or_default();
    assert!(
        eventually(Duration::from_secs(5), || written().contains(&key)).await,
        "{}",
        written()
    );
    let state = || std::fs::read_to_string(dir.join("state.json")).unwrap_or_default();
    assert!(eventually(Duration::from_secs(5), || state().contains(&key)).await);
    first.shutdown(Duration::from_secs(1)).await;

    // Discovery has nothing yet at the second start: the state file's set routes.
    std::fs::remove_file(&file).expect("remove backends file");
    let second = agent(&yaml).await;
    assert_eq!(keys(&second, "web"), [key.as_str()]);
    let web = second.service_addr("web").expect("web");
    assert_eq!(greet(web).await.as_deref(), Ok("unix"));
    second.shutdown(Duration::from_secs(1)).await;
    let _ = std::fs::remove_dir_all(&dir);
}
