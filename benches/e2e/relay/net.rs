//! What both I/O interfaces share: the listening socket, the backend list in round-robin order, the
//! per-direction buffer size, and creating a backend socket.

use crate::args::Args;
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use std::io;
use std::net::{SocketAddrV4, TcpListener};
use std::os::fd::OwnedFd;

/// Bytes buffered per direction of a pair (epoll) or per provided buffer (io_uring): sinew's copy loop's.
pub const BUF_SIZE: usize = 16 * 1024;

/// A bound listener and the backends, ready for a relay loop.
pub struct Setup {
    /// The listening socket, non-blocking.
    pub listener: OwnedFd,
    /// Backend addresses, picked in turn.
    pub backends: Vec<SocketAddrV4>,
    /// The next backend to pick.
    next: usize,
}

impl Setup {
    /// Binds the listen address of `args`.
    pub fn new(args: &Args) -> io::Result<Setup> {
        let listener = TcpListener::bind(args.listen).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot listen on {}: {e}", args.listen))
        })?;
        Setup::from_listener(listener, args.backends.clone())
    }

    /// Wraps an already bound listener (the tests bind port 0).
    pub fn from_listener(listener: TcpListener, backends: Vec<SocketAddrV4>) -> io::Result<Setup> {
        if backends.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no backend given",
            ));
        }
        listener.set_nonblocking(true)?;
        Ok(Setup {
            listener: listener.into(),
            backends,
            next: 0,
        })
    }

    /// The next backend, round robin.
    pub fn pick(&mut self) -> SocketAddrV4 {
        let addr = self.backends[self.next % self.backends.len()];
        self.next = self.next.wrapping_add(1);
        addr
    }
}

/// A new TCP socket for a backend connection, with TCP_NODELAY (`nonblocking` for epoll; io_uring waits
/// inside the kernel instead).
pub fn backend_socket(nonblocking: bool) -> io::Result<OwnedFd> {
    let flags = if nonblocking {
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK
    } else {
        SocketFlags::CLOEXEC
    };
    let fd = rustix::net::socket_with(AddressFamily::INET, SocketType::STREAM, flags, None)?;
    rustix::net::sockopt::set_tcp_nodelay(&fd, true)?;
    Ok(fd)
}
