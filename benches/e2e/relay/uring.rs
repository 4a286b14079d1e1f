//! The relay on io_uring: multishot accept, multishot receive into a provided buffer ring, sends straight
//! from the received buffer, and one `io_uring_enter` (`submit_and_wait`) per loop pass that both submits
//! the pass's new operations and waits for completions.
//!
//! One send at a time per direction keeps bytes in order (two sends in flight on one socket may complete
//! out of order); received buffers queue behind it and go back to the buffer ring once sent. A receive
//! stopped because the ring ran dry (`ENOBUFS`) is started again when buffers come back.

use crate::args::UringOptions;
use crate::net::{backend_socket, Setup, BUF_SIZE};
use io_uring::{cqueue, opcode, squeue, types, IoUring, Submitter};
use sinew::proxy::uring::{build_ring, BufRing, GROUP};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};

/// Submission queue entries; the completion queue is four times as large (multishot operations post many).
const RING_ENTRIES: u32 = 4096;
/// The side of a pair facing the client.
const CLIENT: usize = 0;
/// The side of a pair facing the backend.
const BACKEND: usize = 1;

/// What a completion is for (the low byte of its user data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// The listener's multishot accept.
    Accept,
    /// The backend connection's connect.
    Connect,
    /// A side's multishot receive.
    Recv,
    /// A send of flow `side`'s head buffer to the other side.
    Send,
    /// Flow `side`'s end of stream passed on to the other side.
    Shutdown,
    /// Closing a socket (not waited for).
    Close,
}

impl Op {
    /// Decodes the low byte of a completion's user data.
    fn from_u8(v: u8) -> Option<Op> {
        [
            Op::Accept,
            Op::Connect,
            Op::Recv,
            Op::Send,
            Op::Shutdown,
            Op::Close,
        ]
        .get(usize::from(v))
        .copied()
    }
}

/// User data of an operation: slot, side and kind.
fn tag(slot: usize, side: usize, op: Op) -> u64 {
    (slot as u64) << 16 | (side as u64) << 8 | op as u64
}

/// A received buffer, or what is left of it to send.
struct Chunk {
    /// Buffer id in the buffer ring.
    bid: u16,
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
    /// A send is in flight.
    sending: bool,
    /// The multishot receive is armed.
    receiving: bool,
    /// The reading side has ended its stream.
    eof: bool,
    /// The end of stream has been passed on (the shutdown is submitted).
    shut: bool,
}

/// A client connection and its backend connection; `flows[s]` carries bytes received from `fds[s]`.
struct Pair {
    /// The client's and the backend's socket.
    fds: [OwnedFd; 2],
    /// Client to backend, backend to client.
    flows: [Flow; 2],
    /// Operations submitted and not finished; the pair is freed only at zero, so no late completion
    /// can reach a reused slot.
    inflight: u32,
    /// An error closes the pair: both sockets are shut down to end the operations in flight.
    failed: bool,
}

/// The io_uring loop's state.
struct Relay<'r> {
    /// The ring.
    ring: &'r IoUring,
    /// The ring's submitter, kept for the loop's life as it remembers the registered ring descriptor.
    submitter: Submitter<'r>,
    /// The provided buffers.
    bufs: &'r mut BufRing,
    /// The listener and backends.
    setup: Setup,
    /// Backend addresses as the kernel reads them; stable while a connect may read them.
    addrs: Vec<(SocketAddrV4, libc::sockaddr_in)>,
    /// Pairs by slot; `None` is a free slot.
    pairs: Vec<Option<Pair>>,
    /// Free slots.
    free: Vec<usize>,
    /// Operations to submit at the end of this pass.
    sqes: Vec<squeue::Entry>,
    /// Receives stopped by an empty buffer ring, to start again.
    starved: Vec<(usize, usize)>,
}

/// Runs the relay on io_uring until a fatal error of the loop itself.
pub fn run(setup: Setup, options: &UringOptions) -> io::Result<()> {
    // The buffers first, so that they are dropped after the ring.
    let mut bufs = BufRing::new(options.bufs, BUF_SIZE, options.bufs)?;
    let (ring, flags) = build_ring(RING_ENTRIES, options.defer)?;
    bufs.register(&ring)?;
    let mut submitter = ring.submitter();
    if options.ring_fd {
        submitter.register_ring_fd()?;
    }
    eprintln!(
        "relay: io_uring with {flags}, {} provided buffers, ring fd {}registered, listening",
        options.bufs,
        if options.ring_fd { "" } else { "not " }
    );
    let addrs = setup.backends.iter().map(|a| (*a, sockaddr(*a))).collect();
    let mut relay = Relay {
        ring: &ring,
        submitter,
        bufs: &mut bufs,
        setup,
        addrs,
        pairs: Vec::new(),
        free: Vec::new(),
        sqes: Vec::new(),
        starved: Vec::new(),
    };
    relay.arm_accept();
    let mut completions = Vec::with_capacity(RING_ENTRIES as usize);
    loop {
        relay.submit()?;
        match relay.submitter.submit_and_wait(1) {
            Ok(_) => {}
            Err(e)
                if e.raw_os_error() == Some(libc::EINTR)
                    || e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(e),
        }
        completions.clear();
        // SAFETY: this loop is the only reader of the completion queue.
        let cq = unsafe { relay.ring.completion_shared() };
        completions.extend(cq.map(|c| (c.user_data(), c.result(), c.flags())));
        for &(data, result, flags) in &completions {
            relay.complete(data, result, flags);
        }
        relay.restart_starved();
        relay.bufs.publish();
    }
}

/// The kernel's form of an IPv4 address.
fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

impl Relay<'_> {
    /// Moves this pass's operations into the submission queue, entering the kernel early only if it is full.
    fn submit(&mut self) -> io::Result<()> {
        for sqe in self.sqes.drain(..) {
            // SAFETY: every buffer and address an entry points to outlives its operation: buffers are
            // given back only after their send completes, addresses live in `self.addrs`.
            // SAFETY (the queue): this loop is the only writer of the submission queue, and the
            // queue value is dropped (syncing the tail) before the kernel is entered.
            while unsafe { self.ring.submission_shared().push(&sqe) }.is_err() {
                self.submitter.submit()?;
            }
        }
        Ok(())
    }

    /// Starts (or restarts) the listener's multishot accept.
    fn arm_accept(&mut self) {
        let fd = types::Fd(self.setup.listener.as_raw_fd());
        self.sqes.push(
            opcode::AcceptMulti::new(fd)
                .build()
                .user_data(tag(0, 0, Op::Accept)),
        );
    }

    /// Handles one completion.
    fn complete(&mut self, data: u64, result: i32, flags: u32) {
        let (slot, side) = ((data >> 16) as usize, ((data >> 8) & 1) as usize);
        match Op::from_u8(data as u8) {
            Some(Op::Accept) => self.accepted(result, flags),
            Some(Op::Connect) => self.connected(slot, result),
            Some(Op::Recv) => self.received(slot, side, result, flags),
            Some(Op::Send) => self.sent(slot, side, result),
            Some(Op::Shutdown) => self.finish_op(slot, (result < 0).then_some(result)),
            Some(Op::Close) | None => {}
        }
    }

    /// A client was accepted (or the accept failed): open its backend connection.
    fn accepted(&mut self, result: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.arm_accept();
        }
        if result < 0 {
            eprintln!("relay: accept: {}", io::Error::from_raw_os_error(-result));
            return;
        }
        // SAFETY: a non-negative accept result is a new descriptor that nothing else owns.
        let client = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(result) };
        if let Err(e) = self.open(client) {
            eprintln!("relay: cannot open a backend connection: {e}");
        }
    }

    /// Creates the backend socket and submits its connect.
    fn open(&mut self, client: OwnedFd) -> io::Result<()> {
        rustix::net::sockopt::set_tcp_nodelay(&client, true)?;
        let backend = backend_socket(false)?;
        let pick = self.setup.pick();
        let index = self.addrs.iter().position(|(a, _)| *a == pick).unwrap_or(0);
        let addr = &self.addrs[index].1;
        let slot = self.free.pop().unwrap_or_else(|| {
            self.pairs.push(None);
            self.pairs.len() - 1
        });
        let connect = opcode::Connect::new(
            types::Fd(backend.as_raw_fd()),
            (addr as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        self.sqes
            .push(connect.build().user_data(tag(slot, BACKEND, Op::Connect)));
        self.pairs[slot] = Some(Pair {
            fds: [client, backend],
            flows: [Flow::default(), Flow::default()],
            inflight: 1,
            failed: false,
        });
        Ok(())
    }

    /// The backend connection is up: start receiving on both sides.
    fn connected(&mut self, slot: usize, result: i32) {
        if result < 0 {
            self.finish_op(slot, Some(result));
            return;
        }
        for side in [CLIENT, BACKEND] {
            self.arm_recv(slot, side);
        }
        self.finish_op(slot, None);
    }

    /// Starts side `side`'s multishot receive.
    fn arm_recv(&mut self, slot: usize, side: usize) {
        let Some(pair) = self.pairs.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if pair.failed || pair.flows[side].eof || pair.flows[side].receiving {
            return;
        }
        pair.flows[side].receiving = true;
        pair.inflight += 1;
        let fd = types::Fd(pair.fds[side].as_raw_fd());
        self.sqes
            .push(
                opcode::RecvMulti::new(fd, GROUP)
                    .build()
                    .user_data(tag(slot, side, Op::Recv)),
            );
    }

    /// Bytes (or an end of stream, or an error) arrived on side `side`.
    fn received(&mut self, slot: usize, side: usize, result: i32, flags: u32) {
        let Some(pair) = self.pairs.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let more = cqueue::more(flags);
        let flow = &mut pair.flows[side];
        if let Some(bid) = cqueue::buffer_select(flags) {
            if result > 0 && !pair.failed {
                flow.queue.push_back(Chunk {
                    bid,
                    off: 0,
                    len: result as u32,
                });
            } else {
                self.bufs.give_back(bid);
            }
        }
        let mut error = None;
        match result {
            0 => flow.eof = true,
            r if r == -libc::ENOBUFS => self.starved.push((slot, side)),
            r if r < 0 => error = Some(r),
            _ => {}
        }
        if !more {
            flow.receiving = false;
            self.progress(slot, side);
            self.finish_op(slot, error);
        } else {
            self.progress(slot, side);
        }
    }

    /// A send of flow `side`'s head buffer completed.
    fn sent(&mut self, slot: usize, side: usize, result: i32) {
        let Some(pair) = self.pairs.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let flow = &mut pair.flows[side];
        flow.sending = false;
        if result > 0 {
            if let Some(head) = flow.queue.front_mut() {
                head.off += result as u32;
                head.len = head.len.saturating_sub(result as u32);
                if head.len == 0 {
                    self.bufs.give_back(head.bid);
                    flow.queue.pop_front();
                }
            }
        }
        self.progress(slot, side);
        self.finish_op(slot, (result < 0).then_some(result));
    }

    /// Submits flow `side`'s next send, or passes on its end of stream once everything is sent.
    fn progress(&mut self, slot: usize, side: usize) {
        let Some(pair) = self.pairs.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if pair.failed {
            return;
        }
        let to = types::Fd(pair.fds[1 - side].as_raw_fd());
        let flow = &mut pair.flows[side];
        if flow.sending {
            return;
        }
        if let Some(head) = flow.queue.front() {
            let bytes = self.bufs.slice(head.bid, head.off, head.len);
            let send = opcode::Send::new(to, bytes.as_ptr(), head.len).flags(libc::MSG_NOSIGNAL);
            self.sqes
                .push(send.build().user_data(tag(slot, side, Op::Send)));
            flow.sending = true;
            pair.inflight += 1;
        } else if flow.eof && !flow.shut {
            let shutdown = opcode::Shutdown::new(to, libc::SHUT_WR);
            self.sqes
                .push(shutdown.build().user_data(tag(slot, side, Op::Shutdown)));
            flow.shut = true;
            pair.inflight += 1;
        }
    }

    /// Counts an operation of the pair as finished, with its error if it failed; closes the pair when
    /// nothing is left in flight and both directions are done (or it failed).
    fn finish_op(&mut self, slot: usize, error: Option<i32>) {
        let Some(pair) = self.pairs.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        pair.inflight = pair.inflight.saturating_sub(1);
        if let Some(e) = error {
            if !pair.failed {
                eprintln!("relay: pair closed: {}", io::Error::from_raw_os_error(-e));
                pair.failed = true;
                // End the receives and sends still in flight on both sockets; they complete at once.
                for fd in &pair.fds {
                    let _ = rustix::net::shutdown(fd, rustix::net::Shutdown::Both);
                }
            }
        }
        let done = pair.flows.iter().all(|f| f.shut);
        if pair.inflight > 0 || !(done || pair.failed) {
            return;
        }
        if let Some(pair) = self.pairs[slot].take() {
            for flow in pair.flows {
                for chunk in flow.queue {
                    self.bufs.give_back(chunk.bid);
                }
            }
            for fd in pair.fds {
                let raw: RawFd = fd.into_raw_fd();
                self.sqes
                    .push(opcode::Close::new(types::Fd(raw)).build().user_data(tag(
                        slot,
                        0,
                        Op::Close,
                    )));
            }
            self.free.push(slot);
        }
    }

    /// Restarts the receives that stopped for want of buffers, now that some may be back.
    fn restart_starved(&mut self) {
        if self.starved.is_empty() || !self.bufs.returning() {
            return;
        }
        let starved = std::mem::take(&mut self.starved);
        for (slot, side) in starved {
            self.arm_recv(slot, side);
        }
    }
}
