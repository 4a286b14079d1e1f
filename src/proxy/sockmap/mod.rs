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

use super::ProxyMetrics;
use crate::config::TcpFastpath;
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

/// True when `service`, configured with `wanted`, runs on the sockmap path; a refusal by the kernel
/// is logged and the service runs the copy loop. Either way the `sinew_tcp_fastpath` gauge says which.
pub fn usable(service: &str, wanted: TcpFastpath, metrics: &ProxyMetrics) -> bool {
    let path = match (wanted, kernel()) {
        (TcpFastpath::Copy, _) => TcpFastpath::Copy,
        (TcpFastpath::Sockmap, Ok(_)) => TcpFastpath::Sockmap,
        (TcpFastpath::Sockmap, Err(e)) => {
            tracing::warn!(service, error = %e, "tcp_fastpath sockmap unavailable (the kernel refused the program); the service runs the copy loop");
            TcpFastpath::Copy
        }
    };
    metrics.fastpath(service, path);
    path == TcpFastpath::Sockmap
}

/// The process's fast path, or why the kernel refused it (loaded on first use).
pub fn kernel() -> Result<&'static Kernel, &'static BpfError> {
    static KERNEL: OnceLock<Result<Kernel, BpfError>> = OnceLock::new();
    KERNEL.get_or_init(Kernel::load).as_ref()
}
