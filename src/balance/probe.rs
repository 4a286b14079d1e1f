//! One active health check of one backend: a TCP connect, or an HTTP GET with an expected status and body.

use super::backend::Target;
use crate::config::{CheckType, HealthCheck};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::HOST;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The most body read from an HTTP check.
const MAX_BODY: usize = 64 * 1024;

/// Runs one check; `Ok` with a short description on pass, `Err` with the reason on failure.
pub async fn probe(target: &Target, key: &str, check: &HealthCheck) -> Result<String, String> {
    match tokio::time::timeout(check.timeout, run(target, key, check)).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {:?}", check.timeout)),
    }
}

async fn run(target: &Target, key: &str, check: &HealthCheck) -> Result<String, String> {
    let stream = match target {
        Target::Addr(addr) => TcpStream::connect(addr).await,
        Target::Name(name) => TcpStream::connect(name.as_str()).await,
    }
    .map_err(|e| format!("connect: {e}"))?;
    match check.kind {
        CheckType::Tcp => Ok("connected".into()),
        CheckType::Http => http(stream, key, check).await,
    }
}

async fn http(stream: TcpStream, key: &str, check: &HealthCheck) -> Result<String, String> {
    let host = check.host.as_deref().unwrap_or(key);
    let (status, body) = http_get(stream, host, &check.path).await?;
    let status_ok = if check.expect_status.is_empty() {
        (200..400).contains(&status)
    } else {
        check.expect_status.contains(&status)
    };
    if !status_ok {
        return Err(format!("HTTP {status}"));
    }
    if let Some(expected) = &check.expect_body {
        if !String::from_utf8_lossy(&body).contains(expected.as_str()) {
            return Err(format!("HTTP {status}, body lacks {expected:?}"));
        }
    }
    Ok(format!("HTTP {status}"))
}

/// One HTTP/1.1 GET over `stream`: the status and up to 64 KiB of body.
pub async fn http_get(stream: TcpStream, host: &str, path: &str) -> Result<(u16, Bytes), String> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("http handshake: {e}"))?;
    let driver = tokio::spawn(conn);
    let req = Request::get(path)
        .header(HOST, host)
        .header("user-agent", "sinew-health-check")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("bad request: {e}"))?;
    let result = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("http: {e}"))?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading body: {e}"))?
            .to_bytes();
        Ok((status, body))
    }
    .await;
    driver.abort();
    result
}
