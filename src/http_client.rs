//! One-shot HTTP GETs over a stream the caller connected: health checks' probes (HTTP/1.1, or HTTP/2
//! over TLS when ALPN chose it) and `sinew status` reading the admin API. Each call is one request on
//! its own connection; the caller bounds it with a timeout.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{HeaderName, HeaderValue, HOST, USER_AGENT};
use hyper::Request;
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
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("http handshake: {}", causes(&e)))?;
    let driver = tokio::spawn(conn);
    let result = send(sender.send_request(request(get, get.path)?), get.max_body).await;
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
            .map_err(|e| format!("http2 handshake: {}", causes(&e)))?;
    let driver = tokio::spawn(conn);
    // HTTP/2 carries the scheme and authority in the request itself.
    let uri = format!("https://{}{}", get.host, get.path);
    let result = send(sender.send_request(request(get, &uri)?), get.max_body).await;
    driver.abort();
    result
}

/// The GET of `uri` (a path, or an absolute URI for HTTP/2).
fn request(get: &Get<'_>, uri: &str) -> Result<Request<Empty<Bytes>>, String> {
    let mut request = Request::get(uri).header(HOST, get.host);
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

/// An error and its causes in one line, each said once: hyper's own text ("connection error") hides
/// the OS error beneath it, and some errors repeat their cause in their own text.
pub fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text = format!("{text}: {said}");
        }
        source = cause.source();
    }
    text
}

/// Awaits a response and reads its status and up to `max_body` bytes of body.
async fn send(
    response: impl Future<Output = hyper::Result<hyper::Response<hyper::body::Incoming>>>,
    max_body: usize,
) -> Result<(u16, Bytes), String> {
    let resp = response
        .await
        .map_err(|e| format!("http: {}", causes(&e)))?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), max_body)
        .collect()
        .await
        .map_err(|e| format!("reading body: {}", causes(&*e)))?
        .to_bytes();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error with a text of its own and, optionally, the cause it wraps.
    #[derive(Debug)]
    struct Wrap(String, Option<std::io::Error>);

    impl std::fmt::Display for Wrap {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl std::error::Error for Wrap {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_ref().map(|e| e as _)
        }
    }

    #[test]
    fn causes_are_said_once() {
        let reset = || std::io::Error::from_raw_os_error(104);
        let os = reset().to_string();
        // (error, its line)
        let cases = [
            (
                Wrap("connection error".into(), Some(reset())),
                format!("connection error: {os}"),
            ),
            (
                Wrap(format!("connect: {os}"), Some(reset())),
                format!("connect: {os}"),
            ),
            (Wrap("closed".into(), None), "closed".to_string()),
        ];
        for (e, want) in cases {
            assert_eq!(causes(&e), want);
            assert!(causes(&e).matches("os error").count() <= 1);
        }
    }
}
