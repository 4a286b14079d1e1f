//! A real HTTP backend for tests (HTTP/1.1 and h2c), with routes that misbehave on demand.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

type Body = BoxBody<Bytes, hyper::Error>;

/// An HTTP backend on loopback.
///
/// Routes: `/` answers its name; `/status/N` answers status N; `/slow/MS` answers after MS ms;
/// `/echo` streams the request body back; `/drain` reads the whole request body, then answers its
/// length; `/headers` lists the request headers; `/trailers` sends a body
/// and a `grpc-status: 0` trailer; `/upgrade` switches protocols and echoes bytes. A `sick` backend
/// answers 503 to everything.
pub struct HttpBackend {
    /// Its address.
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl HttpBackend {
    /// Starts a healthy backend.
    pub async fn start(name: &str) -> Self {
        Self::start_with(name, false).await
    }

    /// Starts a backend that answers 503 to everything.
    pub async fn sick(name: &str) -> Self {
        Self::start_with(name, true).await
    }

    /// Starts a backend that waits `delay` before every answer.
    pub async fn slow(name: &str, delay: Duration) -> Self {
        Self::serve(name, false, delay).await
    }

    /// Starts a healthy backend on a given address (e.g. to bring a stopped one back).
    pub async fn start_on(addr: SocketAddr, name: &str) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind");
        Self::serve_on(listener, name, false, Duration::ZERO)
    }

    async fn start_with(name: &str, sick: bool) -> Self {
        Self::serve(name, sick, Duration::ZERO).await
    }

    async fn serve(name: &str, sick: bool, delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::serve_on(listener, name, sick, delay)
    }

    fn serve_on(listener: TcpListener, name: &str, sick: bool, delay: Duration) -> Self {
        let addr = listener.local_addr().expect("addr");
        let (connections, requests) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let name: Arc<str> = Arc::from(name);
        let (c, r) = (Arc::clone(&connections), Arc::clone(&requests));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                c.fetch_add(1, Ordering::Relaxed);
                let (name, r) = (Arc::clone(&name), Arc::clone(&r));
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        r.fetch_add(1, Ordering::Relaxed);
                        let name = Arc::clone(&name);
                        async move {
                            tokio::time::sleep(delay).await;
                            route(name, sick, req).await
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            connections,
            requests,
            task,
        }
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Requests served so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    /// `host:port` for configs.
    pub fn hostport(&self) -> String {
        self.addr.to_string()
    }
}

/// An agent config with an admin listener and one HTTP service `web` on `backends`, then `extra`
/// (more of the service's fields, indented by four spaces). With `SINEW_TEST_HTTP_FASTPATH` set (`.ci/run`
/// sets `io_uring` for a second pass of the HTTP suites), the service takes that `tcp_fastpath`.
pub fn web_service(backends: &[String], extra: &str) -> String {
    let fastpath = std::env::var("SINEW_TEST_HTTP_FASTPATH")
        .map(|path| format!("    tcp_fastpath: {path}\n"))
        .unwrap_or_default();
    format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    mode: http\n{fastpath}    backends: [{}]\n{extra}",
        backends.join(", ")
    )
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn text(status: u16, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r
}

async fn route(
    name: Arc<str>,
    sick: bool,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if sick {
        return Ok(text(503, format!("{name} is sick\n")));
    }
    let path = req.uri().path().to_string();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let response = match (parts.next(), parts.next()) {
        (Some("status"), Some(code)) => text(code.parse().unwrap_or(500), name.to_string()),
        (Some("slow"), Some(ms)) => {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
            text(200, name.to_string())
        }
        (Some("echo"), _) => Response::new(req.into_body().boxed()),
        (Some("drain"), _) => match req.into_body().collect().await {
            Ok(body) => text(200, format!("{} bytes\n", body.to_bytes().len())),
            Err(_) => text(400, "bad body\n"),
        },
        (Some("headers"), _) => {
            let mut out = String::new();
            for (k, v) in req.headers() {
                out.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
            }
            text(200, out)
        }
        (Some("trailers"), _) => {
            let mut trailers = hyper::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().expect("static header"));
            Response::new(
                WithTrailers {
                    data: Some(Bytes::from_static(b"payload")),
                    trailers: Some(trailers),
                }
                .boxed(),
            )
        }
        (Some("upgrade"), _) => {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = on.await {
                    let mut io = TokioIo::new(up);
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            let mut r = text(101, Bytes::new());
            r.headers_mut()
                .insert("connection", "upgrade".parse().expect("static header"));
            r.headers_mut()
                .insert("upgrade", "echo".parse().expect("static header"));
            r
        }
        _ => text(200, name.to_string()),
    };
    Ok(response)
}

/// A body of one data frame followed by trailers, as gRPC sends.
struct WithTrailers {
    data: Option<Bytes>,
    trailers: Option<hyper::HeaderMap>,
}

impl hyper::body::Body for WithTrailers {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(d) = self.data.take() {
            return std::task::Poll::Ready(Some(Ok(Frame::data(d))));
        }
        std::task::Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
}

/// A keep-alive HTTP/1 client connection to `addr` (its connection task spawned), sending bodies of
/// type `B`.
pub async fn keep_alive<B>(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    sender
}
