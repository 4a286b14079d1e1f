//! A backend process killed with SIGKILL under HTTP load.

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
