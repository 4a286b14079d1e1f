//! Binary upgrade through the real binary: a second `sinew run --takeover` takes the listening sockets
//! over from a running one under load, with no failed connection or request; the old process drains
//! and exits; a takeover from a dead path fails clearly; services the old process lacked bind normally;
//! registered znodes pass from the old process to the new one without a gap; SIGUSR2 starts the
//! successor itself and systemd's notify socket hears the new main PID; sockets passed by systemd socket
//! activation are served.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::http::HttpBackend;
use support::process::*;
use support::zk::ZooKeeper;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Starts `sinew run --config CONFIG [--takeover PATH]`, its log in a file for `log()`.
fn sinew(config: &Path, takeover: Option<&Path>, log: &Path) -> Proc {
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--config"]).arg(config);
    if let Some(path) = takeover {
        cmd.arg("--takeover").arg(path);
    }
    let file = std::fs::File::create(log).expect("log file");
    Proc(
        cmd.env("RUST_LOG", "info")
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn sinew"),
    )
}

fn log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits until `path`'s log contains `text`.
async fn wait_log(path: &Path, text: &str) {
    let found = eventually(Duration::from_secs(15), || log(path).contains(text)).await;
    assert!(found, "{text:?} never logged:\n{}", log(path));
}

/// Waits for the process to exit (up to `limit`) and returns its exit code.
async fn exit_code(proc: &mut Proc, limit: Duration) -> Option<i32> {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if let Some(status) = proc.0.try_wait().expect("try_wait") {
            return status.code();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Waits until the running sinew has created its upgrade socket (the last thing it does on start).
async fn wait_offering(path: &Path) {
    let found = eventually(Duration::from_secs(10), || path.exists()).await;
    assert!(found, "{} never created", path.display());
}

fn running(proc: &mut Proc) -> bool {
    proc.0.try_wait().expect("try_wait").is_none()
}

fn socket_path(name: &str) -> PathBuf {
    temp_file(name, "").with_extension("sock")
}

/// One TCP round trip through the echo service: greeting, then a line echoed back.
async fn tcp_once(addr: SocketAddr) -> Result<(), String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    read_line(&mut s).await?;
    s.write_all(b"ping\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    match read_line(&mut s).await?.as_str() {
        "ping" => Ok(()),
        other => Err(format!("echoed {other:?}")),
    }
}

/// One HTTP request on a new connection; Ok with the status.
async fn http_once(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .map_err(|_| "response timeout".to_string())?
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {text:?}"))
}

/// An HTTP/1.1 client on one keep-alive connection, as a connection pool uses it: it reconnects only
/// after a response that says `Connection: close`, and never retries.
struct KeepAlive {
    addr: SocketAddr,
    conn: Option<TcpStream>,
}

impl KeepAlive {
    fn new(addr: SocketAddr) -> Self {
        Self { addr, conn: None }
    }

    /// One GET; Ok with the status.
    async fn get(&mut self, path: &str) -> Result<u16, String> {
        let mut s = match self.conn.take() {
            Some(s) => s,
            None => TcpStream::connect(self.addr)
                .await
                .map_err(|e| format!("connect: {e}"))?,
        };
        let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte))
                .await
                .map_err(|_| "response timeout".to_string())?
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err(format!("closed after {:?}", String::from_utf8_lossy(&head)));
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| format!("no content-length in {head:?}"))?;
        let mut body = vec![0u8; length];
        s.read_exact(&mut body)
            .await
            .map_err(|e| format!("body: {e}"))?;
        if !head.contains("connection: close") {
            self.conn = Some(s);
        }
        head.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("no status in {head:?}"))
    }
}

/// A bounded client loop: new TCP and HTTP connections, one after another, until stopped (or its
/// count or time bound), counting successes and keeping the failures.
struct Load {
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Alternates new TCP and HTTP connections, beside one keep-alive HTTP client; TCP only without `http`.
    fn start(tcp: SocketAddr, http: Option<SocketAddr>) -> Self {
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks: Vec<_> = (0..2)
            .map(|worker| {
                let (ok, failures, stop) = (ok.clone(), failures.clone(), stop.clone());
                tokio::spawn(async move {
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                    for i in 0..20_000 {
                        if stop.load(Ordering::Relaxed) || tokio::time::Instant::now() > deadline {
                            break;
                        }
                        let result = match http.filter(|_| (i + worker) % 2 == 1) {
                            None => tcp_once(tcp).await.map_err(|e| format!("tcp: {e}")),
                            Some(http) => match http_once(http, "/").await {
                                Ok(200) => Ok(()),
                                Ok(code) => Err(format!("http: status {code}")),
                                Err(e) => Err(format!("http: {e}")),
                            },
                        };
                        match result {
                            Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                            Err(e) => {
                                failures.lock().unwrap().push(e);
                                0
                            }
                        };
                    }
                })
            })
            .collect();
        if let Some(http) = http {
            // A pooled keep-alive client: requests back to back on one connection.
            let (ok, failures, stop) = (ok.clone(), failures.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                let mut client = KeepAlive::new(http);
                for _ in 0..20_000 {
                    if stop.load(Ordering::Relaxed) || tokio::time::Instant::now() > deadline {
                        break;
                    }
                    match client.get("/").await {
                        Ok(200) => ok.fetch_add(1, Ordering::Relaxed),
                        Ok(code) => {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("keep-alive: status {code}"));
                            0
                        }
                        Err(e) => {
                            failures.lock().unwrap().push(format!("keep-alive: {e}"));
                            0
                        }
                    };
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }));
        }
        Self {
            ok,
            failures,
            stop,
            tasks,
        }
    }

    fn ok(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    /// Waits until `more` further successes were counted.
    async fn advance(&self, more: usize) {
        let target = self.ok() + more;
        let ok = Arc::clone(&self.ok);
        let reached = eventually(Duration::from_secs(20), || {
            ok.load(Ordering::Relaxed) >= target
        })
        .await;
        assert!(
            reached,
            "the load stalled at {} (failures: {:?})",
            self.ok(),
            self.failures.lock().unwrap()
        );
    }

    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("load task");
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

#[tokio::test]
async fn takeover_under_load_drops_no_connection_and_the_old_process_drains() {
    let echo = EchoBackend::start("echo").await;
    let web = HttpBackend::start("web").await;
    let (tcp_port, http_port, admin_port) = (free_port(), free_port(), free_port());
    let upgrade = socket_path("load");
    let config = temp_file(
        "load.yaml",
        &format!(
            "admin: {{ listen: 127.0.0.1:{admin_port}, upgrade_socket: {} }}\nshutdown_grace: 20s\nservices:\n  tcp:\n    listen: 127.0.0.1:{tcp_port}\n    backends: [{}]\n  web:\n    listen: 127.0.0.1:{http_port}\n    mode: http\n    backends: [{}]\n",
            upgrade.display(),
            echo.hostport(),
            web.hostport()
        ),
    );
    let (old_log, new_log) = (temp_file("old.log", ""), temp_file("new.log", ""));
    let mut old = sinew(&config, None, &old_log);
    let (tcp, http) = (addr(tcp_port), addr(http_port));
    for a in [tcp, http, addr(admin_port)] {
        wait_listening(a).await;
    }
    wait_offering(&upgrade).await;

    // Long-lived connections on the old process: TCP sessions and a slow HTTP request.
    let mut long = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(tcp).await.unwrap();
        assert_eq!(read_line(&mut s).await.unwrap(), "echo");
        s.write_all(b"before\n").await.unwrap();
        assert_eq!(read_line(&mut s).await.unwrap(), "before");
        long.push(s);
    }
    // One TCP session keeps transferring through the whole handover: a line echoed every 5 ms.
    let streaming_stop = Arc::new(AtomicBool::new(false));
    let streaming = {
        let stop = Arc::clone(&streaming_stop);
        let mut s = TcpStream::connect(tcp).await.unwrap();
        assert_eq!(read_line(&mut s).await.unwrap(), "echo");
        tokio::spawn(async move {
            let mut rounds = 0u32;
            while !stop.load(Ordering::Relaxed) && rounds < 10_000 {
                let line = format!("round {rounds}");
                s.write_all(
                    format!(
                        "{line}
"
                    )
                    .as_bytes(),
                )
                .await
                .map_err(|e| format!("write: {e}"))?;
                let echoed = read_line(&mut s).await?;
                if echoed != line {
                    return Err(format!("echoed {echoed:?} for {line:?}"));
                }
                rounds += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok::<u32, String>(rounds)
        })
    };
    let load = Load::start(tcp, Some(http));
    load.advance(50).await;
    let slow = tokio::spawn(async move { http_once(http, "/slow/2000").await });
    // An HTTP connection the old process accepted, whose request comes only after it stopped accepting,
    // and a keep-alive connection that is idle at the handover and sends its next request after it.
    let mut quiet = TcpStream::connect(http).await.unwrap();
    let mut pooled = KeepAlive::new(http);
    assert_eq!(pooled.get("/").await, Ok(200));
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut new = sinew(&config, Some(&upgrade), &new_log);
    wait_log(&old_log, "the new process serves").await;
    wait_log(&new_log, "listening socket taken over").await;
    quiet
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    quiet.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "a connection accepted before the handover gets its request answered: {answer:?}"
    );
    assert!(pooled.conn.is_some(), "still on its first connection");
    // Logged once the old process has stopped accepting (the line above comes a moment before).
    wait_log(&old_log, "listener closed").await;
    assert_eq!(
        pooled.get("/").await,
        Ok(200),
        "an idle keep-alive connection gets its next request answered"
    );
    assert!(pooled.conn.is_none(), "...with Connection: close");
    assert_eq!(
        pooled.get("/").await,
        Ok(200),
        "and reconnects to the new process"
    );
    drop(pooled);
    load.advance(100).await;

    // The old process drains: still alive for its open connections, which keep working.
    assert!(
        running(&mut old),
        "the old process waits for its connections"
    );
    assert_eq!(slow.await.unwrap(), Ok(200), "the slow request finishes");
    streaming_stop.store(true, Ordering::Relaxed);
    let rounds = streaming.await.unwrap();
    assert!(
        rounds.as_ref().is_ok_and(|r| *r > 50),
        "the streaming session ran through the handover: {rounds:?}"
    );
    for s in &mut long {
        s.write_all(b"after\n").await.unwrap();
        assert_eq!(read_line(s).await.unwrap(), "after");
    }
    drop(long);
    let code = exit_code(&mut old, Duration::from_secs(15)).await;
    assert_eq!(
        code,
        Some(0),
        "the old process exits once drained:\n{}",
        log(&old_log)
    );
    assert!(
        !log(&old_log).contains("cutting remaining"),
        "nothing was cut"
    );

    // Only the new process is left, on the same ports.
    load.advance(100).await;
    let (ok, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} failed of {}: {failures:?}",
        failures.len(),
        ok + failures.len()
    );
    eprintln!("takeover under load: {ok} TCP and HTTP connections, 0 failed");
    assert_eq!(tcp_once(tcp).await, Ok(()));
    assert_eq!(http_once(http, "/").await, Ok(200));
    let (status, metrics) = http_get(addr(admin_port), "/metrics").await;
    assert_eq!(status, 200);
    let served =
        metric(&metrics, "sinew_service_connections_total{service=\"tcp\"}").unwrap_or(0.0);
    assert!(served > 0.0, "the new process served the TCP service");
    assert!(running(&mut new), "the new process runs on");
    assert!(
        upgrade.exists(),
        "the new process offers its sockets on the same path"
    );

    // And it can hand over again: a third process takes over from the second.
    let third_log = temp_file("third.log", "");
    let _third = sinew(&config, Some(&upgrade), &third_log);
    wait_log(&new_log, "the new process serves").await;
    let code = exit_code(&mut new, Duration::from_secs(15)).await;
    assert_eq!(code, Some(0), "{}", log(&new_log));
    assert_eq!(tcp_once(tcp).await, Ok(()));
}

#[tokio::test]
async fn takeover_from_a_path_where_nobody_listens_fails_clearly() {
    let config = temp_file(
        "dead.yaml",
        &format!(
            "admin: {{ listen: 127.0.0.1:{} }}\nservices:\n  tcp:\n    listen: 127.0.0.1:{}\n    backends: [127.0.0.1:1]\n",
            free_port(),
            free_port()
        ),
    );
    let missing = socket_path("missing");
    let _ = std::fs::remove_file(&missing);
    let stale = socket_path("stale");
    let _ = std::fs::remove_file(&stale);
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    for path in [&missing, &stale] {
        let log_path = temp_file("dead.log", "");
        let mut proc = sinew(&config, Some(path), &log_path);
        let code = exit_code(&mut proc, Duration::from_secs(10)).await;
        let stderr = log(&log_path);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "cannot take over from {}: nobody listens there",
                path.display()
            )),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn takeover_inherits_matching_listeners_and_binds_the_rest() {
    let echo = EchoBackend::start("echo").await;
    let (kept, added, dropped) = (free_port(), free_port(), free_port());
    let (old_admin, new_admin) = (free_port(), free_port());
    let upgrade = socket_path("mixed");
    let service = |name: &str, port: u16| {
        format!(
            "  {name}:\n    listen: 127.0.0.1:{port}\n    backends: [{}]\n",
            echo.hostport()
        )
    };
    let head = |admin: u16| {
        format!(
            "admin: {{ listen: 127.0.0.1:{admin}, upgrade_socket: {} }}\nshutdown_grace: 5s\nservices:\n",
            upgrade.display()
        )
    };
    let old_config = temp_file(
        "mixed-old.yaml",
        &(head(old_admin) + &service("kept", kept) + &service("dropped", dropped)),
    );
    let new_config = temp_file(
        "mixed-new.yaml",
        &(head(new_admin) + &service("kept", kept) + &service("added", added)),
    );
    let (old_log, new_log) = (
        temp_file("mixed-old.log", ""),
        temp_file("mixed-new.log", ""),
    );
    let mut old = sinew(&old_config, None, &old_log);
    for p in [kept, dropped, old_admin] {
        wait_listening(addr(p)).await;
    }
    wait_offering(&upgrade).await;
    let mut new = sinew(&new_config, Some(&upgrade), &new_log);
    let code = exit_code(&mut old, Duration::from_secs(15)).await;
    assert_eq!(code, Some(0), "{}", log(&old_log));
    assert!(running(&mut new), "{}", log(&new_log));
    let new_log_text = log(&new_log);
    assert!(
        new_log_text.contains("listening socket taken over")
            && new_log_text.contains("services.kept"),
        "{new_log_text}"
    );
    assert_eq!(tcp_once(addr(kept)).await, Ok(()));
    assert_eq!(tcp_once(addr(added)).await, Ok(()));
    assert_eq!(http_get(addr(new_admin), "/ready").await.0, 200);
    assert!(
        TcpStream::connect(addr(dropped)).await.is_err(),
        "a service the new config lacks closes with the old process"
    );
    assert!(
        TcpStream::connect(addr(old_admin)).await.is_err(),
        "the old admin address closes when the new admin listens elsewhere"
    );
}

#[tokio::test]
async fn registered_znodes_pass_to_the_new_process_without_a_gap() {
    const PATH: &str = "/nerve/services/upg/services";
    let zk = ZooKeeper::start().await;
    let client = zk.client().await;
    let echo = EchoBackend::start("echo").await;
    let (port, admin) = (free_port(), free_port());
    let upgrade = socket_path("zk");
    let config = temp_file(
        "zk.yaml",
        &format!(
            "admin: {{ listen: 127.0.0.1:{admin}, upgrade_socket: {} }}\nshutdown_grace: 10s\nregister:\n  instance_id: i-upg\n  drain: 0s\n  services:\n    upg:\n      host: 127.0.0.1\n      port: {}\n      zk_hosts: [{}]\n      zk_path: {PATH}\n      session_timeout: 2s\n      check_interval: 100ms\n      checks: [{{ type: tcp }}]\nservices:\n  tcp:\n    listen: 127.0.0.1:{port}\n    backends: [{}]\n",
            upgrade.display(),
            echo.addr.port(),
            zk.address(),
            echo.hostport()
        ),
    );
    let children = || async { client.list_children(PATH).await.unwrap_or_default() };
    let (old_log, new_log) = (temp_file("zk-old.log", ""), temp_file("zk-new.log", ""));
    let mut old = sinew(&config, None, &old_log);
    wait_listening(addr(port)).await;
    wait_offering(&upgrade).await;
    let mut before = Vec::new();
    for _ in 0..250 {
        before = children().await;
        if before.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        before.len(),
        1,
        "the old process registered:\n{}",
        log(&old_log)
    );

    // A long-lived connection keeps the old process draining while the new one registers.
    let mut open = TcpStream::connect(addr(port)).await.unwrap();
    assert_eq!(read_line(&mut open).await.unwrap(), "echo");
    let _new = sinew(&config, Some(&upgrade), &new_log);
    wait_log(&old_log, "the new process serves").await;
    let mut after = before.clone();
    let mut empty = 0;
    for _ in 0..250 {
        after = children().await;
        empty += usize::from(after.is_empty());
        if after.len() == 1 && after != before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(after.len(), 1, "one znode: {after:?}");
    assert_ne!(
        after,
        before,
        "the new process replaced the znode:\n{}",
        log(&new_log)
    );
    assert_eq!(empty, 0, "the instance was never missing from ZooKeeper");
    assert!(running(&mut old), "the old process still drains");
    wait_log(&old_log, "znode replaced by the successor").await;

    open.write_all(b"bye\n").await.unwrap();
    assert_eq!(read_line(&mut open).await.unwrap(), "bye");
    drop(open);
    let code = exit_code(&mut old, Duration::from_secs(15)).await;
    assert_eq!(code, Some(0), "{}", log(&old_log));
    assert!(
        !log(&old_log).contains("deregistered"),
        "the old process deleted no znode"
    );
    assert_eq!(
        children().await,
        after,
        "the new process's znode outlives the old session"
    );
}

#[tokio::test]
async fn a_successor_that_fails_to_start_leaves_the_old_process_serving() {
    let echo = EchoBackend::start("echo").await;
    let (port, admin) = (free_port(), free_port());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upgrade = socket_path("abort");
    let head = format!(
        "admin: {{ listen: 127.0.0.1:{admin}, upgrade_socket: {} }}\nshutdown_grace: 5s\nservices:\n  tcp:\n    listen: 127.0.0.1:{port}\n    backends: [{}]\n",
        upgrade.display(),
        echo.hostport()
    );
    let config = temp_file("abort.yaml", &head);
    let broken = temp_file(
        "abort-new.yaml",
        &format!(
            "{head}  busy:\n    listen: {}\n    backends: [{}]\n",
            taken.local_addr().unwrap(),
            echo.hostport()
        ),
    );
    let (old_log, new_log) = (
        temp_file("abort-old.log", ""),
        temp_file("abort-new.log", ""),
    );
    let mut old = sinew(&config, None, &old_log);
    wait_listening(addr(port)).await;
    wait_offering(&upgrade).await;
    let mut failed = sinew(&broken, Some(&upgrade), &new_log);
    let code = exit_code(&mut failed, Duration::from_secs(10)).await;
    assert_eq!(code, Some(1), "{}", log(&new_log));
    assert!(
        log(&new_log).contains("services.busy: cannot listen"),
        "{}",
        log(&new_log)
    );
    wait_log(&old_log, "handover aborted; this process keeps serving").await;
    assert!(running(&mut old));
    assert_eq!(tcp_once(addr(port)).await, Ok(()));

    // The upgrade socket still works for a successor that starts.
    let mut next = sinew(&config, Some(&upgrade), &temp_file("abort-next.log", ""));
    let code = exit_code(&mut old, Duration::from_secs(15)).await;
    assert_eq!(code, Some(0), "{}", log(&old_log));
    assert!(running(&mut next));
    assert_eq!(tcp_once(addr(port)).await, Ok(()));
}

/// A process that is not our child, killed by PID when dropped.
struct Pid(u32);

impl Drop for Pid {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}

/// The next datagram on a notify socket, as text.
async fn notification(socket: &tokio::net::UnixDatagram) -> String {
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(15), socket.recv(&mut buf))
        .await
        .expect("a notification in time")
        .expect("recv");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn sigusr2_starts_the_successor_and_systemd_follows_the_main_pid() {
    let echo = EchoBackend::start("echo").await;
    let (port, admin) = (free_port(), free_port());
    let upgrade = socket_path("usr2");
    let notify_path = socket_path("notify");
    let _ = std::fs::remove_file(&notify_path);
    let notify = tokio::net::UnixDatagram::bind(&notify_path).unwrap();
    let config = temp_file(
        "usr2.yaml",
        &format!(
            "admin: {{ listen: 127.0.0.1:{admin}, upgrade_socket: {} }}\nshutdown_grace: 5s\nservices:\n  tcp:\n    listen: 127.0.0.1:{port}\n    backends: [{}]\n",
            upgrade.display(),
            echo.hostport()
        ),
    );
    let log_path = temp_file("usr2.log", "");
    let file = std::fs::File::create(&log_path).unwrap();
    let mut old = Proc(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&config)
            .env("NOTIFY_SOCKET", &notify_path)
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap(),
    );
    assert_eq!(notification(&notify).await, "READY=1");
    let load = Load::start(addr(port), None);
    load.advance(20).await;

    old.signal("-USR2");
    let message = notification(&notify).await;
    let pid: u32 = message
        .strip_prefix("MAINPID=")
        .and_then(|m| m.strip_suffix("\nREADY=1"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("MAINPID and READY: {message:?}\n{}", log(&log_path)));
    let _successor = Pid(pid);
    assert_ne!(pid, old.0.id());
    let code = exit_code(&mut old, Duration::from_secs(15)).await;
    assert_eq!(code, Some(0), "{}", log(&log_path));
    load.advance(20).await;
    let (ok, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} failed of {}: {failures:?}",
        failures.len(),
        ok + failures.len()
    );
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the successor runs on"
    );
    assert_eq!(tcp_once(addr(port)).await, Ok(()));
}

#[tokio::test]
async fn systemd_socket_activation_serves_on_the_passed_sockets() {
    let echo = EchoBackend::start("echo").await;
    let (port, admin) = (free_port(), free_port());
    let config = temp_file(
        "activated.yaml",
        &format!(
            "admin: {{ listen: 127.0.0.1:{admin} }}\nservices:\n  tcp:\n    listen: 127.0.0.1:{port}\n    backends: [{}]\n",
            echo.hostport()
        ),
    );
    let log_path = temp_file("activated.log", "");
    let file = std::fs::File::create(&log_path).unwrap();
    // systemd-socket-activate binds the listed sockets and execs sinew (same PID) on the first connection.
    let _activator = Proc(
        Command::new("systemd-socket-activate")
            .args(["-l", &format!("127.0.0.1:{port}"), "--fdname=tcp"])
            .args(["-l", &format!("127.0.0.1:{admin}"), "--fdname=admin"])
            .arg(BIN)
            .args(["run", "--config"])
            .arg(&config)
            .stderr(Stdio::from(file))
            .spawn()
            .expect("systemd-socket-activate (Debian package `systemd`; bash .ci/run installs it)"),
    );
    wait_log(&log_path, "Listening on 127.0.0.1:").await;
    // The first connection starts sinew, which serves it from the socket it was handed (binding the
    // same address itself would fail: the activator holds it).
    assert_eq!(tcp_once(addr(port)).await, Ok(()), "{}", log(&log_path));
    wait_log(&log_path, "listening sockets from systemd").await;
    assert_eq!(http_get(addr(admin), "/ready").await.0, 200);
    let text = log(&log_path);
    assert!(
        text.contains("services.tcp") && text.contains("listening socket taken over"),
        "{text}"
    );
}
