//! The body of a response read by sinew's own HTTP/1 client: decoded from the backend connection as
//! the client takes it, and the connection handed back to its pool the moment the body has ended.

use super::chunked::{Chunked, Step};
use super::{Conn, Framing};
use crate::proxy::http::body::BoxError;
use crate::proxy::http::upstream::Lease;
use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

/// How the rest of the body is delimited.
enum Left {
    /// This many bytes.
    Length(u64),
    /// Chunks.
    Chunked(Chunked),
    /// Whatever comes until the backend closes.
    Close,
    /// Nothing: the body has ended (or failed).
    Done,
}

/// A backend's response body, holding its connection until the end.
pub struct ResponseBody {
    lease: Option<Lease>,
    left: Left,
    keep_alive: bool,
}

/// The body has broken off.
#[derive(Debug, thiserror::Error)]
#[error("backend response body: {0}")]
struct BodyError(String);

impl ResponseBody {
    /// The body framed by `framing`, read from `lease`'s connection, which goes back to its pool at the
    /// end when `keep_alive`.
    pub fn new(framing: Framing, keep_alive: bool, lease: Lease) -> Self {
        let left = match framing {
            Framing::Empty => Left::Done,
            Framing::Length(n) => Left::Length(n),
            Framing::Chunked => Left::Chunked(Chunked::default()),
            Framing::Close => Left::Close,
        };
        let mut body = Self {
            lease: Some(lease),
            left,
            keep_alive,
        };
        if matches!(body.left, Left::Done) {
            body.finish();
        }
        body
    }

    /// The body has been read to its end: the connection takes the next request, unless the backend
    /// said otherwise or sent more than the response.
    fn finish(&mut self) {
        self.left = Left::Done;
        if let Some(lease) = self.lease.take() {
            if self.keep_alive && lease.conn().buf.is_empty() {
                lease.release();
            }
        }
    }

    /// The body broke off: the connection is closed.
    fn fail(&mut self, why: String) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.left = Left::Done;
        self.lease = None;
        Poll::Ready(Some(Err(Box::new(BodyError(why)))))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let Some(lease) = this.lease.as_mut() else {
                return Poll::Ready(None);
            };
            let conn: &mut Conn = lease.conn_mut();
            match &mut this.left {
                Left::Done => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Left::Length(left) if !conn.buf.is_empty() => {
                    let take = (conn.buf.len() as u64).min(*left);
                    *left -= take;
                    let data = conn.buf.split_to(take as usize).freeze();
                    if *left == 0 {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Left::Chunked(decoder) => match decoder.step(&mut conn.buf) {
                    Ok(Step::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    // Trailers are the last frame: the body is over.
                    Ok(Step::Trailers(map)) => {
                        this.finish();
                        return Poll::Ready(Some(Ok(Frame::trailers(map))));
                    }
                    Ok(Step::End) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Step::More) => {}
                    Err(e) => return this.fail(e.to_string()),
                },
                Left::Close if !conn.buf.is_empty() => {
                    let data = conn.buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Left::Length(_) | Left::Close => {}
            }
            match ready!(conn.poll_read(cx)) {
                Ok(0) if matches!(this.left, Left::Close) => {
                    // The end of a body delimited by the connection: nothing to give back.
                    this.keep_alive = false;
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail("connection closed before the end".into()),
                Ok(_) => {}
                Err(e) => return this.fail(e.to_string()),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.left, Left::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.left {
            Left::Length(n) => SizeHint::with_exact(n),
            Left::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
