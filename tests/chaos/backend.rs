//! Backends failing under HTTP load: a process killed with SIGKILL, a backend that stops answering.

use super::*;

/// Case 4: a backend process killed with SIGKILL under HTTP load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_with_sigkill_is_retried_ejected_and_readmitted() {
    const INTERVAL: Duration = Duration::from_millis(500);
    let near = HttpBackend::start("near").await;
    let mut victim = PyHttp::start("victim", loopback_port(), None).await;
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    mode: http\n    backends: [{}, {}]\n    retries: {{ attempts: 2, on: [connect_failure, reset, gateway_error], budget_percent: 100 }}\n    health_check: {{ type: http, path: /name, interval: 500ms, rise: 1, fall: 1, timeout: 250ms, jitter: 0 }}\n",
        near.hostport(),
        victim.hostport()
    ))
    .await;
    let v = victim.hostport();
    assert!(wait_state(&agent, &v, "up", Duration::from_secs(5))
        .await
        .is_some());

    let load = http_load(agent.service_addr("web").unwrap(), Duration::from_secs(60));
    load.wait_for(100, Duration::from_secs(10)).await;
    let before = load.tally();
    assert!(before.from("victim") > 0, "both backends serve: {before:?}");
    let pid = victim.pid();
    victim.kill();
    let took = wait_state(&agent, &v, "down", Duration::from_secs(10))
        .await
        .expect("the killed backend is marked down");
    // One check interval, plus the check's timeout and 500 ms of slack for a busy machine.
    assert!(
        took <= INTERVAL + Duration::from_millis(750),
        "marked down after {took:?}"
    );

    // Down: not one more connection attempt while the load goes on.
    let tried = attempts(&agent, &v).await;
    load.wait_for(300, Duration::from_secs(20)).await;
    assert_eq!(
        attempts(&agent, &v).await,
        tried,
        "a down backend gets no traffic"
    );

    victim.restart().await;
    assert!(
        wait_state(&agent, &v, "up", Duration::from_secs(5))
            .await
            .is_some(),
        "the restarted backend comes back"
    );
    let served = load.tally().from("victim");
    load.wait_for(200, Duration::from_secs(20)).await;
    let tally = load.finish().await;
    println!("case 4: pid {pid} killed, marked down after {took:?}; {tally:?}");
    tally.assert_clean(500, "backend killed with SIGKILL");
    assert!(
        tally.from("victim") > served,
        "traffic returns to the restarted backend"
    );
}

/// A backend that stops answering mid-request (as one cut off by a partition does): an idempotent
/// request is retried on another backend after `timeouts.request`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_left_unanswered_is_retried_after_the_request_timeout() {
    let stuck = HttpBackend::slow("stuck", Duration::from_secs(5)).await;
    let good = HttpBackend::start("good").await;
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    mode: http\n    balance: round_robin\n    backends: [{}, {}]\n    timeouts: {{ request: 300ms }}\n    retries: {{ attempts: 1, on: [gateway_error], budget_percent: 100 }}\n",
        stuck.hostport(),
        good.hostport()
    ))
    .await;
    let addr = agent.service_addr("web").unwrap();
    let load = Load::start(2, 40, Duration::from_secs(30), move || {
        http_get_once(addr, "/name")
    });
    let tally = loop {
        if load.tally().ok + load.tally().failed >= 40 {
            break load.finish().await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((tally.ok, tally.failed), (40, 0), "{tally:?}");
    assert_eq!(tally.from("good"), 40);
    assert!(
        stuck.requests() > 0,
        "some requests went to the stuck backend first"
    );
    let (_, body) = http_get(agent.admin_addr(), "/metrics").await;
    assert!(
        metric(
            &body,
            "sinew_http_errors_total{cause=\"timeout\",service=\"web\"}"
        )
        .unwrap_or(0.0)
            == 0.0,
        "no timeout reached a client"
    );
}
