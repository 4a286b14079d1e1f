//! The engine's loop: one ring, the connections handed to it, and the bytes moved between each
//! connection's two sockets.
//!
//! Per direction, one receive is in flight while fewer than [`QUEUED`] received buffers wait to be
//! sent, and one send at a time (two sends in flight on one socket may complete out of order). So a
//! slow reader holds at most two buffers, and stops its peer's receives, as the copy loop does. Where
//! the kernel caps multishot receives (see `recv`), the receive stays armed across arrivals, capped at
//! the bytes two buffers hold less what waits, and is cancelled once two buffers wait (small arrivals
//! take a buffer each, and the kernel may take many before the loop sees them); a direction whose send
//! once came back short (a reader slower than its writer) receives single-shot from then on, so a slow
//! reader costs no burst after the first. Elsewhere every receive is single-shot. A
//! receive that finds the shared buffer ring empty is submitted again once the ring has grown, or,
//! at its full size (hundreds of slow readers hold it), with a buffer of the direction's own, so no
//! connection waits for another's reader; the next receive tries the ring again. Receives wait for
//! readiness first (`IORING_RECVSEND_POLL_FIRST`): after a request the answer is rarely there yet, and
//! a receive tried at once would fail and then wait anyway.
//!
//! A direction that reaches its end of stream, once everything before it was sent, shuts its writer
//! down (a half-close passed on), unless the other direction is done already: then both sockets are
//! closed, and the close sends that FIN. An error, or a cancel from the connection's task, shuts both
//! sockets down so every operation in flight ends at once; a pair is freed only when none is in flight,
//! so no late completion can reach a reused slot.

mod streams;

pub(super) use streams::Stream;

use super::bufring::BufRing;
use super::recv::{self, Receives};
use super::{Command, Shared, Start, Wake, BUFFERS_STEP};
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::time::Instant;

/// The side of a pair facing the client.
const CLIENT: usize = 0;
/// The side of a pair facing the backend.
const BACKEND: usize = 1;
/// Received buffers one direction holds at most; its next receive waits until it holds fewer.
const QUEUED: usize = 2;
/// Own buffers kept for reuse once the ring is dry again.
const SPARES: usize = 64;

/// What a completion is for (the low byte of its user data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// The wake-up descriptor's read: commands are waiting.
    Wake,
    /// A receive on side `side`.
    Recv,
    /// A send of flow `side`'s head buffer to the other side.
    Send,
    /// Flow `side`'s end of stream passed on to the other side.
    Shutdown,
    /// Closing a socket (not waited for).
    Close,
    /// Cancelling flow `side`'s multishot receive (its buffers are full).
    Cancel,
    /// A receive on a stream socket.
    StreamRecv,
    /// A send on a stream socket.
    StreamSend,
    /// A stream socket's end of writing.
    StreamShutdown,
    /// Cancelling a stream socket's receive (its handle is gone).
    StreamCancel,
}

impl Op {
    /// Decodes the low byte of a completion's user data.
    fn from_u8(v: u8) -> Option<Op> {
        [
            Op::Wake,
            Op::Recv,
            Op::Send,
            Op::Shutdown,
            Op::Close,
            Op::Cancel,
            Op::StreamRecv,
            Op::StreamSend,
            Op::StreamShutdown,
            Op::StreamCancel,
        ]
        .get(usize::from(v))
        .copied()
    }
}

/// User data of an operation: slot, side and kind.
fn tag(slot: usize, side: usize, op: Op) -> u64 {
    (slot as u64) << 16 | (side as u64) << 8 | op as u64
}

/// Where received bytes are.
enum Buf {
    /// A buffer of the buffer ring, by id.
    Ring(u16),
    /// A buffer of the direction's own (the ring was dry).
    Own(Box<[u8]>),
}

/// A received buffer, or what is left of it to send.
struct Chunk {
    /// The buffer.
    buf: Buf,
    /// First byte not yet sent.
    off: u32,
    /// Bytes left.
    len: u32,
}

/// One direction of a pair: buffers received from one side, queued for the other.
#[derive(Default)]
struct Flow {
    /// Received, not yet fully sent; the head is being sent when `sending`.
    queue: VecDeque<Chunk>,
    /// A receive is in flight.
    receiving: bool,
    /// The receive in flight is a multishot one.
    multishot: bool,
    /// A cancel of the multishot receive is in flight.
    cancelling: bool,
    /// A send of this direction once came back short (its reader is slower than its writer): its
    /// receives are single-shot from then on.
    held: bool,
    /// A send is in flight.
    sending: bool,
    /// The reading side has ended its stream.
    eof: bool,
    /// The end of stream has been dealt with: passed on, or left to the close.
    shut: bool,
    /// The last receive found the buffer ring empty: the next uses a buffer of its own.
    dry: bool,
    /// The own buffer of the receive in flight, if it has one.
    own: Option<Box<[u8]>>,
}

impl Flow {
    /// Everything up to the end of stream has been sent on.
    fn drained(&self) -> bool {
        self.eof && self.queue.is_empty() && !self.sending
    }
}

/// A connection: its task's hand-off, and `flows[s]` carrying bytes received from `fds[s]`.
struct Pair {
    /// The sockets, counters and reply channel.
    start: Box<Start>,
    /// Client to backend, backend to client.
    flows: [Flow; 2],
    /// Operations submitted and not finished.
    inflight: u32,
    /// The first error (an errno), after which the pair only winds down.
    error: Option<i32>,
}

/// The loop's state.
pub(super) struct Loop<'r> {
    /// The ring.
    ring: &'r IoUring,
    /// The provided buffers.
    bufs: &'r mut BufRing,
    /// How receives are issued.
    receives: Receives,
    /// The command queue and wake-up descriptor shared with the connections' tasks.
    shared: Arc<Shared>,
    /// Pairs by slot; `None` is a free slot.
    pairs: Vec<Option<Pair>>,
    /// Free slots.
    free: Vec<usize>,
    /// Slots by the key their task knows them by (for cancels).
    keys: HashMap<u64, usize>,
    /// Stream sockets by slot; `None` is a free slot.
    streams: Vec<Option<Stream>>,
    /// Free stream slots.
    stream_free: Vec<usize>,
    /// Stream slots by their handle's key.
    stream_keys: HashMap<u64, usize>,
    /// Operations to submit at the end of this pass.
    sqes: Vec<squeue::Entry>,
    /// Own buffers to reuse.
    spares: Vec<Box<[u8]>>,
    /// Where the wake-up descriptor's counter is read into.
    wake: Box<[u8; 8]>,
    /// When this pass began.
    now: Instant,
}

impl<'r> Loop<'r> {
    /// A loop on `ring` with `bufs` registered, issuing `receives`, taking commands from `shared`.
    pub(super) fn new(
        ring: &'r IoUring,
        bufs: &'r mut BufRing,
        receives: Receives,
        shared: Arc<Shared>,
    ) -> Self {
        Loop {
            ring,
            bufs,
            receives,
            shared,
            pairs: Vec::new(),
            free: Vec::new(),
            keys: HashMap::new(),
            streams: Vec::new(),
            stream_free: Vec::new(),
            stream_keys: HashMap::new(),
            sqes: Vec::new(),
            spares: Vec::new(),
            wake: Box::new([0; 8]),
            now: Instant::now(),
        }
    }

    /// Runs on its own thread until the ring itself fails; then ends every connection on it (the
    /// loop's drop). Tasks wake it through the wake-up descriptor, which the ring reads.
    pub(super) fn run(mut self) -> io::Error {
        self.arm_wake();
        let mut completions = Vec::with_capacity(1024);
        loop {
            if let Err(e) = self.submit() {
                return e;
            }
            if let Err(e) = self.enter(1) {
                return e;
            }
            self.reap(&mut completions);
        }
    }

    /// Submits this pass's operations and, if `wait`, waits for at least that many completions.
    pub(super) fn enter(&mut self, wait: usize) -> io::Result<()> {
        match self.ring.submitter().submit_and_wait(wait) {
            Ok(_) => Ok(()),
            Err(e) if transient(&e) => Ok(()),
            // A completion was lost (the kernel could not queue an overflow): a connection it
            // belonged to may wait until its task's idle timeout cancels it; the rest go on.
            Err(e) if e.raw_os_error() == Some(libc::EBADR) => {
                tracing::warn!(error = %e, "io_uring engine: a completion was dropped");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Handles every completion waiting, then provides the buffers they gave back; returns how many
    /// there were. `completions` is scratch space, kept between passes.
    pub(super) fn reap(&mut self, completions: &mut Vec<(u64, i32, u32)>) -> usize {
        self.now = Instant::now();
        completions.clear();
        // SAFETY: this loop is the only reader of the completion queue.
        let cq = unsafe { self.ring.completion_shared() };
        completions.extend(cq.map(|c| (c.user_data(), c.result(), c.flags())));
        for &(data, result, flags) in completions.iter() {
            self.complete(data, result, flags);
        }
        self.bufs.publish();
        completions.len()
    }

    /// The kernel should be entered even with nothing new to submit: entries wait in the submission
    /// queue (a transient failure left them there), or completions wait in its overflow list.
    pub(super) fn owes_enter(&self) -> bool {
        // SAFETY: this loop is the only user of the submission queue; the value only reads it.
        let sq = unsafe { self.ring.submission_shared() };
        !sq.is_empty() || sq.cq_overflow()
    }

    /// Operations are waiting to be submitted.
    pub(super) fn submitting(&self) -> bool {
        !self.sqes.is_empty()
    }

    /// Moves this pass's operations into the submission queue, entering the kernel early only if it
    /// is full, and returns how many it moved. When the kernel cannot take more for now, the rest
    /// waits for the next pass, after this one's completions are reaped.
    pub(super) fn submit(&mut self) -> io::Result<usize> {
        let mut pushed = 0;
        while let Some(sqe) = self.sqes.get(pushed) {
            // SAFETY: every buffer an entry points to outlives its operation: received buffers are
            // given back only after their send completes, the wake-up buffer lives in `self.wake`.
            // This loop is the only writer of the submission queue, and the queue value is dropped
            // (syncing the tail) before the kernel is entered.
            if unsafe { self.ring.submission_shared().push(sqe) }.is_ok() {
                pushed += 1;
                continue;
            }
            match self.ring.submitter().submit() {
                Ok(n) if n > 0 => {}
                Ok(_) => break,
                Err(e) if transient(&e) => break,
                Err(e) => return Err(e),
            }
        }
        self.sqes.drain(..pushed);
        Ok(pushed)
    }

    /// Ends every connection still on the loop (the ring failed, or the runtime the loop ran on
    /// ended): their sockets are shut down and closed and their tasks answered with an error. Buffers
    /// the kernel may still write into until the ring is torn down (the connections' own ones, the
    /// wake-up buffer) are leaked rather than freed; the buffer ring is leaked likewise (`Parts`).
    fn abandon(&mut self) {
        for pair in self.pairs.drain(..).flatten() {
            let Pair { start, flows, .. } = pair;
            for fd in &start.fds {
                let _ = rustix::net::shutdown(fd, rustix::net::Shutdown::Both);
            }
            for flow in flows {
                std::mem::forget(flow.own);
                for chunk in flow.queue {
                    std::mem::forget(chunk.buf);
                }
            }
            // Dropping `start` closes the sockets (operations in flight hold their own references)
            // and answers the task.
        }
        for stream in self.streams.drain(..).flatten() {
            stream.abandon();
        }
        std::mem::forget(std::mem::take(&mut self.wake));
    }

    /// Reads the wake-up descriptor: completes when a task has queued commands.
    fn arm_wake(&mut self) {
        let Wake::Eventfd(wake) = &self.shared.wake else {
            return;
        };
        let fd = types::Fd(wake.as_raw_fd());
        let read = opcode::Read::new(fd, self.wake.as_mut_ptr(), 8);
        self.sqes.push(read.build().user_data(tag(0, 0, Op::Wake)));
    }

    /// Handles one completion.
    fn complete(&mut self, data: u64, result: i32, flags: u32) {
        let (slot, side) = ((data >> 16) as usize, ((data >> 8) & 1) as usize);
        match Op::from_u8(data as u8) {
            Some(Op::Wake) => {
                self.arm_wake();
                self.commands();
            }
            Some(Op::Recv) => self.received(slot, side, result, flags),
            Some(Op::Send) => self.sent(slot, side, result),
            Some(Op::Cancel) => {
                if let Some(pair) = self.pair(slot) {
                    pair.inflight -= 1;
                }
                self.settle(slot);
            }
            Some(Op::Shutdown) => {
                if let Some(pair) = self.pair(slot) {
                    pair.inflight -= 1;
                }
                if result < 0 {
                    self.fail(slot, -result);
                }
                self.settle(slot);
            }
            Some(Op::StreamRecv) => self.stream_received(slot, result, flags),
            Some(Op::StreamSend) => self.stream_sent(slot, result),
            Some(op @ (Op::StreamShutdown | Op::StreamCancel)) => {
                self.stream_ended(slot, op, result)
            }
            Some(Op::Close) | None => {}
        }
    }

    /// Takes the commands the tasks queued.
    pub(super) fn commands(&mut self) {
        // Cleared before the queue is taken: a command queued after this writes the descriptor again.
        self.shared.pending.store(false, Ordering::SeqCst);
        let commands = std::mem::take(&mut *self.shared.lock());
        for command in commands {
            match command {
                Command::Start(start) => self.start(start),
                Command::Cancel(key) => {
                    let Some(&slot) = self.keys.get(&key) else {
                        continue;
                    };
                    // Both directions ended already: only their last operations are in flight.
                    let ended = self
                        .pair(slot)
                        .is_some_and(|p| p.flows.iter().all(|f| f.shut));
                    if !ended {
                        self.fail(slot, libc::ECANCELED);
                    }
                    self.settle(slot);
                }
                Command::Open(stream) => self.open(*stream),
                Command::Kick(key) => self.kick(key),
            }
        }
    }

    /// Takes a connection over: both directions start receiving.
    fn start(&mut self, start: Box<Start>) {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.pairs.push(None);
            self.pairs.len() - 1
        });
        self.keys.insert(start.key, slot);
        self.shared
            .stats
            .connections
            .fetch_add(1, Ordering::Relaxed);
        self.pairs[slot] = Some(Pair {
            start,
            flows: [Flow::default(), Flow::default()],
            inflight: 0,
            error: None,
        });
        self.progress(slot, CLIENT);
        self.progress(slot, BACKEND);
    }

    /// The pair in `slot`, if any.
    fn pair(&mut self, slot: usize) -> Option<&mut Pair> {
        self.pairs.get_mut(slot).and_then(Option::as_mut)
    }

    /// Bytes (or an end of stream, or an error) arrived on side `side`.
    fn received(&mut self, slot: usize, side: usize, result: i32, flags: u32) {
        let now = self.now;
        let Some(pair) = self.pairs.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let flow = &mut pair.flows[side];
        // A multishot receive goes on after this arrival unless the kernel says it ended.
        let ended = !(flow.multishot && cqueue::more(flags));
        let cancelled = ended && flow.cancelling;
        if ended {
            pair.inflight -= 1;
            flow.receiving = false;
            flow.multishot = false;
            flow.cancelling = false;
        }
        let buf = match flow.own.take() {
            Some(own) => {
                flow.dry = false;
                Some(Buf::Own(own))
            }
            None => cqueue::buffer_select(flags).map(Buf::Ring),
        };
        if let Some(buf) = buf {
            if result > 0 && pair.error.is_none() {
                flow.queue.push_back(Chunk {
                    buf,
                    off: 0,
                    len: result as u32,
                });
                pair.start.progress.received(side, result as u64, now);
            } else {
                give_back(self.bufs, &mut self.spares, buf);
            }
        }
        match result {
            0 => flow.eof = true,
            // The ring grows while it can; past that, this direction uses a buffer of its own.
            r if r == -libc::ENOBUFS => {
                flow.dry = !self.bufs.grow(BUFFERS_STEP);
                let provided = u64::from(self.bufs.provided());
                self.shared.stats.buffers.store(provided, Ordering::Relaxed);
            }
            // The cancel this loop asked for (its buffers are full): not an error.
            r if r == -libc::ECANCELED && cancelled => {}
            r if r < 0 => self.fail(slot, -r),
            _ => {}
        }
        self.progress(slot, side);
        self.settle(slot);
    }

    /// A send of flow `side`'s head buffer completed.
    fn sent(&mut self, slot: usize, side: usize, result: i32) {
        let now = self.now;
        let Some(pair) = self.pairs.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        pair.inflight -= 1;
        let flow = &mut pair.flows[side];
        flow.sending = false;
        if result > 0 {
            pair.start.progress.touch(now);
            if let Some(head) = flow.queue.front_mut() {
                flow.held |= (result as u32) < head.len;
                head.off += result as u32;
                head.len = head.len.saturating_sub(result as u32);
                if head.len == 0 {
                    if let Some(chunk) = flow.queue.pop_front() {
                        give_back(self.bufs, &mut self.spares, chunk.buf);
                    }
                }
            }
        } else {
            // A send that moved nothing for bytes it was given cannot go on.
            self.fail(slot, if result < 0 { -result } else { libc::EPIPE });
        }
        self.progress(slot, side);
        self.settle(slot);
    }

    /// Submits what flow `side` can do next: send its head buffer, receive more, or pass its end of
    /// stream on once everything before it is sent.
    fn progress(&mut self, slot: usize, side: usize) {
        let Some(pair) = self.pairs.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if pair.error.is_some() {
            return;
        }
        let from = types::Fd(pair.start.fds[side].as_raw_fd());
        let to = types::Fd(pair.start.fds[1 - side].as_raw_fd());
        let other_drained = pair.flows[1 - side].drained();
        let flow = &mut pair.flows[side];
        if !flow.sending {
            if let Some(head) = flow.queue.front() {
                let bytes = match &head.buf {
                    Buf::Ring(bid) => self.bufs.slice(*bid, head.off, head.len),
                    Buf::Own(own) => &own[head.off as usize..(head.off + head.len) as usize],
                };
                let send =
                    opcode::Send::new(to, bytes.as_ptr(), head.len).flags(libc::MSG_NOSIGNAL);
                self.sqes
                    .push(send.build().user_data(tag(slot, side, Op::Send)));
                flow.sending = true;
                pair.inflight += 1;
            }
        }
        if !flow.receiving && !flow.eof && flow.queue.len() < QUEUED {
            let size = self.bufs.size();
            let recv = if flow.dry {
                self.shared.stats.own.fetch_add(1, Ordering::Relaxed);
                let own = flow.own.insert(
                    self.spares
                        .pop()
                        .unwrap_or_else(|| vec![0; size as usize].into_boxed_slice()),
                );
                recv::single(from, size, Some(own.as_mut_ptr()))
            } else if self.receives == Receives::Capped && !flow.held {
                // What two buffers hold, less what waits: at least one buffer's worth.
                let waiting: u32 = flow.queue.iter().map(|c| c.len).sum();
                flow.multishot = true;
                recv::capped(from, (size * QUEUED as u32).saturating_sub(waiting).max(1))
            } else {
                recv::single(from, size, None)
            };
            self.sqes.push(recv.user_data(tag(slot, side, Op::Recv)));
            flow.receiving = true;
            pair.inflight += 1;
        } else if flow.multishot && !flow.cancelling && flow.queue.len() >= QUEUED {
            // Small arrivals take a buffer each, and the kernel may take many between two passes of
            // this loop: the armed receive stops once two wait.
            let cancel = opcode::AsyncCancel::new(tag(slot, side, Op::Recv));
            self.sqes
                .push(cancel.build().user_data(tag(slot, side, Op::Cancel)));
            flow.cancelling = true;
            pair.inflight += 1;
        }
        if flow.drained() && !flow.shut {
            flow.shut = true;
            // The direction that ends last leaves its FIN to the close that follows.
            if !other_drained {
                let shutdown = opcode::Shutdown::new(to, libc::SHUT_WR);
                self.sqes
                    .push(shutdown.build().user_data(tag(slot, side, Op::Shutdown)));
                pair.inflight += 1;
            }
        }
    }

    /// Records the pair's first error and shuts both sockets down, so that every operation in flight
    /// ends at once.
    fn fail(&mut self, slot: usize, errno: i32) {
        let Some(pair) = self.pair(slot) else {
            return;
        };
        if pair.error.is_some() {
            return;
        }
        pair.error = Some(errno);
        for fd in &pair.start.fds {
            let _ = rustix::net::shutdown(fd, rustix::net::Shutdown::Both);
        }
    }

    /// Frees the pair once nothing of it is in flight and it is done (both directions passed their end
    /// on) or failed: its sockets are closed and its task told how it ended.
    fn settle(&mut self, slot: usize) {
        let Some(pair) = self.pair(slot) else {
            return;
        };
        let done = pair.flows.iter().all(|f| f.shut);
        if pair.inflight > 0 || !(done || pair.error.is_some()) {
            return;
        }
        let Some(pair) = self.pairs[slot].take() else {
            return;
        };
        self.free.push(slot);
        for flow in pair.flows {
            for chunk in flow.queue {
                give_back(self.bufs, &mut self.spares, chunk.buf);
            }
        }
        let Start { key, fds, done, .. } = *pair.start;
        self.keys.remove(&key);
        self.shared
            .stats
            .connections
            .fetch_sub(1, Ordering::Relaxed);
        for fd in fds {
            self.close(slot, fd);
        }
        // The task may be gone (cancelled): then nobody waits for the answer.
        let _ = done.send(pair.error.map_or(Ok(()), Err));
    }
}

impl Drop for Loop<'_> {
    fn drop(&mut self) {
        self.abandon();
    }
}

impl Loop<'_> {
    /// Closes `fd` of `slot` with this pass's operations (not waited for).
    fn close(&mut self, slot: usize, fd: OwnedFd) {
        let close = opcode::Close::new(types::Fd(fd.into_raw_fd()));
        self.sqes
            .push(close.build().user_data(tag(slot, 0, Op::Close)));
    }
}

/// An error of `io_uring_enter` that the next pass can get past.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
    )
}

/// Returns a buffer: to the ring, or an own one to the spares (within [`SPARES`]).
fn give_back(bufs: &mut BufRing, spares: &mut Vec<Box<[u8]>>, buf: Buf) {
    match buf {
        Buf::Ring(bid) => bufs.give_back(bid),
        Buf::Own(own) if spares.len() < SPARES => spares.push(own),
        Buf::Own(_) => {}
    }
}
