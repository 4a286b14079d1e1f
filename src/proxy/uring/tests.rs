use super::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A connected pair of loopback TCP sockets: (the end the test keeps, the end handed to the engine).
pub(super) async fn pair() -> (TcpStream, OwnedFd) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let kept = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (given, _) = listener.accept().await.unwrap();
    (kept, given.into_std().unwrap().into())
}

/// The engine, or `None` where this kernel refuses io_uring (said on stderr).
pub(super) fn engine_or_skip() -> Option<&'static Engine> {
    match engine() {
        Ok(e) => Some(e),
        Err(e) => {
            eprintln!("io_uring unavailable here ({e}); skipped");
            None
        }
    }
}

fn counted() -> (Arc<Progress>, Arc<Counter>, Arc<Counter>) {
    let (from_client, from_backend) = (Arc::new(Counter::default()), Arc::new(Counter::default()));
    let progress = Progress::new(
        Activity::new(),
        Some(Arc::clone(&from_client)),
        Some(Arc::clone(&from_backend)),
    );
    (progress, from_client, from_backend)
}

#[tokio::test]
async fn a_megabyte_each_way_arrives_whole_in_order_and_counted_with_half_close_passed_on() {
    megabyte_each_way().await;
}

#[tokio::test]
async fn a_reader_that_stops_reading_holds_two_buffers_and_stops_its_peers_receives() {
    reader_that_stops_reading().await;
}

// Kernels before 6.17 cap no multishot receive: the engine receives one buffer at a time.
#[test]
fn on_single_shot_receives_the_bytes_and_the_bounds_hold_as_well() {
    recv::SINGLE_SHOT.set(true);
    one_thread_runtime().block_on(async {
        megabyte_each_way().await;
        reader_that_stops_reading().await;
    });
    assert!(
        !recv::SINGLE_SHOT.get(),
        "this thread's engine was started single-shot"
    );
}

/// A megabyte each way through a copy, the client half-closing first: every byte arrives in order
/// and counted, then each end.
async fn megabyte_each_way() {
    let Some(engine) = engine_or_skip() else {
        return;
    };
    let (mut client, client_fd) = pair().await;
    let (mut server, server_fd) = pair().await;
    let (progress, from_client, from_backend) = counted();
    let copy = tokio::spawn({
        let progress = Arc::clone(&progress);
        async move { engine.copy(client_fd, server_fd, progress).await }
    });
    let request: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let answer: Vec<u8> = (0..1_000_000u32).map(|i| (i % 241) as u8).collect();
    let sent = request.clone();
    let client_side = tokio::spawn(async move {
        client.write_all(&sent).await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        got
    });
    let mut got = Vec::new();
    server.read_to_end(&mut got).await.unwrap();
    assert!(
        got == request,
        "the client's bytes reach the server whole and in order, then its end"
    );
    server.write_all(&answer).await.unwrap();
    drop(server);
    let back = tokio::time::timeout(Duration::from_secs(10), client_side)
        .await
        .unwrap()
        .unwrap();
    assert!(
        back == answer,
        "the server's answer reaches the client whole, then its end"
    );
    let ended = tokio::time::timeout(Duration::from_secs(5), copy)
        .await
        .unwrap()
        .unwrap();
    assert!(ended.is_ok(), "{ended:?}");
    assert_eq!(
        (progress.from_client(), progress.from_backend()),
        (1_000_000, 1_000_000)
    );
    assert_eq!(
        (from_client.get(), from_backend.get()),
        (1_000_000, 1_000_000)
    );
}

#[tokio::test]
async fn many_connections_at_once_each_get_their_own_bytes() {
    let Some(engine) = engine_or_skip() else {
        return;
    };
    let mut tasks = Vec::new();
    for n in 0..48u8 {
        tasks.push(tokio::spawn(async move {
            let (mut client, client_fd) = pair().await;
            let (mut server, server_fd) = pair().await;
            let (progress, _, _) = counted();
            let copy = tokio::spawn(engine.copy(client_fd, server_fd, progress));
            for round in 0..20u8 {
                let ask = [n, round, 1, 2, 3];
                client.write_all(&ask).await.unwrap();
                let mut got = [0u8; 5];
                server.read_exact(&mut got).await.unwrap();
                assert_eq!(got, ask);
                server.write_all(&[round, n]).await.unwrap();
                let mut back = [0u8; 2];
                client.read_exact(&mut back).await.unwrap();
                assert_eq!(back, [round, n]);
            }
            drop(client);
            drop(server);
            copy.await.unwrap()
        }));
    }
    for task in tasks {
        let ended = tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .unwrap()
            .unwrap();
        assert!(ended.is_ok(), "{ended:?}");
    }
}

#[tokio::test]
async fn dropping_the_copy_closes_both_sockets_at_once() {
    let Some(engine) = engine_or_skip() else {
        return;
    };
    let (mut client, client_fd) = pair().await;
    let (mut server, server_fd) = pair().await;
    let (progress, _, _) = counted();
    let copy = tokio::spawn(engine.copy(client_fd, server_fd, progress));
    client.write_all(b"hello").await.unwrap();
    let mut got = [0u8; 5];
    server.read_exact(&mut got).await.unwrap();
    copy.abort();
    // Both ends see their connection end (EOF or a reset) well before any timeout of theirs.
    for side in [&mut client, &mut server] {
        let mut rest = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(5), side.read_to_end(&mut rest)).await;
        assert!(ended.is_ok(), "a cancelled copy closes its sockets");
        assert!(rest.is_empty());
    }
}

#[tokio::test]
async fn a_client_reset_ends_the_copy_with_its_error() {
    let Some(engine) = engine_or_skip() else {
        return;
    };
    let (client, client_fd) = pair().await;
    let (mut server, server_fd) = pair().await;
    let (progress, _, _) = counted();
    let copy = tokio::spawn(engine.copy(client_fd, server_fd, progress));
    // A linger of zero turns the close into a reset.
    rustix::net::sockopt::set_socket_linger(&client, Some(Duration::ZERO)).unwrap();
    drop(client);
    let ended = tokio::time::timeout(Duration::from_secs(5), copy)
        .await
        .unwrap()
        .unwrap();
    let error = ended.unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::ConnectionReset, "{error}");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), server.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the backend's socket is closed too");
}

/// A client that reads nothing while its server writes: the engine holds two buffers of it and
/// stops receiving from the server.
async fn reader_that_stops_reading() {
    let Some(engine) = engine_or_skip() else {
        return;
    };
    let (client, client_fd) = pair().await;
    let (mut server, server_fd) = pair().await;
    // Small socket buffers towards the client, so that what the engine holds shows.
    rustix::net::sockopt::set_socket_recv_buffer_size(&client, 64 * 1024).unwrap();
    rustix::net::sockopt::set_socket_send_buffer_size(&client_fd, 64 * 1024).unwrap();
    let (progress, _, from_backend) = counted();
    let copy = tokio::spawn({
        let progress = Arc::clone(&progress);
        async move { engine.copy(client_fd, server_fd, progress).await }
    });
    // The client reads nothing: the server's bytes fill the client's socket, then the engine's two
    // buffers, then the server's socket, and its writes stop being taken.
    let chunk = vec![7u8; 64 * 1024];
    let mut written = 0usize;
    while tokio::time::timeout(Duration::from_millis(500), server.write_all(&chunk))
        .await
        .is_ok()
    {
        written += chunk.len();
        assert!(
            written < 64 << 20,
            "the engine kept taking bytes nobody reads"
        );
    }
    let taken = from_backend.get();
    // The client's two socket buffers (the kernel doubles what is asked) and the engine's two buffers.
    assert!(
        taken <= 4 * 128 * 1024 + 2 * BUFFER_SIZE as u64,
        "the engine took {taken} bytes nobody reads"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        from_backend.get(),
        taken,
        "no receive while two buffers wait to be sent"
    );
    drop(client);
    drop(server);
    let _ = tokio::time::timeout(Duration::from_secs(5), copy)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_copy_handed_to_a_stopped_engine_ends_at_once_and_closes_its_sockets() {
    let shared = Shared::new(Wake::Notify(tokio::sync::Notify::new()));
    shared.stopped.store(true, Ordering::SeqCst);
    let stopped = Engine {
        shared,
        next_key: AtomicU64::new(0),
    };
    assert!(!stopped.running());
    let (mut client, client_fd) = pair().await;
    let (mut server, server_fd) = pair().await;
    let (progress, _, _) = counted();
    let ended = tokio::time::timeout(
        Duration::from_secs(5),
        stopped.copy(client_fd, server_fd, progress),
    )
    .await
    .expect("answered at once, not left waiting");
    assert!(ended.is_err());
    for side in [&mut client, &mut server] {
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(5), side.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "the sockets handed over are closed");
    }
    assert!(stopped.shared.lock().is_empty(), "nothing left queued");
}

#[tokio::test]
async fn a_byte_at_a_time_for_a_reader_that_stops_reading_costs_the_ring_few_buffers() {
    // An engine of its own: how far its ring grows is this test's alone.
    let engine: &'static Engine = match Engine::start() {
        Ok(e) => Box::leak(Box::new(e)),
        Err(e) => return eprintln!("io_uring unavailable here ({e}); skipped"),
    };
    let (client, client_fd) = pair().await;
    let (mut server, server_fd) = pair().await;
    rustix::net::sockopt::set_socket_recv_buffer_size(&client, 4096).unwrap();
    rustix::net::sockopt::set_socket_send_buffer_size(&client_fd, 4096).unwrap();
    server.set_nodelay(true).unwrap();
    let (progress, _, from_backend) = counted();
    let copy = tokio::spawn({
        let progress = Arc::clone(&progress);
        async move { engine.copy(client_fd, server_fd, progress).await }
    });
    // The server writes a byte at a time as fast as it can and the client reads nothing: once the
    // client's socket is full, every arrival the engine receives takes a ring buffer of its own, and
    // the kernel may receive many of them before the engine sees that two wait.
    const WRITES: usize = 200_000;
    for _ in 0..WRITES {
        tokio::time::timeout(Duration::from_secs(5), server.write_all(&[1]))
            .await
            .expect("the server's socket takes 200 kB")
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let taken = from_backend.get();
    assert!(
        taken < WRITES as u64,
        "receives stopped once the client stopped reading ({taken} bytes taken)"
    );
    let stats = &engine.shared.stats;
    let (buffers, own) = (
        stats.buffers.load(Ordering::Relaxed),
        stats.own.load(Ordering::Relaxed),
    );
    assert!(
        buffers <= 4 * u64::from(BUFFERS_STEP) && own == 0,
        "the ring grew to {buffers} buffers and {own} receives found it dry"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(from_backend.get(), taken, "nothing more is received");
    drop(client);
    drop(server);
    let _ = tokio::time::timeout(Duration::from_secs(5), copy)
        .await
        .unwrap();
}

/// A one-thread runtime, as sinew runs with `threads: 1`.
pub(super) fn one_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Hands a new connection to `engine` and checks that a ping crosses it; returns the client's and the
/// server's ends.
async fn ping_across(engine: &'static Engine) -> (TcpStream, TcpStream) {
    let (mut client, client_fd) = pair().await;
    let (mut server, server_fd) = pair().await;
    let (progress, _, _) = counted();
    tokio::spawn(async move { engine.copy(client_fd, server_fd, progress).await });
    client.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), server.read_exact(&mut got))
        .await
        .expect("the engine moves the bytes")
        .unwrap();
    assert_eq!(&got, b"ping", "the engine moves the bytes");
    (client, server)
}

#[test]
fn an_engine_on_a_runtime_that_ends_closes_its_connections_and_the_next_runtime_gets_another() {
    use std::io::Read;
    let first = one_thread_runtime();
    let Some((client, server, engine)) = first.block_on(async {
        let engine = engine_or_skip()?;
        let (client, server) = ping_across(engine).await;
        Some((
            client.into_std().unwrap(),
            server.into_std().unwrap(),
            engine,
        ))
    }) else {
        return;
    };
    drop(first);
    assert!(!engine.running(), "its loop ended with its runtime");
    for mut side in [client, server] {
        side.set_nonblocking(false).unwrap();
        side.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = Vec::new();
        side.read_to_end(&mut rest)
            .expect("the sockets it held are closed, not left open");
    }
    let second = one_thread_runtime();
    second.block_on(async {
        let next = engine_or_skip().unwrap();
        assert!(next.running());
        assert!(
            !std::ptr::eq(next, engine),
            "a new engine for the new runtime"
        );
    });
}

#[test]
fn an_engine_whose_runtime_ends_before_its_loop_first_ran_is_stopped_and_replaced() {
    let first = one_thread_runtime();
    // The loop's task is spawned but never polled: `block_on` returns first.
    let Some(engine) = first.block_on(async { engine_or_skip() }) else {
        return;
    };
    drop(first);
    assert!(!engine.running(), "stopped although its loop never ran");
    one_thread_runtime().block_on(async {
        let next = engine_or_skip().unwrap();
        assert!(
            !std::ptr::eq(next, engine),
            "a new engine for the new runtime"
        );
        ping_across(next).await;
    });
}
