//! The relay on epoll: level-triggered readiness, non-blocking sockets, one buffer per direction.
//!
//! A readable socket is read once per event (the level trigger reports it again if more is left), and
//! what was read is sent to the peer at once; only a send that would block arms interest in
//! writability, and only then is the reading side paused, so a request/response costs one
//! `epoll_wait`, one `recv` and one `send` per direction and no `epoll_ctl`.

use crate::net::{backend_socket, Setup, BUF_SIZE};
use rustix::event::epoll::{self, EventData, EventFlags};
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags, Shutdown, SocketFlags};
use std::io;
use std::os::fd::{AsFd, OwnedFd};

/// The epoll token of the listening socket; a pair's sockets are `slot << 1 | side`.
const LISTENER: u64 = u64::MAX;
/// The side of a pair facing the client.
const CLIENT: usize = 0;
/// The side of a pair facing the backend.
const BACKEND: usize = 1;

/// One direction of a pair: bytes read from one side, not yet sent to the other.
struct Flow {
    /// The buffer.
    buf: Box<[u8]>,
    /// The first byte not yet sent.
    start: usize,
    /// One past the last byte read.
    end: usize,
    /// The reading side has ended its stream.
    eof: bool,
    /// The end of stream has been passed on with `shutdown(Write)`.
    shut: bool,
}

impl Flow {
    /// An empty direction.
    fn new() -> Flow {
        Flow {
            buf: vec![0; BUF_SIZE].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
            shut: false,
        }
    }

    /// Whether bytes wait to be sent.
    fn pending(&self) -> bool {
        self.start < self.end
    }
}

/// A client connection and its backend connection; `flows[s]` carries bytes read from `fds[s]`.
struct Pair {
    /// The client's and the backend's socket.
    fds: [OwnedFd; 2],
    /// The interest each socket is registered with.
    interest: [EventFlags; 2],
    /// Client to backend, backend to client.
    flows: [Flow; 2],
    /// The backend connection is not yet established.
    connecting: bool,
}

impl Pair {
    /// The interest side `s` needs now.
    fn wanted(&self, s: usize) -> EventFlags {
        let mut want = EventFlags::empty();
        let reading = &self.flows[s];
        if !reading.eof && !reading.pending() {
            want |= EventFlags::IN;
        }
        if self.flows[1 - s].pending() || (s == BACKEND && self.connecting) {
            want |= EventFlags::OUT;
        }
        want
    }

    /// Whether both directions have ended and been passed on.
    fn finished(&self) -> bool {
        self.flows.iter().all(|f| f.shut)
    }
}

/// The epoll loop's state.
struct Relay {
    /// The epoll instance.
    epoll: OwnedFd,
    /// The listener and backends.
    setup: Setup,
    /// Pairs by slot; `None` is a free slot.
    pairs: Vec<Option<Pair>>,
    /// Free slots.
    free: Vec<usize>,
}

/// Runs the relay on epoll until a fatal error of the loop itself.
pub fn run(setup: Setup) -> io::Result<()> {
    let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    epoll::add(
        &epoll,
        &setup.listener,
        EventData::new_u64(LISTENER),
        EventFlags::IN,
    )?;
    eprintln!("relay: epoll, level-triggered, listening");
    let mut relay = Relay {
        epoll,
        setup,
        pairs: Vec::new(),
        free: Vec::new(),
    };
    let mut events = Vec::with_capacity(256);
    loop {
        events.clear();
        match epoll::wait(
            &relay.epoll,
            rustix::buffer::spare_capacity(&mut events),
            None,
        ) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        for event in &events {
            let token = event.data.u64();
            if token == LISTENER {
                relay.accept();
            } else {
                relay.ready((token >> 1) as usize, (token & 1) as usize, event.flags);
            }
        }
    }
}

impl Relay {
    /// Accepts the waiting clients (a bounded batch; the level trigger reports the rest).
    fn accept(&mut self) {
        for _ in 0..64 {
            match rustix::net::accept_with(
                &self.setup.listener,
                SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            ) {
                Ok(client) => {
                    if let Err(e) = self.open(client) {
                        eprintln!("relay: cannot open a backend connection: {e}");
                    }
                }
                Err(Errno::AGAIN) => return,
                Err(Errno::INTR | Errno::CONNABORTED) => {}
                Err(e) => {
                    eprintln!("relay: accept: {e}");
                    return;
                }
            }
        }
    }

    /// Starts the backend connection for a new client and registers both sockets.
    fn open(&mut self, client: OwnedFd) -> io::Result<()> {
        rustix::net::sockopt::set_tcp_nodelay(&client, true)?;
        let backend = backend_socket(true)?;
        let addr = self.setup.pick();
        let connecting = match rustix::net::connect(&backend, &addr) {
            Ok(()) => false,
            Err(Errno::INPROGRESS) => true,
            Err(e) => return Err(io::Error::other(format!("connect {addr}: {e}"))),
        };
        let slot = self.free.pop().unwrap_or_else(|| {
            self.pairs.push(None);
            self.pairs.len() - 1
        });
        let mut pair = Pair {
            fds: [client, backend],
            interest: [EventFlags::empty(); 2],
            flows: [Flow::new(), Flow::new()],
            connecting,
        };
        for s in [CLIENT, BACKEND] {
            pair.interest[s] = pair.wanted(s);
            let data = EventData::new_u64((slot as u64) << 1 | s as u64);
            if let Err(e) = epoll::add(&self.epoll, &pair.fds[s], data, pair.interest[s]) {
                self.free.push(slot);
                return Err(e.into());
            }
        }
        self.pairs[slot] = Some(pair);
        Ok(())
    }

    /// Handles readiness of side `s` of the pair in `slot`.
    fn ready(&mut self, slot: usize, s: usize, flags: EventFlags) {
        let Some(pair) = self.pairs.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let outcome = step(pair, s, flags);
        match outcome {
            Ok(()) if !pair.finished() => {
                if let Err(e) = update_interest(&self.epoll, pair, slot) {
                    eprintln!("relay: epoll_ctl: {e}");
                    self.close(slot);
                }
            }
            Ok(()) => self.close(slot),
            Err(e) => {
                eprintln!("relay: pair closed: {e}");
                self.close(slot);
            }
        }
    }

    /// Closes both sockets of a pair (closing removes them from the epoll set) and frees its slot.
    fn close(&mut self, slot: usize) {
        if self.pairs[slot].take().is_some() {
            self.free.push(slot);
        }
    }
}

/// Moves the bytes that side `s`'s readiness allows, and passes on ends of stream.
fn step(pair: &mut Pair, s: usize, flags: EventFlags) -> Result<(), Errno> {
    if flags.contains(EventFlags::ERR) {
        let err = rustix::net::sockopt::socket_error(&pair.fds[s])
            .ok()
            .and_then(Result::err);
        return Err(err.unwrap_or(Errno::CONNRESET));
    }
    if s == BACKEND && pair.connecting && flags.intersects(EventFlags::OUT | EventFlags::HUP) {
        rustix::net::sockopt::socket_error(&pair.fds[BACKEND])??;
        pair.connecting = false;
    }
    if flags.intersects(EventFlags::IN | EventFlags::HUP) {
        if !pair.flows[s].eof && !pair.flows[s].pending() {
            read(pair, s)?;
        } else if flags.contains(EventFlags::HUP) && pair.flows[s].eof {
            // Both directions of this socket are down while the other side still has bytes for it.
            return Err(Errno::PIPE);
        }
    }
    if !pair.connecting {
        for f in [CLIENT, BACKEND] {
            flush(pair, f)?;
        }
    }
    Ok(())
}

/// Reads once from side `s` into its empty buffer.
fn read(pair: &mut Pair, s: usize) -> Result<(), Errno> {
    let flow = &mut pair.flows[s];
    match rustix::net::recv(&pair.fds[s], &mut flow.buf[..], RecvFlags::empty()) {
        Ok((_, 0)) => flow.eof = true,
        Ok((_, n)) => {
            flow.start = 0;
            flow.end = n;
        }
        Err(Errno::AGAIN | Errno::INTR) => {}
        Err(e) => return Err(e),
    }
    Ok(())
}

/// Sends what flow `f` holds to the other side, then passes on its end of stream once it is empty.
fn flush(pair: &mut Pair, f: usize) -> Result<(), Errno> {
    let flow = &mut pair.flows[f];
    let to = &pair.fds[1 - f];
    while flow.pending() {
        match rustix::net::send(to, &flow.buf[flow.start..flow.end], SendFlags::NOSIGNAL) {
            Ok(n) => flow.start += n,
            Err(Errno::AGAIN) => return Ok(()),
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    if flow.eof && !flow.shut {
        rustix::net::shutdown(to, Shutdown::Write)?;
        flow.shut = true;
    }
    Ok(())
}

/// Re-registers the sockets whose needed interest changed.
fn update_interest(ep: &OwnedFd, pair: &mut Pair, slot: usize) -> io::Result<()> {
    for s in [CLIENT, BACKEND] {
        let want = pair.wanted(s);
        if want != pair.interest[s] {
            let data = EventData::new_u64((slot as u64) << 1 | s as u64);
            epoll::modify(ep, pair.fds[s].as_fd(), data, want)?;
            pair.interest[s] = want;
        }
    }
    Ok(())
}
