//! The checks of a registered service: tcp, http, exec (no shell), redis (write a key, read it back)
//! and rabbitmq (publish a message, consume it back).

mod rabbitmq;

use crate::config::register::{Check, CheckKind};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// TTL of the key a redis check writes.
const REDIS_TTL: Duration = Duration::from_secs(30);

/// Runs one check against `host:port`; `Err` carries the reason.
pub async fn run(check: &Check, host: &str, port: u16) -> Result<(), String> {
    let host = check.host.as_deref().unwrap_or(host);
    let port = check.port.unwrap_or(port);
    match tokio::time::timeout(check.timeout, attempt(check, host, port)).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {:?}", check.timeout)),
    }
}

async fn attempt(check: &Check, host: &str, port: u16) -> Result<(), String> {
    match check.kind {
        CheckKind::Tcp => connect(check, host, port).await.map(drop),
        CheckKind::Http => {
            let stream = connect(check, host, port).await?;
            let path = check.uri.as_deref().unwrap_or("/");
            let headers: Vec<(String, String)> = check
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let (status, body) =
                crate::health::probe::http_get(stream, &format!("{host}:{port}"), path, &headers)
                    .await?;
            let healthy_below = if check.accept_redirects { 400 } else { 300 };
            if !(200..healthy_below).contains(&status) {
                return Err(format!("HTTP {status}"));
            }
            match &check.expect {
                Some(e) if !String::from_utf8_lossy(&body).contains(e.as_str()) => {
                    Err(format!("HTTP {status}, body lacks {e:?}"))
                }
                _ => Ok(()),
            }
        }
        CheckKind::Exec => exec(&check.command).await,
        CheckKind::Redis => redis(check, host, port).await,
        CheckKind::Rabbitmq => rabbitmq::run(check, host, port).await,
    }
}

/// Connects within the check's `connect_timeout`, when it has one (the whole run is bounded anyway).
async fn connect(check: &Check, host: &str, port: u16) -> Result<TcpStream, String> {
    let connecting = TcpStream::connect((host, port));
    let result = match check.connect_timeout {
        Some(limit) => tokio::time::timeout(limit, connecting)
            .await
            .map_err(|_| format!("connect {host}:{port}: timed out after {limit:?}"))?,
        None => connecting.await,
    };
    result.map_err(|e| format!("connect {host}:{port}: {e}"))
}

/// Runs the program directly (arguments are never interpreted by a shell); exit 0 passes.
async fn exec(command: &[String]) -> Result<(), String> {
    let (program, args) = command.split_first().ok_or("no command")?;
    let status = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{program} exited with {status}"))
    }
}

/// AUTH and SELECT when configured, then SET key with a TTL and GET it back: proves the server stores.
async fn redis(check: &Check, host: &str, port: u16) -> Result<(), String> {
    let stream = connect(check, host, port).await?;
    let mut conn = BufReader::new(stream);
    if let Some(password) = &check.password {
        expect_ok(&mut conn, &["AUTH", password])
            .await
            .map_err(|e| format!("AUTH: {e}"))?;
    }
    if let Some(db) = check.db {
        expect_ok(&mut conn, &["SELECT", &db.to_string()])
            .await
            .map_err(|e| format!("SELECT: {e}"))?;
    }
    let key = check.key.as_deref().unwrap_or("sinew:health-check");
    let value = format!("{:016x}", fastrand::u64(..));
    let ttl = REDIS_TTL.as_millis().to_string();
    expect_ok(&mut conn, &["SET", key, &value, "PX", &ttl])
        .await
        .map_err(|e| format!("SET: {e}"))?;
    send(&mut conn, &["GET", key]).await?;
    let line = read_line(&mut conn).await?;
    let len: i64 = line
        .strip_prefix('$')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("GET: {line}"))?;
    if len != value.len() as i64 {
        return Err(format!(
            "GET returned {len} bytes, not the value just written"
        ));
    }
    let got = read_line(&mut conn).await?;
    if got != value {
        return Err("GET returned another value than the one just written".into());
    }
    Ok(())
}

async fn send(conn: &mut BufReader<TcpStream>, args: &[&str]) -> Result<(), String> {
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    conn.get_mut()
        .write_all(out.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))
}

async fn read_line(conn: &mut BufReader<TcpStream>) -> Result<String, String> {
    let mut line = String::new();
    let n = conn
        .read_line(&mut line)
        .await
        .map_err(|e| format!("read: {e}"))?;
    if n == 0 || line.len() > 64 * 1024 {
        return Err("connection closed".into());
    }
    Ok(line.trim_end().to_string())
}

async fn expect_ok(conn: &mut BufReader<TcpStream>, args: &[&str]) -> Result<(), String> {
    send(conn, args).await?;
    let line = read_line(conn).await?;
    if line == "+OK" {
        Ok(())
    } else {
        Err(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A backend on loopback answering 200 only to requests for `Host: api.example.com`, 404 otherwise.
    async fn virtual_host() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = vec![0; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                let status = if head.contains("\r\nhost: api.example.com\r\n")
                    && head.contains("\r\nx-check: nerve\r\n")
                {
                    "200 OK"
                } else {
                    "404 Not Found"
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                );
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        port
    }

    /// A backend on loopback answering every request with `status`.
    async fn answering(status: &'static str) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = vec![0; 4096];
                let _ = s.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                );
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        port
    }

    #[tokio::test]
    async fn accept_redirects_makes_3xx_healthy_as_nerve_does() {
        // (status, healthy by default, healthy with accept_redirects)
        let table = [
            ("200 OK", true, true),
            ("204 No Content", true, true),
            ("302 Found", false, true),
            ("399 Odd", false, true),
            ("404 Not Found", false, false),
            ("500 Internal Server Error", false, false),
        ];
        for (status, plain, redirects) in table {
            let port = answering(status).await;
            let mut check = http(&[]);
            assert_eq!(
                run(&check, "127.0.0.1", port).await.is_ok(),
                plain,
                "{status}"
            );
            check.accept_redirects = true;
            assert_eq!(
                run(&check, "127.0.0.1", port).await.is_ok(),
                redirects,
                "{status}"
            );
        }
    }

    fn http(headers: &[(&str, &str)]) -> Check {
        let mut check: Check =
            serde_json::from_str(r#"{"type": "http", "uri": "/health", "timeout": "2s"}"#).unwrap();
        check.headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        check
    }

    #[tokio::test]
    async fn an_http_check_sends_its_headers_and_host() {
        let port = virtual_host().await;
        let right = http(&[("Host", "api.example.com"), ("X-Check", "nerve")]);
        assert_eq!(run(&right, "127.0.0.1", port).await, Ok(()));
        let e = run(&http(&[("X-Check", "nerve")]), "127.0.0.1", port)
            .await
            .unwrap_err();
        assert!(e.contains("404"), "{e}");
    }

    #[tokio::test]
    async fn connect_timeout_bounds_the_connect_only() {
        // A loopback listener that never accepts, its backlog filled: further connects hang.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = socket.local_addr().unwrap().port();
        let _listener = socket.listen(0).unwrap();
        let mut held = Vec::new();
        for _ in 0..8 {
            let c = tokio::time::timeout(
                Duration::from_millis(100),
                TcpStream::connect(("127.0.0.1", port)),
            );
            if let Ok(Ok(s)) = c.await {
                held.push(s);
            }
        }
        let mut check = http(&[]);
        check.connect_timeout = Some(Duration::from_millis(50));
        let e = run(&check, "127.0.0.1", port).await.unwrap_err();
        assert!(
            e.starts_with("connect") && e.contains("timed out after 50ms"),
            "{e}"
        );
    }
}
