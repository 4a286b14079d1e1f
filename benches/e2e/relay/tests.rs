//! The relay's behaviour on real loopback sockets, for both I/O interfaces: bytes arrive complete and in
//! order both ways, a half-close reaches the backend, and a client reset closes only its own pair.

use crate::args::{Io, UringOptions};
use crate::net::Setup;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

/// How long a test waits for any one read before failing rather than hanging.
const PATIENCE: Duration = Duration::from_secs(10);

/// Starts a backend on a loopback port whose connections run `serve`; returns its address.
fn backend(serve: fn(TcpStream)) -> SocketAddrV4 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback backend");
    let addr = v4(listener.local_addr().expect("backend address"));
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            thread::spawn(move || serve(conn));
        }
    });
    addr
}

/// Echoes every byte back, then passes on the client's end of stream.
fn echo(mut conn: TcpStream) {
    let mut buf = vec![0; 64 * 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
    let _ = conn.shutdown(Shutdown::Write);
}

/// Reads until the client's end of stream, then answers with the number of bytes it read.
fn count_until_eof(mut conn: TcpStream) {
    let mut all = Vec::new();
    if conn.read_to_end(&mut all).is_ok() {
        let _ = conn.write_all(format!("read {} bytes then eof", all.len()).as_bytes());
    }
}

/// An IPv4 address (the tests bind only 127.0.0.1).
fn v4(addr: SocketAddr) -> SocketAddrV4 {
    match addr {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => panic!("loopback bind gave an IPv6 address"),
    }
}

/// Starts a relay on `io` in a thread of this process, relaying to `backends`; returns its address.
fn relay(io: Io, backends: Vec<SocketAddrV4>) -> SocketAddrV4 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
    let addr = v4(listener.local_addr().expect("relay address"));
    let setup = Setup::from_listener(listener, backends).expect("relay setup");
    thread::spawn(move || {
        let result = match io {
            Io::Epoll => crate::epoll::run(setup),
            Io::Uring => crate::uring::run(
                setup,
                &UringOptions {
                    bufs: 64,
                    defer: true,
                    ring_fd: true,
                },
            ),
        };
        panic!("the relay loop stopped: {result:?}");
    });
    addr
}

/// A client connection to the relay with a read timeout.
fn client(addr: SocketAddrV4) -> TcpStream {
    let conn = TcpStream::connect(addr).expect("connect to the relay");
    conn.set_read_timeout(Some(PATIENCE)).expect("read timeout");
    conn
}

/// `len` pseudo-random bytes from `seed`.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

/// Sends 1 MB through the relay while reading the echo concurrently; the echo must equal what was sent.
fn megabyte_each_way(io: Io) {
    let addr = relay(io, vec![backend(echo), backend(echo)]);
    for seed in 0..2 {
        let sent = bytes(seed, 1 << 20);
        let conn = client(addr);
        let mut writer = conn.try_clone().expect("clone");
        let data = sent.clone();
        let feeder = thread::spawn(move || {
            writer.write_all(&data).expect("write 1 MB");
            writer.shutdown(Shutdown::Write).expect("half-close");
        });
        let mut got = Vec::new();
        (&conn)
            .read_to_end(&mut got)
            .expect("read the echo to its end");
        feeder.join().expect("writer thread");
        assert_eq!(got.len(), sent.len(), "{io:?}: echo length");
        assert!(
            got == sent,
            "{io:?}: the echo differs from what was sent (bytes lost or reordered)"
        );
    }
}

/// Many small request/response round trips on one connection, each answered exactly.
fn small_round_trips(io: Io) {
    let addr = relay(io, vec![backend(echo)]);
    let mut conn = client(addr);
    let mut buf = [0; 512];
    for i in 0..3000u64 {
        let request = bytes(i, 1 + (i as usize * 37) % 300);
        conn.write_all(&request).expect("write a request");
        conn.read_exact(&mut buf[..request.len()])
            .expect("read its response");
        assert_eq!(
            &buf[..request.len()],
            &request[..],
            "{io:?}: round trip {i}"
        );
    }
}

/// A client's half-close reaches the backend, and the backend's answer after it still reaches the client.
fn half_close(io: Io) {
    let addr = relay(io, vec![backend(count_until_eof)]);
    let mut conn = client(addr);
    conn.write_all(&bytes(7, 5000)).expect("write");
    conn.shutdown(Shutdown::Write).expect("half-close");
    let mut answer = String::new();
    conn.read_to_string(&mut answer)
        .expect("read the answer to its end");
    assert_eq!(answer, "read 5000 bytes then eof", "{io:?}");
}

/// A client that resets its connection mid-stream closes its own pair only: the next client is served.
fn reset_keeps_relay(io: Io) {
    let addr = relay(io, vec![backend(echo)]);
    for _ in 0..5 {
        let mut conn = client(addr);
        conn.write_all(&bytes(1, 100_000)).expect("write");
        let mut first = [0; 10];
        conn.read_exact(&mut first).expect("the echo starts");
        rustix::net::sockopt::set_socket_linger(&conn, Some(Duration::ZERO)).expect("linger 0");
        drop(conn);
    }
    let mut conn = client(addr);
    conn.write_all(b"still there?").expect("write after resets");
    let mut buf = [0; 12];
    conn.read_exact(&mut buf)
        .expect("the relay answers after resets");
    assert_eq!(&buf, b"still there?");
}

#[test]
fn epoll_relays_a_megabyte_each_way() {
    megabyte_each_way(Io::Epoll);
}

#[test]
fn uring_relays_a_megabyte_each_way() {
    megabyte_each_way(Io::Uring);
}

#[test]
fn epoll_relays_small_round_trips() {
    small_round_trips(Io::Epoll);
}

#[test]
fn uring_relays_small_round_trips() {
    small_round_trips(Io::Uring);
}

#[test]
fn epoll_passes_half_close_to_the_backend() {
    half_close(Io::Epoll);
}

#[test]
fn uring_passes_half_close_to_the_backend() {
    half_close(Io::Uring);
}

#[test]
fn epoll_survives_a_client_reset() {
    reset_keeps_relay(Io::Epoll);
}

#[test]
fn uring_survives_a_client_reset() {
    reset_keeps_relay(Io::Uring);
}
