//! A socket on the engine's ring for code that reads and writes through tokio's traits (sinew's HTTP/1
//! paths, both sides): [`RingStream`].
//!
//! The engine keeps one receive armed on the socket (multishot and capped where the kernel allows) and
//! copies what arrives into the socket's receive queue, giving the ring's buffer back at once; a read
//! takes from that queue and waits only when it is empty. A write copies into the socket's send queue
//! and asks the engine to send it, which it does in its next pass, with every other socket's sends in
//! one `io_uring_enter`; `poll_flush` waits until the engine has sent it all. Both queues are bounded
//! ([`QUEUE_LIMIT`]): a receive is armed only for the room left, and a write beyond the limit waits.
//!
//! The handle and the engine share the queues behind a lock that only they take, on one thread when
//! the engine is the runtime's own (`local`), so it is never contended there.

use super::{Command, Engine};
use crate::proxy::io::WaitReadable;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes each queue holds at most: received and not yet read, or written and not yet sent.
pub(super) const QUEUE_LIMIT: usize = 64 * 1024;
/// Queue capacity kept once a queue has emptied (a small message's worth); a larger one is let go, so
/// an idle connection holds little.
pub(super) const KEEP: usize = 2 * 1024;

/// Where a socket's end of writing stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Shut {
    /// Not asked for.
    #[default]
    Open,
    /// Asked for: passed on once everything written before it was sent.
    Wanted,
    /// Passed on (`shutdown(SHUT_WR)` completed).
    Done,
}

/// What a handle and the engine share about one socket.
#[derive(Default)]
pub(super) struct State {
    /// Received bytes, read from `read_at` on.
    pub(super) received: Vec<u8>,
    /// The first byte of `received` not yet read.
    pub(super) read_at: usize,
    /// The peer ended its stream (after what `received` holds).
    pub(super) eof: bool,
    /// The socket failed (an errno: a receive failed, or the engine stopped): reads after the bytes
    /// received, and writes, fail with it.
    pub(super) error: Option<i32>,
    /// A send or the end of writing failed (an errno): writes fail with it; reads go on to the end of
    /// the stream, as a socket's do.
    pub(super) write_error: Option<i32>,
    /// Bytes written, in all.
    pub(super) written: u64,
    /// Bytes the kernel has taken from the send queue, in all.
    pub(super) accepted: u64,
    /// `accepted` when a flush last completed: a flush that fails with it unchanged sent nothing of
    /// what was written since.
    pub(super) flushed: u64,
    /// The engine stopped receiving because the receive queue is full: a read that makes room asks
    /// it to go on.
    pub(super) paused: bool,
    /// The task waiting to read.
    pub(super) reader: Option<Waker>,
    /// Written, not yet taken by the engine.
    pub(super) unsent: Vec<u8>,
    /// The engine is sending bytes it took from `unsent`.
    pub(super) sending: bool,
    /// The task waiting for room to write, for a flush, or for the end of writing.
    pub(super) writer: Option<Waker>,
    /// The end of writing.
    pub(super) shut: Shut,
    /// The handle is gone: the engine closes the socket once its operations have ended.
    pub(super) dropped: bool,
    /// A command for the engine to look at this socket is queued and not yet taken.
    pub(super) kicked: bool,
}

impl State {
    /// Received bytes not yet read.
    pub(super) fn unread(&self) -> usize {
        self.received.len() - self.read_at
    }

    /// Records the socket's first error and wakes both sides.
    pub(super) fn fail(&mut self, errno: i32) {
        self.error.get_or_insert(errno);
        self.wake_reader();
        self.wake_writer();
    }

    /// Records the first error of the writing side and wakes the writer.
    pub(super) fn fail_writes(&mut self, errno: i32) {
        self.write_error.get_or_insert(errno);
        self.wake_writer();
    }

    /// The error writes fail with, if any.
    fn write_failure(&self) -> Option<io::Error> {
        let errno = self.error.or(self.write_error)?;
        let e = io::Error::from_raw_os_error(errno);
        Some(if self.accepted == self.flushed {
            io::Error::new(e.kind(), NothingSent(e))
        } else {
            e
        })
    }

    /// Wakes the task waiting to read, if any.
    pub(super) fn wake_reader(&mut self) {
        if let Some(w) = self.reader.take() {
            w.wake();
        }
    }

    /// Wakes the task waiting to write, if any.
    pub(super) fn wake_writer(&mut self) {
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }

    /// Marks a command queued for the engine; true if none was queued yet (so one must be sent).
    fn kick(&mut self) -> bool {
        !std::mem::replace(&mut self.kicked, true)
    }
}

/// A write or flush failed before the kernel took any byte written since the last flush that
/// completed: for a request on an idle connection, nothing of it reached the peer.
#[derive(Debug, thiserror::Error)]
#[error("{0} (nothing sent)")]
pub struct NothingSent(io::Error);

/// The shared state of one socket.
#[derive(Default)]
pub(super) struct Socket(Mutex<State>);

impl Socket {
    /// The state (a panic elsewhere while holding it leaves it usable: every update is a field
    /// store).
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A connected stream socket whose bytes move through an engine's ring. Dropping it closes the
/// socket once the engine's operations on it have ended: bytes written and not yet sent are dropped
/// (a send held up by a peer that does not read is cut short), so a writer flushes or shuts down
/// first, as sinew's HTTP code does on every path that ends well.
pub struct RingStream {
    /// The engine the socket is on.
    engine: &'static Engine,
    /// The engine's name for the socket.
    key: u64,
    /// What the handle and the engine share.
    socket: Arc<Socket>,
}

impl RingStream {
    /// A handle for the socket `key` on `engine`.
    pub(super) fn new(engine: &'static Engine, key: u64, socket: Arc<Socket>) -> Self {
        RingStream {
            engine,
            key,
            socket,
        }
    }

    /// Asks the engine to look at the socket (bytes to send, room to receive into, the end of
    /// writing, or the handle gone).
    fn kick(&self) {
        self.engine.send(Command::Kick(self.key));
    }
}

impl AsyncRead for RingStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut st = self.socket.lock();
        let unread = st.unread();
        if unread == 0 {
            if st.eof || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if let Some(errno) = st.error {
                return Poll::Ready(Err(io::Error::from_raw_os_error(errno)));
            }
            st.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = unread.min(buf.remaining());
        let at = st.read_at;
        buf.put_slice(&st.received[at..at + n]);
        st.read_at += n;
        if st.read_at == st.received.len() {
            st.read_at = 0;
            if st.received.capacity() > KEEP {
                st.received = Vec::new();
            } else {
                st.received.clear();
            }
        }
        let resume = st.paused && st.unread() < QUEUE_LIMIT && st.kick();
        if resume {
            st.paused = false;
        }
        drop(st);
        if resume {
            self.kick();
        }
        Poll::Ready(Ok(()))
    }
}

impl WaitReadable for RingStream {
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = self.socket.lock();
        if st.unread() > 0 || st.eof || st.error.is_some() {
            return Poll::Ready(Ok(()));
        }
        st.reader = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for RingStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut st = self.socket.lock();
        if let Some(e) = st.write_failure() {
            return Poll::Ready(Err(e));
        }
        if st.shut != Shut::Open {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let room = QUEUE_LIMIT.saturating_sub(st.unsent.len());
        if room == 0 {
            st.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = room.min(buf.len());
        st.unsent.extend_from_slice(&buf[..n]);
        st.written += n as u64;
        // While a send is in flight, the engine takes what was added when it completes.
        let kick = !st.sending && st.kick();
        drop(st);
        if kick {
            self.kick();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = self.socket.lock();
        // Every byte written was sent: done, even on a failed socket (as a socket's flush is), so a
        // reader of the failed socket learns of the failure from its read, in order.
        if st.accepted == st.written {
            st.flushed = st.accepted;
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = st.write_failure() {
            return Poll::Ready(Err(e));
        }
        st.writer = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = self.socket.lock();
        if let Some(e) = st.write_failure() {
            return Poll::Ready(Err(e));
        }
        let kick = match st.shut {
            Shut::Done => return Poll::Ready(Ok(())),
            Shut::Wanted => false,
            Shut::Open => {
                st.shut = Shut::Wanted;
                st.kick()
            }
        };
        st.writer = Some(cx.waker().clone());
        drop(st);
        if kick {
            self.kick();
        }
        Poll::Pending
    }
}

impl Drop for RingStream {
    fn drop(&mut self) {
        let mut st = self.socket.lock();
        st.dropped = true;
        st.reader = None;
        st.writer = None;
        drop(st);
        // Sent even if a kick is queued: the engine may have looked already.
        self.kick();
    }
}

impl Engine {
    /// Puts `fd`, a connected stream socket, on the engine's ring and returns its handle. Once the
    /// engine has stopped, the handle's reads and writes fail.
    pub fn stream(&'static self, fd: std::os::fd::OwnedFd) -> RingStream {
        let key = self.key();
        let socket = Arc::new(Socket::default());
        self.send(Command::Open(Box::new(super::engine::Stream::new(
            key,
            fd,
            Arc::clone(&socket),
        ))));
        RingStream::new(self, key, socket)
    }
}

#[cfg(test)]
mod tests;
