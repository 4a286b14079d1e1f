//! sinew's own lifecycle under load: live reloads and SIGTERM.

use super::*;

/// Case 6: live reload under load. Services are added, changed and removed, and broken configs are
/// rejected, by SIGHUP and by `POST /api/reload`, while clients use the services that do not change:
/// not one of their new connections fails, and not one of their open connections drops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_reloads_drop_no_connection_of_unchanged_services() {
    let (steady, b, c) = (
        EchoBackend::start("steady").await,
        EchoBackend::start("b").await,
        EchoBackend::start("c").await,
    );
    let web = HttpBackend::start("steady-http").await;
    let (tcp_port, http_port, extra_port, admin_port) = (
        process::free_port(),
        process::free_port(),
        process::free_port(),
        process::free_port(),
    );
    let base = format!(
        "admin: {{ listen: 127.0.0.1:{admin_port} }}\nservices:\n  steady:\n    listen: 127.0.0.1:{tcp_port}\n    backends: [{}]\n  steady_http:\n    listen: 127.0.0.1:{http_port}\n    mode: http\n    backends: [{}]\n",
        steady.hostport(),
        web.hostport()
    );
    let extra = |backend: &EchoBackend| {
        format!(
            "  extra:\n    listen: 127.0.0.1:{extra_port}\n    backends: [{}]\n",
            backend.hostport()
        )
    };
    let path = process::temp_file("chaos-reload.yaml", &base);
    let sinew = process::Proc::run(&path);
    let (tcp, http, extra_addr, admin): (SocketAddr, SocketAddr, SocketAddr, SocketAddr) = (
        ([127, 0, 0, 1], tcp_port).into(),
        ([127, 0, 0, 1], http_port).into(),
        ([127, 0, 0, 1], extra_port).into(),
        ([127, 0, 0, 1], admin_port).into(),
    );
    process::wait_listening(tcp).await;
    process::wait_listening(http).await;

    // New connections to both unchanged services, and four long-lived ones that echo all along.
    let tcp_load = tcp_load(tcp, Duration::from_secs(90));
    let http_load = Load::start(2, 100_000, Duration::from_secs(90), move || {
        http_get_once(http, "/")
    });
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = tokio::net::TcpStream::connect(tcp).await.unwrap();
        assert_eq!(read_line(&mut s).await.unwrap(), "steady");
        let s = std::sync::Arc::new(tokio::sync::Mutex::new(s));
        held.push(Load::start(
            1,
            100_000,
            Duration::from_secs(90),
            move || {
                let s = std::sync::Arc::clone(&s);
                async move {
                    use tokio::io::AsyncWriteExt;
                    let mut s = s.lock().await;
                    s.write_all(b"held\n")
                        .await
                        .map_err(|e| format!("write: {e}"))?;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    read_line(&mut s).await
                }
            },
        ));
    }
    tcp_load.wait_for(50, Duration::from_secs(10)).await;

    // Three rounds: add `extra`, change its backend, reject a broken file, remove it. Rounds alternate
    // SIGHUP and the API; each step is checked before the next.
    let reload = |by_signal: bool| {
        let sinew = &sinew;
        async move {
            if by_signal {
                sinew.signal("-HUP");
            } else {
                let (status, body) = post(admin, "/api/reload").await;
                assert_eq!(status, 200, "{body}");
            }
        }
    };
    let mut reloads = 0;
    for round in 0..3 {
        let by_signal = round % 2 == 0;
        std::fs::write(&path, format!("{base}{}", extra(&b))).unwrap();
        reload(by_signal).await;
        process::wait_listening(extra_addr).await;
        assert_eq!(greet(extra_addr).await.unwrap(), "b", "added");
        std::fs::write(&path, format!("{base}{}", extra(&c))).unwrap();
        reload(by_signal).await;
        assert!(
            eventually_async(Duration::from_secs(5), || async {
                greet(extra_addr).await.as_deref() == Ok("c")
            })
            .await,
            "changed"
        );
        std::fs::write(&path, format!("{base}  extra:\n    listen: nowhere\n")).unwrap();
        if by_signal {
            sinew.signal("-HUP");
            tokio::time::sleep(Duration::from_millis(300)).await;
        } else {
            let (status, body) = post(admin, "/api/reload").await;
            assert_eq!(status, 400, "a broken config is rejected: {body}");
        }
        assert_eq!(
            greet(extra_addr).await.unwrap(),
            "c",
            "the running config stays"
        );
        std::fs::write(&path, &base).unwrap();
        reload(by_signal).await;
        assert!(
            eventually_async(Duration::from_secs(5), || async {
                tokio::net::TcpStream::connect(extra_addr).await.is_err()
            })
            .await,
            "removed"
        );
        reloads += 4;
        tcp_load.wait_for(20, Duration::from_secs(10)).await;
    }
    let (tcp_tally, http_tally) = (tcp_load.finish().await, http_load.finish().await);
    let mut held_ok = 0;
    for h in held {
        let t = h.finish().await;
        t.assert_clean(10, "a held connection of an unchanged service");
        held_ok += t.ok;
    }
    println!("case 6: {reloads} reloads; tcp {tcp_tally:?}; http {http_tally:?}; held echoes ok {held_ok}");
    tcp_tally.assert_clean(200, "new TCP connections during reloads");
    http_tally.assert_clean(200, "HTTP requests during reloads");
}

/// Case 7: SIGTERM under HTTP load. Every request that reached sinew before its listener closed gets
/// its answer (each takes 200 ms, well within the grace period); later ones are refused at connect,
/// and sinew exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_no_in_flight_request() {
    let backend = HttpBackend::start("slow").await;
    let (port, admin) = (process::free_port(), process::free_port());
    let path = process::temp_file(
        "chaos-term.yaml",
        &format!(
            "admin: {{ listen: 127.0.0.1:{admin} }}\nshutdown_grace: 5s\nservices:\n  web:\n    listen: 127.0.0.1:{port}\n    mode: http\n    backends: [{}]\n",
            backend.hostport()
        ),
    );
    let mut sinew = process::Proc::run(&path);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    process::wait_listening(addr).await;
    // A refused connection never was in flight: it counts apart, as "refused".
    let load = Load::start(8, 100_000, Duration::from_secs(60), move || async move {
        match http_get_once(addr, "/slow/200").await {
            Err(e) if e.starts_with("connect:") => Ok("refused".to_string()),
            other => other,
        }
    });
    load.wait_for(40, Duration::from_secs(10)).await;
    assert_eq!(load.tally().from("refused"), 0);
    // Halfway through the next 200 ms round: requests are in flight.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let at_term = load.tally();
    sinew.signal("-TERM");
    let status = tokio::task::spawn_blocking(move || {
        let status = sinew.0.wait();
        (status, sinew)
    })
    .await
    .unwrap()
    .0
    .unwrap();
    load.wait_for(40, Duration::from_secs(10)).await;
    let tally = load.finish().await;
    println!("case 7: {tally:?}");
    assert!(status.success(), "sinew exits 0 after draining: {status}");
    assert!(tally.from("refused") > 0, "the load ran past the shutdown");
    assert!(
        tally.from("slow") > at_term.from("slow"),
        "requests in flight at SIGTERM were answered"
    );
    tally.assert_clean(40, "SIGTERM under load");
}
