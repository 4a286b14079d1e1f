//! Command-line arguments of the relay.

use clap::{Parser, ValueEnum};
use std::net::SocketAddrV4;

/// The kernel I/O interface the relay runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Io {
    /// Readiness through epoll, then `recv`/`send` system calls.
    Epoll,
    /// Completions through io_uring: multishot accept and receive, one submission per loop pass.
    Uring,
}

/// `relay --io epoll|uring --listen ADDR --backend ADDR [--backend ADDR ...]`.
#[derive(Debug, Parser)]
#[command(about = "A single-threaded TCP relay on epoll or io_uring, for benches/e2e")]
pub struct Args {
    /// The I/O interface.
    #[arg(long, value_enum)]
    pub io: Io,
    /// The address clients connect to.
    #[arg(long)]
    pub listen: SocketAddrV4,
    /// A backend address; clients are spread over them round robin.
    #[arg(long = "backend", required = true)]
    pub backends: Vec<SocketAddrV4>,
    /// io_uring: buffers in the provided buffer ring (a power of two, at most 32768).
    #[arg(long, default_value_t = 256)]
    pub bufs: u16,
    /// io_uring: `IORING_SETUP_DEFER_TASKRUN` (with `SINGLE_ISSUER`), when the kernel accepts it.
    #[arg(long, default_value = "on")]
    pub defer: OnOff,
    /// io_uring: register the ring's own descriptor, so `io_uring_enter` skips the file table lookup.
    #[arg(long, default_value = "on")]
    pub ring_fd: OnOff,
}

/// A switch given as `on` or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

/// The io_uring tuning knobs, apart from the addresses.
#[derive(Clone, Copy, Debug)]
pub struct UringOptions {
    /// Buffers in the provided buffer ring.
    pub bufs: u16,
    /// Ask for `SINGLE_ISSUER | DEFER_TASKRUN`.
    pub defer: bool,
    /// Register the ring's descriptor.
    pub ring_fd: bool,
}

impl Args {
    /// The io_uring knobs of these arguments.
    pub fn uring_options(&self) -> UringOptions {
        UringOptions {
            bufs: self.bufs,
            defer: self.defer == OnOff::On,
            ring_fd: self.ring_fd == OnOff::On,
        }
    }
}
