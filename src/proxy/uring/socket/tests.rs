use super::*;
use crate::proxy::uring::tests::{engine_or_skip, one_thread_runtime, pair};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A ring stream on this thread's engine and the peer the test keeps, or `None` without io_uring.
async fn stream() -> Option<(RingStream, TcpStream)> {
    let engine = engine_or_skip()?;
    let (peer, fd) = pair().await;
    Some((engine.stream(fd), peer))
}

/// Bytes `0..len` of a pattern with period `period`.
fn pattern(len: u32, period: u32) -> Vec<u8> {
    (0..len).map(|i| (i % period) as u8).collect()
}

/// The engine's count of sockets on it now.
fn on_engine() -> u64 {
    let engine = engine_or_skip().unwrap();
    engine.shared.stats.sockets.load(Ordering::Relaxed)
}

#[tokio::test]
async fn a_megabyte_each_way_arrives_whole_in_order_and_each_end_of_stream_is_passed_on() {
    megabyte_each_way().await;
}

#[tokio::test]
async fn a_reader_that_stops_reading_stops_the_receives_at_the_queue_limit_and_resumes_them() {
    stops_at_the_queue_limit().await;
}

// Kernels before 6.17 cap no multishot receive: the engine receives one buffer at a time.
#[test]
fn on_single_shot_receives_the_bytes_the_ends_and_the_queue_limit_hold_as_well() {
    crate::proxy::uring::recv::SINGLE_SHOT.set(true);
    one_thread_runtime().block_on(async {
        megabyte_each_way().await;
        stops_at_the_queue_limit().await;
    });
    assert!(
        !crate::proxy::uring::recv::SINGLE_SHOT.get(),
        "this thread's engine was started single-shot"
    );
}

/// A megabyte written each way, each side then ending its stream: every byte arrives in order, then
/// the end.
async fn megabyte_each_way() {
    let Some((mut ring, mut peer)) = stream().await else {
        return;
    };
    let (to_peer, to_ring) = (pattern(1_000_000, 251), pattern(1_000_000, 241));
    let sent = to_ring.clone();
    let peer_side = tokio::spawn(async move {
        let (mut r, mut w) = peer.split();
        let mut got = Vec::new();
        let (read, wrote) = tokio::join!(r.read_to_end(&mut got), async {
            w.write_all(&sent).await?;
            w.shutdown().await
        });
        read.unwrap();
        wrote.unwrap();
        got
    });
    let mut got = Vec::new();
    let (mut r, mut w) = tokio::io::split(&mut ring);
    let (read, wrote) = tokio::join!(r.read_to_end(&mut got), async {
        w.write_all(&to_peer).await?;
        w.shutdown().await
    });
    read.unwrap();
    wrote.unwrap();
    assert!(
        got == to_ring,
        "the peer's bytes arrive whole, in order, then its end"
    );
    let back = tokio::time::timeout(Duration::from_secs(10), peer_side)
        .await
        .unwrap()
        .unwrap();
    assert!(
        back == to_peer,
        "the written bytes arrive whole, in order, then the end"
    );
}

/// A peer that writes more than the queue and the kernel hold to a reader that waits: the receives
/// stop at the queue's limit, and reading resumes them until every byte arrived in order.
async fn stops_at_the_queue_limit() {
    let Some((mut ring, mut peer)) = stream().await else {
        return;
    };
    // More than loopback's socket buffers hold.
    let sent = pattern(32_000_000, 239);
    let theirs = sent.clone();
    let writer = tokio::spawn(async move {
        peer.write_all(&theirs).await.unwrap();
        peer
    });
    // Nothing reads for a while: the engine takes what the queue holds, the rest waits in the kernel.
    tokio::time::sleep(Duration::from_millis(300)).await;
    {
        let st = ring.socket.lock();
        assert_eq!(
            st.unread(),
            QUEUE_LIMIT,
            "the receive queue fills to its limit, no further"
        );
        assert!(st.paused, "and the receives stop");
    }
    assert!(!writer.is_finished(), "the peer's writes wait");
    let mut got = vec![0u8; sent.len()];
    tokio::time::timeout(Duration::from_secs(10), ring.read_exact(&mut got))
        .await
        .expect("reading resumes the receives")
        .unwrap();
    assert!(got == sent, "every byte arrives in order");
    writer.await.unwrap();
}

#[tokio::test]
async fn writes_to_a_peer_that_does_not_read_wait_at_the_queue_limit() {
    let Some((mut ring, mut peer)) = stream().await else {
        return;
    };
    let chunk = vec![7u8; 16 * 1024];
    let mut written = 0usize;
    // Bounded: the kernel's socket buffers and the send queue take a few megabytes at most.
    for _ in 0..4096 {
        match tokio::time::timeout(Duration::from_millis(200), ring.write(&chunk)).await {
            Ok(n) => written += n.unwrap(),
            Err(_) => break,
        }
    }
    assert!(
        written < 4096 * chunk.len(),
        "a write waits once the queue is full"
    );
    {
        let st = ring.socket.lock();
        assert!(st.unsent.len() <= QUEUE_LIMIT, "{}", st.unsent.len());
    }
    let flushed = tokio::spawn(async move {
        ring.flush().await.unwrap();
        ring
    });
    let mut got = vec![0u8; written];
    peer.read_exact(&mut got).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), flushed)
        .await
        .expect("the flush ends once the peer has read it all")
        .unwrap();
    assert!(got.iter().all(|&b| b == 7));
}

#[tokio::test]
async fn dropping_the_stream_closes_its_socket_and_leaves_the_engine() {
    let Some((mut ring, mut peer)) = stream().await else {
        return;
    };
    ring.write_all(b"last words").await.unwrap();
    ring.flush().await.unwrap();
    drop(ring);
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), peer.read_to_end(&mut got))
        .await
        .expect("the socket is closed")
        .unwrap();
    assert_eq!(got, b"last words");
    for _ in 0..100 {
        // This thread's engine carries no other socket.
        if on_engine() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the socket stays counted on the engine");
}

#[tokio::test]
async fn a_reset_by_the_peer_fails_reads_and_writes_with_its_error() {
    let Some((mut ring, peer)) = stream().await else {
        return;
    };
    // A linger of zero turns the close into a reset.
    rustix::net::sockopt::set_socket_linger(&peer, Some(Duration::ZERO)).unwrap();
    drop(peer);
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), ring.read(&mut buf))
        .await
        .expect("the reset ends the read");
    let e = read.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
    let e = ring.write_all(b"x").await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
}

#[test]
fn a_stream_whose_engine_ends_with_its_runtime_fails_and_its_socket_is_closed() {
    let first = one_thread_runtime();
    let Some((ring, peer)) = first.block_on(async {
        let (ring, peer) = stream().await?;
        // Let the engine take the socket over.
        tokio::time::sleep(Duration::from_millis(20)).await;
        Some((ring, peer.into_std().unwrap()))
    }) else {
        return;
    };
    drop(first);
    let mut ring = ring;
    let e = one_thread_runtime()
        .block_on(ring.read(&mut [0u8; 8]))
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ECANCELED), "{e}");
    use std::io::Read;
    let mut peer = peer;
    peer.set_nonblocking(false).unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    peer.read_to_end(&mut rest)
        .expect("the socket it held is closed");
}

/// Waits (bounded) until the engine has seen the socket fail.
async fn until_failed(ring: &RingStream) {
    for _ in 0..500 {
        if ring.socket.lock().error.is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the engine never saw the reset");
}

#[tokio::test]
async fn a_write_after_a_reset_says_whether_anything_since_the_last_flush_was_sent() {
    let nothing_sent = |e: &io::Error| e.get_ref().is_some_and(|i| i.is::<NothingSent>());
    // Flushed before the reset: the next request's bytes never left.
    let Some((mut ring, mut peer)) = stream().await else {
        return;
    };
    ring.write_all(b"first").await.unwrap();
    ring.flush().await.unwrap();
    let mut got = [0u8; 5];
    peer.read_exact(&mut got).await.unwrap();
    rustix::net::sockopt::set_socket_linger(&peer, Some(Duration::ZERO)).unwrap();
    drop(peer);
    until_failed(&ring).await;
    let e = ring.write_all(b"second").await.unwrap_err();
    assert!(nothing_sent(&e), "{e}");
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
    // Written and sent, not flushed, before the reset: some of it may have reached the peer.
    let Some((mut ring, mut peer)) = stream().await else {
        return;
    };
    ring.write_all(b"unflushed").await.unwrap();
    let mut got = [0u8; 9];
    peer.read_exact(&mut got).await.unwrap();
    rustix::net::sockopt::set_socket_linger(&peer, Some(Duration::ZERO)).unwrap();
    drop(peer);
    until_failed(&ring).await;
    let e = ring.write_all(b"more").await.unwrap_err();
    assert!(!nothing_sent(&e), "{e}");
}

#[tokio::test]
async fn a_failed_send_after_the_peers_end_of_stream_leaves_reads_at_that_end() {
    let Some((mut ring, mut peer)) = stream().await else {
        return;
    };
    peer.write_all(b"bye").await.unwrap();
    peer.shutdown().await.unwrap();
    let mut got = Vec::new();
    ring.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"bye");
    drop(peer);
    // The closed peer answers the first send with a reset; a later send fails (bounded).
    let mut failed = None;
    for _ in 0..200 {
        let written = async {
            ring.write_all(b"still talking").await?;
            ring.flush().await
        };
        if let Err(e) = written.await {
            failed = Some(e);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let e = failed.expect("a send to a closed peer fails");
    assert!(
        matches!(
            e.kind(),
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
        ),
        "{e}"
    );
    let mut more = [0u8; 8];
    assert_eq!(
        ring.read(&mut more).await.unwrap(),
        0,
        "reads stay at the end of the stream"
    );
}

#[tokio::test]
async fn queues_let_a_message_larger_than_a_small_one_go_once_it_has_moved() {
    let Some((mut ring, mut peer)) = stream().await else {
        return;
    };
    let message = pattern(10_000, 13);
    let mut got = vec![0u8; message.len()];
    // Twice: the engine's send buffer comes back as the next send queue.
    for _ in 0..2 {
        ring.write_all(&message).await.unwrap();
        ring.flush().await.unwrap();
        peer.read_exact(&mut got).await.unwrap();
        peer.write_all(&message).await.unwrap();
        ring.read_exact(&mut got).await.unwrap();
    }
    let st = ring.socket.lock();
    // An idle connection holds no 10 KB message's worth of either queue.
    assert!(
        st.received.capacity() < message.len(),
        "{}",
        st.received.capacity()
    );
    assert!(
        st.unsent.capacity() < message.len(),
        "{}",
        st.unsent.capacity()
    );
}

#[tokio::test]
async fn a_flush_with_nothing_waiting_is_done_on_a_reset_socket_and_the_read_tells_the_reset() {
    let Some((mut ring, peer)) = stream().await else {
        return;
    };
    rustix::net::sockopt::set_socket_linger(&peer, Some(Duration::ZERO)).unwrap();
    drop(peer);
    until_failed(&ring).await;
    // As a socket's flush: nothing to send is nothing to fail. (hyper flushes as it serves a request;
    // a failed flush would end the connection before the reader of the body saw the reset.)
    ring.flush().await.unwrap();
    let e = ring.read(&mut [0u8; 8]).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
}

#[tokio::test]
async fn a_flush_fails_when_bytes_written_were_not_all_sent() {
    let Some((mut ring, peer)) = stream().await else {
        return;
    };
    // The peer reads nothing: writes fill its socket, then the send queue (bounded).
    let chunk = vec![9u8; 16 * 1024];
    for _ in 0..4096 {
        if tokio::time::timeout(Duration::from_millis(200), ring.write(&chunk))
            .await
            .is_err()
        {
            break;
        }
    }
    rustix::net::sockopt::set_socket_linger(&peer, Some(Duration::ZERO)).unwrap();
    drop(peer);
    let flushed = tokio::time::timeout(Duration::from_secs(5), ring.flush())
        .await
        .expect("the reset ends the flush");
    assert!(flushed.is_err(), "bytes that never left are not flushed");
}
