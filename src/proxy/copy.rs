//! Copying both ways between two streams with recycled buffers.
//!
//! `tokio::io::copy_bidirectional` allocates and zeroes a fresh buffer per direction for every
//! connection and keeps it until the connection ends; with short connections that zeroing is a visible
//! share of the CPU, and with many connections the buffers are most of the memory. Here a direction
//! borrows a buffer from a small per-thread pool only while it has bytes in flight, and gives it back
//! as soon as its reader has nothing more for now (as HAProxy releases empty buffers). An idle
//! connection holds no buffer, the few buffers in use stay hot in the cache, and each is zeroed once
//! in its life. The copy semantics are tokio's: each direction copies until EOF, flushes, then shuts
//! the writer down (a half-close is passed on), and the whole copy ends when both are done.
//!
//! [`bidirectional_closing`] is for plain sockets closed as soon as the copy ends: there the direction
//! that finishes last does not shut its writer down, because the `close(2)` that follows sends the
//! same FIN (both sockets have been read to EOF, so nothing unread turns the close into a reset). That
//! is one `shutdown(2)` fewer per connection, as HAProxy closes without one.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Size of one direction's buffer; larger than tokio's 8 KiB default to cut syscalls on bulk transfers.
const BUFFER: usize = 32 * 1024;

/// Buffers kept per thread for reuse (1 MiB at most).
const POOL: usize = 32;

thread_local! {
    static FREE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer borrowed from the pool; returned on drop.
struct Buffer(Box<[u8]>);

impl Buffer {
    fn take() -> Self {
        let reused = FREE.with(|f| f.borrow_mut().pop());
        Self(reused.unwrap_or_else(|| vec![0; BUFFER].into_boxed_slice()))
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.0);
        FREE.with(|f| {
            let mut free = f.borrow_mut();
            if free.len() < POOL {
                free.push(buf);
            }
        });
    }
}

/// One direction: the buffer while bytes are in flight, what of it is still to be written, and how
/// far the copy got.
struct Half {
    buf: Option<Buffer>,
    pos: usize,
    end: usize,
    eof: bool,
    flush: bool,
    copied: u64,
    state: State,
}

#[derive(Clone, Copy, PartialEq)]
enum State {
    Copying,
    ShuttingDown,
    Done,
}

impl Half {
    fn new() -> Self {
        Self {
            buf: None,
            pos: 0,
            end: 0,
            eof: false,
            flush: false,
            copied: 0,
            state: State::Copying,
        }
    }

    /// Drives this direction; ready once the reader hit EOF and the writer was shut down (or, when
    /// `closing`, not shut down: the writer is closed next, which ends it the same way).
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
        closing: bool,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        loop {
            match self.state {
                State::Copying => {
                    ready!(self.poll_copy(cx, r, w))?;
                    self.state = if closing {
                        State::Done
                    } else {
                        State::ShuttingDown
                    };
                }
                State::ShuttingDown => {
                    ready!(Pin::new(&mut *w).poll_shutdown(cx))?;
                    self.state = State::Done;
                }
                State::Done => return Poll::Ready(Ok(())),
            }
        }
    }

    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        loop {
            if self.pos == self.end && !self.eof {
                let buf = self.buf.get_or_insert_with(Buffer::take);
                let mut read = ReadBuf::new(&mut buf.0);
                match Pin::new(&mut *r).poll_read(cx, &mut read) {
                    Poll::Ready(Ok(())) => {
                        let n = read.filled().len();
                        (self.pos, self.end, self.eof) = (0, n, n == 0);
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        // Nothing to read now: the empty buffer goes back to the pool, and what was
                        // written is pushed out (TLS streams buffer it).
                        self.buf = None;
                        if self.flush {
                            ready!(Pin::new(&mut *w).poll_flush(cx))?;
                            self.flush = false;
                        }
                        return Poll::Pending;
                    }
                }
            }
            while let Some(buf) = self.buf.as_ref().filter(|_| self.pos < self.end) {
                let n = ready!(Pin::new(&mut *w).poll_write(cx, &buf.0[self.pos..self.end]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
                self.copied += n as u64;
                self.flush = true;
            }
            if self.eof {
                self.buf = None;
                ready!(Pin::new(&mut *w).poll_flush(cx))?;
                return Poll::Ready(Ok(()));
            }
        }
    }
}

/// Copies `a` to `b` and `b` to `a` until both directions reach EOF; returns the bytes copied each way.
pub async fn bidirectional<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    copy(a, b, false).await
}

/// [`bidirectional`] for plain sockets that the caller closes as soon as it returns: the direction
/// that ends last leaves its writer to that close instead of shutting it down first.
pub async fn bidirectional_closing<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    copy(a, b, true).await
}

async fn copy<A, B>(a: &mut A, b: &mut B, closing: bool) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let (mut a_to_b, mut b_to_a) = (Half::new(), Half::new());
    poll_fn(|cx| {
        let last = closing && b_to_a.state == State::Done;
        let forward = a_to_b.poll(cx, a, b, last)?;
        let last = closing && a_to_b.state == State::Done;
        let backward = b_to_a.poll(cx, b, a, last)?;
        ready!(forward);
        ready!(backward);
        Poll::Ready(Ok((a_to_b.copied, b_to_a.copied)))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn copies_both_ways_and_passes_half_close_on() {
        let (mut client, mut proxy_a) = tokio::io::duplex(64);
        let (mut proxy_b, mut server) = tokio::io::duplex(64);
        let copy = tokio::spawn(async move { bidirectional(&mut proxy_a, &mut proxy_b).await });
        let request = vec![7u8; 100_000];
        let sent = request.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            client.shutdown().await.unwrap();
            let mut answer = Vec::new();
            client.read_to_end(&mut answer).await.unwrap();
            answer
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(
            got, request,
            "the client's bytes and its EOF reach the server"
        );
        server.write_all(b"done").await.unwrap();
        server.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"done");
        assert_eq!(copy.await.unwrap().unwrap(), (100_000, 4));
    }

    #[tokio::test]
    async fn a_direction_holds_a_buffer_only_while_bytes_are_in_flight() {
        let (mut client, mut proxy_a) = tokio::io::duplex(8);
        let (mut proxy_b, mut server) = tokio::io::duplex(1024);
        let mut half = Half::new();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(half
            .poll(&mut cx, &mut proxy_a, &mut proxy_b, false)
            .is_pending());
        assert!(
            half.buf.is_none(),
            "a direction with nothing to read holds no buffer"
        );
        client.write_all(b"hello").await.unwrap();
        assert!(half
            .poll(&mut cx, &mut proxy_a, &mut proxy_b, false)
            .is_pending());
        assert!(
            half.buf.is_none(),
            "once the bytes are written on, the buffer goes back"
        );
        let mut got = [0u8; 5];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");

        // A writer that takes only part of the bytes: the rest waits in the held buffer.
        let (mut slow_b, mut slow_server) = tokio::io::duplex(4);
        client.write_all(b"12345678").await.unwrap();
        assert!(half
            .poll(&mut cx, &mut proxy_a, &mut slow_b, false)
            .is_pending());
        assert!(
            half.buf.is_some(),
            "bytes the writer has not taken stay in the buffer"
        );
        let mut got = [0u8; 4];
        slow_server.read_exact(&mut got).await.unwrap();
        assert!(half
            .poll(&mut cx, &mut proxy_a, &mut slow_b, false)
            .is_pending());
        slow_server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"5678", "the held bytes go out in order");
        assert!(half
            .poll(&mut cx, &mut proxy_a, &mut slow_b, false)
            .is_pending());
        assert!(
            half.buf.is_none(),
            "drained and idle again, the buffer goes back"
        );
        assert_eq!(half.copied, 13);
    }

    /// A stream that counts the shutdowns asked of it.
    struct Shutdowns<S>(S, u32);

    impl<S: AsyncRead + Unpin> AsyncRead for Shutdowns<S> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }

    impl<S: AsyncWrite + Unpin> AsyncWrite for Shutdowns<S> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.0).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.1 += 1;
            Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }

    /// The client half-closes, the server answers and closes: both copies pass the client's half-close
    /// on; only the closing one leaves the last FIN (to the client) to the close.
    async fn shutdowns_after_a_half_close(closing: bool) -> (u32, u32) {
        let (mut client, proxy_a) = tokio::io::duplex(64);
        let (proxy_b, mut server) = tokio::io::duplex(64);
        let (mut a, mut b) = (Shutdowns(proxy_a, 0), Shutdowns(proxy_b, 0));
        let copy = tokio::spawn(async move {
            let copied = if closing {
                bidirectional_closing(&mut a, &mut b).await
            } else {
                bidirectional(&mut a, &mut b).await
            };
            (copied.unwrap(), a.1, b.1)
        });
        client.write_all(b"ask").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ask", "the client's half-close reaches the server");
        server.write_all(b"answer").await.unwrap();
        drop(server);
        let (copied, to_client, to_server) = copy.await.unwrap();
        assert_eq!(copied, (3, 6));
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"answer", "the answer and its end reach the client");
        (to_client, to_server)
    }

    #[tokio::test]
    async fn a_closing_copy_leaves_only_the_last_shutdown_to_the_close() {
        assert_eq!(shutdowns_after_a_half_close(false).await, (1, 1));
        assert_eq!(
            shutdowns_after_a_half_close(true).await,
            (0, 1),
            "the half-close is passed on; the end that follows it is the close's"
        );
    }

    #[test]
    fn buffers_are_reused_and_the_pool_is_bounded() {
        let first = Buffer::take();
        let ptr = first.0.as_ptr();
        drop(first);
        assert_eq!(
            Buffer::take().0.as_ptr(),
            ptr,
            "a returned buffer is lent again"
        );
        let many: Vec<Buffer> = (0..POOL + 8).map(|_| Buffer::take()).collect();
        drop(many);
        assert_eq!(FREE.with(|f| f.borrow().len()), POOL);
    }
}
