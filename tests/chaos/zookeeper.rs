//! ZooKeeper failing under load: killed for 30 s, a session expiring, 1,000 backend changes, the
//! ensemble losing its leader.

use super::*;

/// Case 1: ZooKeeper killed for 30 s and restarted while backends are stable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_killed_for_30_seconds_loses_no_connection() {
    let mut zk = ZooKeeper::start().await;
    let (a, b, c) = (
        EchoBackend::start("a").await,
        EchoBackend::start("b").await,
        EchoBackend::start("c").await,
    );
    let client = zk.client().await;
    put(
        &client,
        &format!("{PATH}/a"),
        &nerve("127.0.0.1", a.addr.port(), "a"),
    )
    .await;
    put(
        &client,
        &format!("{PATH}/b"),
        &nerve("127.0.0.1", b.addr.port(), "b"),
    )
    .await;
    drop(client);
    let agent = zk_agent(&zk.address(), "").await;
    wait_backends(
        &agent,
        &[&a.hostport(), &b.hostport()],
        Duration::from_secs(5),
    )
    .await;

    let load = tcp_load(agent.service_addr("web").unwrap(), Duration::from_secs(120));
    load.wait_for(50, Duration::from_secs(10)).await;
    zk.kill();
    let down_since = Instant::now();
    let connected = "sinew_discovery_connected{service=\"web\"}";
    let mut seen_disconnected = false;
    while down_since.elapsed() < Duration::from_secs(30) {
        seen_disconnected |= agent_metric(&agent, connected).await == Some(0.0);
        assert_eq!(
            backends(&agent),
            vec![a.hostport(), b.hostport()].tap_sort(),
            "the last known set stays while ZooKeeper is down"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        seen_disconnected,
        "the outage shows in sinew_discovery_connected"
    );
    let during = load.tally();
    zk.restart().await;
    let restarted = Instant::now();
    load.wait_for(50, Duration::from_secs(10)).await;

    // Back: a change made now reaches sinew (new session, watches armed again). The session manager
    // retries with a backoff of up to 10 s, and re-reads within a 2 s spread; a loaded machine adds
    // to that, so the bound is generous.
    let client = zk.client().await;
    remove(&client, &format!("{PATH}/a")).await;
    put(
        &client,
        &format!("{PATH}/c"),
        &nerve("127.0.0.1", c.addr.port(), "c"),
    )
    .await;
    wait_backends(
        &agent,
        &[&b.hostport(), &c.hostport()],
        Duration::from_secs(60),
    )
    .await;
    let caught_up = restarted.elapsed();
    load.wait_for(50, Duration::from_secs(10)).await;
    let tally = load.finish().await;
    println!(
        "case 1: {tally:?}; during the 30 s outage: ok {}; change seen {caught_up:?} after the restart",
        during.ok
    );
    tally.assert_clean(1000, "ZooKeeper down for 30 s");
    assert!(during.from("a") > 0 && during.from("b") > 0, "{during:?}");
    assert!(
        tally.from("c") > 0,
        "the new backend serves after the restart"
    );
}

/// Case 2: ZooKeeper session expiry (SIGSTOP past the session timeout, then SIGCONT).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_loses_no_connection() {
    let zk = ZooKeeper::start().await;
    let (a, b) = (EchoBackend::start("a").await, EchoBackend::start("b").await);
    let client = zk.client().await;
    put(
        &client,
        &format!("{PATH}/a"),
        &nerve("127.0.0.1", a.addr.port(), "a"),
    )
    .await;
    drop(client);
    let agent = zk_agent(&zk.address(), "").await;
    wait_backends(&agent, &[&a.hostport()], Duration::from_secs(5)).await;

    let load = tcp_load(agent.service_addr("web").unwrap(), Duration::from_secs(60));
    load.wait_for(50, Duration::from_secs(10)).await;
    zk.pause();
    tokio::time::sleep(Duration::from_secs(3)).await;
    zk.resume();
    let client = zk.client().await;
    put(
        &client,
        &format!("{PATH}/b"),
        &nerve("127.0.0.1", b.addr.port(), "b"),
    )
    .await;
    wait_backends(
        &agent,
        &[&a.hostport(), &b.hostport()],
        Duration::from_secs(30),
    )
    .await;
    load.wait_for(50, Duration::from_secs(10)).await;
    let tally = load.finish().await;
    println!("case 2: {tally:?}");
    tally.assert_clean(200, "session expiry");
    assert!(tally.from("b") > 0, "the change after the expiry serves");
    let expired = format!(
        "sinew_discovery_zookeeper_session_events_total{{ensemble=\"{}\",event=\"expired\"}}",
        zk.address()
    );
    assert!(
        agent_metric(&agent, &expired).await.unwrap_or(0.0) >= 1.0,
        "the session really expired"
    );
}

/// Case 3: 1,000 backend-set changes in ZooKeeper during load, always at least one healthy backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_backend_changes_lose_no_connection() {
    const CHANGES: usize = 1000;
    let zk = ZooKeeper::start().await;
    let stable = EchoBackend::start("stable").await;
    let churn = [
        EchoBackend::start("c0").await,
        EchoBackend::start("c1").await,
        EchoBackend::start("c2").await,
    ];
    let client = zk.client().await;
    put(
        &client,
        &format!("{PATH}/stable"),
        &nerve("127.0.0.1", stable.addr.port(), "stable"),
    )
    .await;
    let agent = zk_agent(&zk.address(), "").await;
    wait_backends(&agent, &[&stable.hostport()], Duration::from_secs(5)).await;
    let swaps = "sinew_service_backend_swaps_total{service=\"web\"}";
    let swaps_before = agent_metric(&agent, swaps).await.unwrap_or(0.0);

    let load = tcp_load(agent.service_addr("web").unwrap(), Duration::from_secs(90));
    load.wait_for(50, Duration::from_secs(10)).await;
    // Each change adds or removes one znode of a churning backend; `stable` is never touched.
    let mut present = [false; 3];
    for i in 0..CHANGES {
        let k = (i * 7 + i / 3) % 3;
        let path = format!("{PATH}/c{k}");
        if present[k] {
            client.delete(&path, None).await.expect("delete");
        } else {
            let port = churn[k].addr.port();
            client
                .create(
                    &path,
                    &nerve("127.0.0.1", port, &format!("c{k}")),
                    &support::zk::PERSISTENT,
                )
                .await
                .expect("create");
        }
        present[k] = !present[k];
        if i % 10 == 0 {
            // A short breath now and then, so the coalescing window passes and sets really swap.
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    }
    let mut want = vec![stable.hostport()];
    want.extend((0..3).filter(|&k| present[k]).map(|k| churn[k].hostport()));
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    wait_backends(&agent, &want, Duration::from_secs(5)).await;
    load.wait_for(50, Duration::from_secs(10)).await;
    let tally = load.finish().await;
    let swapped = agent_metric(&agent, swaps).await.unwrap_or(0.0) - swaps_before;
    println!("case 3: {CHANGES} changes, {swapped} swaps, {tally:?}");
    tally.assert_clean(200, "1,000 backend changes");
    assert!(
        swapped >= 10.0,
        "the set really moved under the load: {swapped} swaps"
    );
    let churned: usize = ["c0", "c1", "c2"].iter().map(|n| tally.from(n)).sum();
    assert!(churned > 0, "churning backends took traffic: {tally:?}");
}

/// Case 5: a 3-node ensemble loses its leader; discovery goes on with the survivors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_ensemble_leader_loses_no_connection() {
    let mut nodes = ZooKeeper::ensemble(3).await;
    let (a, b) = (EchoBackend::start("a").await, EchoBackend::start("b").await);
    let hosts: Vec<String> = nodes.iter().map(|n| n.address()).collect();
    let client = nodes[0].client().await;
    put(
        &client,
        &format!("{PATH}/a"),
        &nerve("127.0.0.1", a.addr.port(), "a"),
    )
    .await;
    drop(client);
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    discovery:\n      zookeeper: {{ hosts: [{}], path: {PATH}, session_timeout: 4s }}\n",
        hosts.join(", ")
    ))
    .await;
    wait_backends(&agent, &[&a.hostport()], Duration::from_secs(10)).await;

    let load = tcp_load(agent.service_addr("web").unwrap(), Duration::from_secs(90));
    load.wait_for(50, Duration::from_secs(10)).await;
    let mut leader = None;
    for (i, n) in nodes.iter().enumerate() {
        if n.mode().await.as_deref() == Some("leader") {
            leader = Some(i);
        }
    }
    let leader = leader.expect("one node leads");
    nodes[leader].kill();
    let survivors: Vec<String> = (0..3)
        .filter(|&i| i != leader)
        .map(|i| nodes[i].address())
        .collect();
    let client = connect_within(&survivors.join(","), Duration::from_secs(30)).await;
    put(
        &client,
        &format!("{PATH}/b"),
        &nerve("127.0.0.1", b.addr.port(), "b"),
    )
    .await;
    wait_backends(
        &agent,
        &[&a.hostport(), &b.hostport()],
        Duration::from_secs(20),
    )
    .await;
    load.wait_for(50, Duration::from_secs(10)).await;
    let tally = load.finish().await;
    println!("case 5: {tally:?}");
    tally.assert_clean(100, "leader loss");
    assert!(
        tally.from("b") > 0,
        "a change written after the election serves"
    );
}
