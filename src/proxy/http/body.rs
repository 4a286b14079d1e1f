//! Body types of the HTTP path, a response body that keeps its backend counted as busy until the
//! response has been fully sent (least-conn counts in-flight requests, not connections), and a request
//! body that records how far the client got with it (so its failures are charged to the client).

use super::h1::ResponseBody;
use crate::balance::Pick;
use crate::proxy::blame::ClientBody;
use crate::proxy::Recording;
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use tokio::time::Instant;

/// Any error a body can carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type sinew sends, in both directions.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// A body with these bytes.
pub fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Boxes any body whose error converts into [`BoxError`].
pub fn boxed<B>(body: B) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A backend's response body: read by sinew's own HTTP/1 client, or by hyper's.
pub enum UpBody {
    /// From [`super::h1`].
    Own(ResponseBody),
    /// From hyper's client.
    Hyper(Incoming),
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Own(b) => Pin::new(b).poll_frame(cx),
            Self::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Own(b) => b.is_end_stream(),
            Self::Hyper(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Own(b) => b.size_hint(),
            Self::Hyper(b) => b.size_hint(),
        }
    }
}

/// A backend's response body that holds the backend's [`Pick`] (its in-flight count) until it ends
/// or is dropped, and records the request it answers then (its duration ends with the last byte).
pub struct Guarded {
    inner: UpBody,
    pick: Option<Pick>,
    record: Recording,
}

impl Guarded {
    /// Wraps `inner`, releasing `pick` and finishing `record` at the end of the stream.
    pub fn new(inner: UpBody, pick: Pick, record: Recording) -> Self {
        Self {
            inner,
            pick: Some(pick),
            record,
        }
    }

    /// The stream ended (or broke off): the backend is free and the request done.
    fn ended(&mut self) {
        self.pick = None;
        self.record.finish();
    }
}

impl Body for Guarded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.ended(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.ended(),
            _ => {}
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

/// How far a client's streamed request body has come, shared between the body being forwarded and
/// the request that decides, when an attempt fails, whose fault it was.
#[derive(Default)]
pub struct Progress {
    state: AtomicU8,
    bytes: AtomicU64,
    ended: OnceLock<Instant>,
}

const FLOWING: u8 = 0;
const WAITING: u8 = 1;
const SENT: u8 = 2;
const MALFORMED: u8 = 3;
const ABORTED: u8 = 4;

impl Progress {
    /// Where the body stands now.
    pub fn state(&self) -> ClientBody {
        match self.state.load(Ordering::Acquire) {
            WAITING => ClientBody::Waiting,
            SENT => ClientBody::Sent,
            MALFORMED => ClientBody::Malformed,
            ABORTED => ClientBody::Aborted,
            _ => ClientBody::Flowing,
        }
    }

    /// Body bytes read from the client so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// When the client's last body byte came, once it has.
    pub fn ended(&self) -> Option<Instant> {
        self.ended.get().copied()
    }

    fn set(&self, state: u8) {
        self.state.store(state, Ordering::Release);
        if state == SENT {
            let _ = self.ended.set(Instant::now());
        }
    }
}

/// A client's request body on its way to a backend, recording its [`Progress`].
pub struct Tracked {
    inner: Incoming,
    progress: Arc<Progress>,
}

impl Tracked {
    /// Wraps the client's body `inner`, recording into `progress`.
    pub fn new(inner: Incoming, progress: Arc<Progress>) -> Self {
        Self { inner, progress }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                let n = data.len() as u64;
                self.progress.bytes.fetch_add(n, Ordering::Relaxed);
            }
        }
        let state = match &polled {
            Poll::Pending => WAITING,
            Poll::Ready(None) => SENT,
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => SENT,
            Poll::Ready(Some(Ok(_))) => FLOWING,
            Poll::Ready(Some(Err(e))) if malformed(e) => MALFORMED,
            Poll::Ready(Some(Err(_))) => ABORTED,
        };
        self.progress.set(state);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// True when a client's body failed because its framing is invalid (hyper's decoder reports those as
/// `InvalidInput` or `InvalidData`), rather than because its connection ended.
fn malformed(e: &hyper::Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData
            );
        }
        next = e.source();
    }
    e.is_parse()
}
