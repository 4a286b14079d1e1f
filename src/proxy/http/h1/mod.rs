//! sinew's HTTP/1 codec: request heads from clients and response heads towards them (for the own
//! server path, `front.rs`), and the client side towards backends.
//!
//! The client side serves requests whose body is already in memory: the request is written
//! and the response read by the task serving the request itself, on a pooled connection it borrows
//! for the exchange ([`Conn`]); no connection task, no channel between the two, and no copy of the
//! request's header map. Requests that stream their body, and upgrades, go through hyper's client
//! (see `upstream.rs`).

mod body;
mod chunked;
mod date;
mod fields;
mod head;
mod request;
mod response;
#[doc(hidden)]
pub mod wire;

pub use body::ResponseBody;
pub use head::{Framing, Head};
pub use request::{parse_request, Parsed, Request, RequestError};
pub use response::{chunk_size, encode_response, last_chunk, Delimit, Outgoing};

use crate::proxy::http::pool::Counted;
use crate::proxy::tcp::Io;
use bytes::{Bytes, BytesMut};
use hyper::header::CONTENT_LENGTH;
use hyper::http::request::Parts;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::io::poll_read_buf;

/// Largest response head read from a backend (hyper's client allows about as much).
const MAX_HEAD: usize = 256 * 1024;
/// Buffer space made ready before each read from a peer (a backend, or a client on the own server path).
pub const READ_SPACE: usize = 8 * 1024;
/// Most buffer space made ready before a read from a backend: reads that fill their space double it up
/// to this, so a large body arriving faster than it is read takes fewer, larger reads.
const MAX_READ_SPACE: usize = 64 * 1024;
/// Largest request body this client sends: the whole request is written before the response is read,
/// which socket buffers absorb at this size; larger bodies go through hyper's client, which reads an
/// early response while it writes.
pub const MAX_BODY: usize = 64 * 1024;
/// Write buffer capacity a connection keeps between messages (either side).
pub const KEEP_OUT: usize = 16 * 1024;

/// A backend connection with the bytes read from it and not yet consumed.
pub struct Conn {
    io: Counted<Box<dyn Io>>,
    buf: BytesMut,
    /// Space made ready before the next read (between `READ_SPACE` and `MAX_READ_SPACE`).
    read_space: usize,
    out: Vec<u8>,
    /// TLS: a failed write may still have sent earlier records.
    tls: bool,
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The connection was closed or reset before any byte of a response came back.
    #[error("connection closed before a response ({0})")]
    Closed(String),
    /// Writing the request failed before any of it was accepted.
    #[error("request not sent: {0}")]
    Unsent(std::io::Error),
    /// The response head is not one sinew can pass on.
    #[error(transparent)]
    Head(#[from] head::HeadError),
    /// The connection failed during the exchange.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl ExchangeError {
    /// The race of a keep-alive connection the backend closed, where sending again is safe: nothing of
    /// the request was sent (over plain TCP), or it is idempotent and no response began.
    pub fn is_stale(&self, idempotent: bool, tls: bool) -> bool {
        match self {
            Self::Unsent(_) => idempotent || !tls,
            Self::Closed(_) => idempotent,
            _ => false,
        }
    }
}

impl Conn {
    /// A fresh connection (`tls` when it carries TLS).
    pub fn new(io: Counted<Box<dyn Io>>, tls: bool) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            read_space: READ_SPACE,
            out: Vec::new(),
            tls,
        }
    }

    /// Readies an idle connection to wait in the pool: its reads start small again, and a read buffer
    /// grown by a large body is let go rather than held while idle.
    pub fn rest(&mut self) {
        self.read_space = READ_SPACE;
        if self.buf.is_empty() && self.buf.capacity() > READ_SPACE {
            self.buf = BytesMut::new();
        }
    }

    /// Whether the connection carries TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The connection underneath, for hyper's client; `None` if bytes have been read ahead (never for
    /// a connection that passed [`Conn::is_usable`]).
    pub fn into_io(self) -> Option<Counted<Box<dyn Io>>> {
        self.buf.is_empty().then_some(self.io)
    }

    /// An idle connection can take a request: the backend has neither closed it nor sent anything
    /// unasked. Looks once, without waiting.
    pub fn is_usable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        self.buf.reserve(1);
        // Ready means end of stream, an error, or bytes nobody asked for: not usable in any case.
        poll_read_buf(Pin::new(&mut self.io), &mut cx, &mut self.buf).is_pending()
    }

    /// Writes the request `parts` (target `path`, in-memory `body`) and reads the response head,
    /// passing over interim (1xx) responses.
    pub async fn exchange(
        &mut self,
        parts: &Parts,
        path: &str,
        body: &Bytes,
    ) -> Result<Head, ExchangeError> {
        self.out.clear();
        let length =
            (!body.is_empty() && !parts.headers.contains_key(CONTENT_LENGTH)).then_some(body.len());
        head::encode_request(parts, path, length, &mut self.out);
        self.out.extend_from_slice(body);
        let first = match poll_fn(|cx| Pin::new(&mut self.io).poll_write(cx, &self.out)).await {
            Ok(0) => return Err(ExchangeError::Unsent(std::io::ErrorKind::WriteZero.into())),
            Ok(n) => n,
            Err(e) => return Err(ExchangeError::Unsent(e)),
        };
        // A buffering socket (TLS, or one on the io_uring engine) sends as it flushes: a failure that
        // sent nothing of the request is as a failed first write; a reset is the backend having
        // closed, before any response.
        let written = match self.io.write_all(&self.out[first..]).await {
            Ok(()) => self.io.flush().await,
            failed => failed,
        };
        match written {
            Err(e) if nothing_sent(&e) => return Err(ExchangeError::Unsent(e)),
            Err(e) if is_reset(&e) => return Err(ExchangeError::Closed(e.to_string())),
            written => written?,
        }
        if self.out.capacity() > KEEP_OUT {
            self.out = Vec::new();
        }
        // Whether any byte of a response came back (interim responses included).
        let mut answered = false;
        loop {
            if let Some(head) = head::parse_response(&mut self.buf, &parts.method)? {
                answered = true;
                if head.status == hyper::StatusCode::SWITCHING_PROTOCOLS {
                    return Err(head::HeadError::Switch.into());
                }
                if head.status.is_informational() {
                    continue;
                }
                return Ok(head);
            }
            if self.buf.len() >= MAX_HEAD {
                return Err(head::HeadError::TooLarge.into());
            }
            let received = answered || !self.buf.is_empty();
            match self.read().await {
                Ok(0) if !received => return Err(ExchangeError::Closed("end of stream".into())),
                Ok(0) => return Err(ExchangeError::Io(std::io::ErrorKind::UnexpectedEof.into())),
                Ok(_) => {}
                Err(e) if !received && is_reset(&e) => {
                    return Err(ExchangeError::Closed(e.to_string()))
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Reads what the backend has sent into the buffer; 0 at the end of the stream.
    async fn read(&mut self) -> std::io::Result<usize> {
        poll_fn(|cx| self.poll_read(cx)).await
    }

    /// Polls a read into the buffer.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        self.buf.reserve(self.read_space);
        let read = std::task::ready!(poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf))?;
        self.read_space = next_read_space(self.read_space, read);
        Poll::Ready(Ok(read))
    }
}

/// The space to make ready for the next read after one that read `read` bytes into `space`: twice as
/// much (up to `MAX_READ_SPACE`) when it filled the space, `READ_SPACE` again when it used under half.
fn next_read_space(space: usize, read: usize) -> usize {
    if read >= space {
        (space * 2).min(MAX_READ_SPACE)
    } else if read < space / 2 {
        READ_SPACE
    } else {
        space
    }
}

/// A write or flush that failed before any byte of it reached the peer (a socket on the io_uring
/// engine says so).
fn nothing_sent(e: &std::io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<crate::proxy::uring::NothingSent>())
}

/// A reset or aborted connection, as a backend closing an idle keep-alive connection causes.
fn is_reset(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionReset | ConnectionAborted | BrokenPipe)
}

/// Seeded random edits of HTTP/1 input, for the parsers' no-panic tests.
#[cfg(test)]
fn mutate(rng: &mut fastrand::Rng, input: &mut Vec<u8>, edits: usize, alphabet: &[u8]) {
    for _ in 0..edits {
        if input.is_empty() {
            break;
        }
        let at = rng.usize(..input.len());
        match rng.u8(0..4) {
            0 => input[at] = rng.u8(..),
            1 => input.truncate(at),
            2 => input.insert(at, *rng.choice(alphabet).unwrap_or(&b'x')),
            _ => {
                input.remove(at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::IntGauge;

    #[test]
    fn reads_that_fill_their_space_double_it_and_short_ones_start_over() {
        assert_eq!(next_read_space(READ_SPACE, READ_SPACE), 2 * READ_SPACE);
        assert_eq!(next_read_space(32 * 1024, 40 * 1024), MAX_READ_SPACE);
        assert_eq!(
            next_read_space(MAX_READ_SPACE, MAX_READ_SPACE),
            MAX_READ_SPACE
        );
        assert_eq!(next_read_space(32 * 1024, 20 * 1024), 32 * 1024);
        assert_eq!(next_read_space(32 * 1024, 100), READ_SPACE);
        assert_eq!(next_read_space(READ_SPACE, 0), READ_SPACE);
    }

    #[tokio::test]
    async fn a_large_body_waiting_in_the_socket_is_read_in_few_reads_and_let_go_at_rest() {
        let (mut backend, ours) = tokio::io::duplex(1024 * 1024);
        let open = IntGauge::new("open", "open").unwrap();
        let mut conn = Conn::new(Counted::new(Box::new(ours), open), false);
        let body: Vec<u8> = (0..200 * 1024).map(|i| (i % 251) as u8).collect();
        backend.write_all(&body).await.unwrap();
        // As a response body is read: each read's bytes are split off and passed on.
        let (mut got, mut reads) = (Vec::new(), 0);
        while got.len() < body.len() {
            assert!(conn.read().await.unwrap() > 0);
            reads += 1;
            got.extend_from_slice(&conn.buf.split().freeze());
        }
        assert_eq!(got, body);
        // 8 + 16 + 32 + 64 + 64 + 16 KiB; reads of 8 KiB each took 25.
        assert!(reads <= 6, "{reads} reads for 200 KiB");
        conn.rest();
        assert_eq!((conn.buf.capacity(), conn.read_space), (0, READ_SPACE));
    }
}
