//! One active health check of one backend: a TCP connect, or an HTTP GET with an expected status and body.
//! When the service speaks TLS to its backends, the check does too, with the same client config: a TCP
//! check passes once the handshake succeeds, an HTTP check sends its GET over TLS (HTTP/2 when ALPN
//! chose h2).

use crate::config::{CheckType, HealthCheck};
use crate::http_client::{self, Get};
use crate::resource::Resource;
use bytes::Bytes;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// TLS towards a service's backends, as checks use it (the proxy's upstream TLS implements it).
pub trait CheckTls: Send + Sync {
    /// Handshakes with the backend `host` over `stream`.
    fn handshake<'a>(
        &'a self,
        host: &'a str,
        stream: TcpStream,
    ) -> Pin<Box<dyn Future<Output = io::Result<TlsStream<TcpStream>>> + Send + 'a>>;
}

/// The backend a probe checks.
pub struct ProbeTarget<'a> {
    /// The address to connect to when the host is an IP; `None` resolves `key` at connect time.
    pub addr: Option<SocketAddr>,
    /// A Unix socket's path, connected to instead (`Host: localhost` unless the check names one).
    pub unix: Option<&'a Path>,
    /// `host:port`, the default `Host` header.
    pub key: &'a str,
    /// The host, the default TLS server name.
    pub host: &'a str,
    /// Write a PROXY protocol `LOCAL` header first (HAProxy's `check-send-proxy`), in this version.
    pub send_proxy: Option<crate::config::SendProxy>,
}

/// The most body read from an HTTP check.
const MAX_BODY: usize = 64 * 1024;
/// The `User-Agent` of HTTP checks.
const USER_AGENT: &str = "sinew-health-check";

/// Why a check did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The backend failed it; the reason.
    Backend(String),
    /// This host could not run it (out of descriptors, memory, buffers or local ports): it says
    /// nothing of the backend, so it must not count toward `fall`.
    Local(Resource, String),
}

impl From<String> for Failure {
    fn from(reason: String) -> Self {
        Failure::Backend(reason)
    }
}

/// Runs one check; `Ok` with a short description on pass, `Err` with why it did not.
pub async fn probe(
    backend: ProbeTarget<'_>,
    check: &HealthCheck,
    tls: Option<&dyn CheckTls>,
) -> Result<String, Failure> {
    match tokio::time::timeout(check.timeout, run(backend, check, tls)).await {
        Ok(r) => r,
        Err(_) => Err(Failure::Backend(format!(
            "timed out after {:?}",
            check.timeout
        ))),
    }
}

async fn run(
    backend: ProbeTarget<'_>,
    check: &HealthCheck,
    tls: Option<&dyn CheckTls>,
) -> Result<String, Failure> {
    if let Some(path) = backend.unix {
        return unix(path, check, tls.is_some(), backend.send_proxy).await;
    }
    let mut stream = match backend.addr {
        Some(addr) => TcpStream::connect(addr).await,
        None => TcpStream::connect(backend.key).await,
    }
    .map_err(|e| connect_failure(&e, "connect"))?;
    if let Some(version) = backend.send_proxy {
        local_header(&mut stream, version).await?;
    }
    let Some(tls) = tls else {
        return match check.kind {
            CheckType::Tcp => Ok("connected".into()),
            CheckType::Http => Ok(http(stream, false, backend.key, check).await?),
        };
    };
    let stream = tls
        .handshake(backend.host, stream)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    match check.kind {
        CheckType::Tcp => Ok("TLS handshake done".into()),
        CheckType::Http => {
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            Ok(http(stream, h2, backend.key, check).await?)
        }
    }
}

/// A failed connect, its detail starting with `what`: the backend's, unless this host ran out of a
/// resource.
fn connect_failure(e: &io::Error, what: &str) -> Failure {
    match Resource::of_error(e) {
        Some(resource) => Failure::Local(resource, format!("{what}: {e}")),
        None => Failure::Backend(format!("{what}: {e}")),
    }
}

/// Starts a check's connection with a PROXY header saying it carries no client (v2 `LOCAL`, v1
/// `UNKNOWN`), as HAProxy's `check-send-proxy` does.
async fn local_header<S>(stream: &mut S, version: crate::config::SendProxy) -> Result<(), Failure>
where
    S: AsyncWrite + Unpin,
{
    let local = crate::proxy_protocol::Header::Local;
    crate::proxy_protocol::write_header(stream, version, local)
        .await
        .map_err(|e| Failure::Backend(format!("sending the PROXY header: {e}")))
}

/// Checks a Unix-socket backend: connected, or an HTTP GET over the socket.
async fn unix(
    path: &Path,
    check: &HealthCheck,
    tls: bool,
    send_proxy: Option<crate::config::SendProxy>,
) -> Result<String, Failure> {
    if tls {
        return Err(Failure::Backend(
            "TLS to a Unix-socket backend is not supported".into(),
        ));
    }
    let mut stream = tokio::net::UnixStream::connect(path)
        .await
        .map_err(|e| connect_failure(&e, &format!("connect {}", path.display())))?;
    if let Some(version) = send_proxy {
        local_header(&mut stream, version).await?;
    }
    match check.kind {
        CheckType::Tcp => Ok("connected".into()),
        CheckType::Http => Ok(http(stream, false, "localhost", check).await?),
    }
}

async fn http<S>(stream: S, h2: bool, key: &str, check: &HealthCheck) -> Result<String, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let host = check.host.as_deref().unwrap_or(key);
    let (status, body) = if h2 {
        http_client::http2(stream, &check_get(host, &check.path)).await?
    } else {
        http_get(stream, host, &check.path, &[]).await?
    };
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

/// One HTTP/1.1 GET of a check over `stream` with extra `headers`: the status and up to 64 KiB of body.
pub async fn http_get<S>(
    stream: S,
    host: &str,
    path: &str,
    headers: &[(String, String)],
) -> Result<(u16, Bytes), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let get = Get {
        headers,
        ..check_get(host, path)
    };
    http_client::http1(stream, &get).await
}

/// A check's GET of `path` on `host`.
fn check_get<'a>(host: &'a str, path: &'a str) -> Get<'a> {
    Get {
        host,
        path,
        user_agent: Some(USER_AGENT),
        max_body: MAX_BODY,
        headers: &[],
    }
}
