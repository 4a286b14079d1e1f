//! Body types of the HTTP path, and a response body that keeps its backend counted as busy until the
//! response has been fully sent (least-conn counts in-flight requests, not connections) and then gives
//! its connection back to the pool.

use super::upstream::Lease;
use crate::balance::Pick;
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

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

/// A backend's response body that holds the backend's [`Pick`] (its in-flight count) until it ends
/// or is dropped, and gives its pooled connection back once it has been read to its end.
pub struct Guarded {
    inner: Incoming,
    pick: Option<Pick>,
    lease: Option<Lease>,
}

impl Guarded {
    /// Wraps `inner`, releasing `pick` at the end of the stream and `lease` to its pool.
    pub fn new(inner: Incoming, pick: Pick, lease: Option<Lease>) -> Self {
        Self {
            inner,
            pick: Some(pick),
            lease,
        }
    }

    /// The body has ended: the backend is done, and its connection can take another request.
    fn done(&mut self) {
        self.pick = None;
        if let Some(lease) = self.lease.take() {
            lease.release();
        }
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
            Poll::Ready(None) => self.done(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.done(),
            Poll::Ready(Some(Err(_))) => {
                self.pick = None;
                self.lease = None;
            }
            _ => {}
        }
        polled.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Guarded {
    /// A body never polled because it was empty (HEAD, 204, 304, `Content-Length: 0`) has still been
    /// read to its end; one dropped before its end closes its connection.
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.done();
        }
    }
}
