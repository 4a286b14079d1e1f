//! One-shot HTTP GETs over a stream the caller connected: health checks' probes (HTTP/1.1, or HTTP/2
//! over TLS when ALPN chose it), `sinew status` reading the admin API and `sinew backend` writing to it. Each call is one request on
//! its own connection; the caller bounds it with a timeout.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{HeaderName, HeaderValue, HOST, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use tokio::io::{AsyncRead, AsyncWrite};

/// What to GET, and how much of the answer to read.
pub struct Get<'a> {
    /// The `Host` header (and the authority of an HTTP/2 request).
    pub host: &'a str,
    /// The path, with its query.
    pub path: &'a str,
    /// The `User-Agent` header, if one is sent.
    pub user_agent: Option<&'a str>,
    /// The most body read; a longer body fails the GET.
    pub max_body: usize,
    /// Extra header fields; a `Host` among them replaces `host`.
    pub headers: &'a [(String, String)],
}

/// One HTTP/1.1 GET over `stream`: the status and the body.
pub async fn http1<S>(stream: S, get: &Get<'_>) -> Result<(u16, Bytes), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    http1_method(stream, Method::GET, get).await
}

/// [`http1`] with another method (and still no body), e.g. an admin API `POST`.
pub async fn http1_method<S>(
    stream: S,
    method: Method,
    get: &Get<'_>,
) -> Result<(u16, Bytes), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("http handshake: {e}"))?;
    let driver = tokio::spawn(conn);
    let result = send(
        sender.send_request(request(method, get, get.path)?),
        get.max_body,
    )
    .await;
    driver.abort();
    result
}

/// One HTTP/2 GET over `stream` (a TLS connection whose ALPN chose h2): the status and the body.
pub async fn http2<S>(stream: S, get: &Get<'_>) -> Result<(u16, Bytes), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| format!("http2 handshake: {e}"))?;
    let driver = tokio::spawn(conn);
    // HTTP/2 carries the scheme and authority in the request itself.
    let uri = format!("https://{}{}", get.host, get.path);
    let result = send(
        sender.send_request(request(Method::GET, get, &uri)?),
        get.max_body,
    )
    .await;
    driver.abort();
    result
}

/// The `method` request of `uri` (a path, or an absolute URI for HTTP/2).
fn request(method: Method, get: &Get<'_>, uri: &str) -> Result<Request<Empty<Bytes>>, String> {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header(HOST, get.host);
    if let Some(agent) = get.user_agent {
        request = request.header(USER_AGENT, agent);
    }
    if let Some(headers) = request.headers_mut() {
        for (name, value) in get.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| format!("header {name:?}: {e}"))?;
            let value = HeaderValue::from_str(value).map_err(|e| format!("header {name}: {e}"))?;
            headers.insert(name, value);
        }
    }
    request
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("bad request: {e}"))
}

/// Awaits a response and reads its status and up to `max_body` bytes of body.
async fn send(
    response: impl Future<Output = hyper::Result<hyper::Response<hyper::body::Incoming>>>,
    max_body: usize,
) -> Result<(u16, Bytes), String> {
    let resp = response.await.map_err(|e| format!("http: {e}"))?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), max_body)
        .collect()
        .await
        .map_err(|e| format!("reading body: {e}"))?
        .to_bytes();
    Ok((status, body))
}
