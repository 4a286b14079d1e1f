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
        CheckKind::Tcp => connect(host, port).await.map(drop),
        CheckKind::Http => {
            let stream = connect(host, port).await?;
            let path = check.uri.as_deref().unwrap_or("/");
            let (status, body) =
                crate::health::probe::http_get(stream, &format!("{host}:{port}"), path).await?;
            if !(200..300).contains(&status) {
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

async fn connect(host: &str, port: u16) -> Result<TcpStream, String> {
    TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connect {host}:{port}: {e}"))
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
    let stream = connect(host, port).await?;
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
