//! How the engine receives: multishot receives capped at a byte count where the kernel honours the cap
//! (Linux 6.17 and later read it from the entry's `optlen`), else one single-shot receive per buffer.
//!
//! A multishot receive stays armed across many arrivals, so a keep-alive connection costs one
//! completion per message instead of a submission and a readiness poll per message; the cap ends it
//! after that many bytes, so a direction whose reader stalls takes at most its cap into the ring (an
//! uncapped one takes whatever its peer sends until a cancel lands). Older kernels refuse `optlen` on a
//! receive (`EINVAL`; the field is shared with `file_index`): a probe at start tells the two apart.

use super::bufring::{BufRing, GROUP};
use io_uring::{cqueue, opcode, squeue, types};
use std::io;
use std::os::fd::AsRawFd;

/// `IORING_RECVSEND_POLL_FIRST`: a receive waits for readiness before its first try.
const POLL_FIRST: u16 = 1;
/// Where `ioprio` lies in a submission entry.
const IOPRIO: usize = 2;
/// Where `optlen` (the multishot byte cap) lies in a submission entry.
const OPTLEN: usize = 44;

// A submission entry is the kernel's 64-byte `io_uring_sqe`, which `capped` edits by offset.
const _: () = assert!(size_of::<squeue::Entry>() == 64);

/// How the engine issues receives into the buffer ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Receives {
    /// Multishot receives that end after a byte cap.
    Capped,
    /// One receive per buffer.
    Single,
}

impl Receives {
    /// The name in the log.
    pub fn name(self) -> &'static str {
        match self {
            Receives::Capped => "multishot, capped",
            Receives::Single => "single-shot",
        }
    }
}

/// A receive from `fd` into the buffer ring, waiting for readiness first, that stays armed until
/// `cap` bytes have arrived (or the stream ends, or it fails or is cancelled): each arrival completes
/// with `IORING_CQE_F_MORE` set but the last.
pub fn capped(fd: types::Fd, cap: u32) -> squeue::Entry {
    let entry = opcode::RecvMulti::new(fd, GROUP).build();
    // SAFETY: `Entry` is `repr(C)` around the 64-byte `io_uring_sqe` (asserted above); every bit
    // pattern of it is a valid value, and the edits below write its `ioprio` and `optlen` fields.
    let mut raw: [u8; 64] = unsafe { std::mem::transmute(entry) };
    let ioprio = u16::from_ne_bytes([raw[IOPRIO], raw[IOPRIO + 1]]) | POLL_FIRST;
    raw[IOPRIO..IOPRIO + 2].copy_from_slice(&ioprio.to_ne_bytes());
    raw[OPTLEN..OPTLEN + 4].copy_from_slice(&cap.to_ne_bytes());
    // SAFETY: as above.
    unsafe { std::mem::transmute::<[u8; 64], squeue::Entry>(raw) }
}

/// A single receive of up to `len` bytes from `fd`, waiting for readiness first: into the buffer ring
/// when `into` is `None`, else into `into` (which must outlive the operation).
pub fn single(fd: types::Fd, len: u32, into: Option<*mut u8>) -> squeue::Entry {
    match into {
        Some(buf) => opcode::Recv::new(fd, buf, len).ioprio(POLL_FIRST).build(),
        None => opcode::Recv::new(fd, std::ptr::null_mut(), len)
            .ioprio(POLL_FIRST)
            .buf_group(GROUP)
            .build()
            .flags(squeue::Flags::BUFFER_SELECT),
    }
}

/// Whether this kernel ends a multishot receive at its byte cap: a receive capped at 8 bytes, with 64
/// waiting and the sender closed, must end with its first completion. (A kernel without the cap
/// refuses the entry, or keeps it armed and ends it at the end of stream.) Any failure answers
/// `Single`.
pub fn probe() -> Receives {
    #[cfg(test)]
    if SINGLE_SHOT.take() {
        return Receives::Single;
    }
    match try_probe() {
        Ok(true) => Receives::Capped,
        Ok(false) => Receives::Single,
        Err(e) => {
            tracing::debug!(error = %e, "multishot receive probe failed");
            Receives::Single
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Set by a test: the next probe on this thread answers `Single` (as kernels before 6.17 do) and
    /// clears it.
    pub static SINGLE_SHOT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The probe, on a ring and buffers of its own.
fn try_probe() -> io::Result<bool> {
    use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
    let (ours, theirs) = socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::io::write(&theirs, &[0u8; 64])?;
    drop(theirs);
    // The buffers are never freed (8 KiB once per process): if the probe fails half way, the kernel
    // may still write into them until the ring is torn down.
    let mut bufs = std::mem::ManuallyDrop::new(BufRing::new(4, 4096, 4)?);
    let (ring, _) = super::ring::build(8, false)?;
    bufs.register(&ring)?;
    let entry = capped(types::Fd(ours.as_raw_fd()), 8).user_data(1);
    // SAFETY: the entry points at no memory of ours; the buffer ring is never freed.
    unsafe { ring.submission_shared().push(&entry) }
        .map_err(|_| io::Error::other("submission queue full"))?;
    let mut first = None;
    // Every completion is waited for: the receive ends at its cap or, without one, at the end of
    // stream that follows the 64 bytes.
    loop {
        match ring.submitter().submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
        // SAFETY: this function is the ring's only reader.
        let cq = unsafe { ring.completion_shared() };
        for cqe in cq {
            let more = cqueue::more(cqe.flags());
            if cqe.result() < 0 {
                return Err(io::Error::from_raw_os_error(-cqe.result()));
            }
            first.get_or_insert(!more);
            if !more {
                return Ok(first.unwrap_or(false));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's version, as (major, minor).
    fn kernel() -> (u32, u32) {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut parts = release
            .split(|c: char| !c.is_ascii_digit())
            .map(|p| p.parse().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    }

    #[test]
    fn the_probe_finds_capped_multishot_receives_from_linux_6_17_on() {
        if let Err(e) = super::super::ring::build(8, false) {
            return eprintln!("io_uring unavailable here ({e}); skipped");
        }
        let expected = if kernel() >= (6, 17) {
            Receives::Capped
        } else {
            Receives::Single
        };
        assert_eq!(probe(), expected, "kernel {:?}", kernel());
    }
}
