//! The sockmap fast path (`tcp_fastpath: sockmap`): after connect, a client socket and its backend
//! socket are paired in the kernel, which moves each one's bytes straight to the other's send queue.
//! sinew keeps the connection's life: it waits for each side's end of stream (and passes it on once
//! every byte before it was delivered), watches the kernel's byte counters for the idle timeout and
//! reads the totals for the byte metrics at close.

mod bpf;
mod counters;
mod pair;
mod serve;

pub use bpf::BpfError;
pub use serve::{serve, Served};

use std::os::fd::OwnedFd;
use std::sync::OnceLock;

/// Most sockets paired at once (two per connection); a pair that does not fit runs the copy loop.
const MAX_SOCKETS: u32 = 131_072;

/// The maps and program, loaded once per process.
pub struct Kernel {
    /// Each socket's peer, under the socket's cookie: where the verdict sends its bytes.
    peers: bpf::SockHash,
    /// Sockets whose bytes the verdict program handles, under their own cookie.
    verdict: bpf::SockHash,
    /// The loaded program (kept open for the process's life).
    _program: OwnedFd,
}

impl Kernel {
    /// Creates the maps and loads and attaches the program.
    fn load() -> Result<Kernel, BpfError> {
        let peers = bpf::SockHash::create(MAX_SOCKETS)?;
        let verdict = bpf::SockHash::create(MAX_SOCKETS)?;
        let program = bpf::attach_verdict(&bpf::verdict_program(peers.raw()), &verdict)?;
        Ok(Kernel {
            peers,
            verdict,
            _program: program,
        })
    }
}

/// The process's fast path, or why the kernel refused it (loaded on first use).
pub fn kernel() -> Result<&'static Kernel, &'static BpfError> {
    static KERNEL: OnceLock<Result<Kernel, BpfError>> = OnceLock::new();
    KERNEL.get_or_init(Kernel::load).as_ref()
}
