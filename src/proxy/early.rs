//! Client bytes that have already arrived when a TCP connection is accepted, sent to the backend with
//! the connect, as HAProxy's `tcp-smart-connect` does.
//!
//! A client such as an HTTP or Redis client has usually sent its first request by the time sinew
//! accepts. That request is read at once, `TCP_QUICKACK` is turned off on the new backend socket so
//! the last ACK of the handshake waits for data, and the request is written right after `connect(2)`
//! (on a local network the handshake has often completed by the time it returns). The backend then
//! sees the connection and its request together and wakes once for both, and sinew skips an
//! event-loop turn and the `getsockopt(SO_ERROR)` of a normal connect. A protocol where the server
//! speaks first reads nothing here and changes nothing: both steps only take what is ready, never
//! wait, and the ACK is delayed only when data is about to follow it.

use rustix::io::Errno;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};
use std::io;
use std::net::SocketAddr;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Largest number of bytes read from a client before its backend is connected.
const SIZE: usize = 2048;

/// What `client` has sent so far (up to [`SIZE`] bytes), read without waiting; empty when nothing is
/// there yet (or the client has already closed: its next read reports that).
///
/// When tokio already holds a readiness event for the socket, the read goes through it, and a short
/// read clears it as tokio's own reads do: the socket is drained, so the copy that follows waits for
/// the next event rather than first reading nothing. An event that comes after the read is newer and
/// is not cleared.
pub fn take_ready(client: &TcpStream) -> Vec<u8> {
    let mut buf = [0u8; SIZE];
    let (mut called, mut read) = (false, None);
    let through_tokio = client.try_io(Interest::READABLE, || {
        called = true;
        let (n, _) = rustix::net::recv(client, &mut buf, RecvFlags::DONTWAIT)?;
        read = Some(n);
        if 0 < n && n < SIZE {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(())
        }
    });
    let n = match (read, through_tokio) {
        (Some(n), _) => n,
        // No event yet (a socket just accepted): read anyway, the bytes are often there already.
        (None, Err(_)) if !called => {
            match rustix::net::recv(client, &mut buf, RecvFlags::DONTWAIT) {
                Ok((n, _)) => n,
                Err(_) => 0,
            }
        }
        (None, _) => 0,
    };
    buf[..n].to_vec()
}

/// Connects to `addr` (TCP_NODELAY set) and sends as much of `early` as the new connection takes at
/// once; returns the stream and how many bytes went out.
pub async fn connect(addr: SocketAddr, early: &[u8]) -> io::Result<(TcpStream, usize)> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let fd = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    let _ = rustix::net::sockopt::set_tcp_nodelay(&fd, true);
    if !early.is_empty() {
        // The last ACK of the handshake waits for the first bytes and goes with them (HAProxy's
        // tcp-smart-connect): the backend is woken once, for a connection with its request.
        let _ = rustix::net::sockopt::set_tcp_quickack(&fd, false);
    }
    match rustix::net::connect(&fd, &addr) {
        Ok(()) | Err(Errno::INPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    let sent = if early.is_empty() {
        Err(Errno::AGAIN)
    } else {
        rustix::net::send(&fd, early, SendFlags::NOSIGNAL)
    };
    let stream = TcpStream::from_std(std::net::TcpStream::from(fd))?;
    match sent {
        Ok(n) => Ok((stream, n)),
        // Not connected yet: wait until it is, as a normal connect does.
        Err(Errno::AGAIN) | Err(Errno::NOTCONN) => {
            stream.writable().await?;
            match stream.take_error()? {
                Some(e) => Err(e),
                None => Ok((stream, 0)),
            }
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn early_bytes_go_out_with_the_connect_and_ready_bytes_are_read_at_once() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (mut stream, sent) = connect(addr, b"PING\r\n").await.unwrap();
        let (mut accepted, _) = l.accept().await.unwrap();
        let mut got = vec![0u8; 6];
        stream.write_all(&b"PING\r\n"[sent..]).await.unwrap();
        let mut all = Vec::new();
        while all.len() < 6 {
            let n = accepted.read(&mut got).await.unwrap();
            assert!(n > 0);
            all.extend_from_slice(&got[..n]);
        }
        assert_eq!(all, b"PING\r\n");
        // The other way: what has arrived is read without waiting; nothing is nothing.
        assert!(take_ready(&accepted).is_empty());
        stream.write_all(b"+PONG\r\n").await.unwrap();
        accepted.readable().await.unwrap();
        assert_eq!(take_ready(&accepted), b"+PONG\r\n");
    }

    #[tokio::test]
    async fn a_short_read_through_tokio_leaves_no_stale_readiness_and_loses_no_event() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (accepted, _) = l.accept().await.unwrap();
        client.write_all(b"abc").await.unwrap();
        accepted.readable().await.unwrap();
        assert_eq!(take_ready(&accepted), b"abc");
        let mut read_again = false;
        let r = accepted.try_io(Interest::READABLE, || {
            read_again = true;
            Ok(())
        });
        assert!(
            r.is_err() && !read_again,
            "the drained socket is not read again before its next event"
        );
        client.write_all(b"def").await.unwrap();
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), accepted.readable());
        next.await.expect("the next bytes wake the socket").unwrap();
        assert_eq!(take_ready(&accepted), b"def");
    }

    #[tokio::test]
    async fn a_refused_connect_is_an_error_with_or_without_early_bytes() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        assert!(connect(addr, b"x").await.is_err());
        assert!(connect(addr, b"").await.is_err());
    }
}
