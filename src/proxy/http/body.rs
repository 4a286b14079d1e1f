//! Body types of the HTTP path, and a response body that keeps its backend counted as busy until the
//! response has been fully sent (least-conn counts in-flight requests, not connections).

use super::h1::ResponseBody;
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
/// or is dropped.
pub struct Guarded {
    inner: UpBody,
    pick: Option<Pick>,
}

impl Guarded {
    /// Wraps `inner`, releasing `pick` at the end of the stream.
    pub fn new(inner: UpBody, pick: Pick) -> Self {
        Self {
            inner,
            pick: Some(pick),
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
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.pick = None,
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.pick = None,
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
