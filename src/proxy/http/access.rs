//! The access log of HTTP services (`access_log: true`): one event per request, target
//! `sinew::access`, written when the response has been sent to the end (or was cut short), so it
//! carries the bytes sent and the whole time, as HAProxy's log line does at the end of a stream.

use super::body::{BoxError, ProxyBody};
use bytes::{Buf, Bytes};
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::HOST;
use hyper::http::request::Parts;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// How a logged request ended, once the response has a status.
pub mod cause {
    /// The response was sent to its end.
    pub const DONE: &str = "done";
    /// The client went away before the response's end.
    pub const CLIENT_ABORTED: &str = "client_aborted";
    /// The backend's response body failed part way.
    pub const UPSTREAM_ABORTED: &str = "upstream_aborted";
    /// The connection was handed to a tunnel (an upgrade, `101 Switching Protocols`).
    pub const UPGRADED: &str = "upgraded";
}

/// Where the time of one request went, filled in as it is forwarded.
#[derive(Default, Clone, Copy)]
pub struct Timing {
    /// Waiting for a backend slot (the service's queue), all attempts together.
    pub queue: Duration,
    /// Opening a new backend connection for the attempt that answered, when one was opened.
    pub connect: Option<Duration>,
    /// From the request's start to the answering backend's response head.
    pub head: Option<Duration>,
}

/// What forwarding learnt about a request, for its access log line.
pub struct Seen {
    /// The client's address.
    pub client: SocketAddr,
    /// Request body bytes from the client (those read, for a body streamed through).
    pub bytes_in: u64,
    /// Where the time went.
    pub timing: Timing,
}

impl Seen {
    /// Nothing learnt yet about a request from `client`.
    pub fn new(client: SocketAddr) -> Self {
        Self {
            client,
            bytes_in: 0,
            timing: Timing::default(),
        }
    }
}

/// A new backend connection's connect time, carried in a response's extensions from the client that
/// opened it to the access log.
#[derive(Clone, Copy)]
pub struct Connected(pub Duration);

/// Everything the access log says about one request except how many bytes went back and how it ended.
pub struct Record {
    service: String,
    client: SocketAddr,
    host: String,
    method: String,
    path: String,
    status: u16,
    bytes_in: u64,
    upstream: Option<String>,
    retries: u32,
    timing: Timing,
    started: Instant,
}

impl Record {
    /// The record of a request with these parts, answered with `status` by `upstream` (none for a local
    /// reply) after `attempts` attempts.
    pub fn new(
        service: &str,
        parts: &Parts,
        status: u16,
        upstream: Option<&str>,
        attempts: u32,
        seen: &Seen,
        started: Instant,
    ) -> Box<Self> {
        let host = parts.headers.get(HOST).and_then(|h| h.to_str().ok());
        Box::new(Self {
            service: service.to_string(),
            client: seen.client,
            host: host.unwrap_or("-").to_string(),
            method: parts.method.to_string(),
            path: parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
            status,
            bytes_in: seen.bytes_in,
            upstream: upstream.map(str::to_string),
            retries: attempts.saturating_sub(1),
            timing: seen.timing,
            started,
        })
    }

    /// Writes the event: the request ended with `termination` after `bytes_out` body bytes to the client.
    pub fn log(&self, termination: &str, bytes_out: u64) {
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        tracing::info!(
            target: "sinew::access",
            service = self.service,
            client = %self.client,
            host = self.host,
            method = self.method,
            path = self.path,
            status = self.status,
            bytes_in = self.bytes_in,
            bytes_out,
            upstream = self.upstream.as_deref().unwrap_or("-"),
            retries = self.retries,
            termination,
            queue_us = us(self.timing.queue),
            connect_us = self.timing.connect.map(us),
            response_us = self.timing.head.map(us),
            total_us = us(self.started.elapsed()),
        );
    }
}

/// A response body on its way to the client that counts its bytes and writes the access log line at
/// its end, or when it is dropped before (the client went away).
pub struct Logged {
    inner: ProxyBody,
    record: Option<Box<Record>>,
    sent: u64,
}

impl Logged {
    /// Wraps the response body `inner` of the request `record` describes.
    pub fn new(inner: ProxyBody, record: Box<Record>) -> Self {
        Self {
            inner,
            record: Some(record),
            sent: 0,
        }
    }

    fn finish(&mut self, termination: &str) {
        if let Some(record) = self.record.take() {
            record.log(termination, self.sent);
        }
    }
}

impl Body for Logged {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.sent += data.remaining() as u64;
                }
                if self.inner.is_end_stream() {
                    self.finish(cause::DONE);
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish(cause::UPSTREAM_ABORTED),
            Poll::Ready(None) => self.finish(cause::DONE),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        // A body that was empty from the start may never be polled: it was sent whole all the same.
        let termination = if self.inner.is_end_stream() {
            cause::DONE
        } else {
            cause::CLIENT_ABORTED
        };
        self.finish(termination);
    }
}
