//! One client connection on the fast path: its two sockets paired in the kernel's maps, and the
//! watch over them until both ends are done.

use super::counters::{self, Counters};
use super::Kernel;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Longest wait between two looks at the counters while a half-closed stream drains.
const DRAIN_POLL_MAX: Duration = Duration::from_millis(20);

/// How a spliced connection ended.
#[derive(Debug)]
pub struct Spliced {
    /// Bytes the kernel left for sinew to read, which it forwarded itself (zero when the program
    /// takes every byte, as it should).
    pub relayed: u64,
    /// Why it ended.
    pub end: End,
}

/// Why a spliced connection ended.
#[derive(Debug)]
pub enum End {
    /// Both sides closed their stream.
    Done,
    /// Nothing moved either way for the idle timeout.
    Idle,
    /// A socket failed (reset, or a write sinew made itself).
    Error(io::Error),
}

/// Two sockets paired in the kernel's maps; dropping it takes them out (before they are closed).
pub struct Pair<'a> {
    /// The maps.
    kernel: &'static Kernel,
    /// The client's socket.
    client: &'a TcpStream,
    /// The backend's socket.
    backend: &'a TcpStream,
    /// The client's cookie, once in `peers` (the backend is there under it).
    client_key: Option<u64>,
    /// The backend's cookie, once in `peers`.
    backend_key: Option<u64>,
    /// How many of the two are in `verdict` (the client first).
    redirecting: u8,
    /// The counters when the pair was made.
    start: (Counters, Counters),
    /// Whether the client's and the backend's end of stream was seen.
    ended: [AtomicBool; 2],
}

impl<'a> Pair<'a> {
    /// Pairs `client` and `backend`: both go into `peers` first and only then into `verdict`, so the
    /// program never sees bytes whose peer is not in the map yet; bytes that arrived before are then
    /// put through the program by a wake-up of each socket.
    pub fn join(
        kernel: &'static Kernel,
        client: &'a TcpStream,
        backend: &'a TcpStream,
    ) -> io::Result<Pair<'a>> {
        let start = (
            counters::read_consumed(client)?,
            counters::read_consumed(backend)?,
        );
        let mut pair = Pair {
            kernel,
            client,
            backend,
            client_key: None,
            backend_key: None,
            redirecting: 0,
            start,
            ended: Default::default(),
        };
        let client_key = rustix::net::sockopt::socket_cookie(client)?;
        let backend_key = rustix::net::sockopt::socket_cookie(backend)?;
        kernel.peers.insert(client_key, backend.as_raw_fd())?;
        pair.client_key = Some(client_key);
        kernel.peers.insert(backend_key, client.as_raw_fd())?;
        pair.backend_key = Some(backend_key);
        kernel.verdict.insert(client_key, client.as_raw_fd())?;
        pair.redirecting = 1;
        kernel.verdict.insert(backend_key, backend.as_raw_fd())?;
        pair.redirecting = 2;
        counters::kick(client)?;
        counters::kick(backend)?;
        Ok(pair)
    }

    /// Watches the pair until both streams ended, one side failed, or nothing moved for `idle`.
    pub async fn run(&self, idle: Duration) -> Spliced {
        let mut open = [true, true];
        let sides = [
            (
                self.client,
                self.backend,
                self.start.0.received,
                self.start.1.written,
            ),
            (
                self.backend,
                self.client,
                self.start.1.received,
                self.start.0.written,
            ),
        ];
        let mut last = (self.start.0.received, self.start.1.received);
        let mut moved = Instant::now();
        let mut relayed = 0;
        let mut tick = tokio::time::interval((idle / 4).max(Duration::from_millis(1)));
        let end = loop {
            let side = tokio::select! {
                r = self.client.readable(), if open[0] => r.map(|()| 0),
                r = self.backend.readable(), if open[1] => r.map(|()| 1),
                _ = tick.tick() => {
                    let now = (self.counters(self.client).received, self.counters(self.backend).received);
                    if now != last {
                        last = now;
                        moved = Instant::now();
                    } else if moved.elapsed() >= idle {
                        break End::Idle;
                    }
                    continue;
                }
            };
            let (from, to, received0, written0) = match side {
                Ok(i) => sides[i],
                Err(e) => break End::Error(e),
            };
            let mut buf = [0u8; 4096];
            let step = match from.try_read(&mut buf) {
                // End of stream: pass it on once every byte before it went out.
                Ok(0) => match deliver(from, to, received0, written0, idle).await {
                    Ok(true) => {
                        let i = side.unwrap_or(0);
                        open[i] = false;
                        self.ended[i].store(true, Ordering::Relaxed);
                        rustix::net::shutdown(to, rustix::net::Shutdown::Write).map_err(Into::into)
                    }
                    Ok(false) => break End::Idle,
                    Err(e) => Err(e),
                },
                // Bytes the program left to the socket (none are expected): sinew forwards them.
                Ok(n) => {
                    relayed += n as u64;
                    write_all(to, &buf[..n]).await
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = step {
                break End::Error(e);
            }
            if open == [false, false] {
                break End::Done;
            }
        };
        Spliced { relayed, end }
    }

    /// Bytes (from the client, to the client) since the pair was made, ends of stream left out.
    pub fn totals(&self) -> (u64, u64) {
        let moved = |socket: &TcpStream, start: Counters, ended: &AtomicBool| {
            let received = self
                .counters(socket)
                .received
                .saturating_sub(start.received);
            received.saturating_sub(u64::from(ended.load(Ordering::Relaxed)))
        };
        (
            moved(self.client, self.start.0, &self.ended[0]),
            moved(self.backend, self.start.1, &self.ended[1]),
        )
    }

    /// The counters of `socket`, or zeros if the kernel has none to give (the socket is gone).
    fn counters(&self, socket: &TcpStream) -> Counters {
        counters::read(socket).unwrap_or_default()
    }
}

/// Waits until `to` was handed every byte `from` received since the pair was made (its end of stream
/// counts one received, not sent); false when `to` took nothing for `idle` (its reader stopped), an
/// error at once when `to` was reset.
async fn deliver(
    from: &TcpStream,
    to: &TcpStream,
    received0: u64,
    written0: u64,
    idle: Duration,
) -> io::Result<bool> {
    let due = counters::read(from)?
        .received
        .saturating_sub(received0)
        .saturating_sub(1);
    let mut pause = Duration::from_micros(50);
    let mut last = None;
    let mut moved = Instant::now();
    loop {
        let now = counters::read(to)?;
        let written = now.written.saturating_sub(written0);
        if written >= due {
            return Ok(true);
        }
        if now.closed {
            // The peer reset: what is left will never go out, so there is nothing to wait for.
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        if last != Some(written) {
            last = Some(written);
            moved = Instant::now();
        } else if moved.elapsed() >= idle {
            return Ok(false);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(DRAIN_POLL_MAX);
    }
}

/// Writes all of `bytes` to `to`.
pub(super) async fn write_all(to: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        to.writable().await?;
        match to.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Drop for Pair<'_> {
    fn drop(&mut self) {
        let keys = [self.client_key, self.backend_key];
        for key in keys.iter().take(self.redirecting as usize).flatten() {
            let _ = self.kernel.verdict.remove(*key);
        }
        for key in keys.iter().flatten() {
            let _ = self.kernel.peers.remove(*key);
        }
    }
}

#[cfg(test)]
mod tests_support {
    use tokio::net::{TcpListener, TcpStream};

    /// A connected loopback pair: (the outside end, the end sinew holds).
    pub async fn link() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let outside = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (inside, _) = listener.accept().await.unwrap();
        (outside, inside)
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::link;
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_cross_both_ways_and_each_end_of_stream_is_passed_on() {
        let kernel = super::super::kernel().expect("bpf");
        for round in 0..20 {
            let (mut user, client) = link().await;
            let (mut server, backend) = link().await;
            // Bytes sent before the pair is made must not be lost.
            let early: Vec<u8> = (0..100_000u32).map(|i| (i % 13) as u8).collect();
            user.write_all(&early).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
            let watch = async {
                let pair = Pair::join(kernel, &client, &backend).unwrap();
                let spliced = pair.run(Duration::from_secs(5)).await;
                (spliced, pair.totals())
            };
            let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 + round) as u8).collect();
            let peers = async {
                let up = async {
                    user.write_all(&data).await.unwrap();
                    user.shutdown().await.unwrap();
                    let mut back = Vec::new();
                    user.read_to_end(&mut back).await.unwrap();
                    back
                };
                let down = async {
                    let mut got = Vec::new();
                    server.read_to_end(&mut got).await.unwrap();
                    server.write_all(&got).await.unwrap();
                    server.shutdown().await.unwrap();
                    got
                };
                tokio::join!(up, down)
            };
            let ((spliced, totals), (back, got)) =
                tokio::time::timeout(Duration::from_secs(20), async {
                    tokio::join!(watch, peers)
                })
                .await
                .unwrap_or_else(|_| panic!("stalled in round {round}"));
            assert!(got[..early.len()] == early[..], "round {round}");
            assert!(got[early.len()..] == data[..], "round {round}");
            assert!(back == got);
            assert!(matches!(spliced.end, End::Done), "{spliced:?}");
            // "early" was queued unread when the pair was made: the kernel carried it too.
            assert_eq!(totals, (got.len() as u64, got.len() as u64), "{spliced:?}");
            assert_eq!(spliced.relayed, 0, "{spliced:?}");
        }
    }
}

#[cfg(test)]
mod queued {
    use super::tests_support::link;
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_request_queued_before_pairing_is_delivered_without_more_bytes() {
        let kernel = super::super::kernel().expect("bpf");
        for round in 0..20 {
            let (mut user, client) = link().await;
            let (mut server, backend) = link().await;
            user.write_all(b"PING\r\n").await.unwrap();
            server.write_all(b"HELLO\r\n").await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
            let pair = Pair::join(kernel, &client, &backend).unwrap();
            let exchange = async {
                let mut req = [0u8; 6];
                server.read_exact(&mut req).await.unwrap();
                let mut greeting = [0u8; 7];
                user.read_exact(&mut greeting).await.unwrap();
                (req, greeting)
            };
            let (req, greeting) = tokio::time::timeout(Duration::from_secs(2), exchange)
                .await
                .unwrap_or_else(|_| panic!("queued bytes stalled in round {round}"));
            assert_eq!((&req, &greeting), (b"PING\r\n", b"HELLO\r\n"));
            drop(pair);
        }
    }
}
