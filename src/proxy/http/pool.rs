//! The upstream connector: hyper-util's `HttpConnector`, then TLS when the service originates it, with
//! every new backend connection counted (opened, open now), so pool reuse is visible: requests minus
//! connections opened.

use crate::proxy::UpstreamTls;
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use prometheus::{IntCounterVec, IntGauge, IntGaugeVec};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Connection counters of one service's pool, labelled by backend.
#[derive(Clone)]
pub struct PoolMetrics {
    /// The service label.
    pub service: String,
    /// Connections opened, by backend.
    pub opened: IntCounterVec,
    /// Connections open now, by backend.
    pub open: IntGaugeVec,
}

/// An `HttpConnector` that counts the connections it makes, and speaks TLS when configured.
#[derive(Clone)]
pub struct CountingConnector {
    inner: HttpConnector,
    metrics: PoolMetrics,
    tls: Option<Arc<UpstreamTls>>,
}

impl CountingConnector {
    /// Wraps `inner`; with `tls`, every connection is TLS (ALPN `h2` makes hyper use HTTP/2).
    pub fn new(inner: HttpConnector, metrics: PoolMetrics, tls: Option<Arc<UpstreamTls>>) -> Self {
        Self {
            inner,
            metrics,
            tls,
        }
    }
}

/// A backend connection, plain or TLS.
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// A backend connection that leaves the open-connections gauge when it closes.
pub struct Counted<S = Stream> {
    stream: S,
    open: IntGauge,
}

impl<S> Counted<S> {
    /// Counts `stream` in `open` until it is dropped.
    pub fn new(stream: S, open: IntGauge) -> Self {
        open.inc();
        Self { stream, open }
    }
}

impl<S> Drop for Counted<S> {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl Connection for Counted {
    fn connected(&self) -> Connected {
        match &self.stream {
            Stream::Plain(s) => s.connected(),
            Stream::Tls(s) => {
                let (tcp, session) = s.get_ref();
                let connected = tcp.connected();
                if session.alpn_protocol() == Some(b"h2") {
                    connected.negotiated_h2()
                } else {
                    connected
                }
            }
        }
    }
}

/// Applies `$call` to whichever stream a `Stream` is.
macro_rules! on_stream {
    ($self:expr, $s:ident => $call:expr) => {
        match $self.get_mut() {
            Stream::Plain($s) => $call,
            Stream::Tls($s) => $call,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        on_stream!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        on_stream!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_stream!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_stream!(self, s => Pin::new(s).poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        on_stream!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for CountingConnector {
    type Response = TokioIo<Counted>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<TokioIo<Counted>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let backend = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let metrics = self.metrics.clone();
        let tls = self.tls.clone();
        let connecting = self.inner.call(uri);
        Box::pin(async move {
            let tcp = connecting.await?.into_inner();
            let stream = match tls {
                None => Stream::Plain(tcp),
                Some(tls) => Stream::Tls(Box::new(tls.connect(&host, tcp).await?)),
            };
            let labels = [metrics.service.as_str(), backend.as_str()];
            metrics.opened.with_label_values(&labels).inc();
            let open = metrics.open.with_label_values(&labels);
            Ok(TokioIo::new(Counted::new(stream, open)))
        })
    }
}
