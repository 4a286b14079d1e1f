//! The loop's side of [`RingStream`](super::super::RingStream)s: one receive armed per socket while
//! its receive queue has room, copied out of the ring's buffer as it completes; one send at a time of
//! what the handle wrote; the end of writing once everything before it was sent; and, once the handle
//! is gone, the receive cancelled (a send in flight ended by a shutdown) and the socket closed when
//! nothing of it is in flight.

use super::{give_back, tag, Buf, Loop, Op};
use crate::proxy::uring::recv::{self, Receives};
use crate::proxy::uring::socket::{Shut, Socket, KEEP, QUEUE_LIMIT};
use crate::proxy::uring::BUFFERS_STEP;
use io_uring::{cqueue, opcode, types};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A socket on the loop, as a handed-over `RingStream` sees it through `socket`.
pub(in crate::proxy::uring) struct Stream {
    /// The handle's name for it.
    key: u64,
    /// The socket; taken when it is closed.
    fd: Option<OwnedFd>,
    /// What the handle and the loop share.
    socket: Arc<Socket>,
    /// A receive is in flight.
    receiving: bool,
    /// The receive in flight is a multishot one.
    multishot: bool,
    /// The last receive found the buffer ring empty: the next uses a buffer of its own.
    dry: bool,
    /// The own buffer of the receive in flight, if it has one.
    own: Option<Box<[u8]>>,
    /// Bytes being sent, taken from the handle's queue, and how many of them went.
    out: Vec<u8>,
    /// How many bytes of `out` were sent.
    sent: usize,
    /// A send is in flight.
    sending: bool,
    /// The end of writing is in flight.
    shutting: bool,
    /// The cancel of the receive is in flight.
    cancelling: bool,
    /// Operations in flight.
    inflight: u32,
}

impl Stream {
    /// The socket `fd`, known to its handle as `key`, sharing `socket`.
    pub(in crate::proxy::uring) fn new(key: u64, fd: OwnedFd, socket: Arc<Socket>) -> Stream {
        Stream {
            key,
            fd: Some(fd),
            socket,
            receiving: false,
            multishot: false,
            dry: false,
            own: None,
            out: Vec::new(),
            sent: 0,
            sending: false,
            shutting: false,
            cancelling: false,
            inflight: 0,
        }
    }

    /// The socket's descriptor for an operation (-1 once closed, which the loop never submits).
    fn fd(&self) -> types::Fd {
        types::Fd(self.fd.as_ref().map_or(-1, AsRawFd::as_raw_fd))
    }

    /// Leaves what the kernel may still write into or read from (the receive's own buffer, the bytes
    /// being sent) to leak rather than be freed: the loop is being torn down with them in flight.
    pub(super) fn abandon(mut self) {
        if let Some(fd) = &self.fd {
            let _ = rustix::net::shutdown(fd, rustix::net::Shutdown::Both);
        }
        std::mem::forget(self.own.take());
        std::mem::forget(std::mem::take(&mut self.out));
    }
}

impl Drop for Stream {
    /// A socket leaving the loop while its handle lives (the engine stopped) fails the handle's reads
    /// and writes.
    fn drop(&mut self) {
        let mut st = self.socket.lock();
        if !st.dropped {
            st.fail(libc::ECANCELED);
        }
    }
}

impl Loop<'_> {
    /// Takes a socket over: it starts receiving.
    pub(super) fn open(&mut self, stream: Stream) {
        let slot = self.stream_free.pop().unwrap_or_else(|| {
            self.streams.push(None);
            self.streams.len() - 1
        });
        self.stream_keys.insert(stream.key, slot);
        self.shared.stats.sockets.fetch_add(1, Ordering::Relaxed);
        self.streams[slot] = Some(stream);
        self.stream_progress(slot);
    }

    /// The handle of socket `key` asks the loop to look at it.
    pub(super) fn kick(&mut self, key: u64) {
        let Some(&slot) = self.stream_keys.get(&key) else {
            return;
        };
        if let Some(stream) = self.stream(slot) {
            stream.socket.lock().kicked = false;
        }
        self.stream_progress(slot);
    }

    /// The stream in `slot`, if any.
    fn stream(&mut self, slot: usize) -> Option<&mut Stream> {
        self.streams.get_mut(slot).and_then(Option::as_mut)
    }

    /// Submits what the socket in `slot` can do next: send what was written, pass the end of writing
    /// on, receive while there is room; or, with its handle gone, wind down and close.
    fn stream_progress(&mut self, slot: usize) {
        let size = self.bufs.size();
        let receives = self.receives;
        let Some(stream) = self.streams.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let fd = stream.fd();
        let socket = Arc::clone(&stream.socket);
        let mut st = socket.lock();
        if st.dropped {
            drop(st);
            return self.wind_down(slot);
        }
        if !stream.sending && st.error.is_none() && st.write_error.is_none() {
            if stream.out.is_empty() && !st.unsent.is_empty() {
                std::mem::swap(&mut stream.out, &mut st.unsent);
                stream.sent = 0;
                // Room to write again.
                st.wake_writer();
            }
            if let Some(rest) = stream.out.get(stream.sent..).filter(|r| !r.is_empty()) {
                let len = rest.len() as u32;
                let send = opcode::Send::new(fd, rest.as_ptr(), len).flags(libc::MSG_NOSIGNAL);
                self.sqes
                    .push(send.build().user_data(tag(slot, 0, Op::StreamSend)));
                stream.sending = true;
                stream.inflight += 1;
            }
            st.sending = stream.sending;
            if !st.sending {
                st.wake_writer();
                if st.shut == Shut::Wanted && !stream.shutting {
                    let shutdown = opcode::Shutdown::new(fd, libc::SHUT_WR);
                    self.sqes
                        .push(shutdown.build().user_data(tag(slot, 0, Op::StreamShutdown)));
                    stream.shutting = true;
                    stream.inflight += 1;
                }
            }
        }
        let room = QUEUE_LIMIT.saturating_sub(st.unread());
        if !stream.receiving && !st.eof && st.error.is_none() {
            if room == 0 {
                st.paused = true;
                return;
            }
            let recv = if stream.dry {
                self.shared.stats.own.fetch_add(1, Ordering::Relaxed);
                let own = stream.own.insert(
                    self.spares
                        .pop()
                        .unwrap_or_else(|| vec![0; size as usize].into_boxed_slice()),
                );
                recv::single(fd, size.min(room as u32), Some(own.as_mut_ptr()))
            } else if receives == Receives::Capped {
                stream.multishot = true;
                recv::capped(fd, room as u32)
            } else {
                recv::single(fd, size.min(room as u32), None)
            };
            self.sqes.push(recv.user_data(tag(slot, 0, Op::StreamRecv)));
            stream.receiving = true;
            stream.inflight += 1;
        }
    }

    /// The handle is gone: the receive is cancelled, a send in flight ended by shutting the socket
    /// down, and the socket closed once nothing of it is in flight.
    fn wind_down(&mut self, slot: usize) {
        let Some(stream) = self.streams.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if stream.sending {
            if let Some(fd) = &stream.fd {
                let _ = rustix::net::shutdown(fd, rustix::net::Shutdown::Both);
            }
        }
        if stream.receiving && !stream.cancelling {
            stream.cancelling = true;
            stream.inflight += 1;
            let cancel = opcode::AsyncCancel::new(tag(slot, 0, Op::StreamRecv));
            self.sqes
                .push(cancel.build().user_data(tag(slot, 0, Op::StreamCancel)));
        }
        if stream.inflight > 0 {
            return;
        }
        let Some(mut stream) = self.streams[slot].take() else {
            return;
        };
        self.stream_free.push(slot);
        self.stream_keys.remove(&stream.key);
        self.shared.stats.sockets.fetch_sub(1, Ordering::Relaxed);
        if let Some(own) = stream.own.take() {
            give_back(self.bufs, &mut self.spares, Buf::Own(own));
        }
        if let Some(fd) = stream.fd.take() {
            self.close(slot, fd);
        }
    }

    /// Bytes (or the end of the stream, or an error) arrived on the socket in `slot`.
    pub(super) fn stream_received(&mut self, slot: usize, result: i32, flags: u32) {
        let Some(stream) = self.streams.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let ended = !(stream.multishot && cqueue::more(flags));
        let cancelled = ended && stream.cancelling;
        if ended {
            stream.inflight -= 1;
            stream.receiving = false;
            stream.multishot = false;
        }
        let buf = match stream.own.take() {
            Some(own) => {
                stream.dry = false;
                Some(Buf::Own(own))
            }
            None => cqueue::buffer_select(flags).map(Buf::Ring),
        };
        let socket = Arc::clone(&stream.socket);
        let mut st = socket.lock();
        if let Some(buf) = buf {
            if result > 0 && !st.dropped {
                let bytes = match &buf {
                    Buf::Ring(bid) => self.bufs.slice(*bid, 0, result as u32),
                    Buf::Own(own) => &own[..result as usize],
                };
                if st.read_at > 0 && st.read_at >= st.unread() {
                    // Most of the queue was read: what is left moves to the front before it grows.
                    let at = st.read_at;
                    st.received.drain(..at);
                    st.read_at = 0;
                }
                st.received.extend_from_slice(bytes);
                st.wake_reader();
            }
            give_back(self.bufs, &mut self.spares, buf);
        }
        match result {
            0 => {
                st.eof = true;
                st.wake_reader();
            }
            r if r == -libc::ENOBUFS => {
                stream.dry = !self.bufs.grow(BUFFERS_STEP);
                let provided = u64::from(self.bufs.provided());
                self.shared.stats.buffers.store(provided, Ordering::Relaxed);
            }
            r if r == -libc::ECANCELED && cancelled => {}
            r if r < 0 => st.fail(-r),
            _ => {}
        }
        drop(st);
        if ended {
            self.stream_progress(slot);
        }
    }

    /// A send of the socket in `slot` completed.
    pub(super) fn stream_sent(&mut self, slot: usize, result: i32) {
        let Some(stream) = self.stream(slot) else {
            return;
        };
        stream.inflight -= 1;
        stream.sending = false;
        if result > 0 {
            stream.sent += result as usize;
            stream.socket.lock().accepted += result as u64;
            if stream.sent >= stream.out.len() {
                stream.sent = 0;
                if stream.out.capacity() > KEEP {
                    stream.out = Vec::new();
                } else {
                    stream.out.clear();
                }
            }
        } else {
            // A send that moved nothing for bytes it was given cannot go on.
            let errno = if result < 0 { -result } else { libc::EPIPE };
            let mut st = stream.socket.lock();
            st.sending = false;
            st.fail_writes(errno);
        }
        self.stream_progress(slot);
    }

    /// The end of writing (or the cancel of a receive) of the socket in `slot` completed.
    pub(super) fn stream_ended(&mut self, slot: usize, op: Op, result: i32) {
        let Some(stream) = self.stream(slot) else {
            return;
        };
        stream.inflight -= 1;
        if op == Op::StreamShutdown {
            let mut st = stream.socket.lock();
            if result < 0 {
                st.fail_writes(-result);
            } else {
                st.shut = Shut::Done;
                st.wake_writer();
            }
        }
        self.stream_progress(slot);
    }
}
