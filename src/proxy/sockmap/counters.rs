//! A TCP socket's kernel byte counters: with the fast path no byte passes through sinew, so idle
//! time, transfer totals and the delivery of a half-closed stream are read from the kernel.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};

/// Offset of `tcpi_bytes_acked` in `struct tcp_info`.
const BYTES_ACKED: usize = 120;
/// Offset of `tcpi_bytes_received` in `struct tcp_info`.
const BYTES_RECEIVED: usize = 128;
/// `TCP_CLOSE` in `tcpi_state` (the first byte of `struct tcp_info`): reset, or closed both ways.
const STATE_CLOSE: u8 = 7;
/// Attempts at a consistent pair of receive counters.
const STABLE_TRIES: usize = 100;
/// The part of `struct tcp_info` read.
const INFO_LEN: usize = BYTES_RECEIVED + 8;

/// What one socket has moved so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Bytes received from the peer (a FIN counts one).
    pub received: u64,
    /// Bytes handed to the socket for sending: acknowledged plus still queued (a FIN counts one).
    pub written: u64,
    /// The connection is closed (`TCP_CLOSE`: reset by the peer, or ended both ways): nothing more
    /// it was handed will be delivered.
    pub closed: bool,
}

/// Reads the counters of `socket`.
pub fn read(socket: &impl AsRawFd) -> io::Result<Counters> {
    let fd = socket.as_raw_fd();
    let info = tcp_info(fd)?;
    let field = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&info[at..at + 8]);
        u64::from_ne_bytes(b)
    };
    Ok(Counters {
        received: field(BYTES_RECEIVED),
        written: field(BYTES_ACKED) + outq(fd)?,
        closed: info[0] == STATE_CLOSE,
    })
}

/// The counters of `socket` with `received` taken back to what was read from it: bytes that arrived
/// and wait unread count as not received yet. Read while nothing reads the socket (before pairing).
pub fn read_consumed(socket: &(impl AsRawFd + AsFd)) -> io::Result<Counters> {
    // Bytes arriving between the two reads would skew the difference: retry until none did.
    for _ in 0..STABLE_TRIES {
        let before = read(socket)?;
        let unread = rustix::io::ioctl_fionread(socket)?;
        if read(socket)?.received == before.received {
            return Ok(Counters {
                received: before.received.saturating_sub(unread),
                ..before
            });
        }
    }
    Err(io::Error::other("receive counters kept moving"))
}

/// The first `INFO_LEN` bytes of `TCP_INFO`.
fn tcp_info(fd: RawFd) -> io::Result<[u8; INFO_LEN]> {
    let mut info = [0u8; INFO_LEN];
    let mut len = INFO_LEN as libc::socklen_t;
    // SAFETY: `info` is writable for `len` bytes and `len` is a live socklen_t the kernel updates.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    if (len as usize) < INFO_LEN {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "TCP_INFO without byte counters",
        ));
    }
    Ok(info)
}

/// Bytes written to `fd` and not yet acknowledged (`SIOCOUTQ`).
fn outq(fd: RawFd) -> io::Result<u64> {
    let mut queued: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one c_int to the pointer, which is live and writable.
    let r = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut queued) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(queued.max(0) as u64)
}

/// Sets `SO_RCVLOWAT` to 1 on `socket`: the kernel then signals data already queued, which runs the
/// verdict program over bytes that arrived before the socket entered the map.
pub fn kick(socket: &impl AsRawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: the option value is one live c_int of the size passed.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn counters_follow_the_bytes_each_way() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut b, _) = listener.accept().unwrap();
        let (a0, b0) = (read(&a).unwrap(), read(&b).unwrap());
        a.write_all(&[7; 1000]).unwrap();
        let mut buf = [0; 1000];
        b.read_exact(&mut buf).unwrap();
        let (a1, b1) = (read(&a).unwrap(), read(&b).unwrap());
        assert_eq!(a1.written - a0.written, 1000);
        assert_eq!(b1.received - b0.received, 1000);
        kick(&b).unwrap();
        // Unread bytes are not counted as received yet.
        a.write_all(&[1; 300]).unwrap();
        while rustix::io::ioctl_fionread(&b).unwrap() < 300 {
            std::thread::yield_now();
        }
        assert_eq!(read_consumed(&b).unwrap().received, b1.received);
        assert_eq!(read(&b).unwrap().received, b1.received + 300);
    }
}
