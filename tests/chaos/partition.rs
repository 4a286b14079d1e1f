//! Partitions between network namespaces: a backend cut off, and this host cut off from ZooKeeper.

use super::*;

/// Case 8a: a backend that ZooKeeper still lists but this host cannot reach (a partition between
/// network namespaces) is marked down by active checks and gets no traffic; the other one serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_backend_is_marked_down_and_gets_no_traffic() {
    let Some(ns) = netns::create_or_skip(1, "case 8a (partitioned backend)") else {
        return;
    };
    let far_addr = SocketAddr::from((ns.links[0].ns_ip, 8080));
    let far = PyHttp::start("far", far_addr, Some(&ns)).await;
    let near = HttpBackend::start("near").await;
    let zk = ZooKeeper::start().await;
    let client = zk.client().await;
    put(
        &client,
        &format!("{PATH}/near"),
        &nerve("127.0.0.1", near.addr.port(), "near"),
    )
    .await;
    put(
        &client,
        &format!("{PATH}/far"),
        &nerve(&far_addr.ip().to_string(), 8080, "far"),
    )
    .await;
    let agent = zk_agent(
        &zk.address(),
        "    mode: http\n    timeouts: { connect: 300ms, request: 2s }\n    retries: { attempts: 2, on: [connect_failure, reset, gateway_error], budget_percent: 100 }\n    health_check: { type: http, path: /name, interval: 300ms, rise: 1, fall: 2, timeout: 300ms, jitter: 0 }\n",
    )
    .await;
    let f = far.hostport();
    wait_backends(&agent, &[&near.hostport(), &f], Duration::from_secs(5)).await;
    assert!(wait_state(&agent, &f, "up", Duration::from_secs(5))
        .await
        .is_some());

    let load = http_load(agent.service_addr("web").unwrap(), Duration::from_secs(60));
    load.wait_for(100, Duration::from_secs(10)).await;
    assert!(
        load.tally().from("far") > 0,
        "the far backend serves before the cut"
    );
    ns.cut(0);
    let took = wait_state(&agent, &f, "down", Duration::from_secs(10))
        .await
        .expect("the unreachable backend is marked down");
    assert_eq!(backends(&agent).len(), 2, "ZooKeeper still lists it");
    // Attempts picked just before the mark end within the connect timeout; none start after it.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let tried = attempts(&agent, &f).await;
    let far_served = load.tally().from("far");
    load.wait_for(300, Duration::from_secs(20)).await;
    assert_eq!(
        attempts(&agent, &f).await,
        tried,
        "no traffic to the partitioned backend"
    );
    assert_eq!(load.tally().from("far"), far_served);

    ns.restore(0);
    assert!(
        wait_state(&agent, &f, "up", Duration::from_secs(10))
            .await
            .is_some(),
        "back when the partition heals"
    );
    load.wait_for(200, Duration::from_secs(20)).await;
    let tally = load.finish().await;
    println!("case 8a: marked down {took:?} after the cut; {tally:?}");
    tally.assert_clean(400, "partitioned backend");
    assert!(
        tally.from("far") > far_served,
        "traffic returns after the partition"
    );
}

/// Case 8b: this host cut off from ZooKeeper (which runs in a namespace) keeps routing on its last
/// known set and catches up with the changes made meanwhile when the link returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_off_from_zookeeper_routes_on_and_catches_up() {
    // Link 0 is sinew's path to ZooKeeper; link 1 is the test's own, never cut.
    let Some(ns) = netns::create_or_skip(2, "case 8b (partition from ZooKeeper)") else {
        return;
    };
    let zk = ZooKeeper::start_in(&ns, ns.links[1].ns_ip).await;
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
    let agent = zk_agent(&zk.address_via(ns.links[0].ns_ip), "").await;
    wait_backends(
        &agent,
        &[&a.hostport(), &b.hostport()],
        Duration::from_secs(10),
    )
    .await;

    let load = tcp_load(agent.service_addr("web").unwrap(), Duration::from_secs(60));
    load.wait_for(50, Duration::from_secs(10)).await;
    ns.cut(0);
    let connected = "sinew_discovery_connected{service=\"web\"}";
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            agent_metric(&agent, connected).await == Some(0.0)
        })
        .await,
        "sinew sees that it lost ZooKeeper"
    );
    // Meanwhile the fleet changes: a goes, c comes. sinew cannot know yet and keeps its set.
    remove(&client, &format!("{PATH}/a")).await;
    put(
        &client,
        &format!("{PATH}/c"),
        &nerve("127.0.0.1", c.addr.port(), "c"),
    )
    .await;
    let cut_served = load.tally();
    load.wait_for(300, Duration::from_secs(20)).await;
    assert_eq!(
        backends(&agent),
        vec![a.hostport(), b.hostport()].tap_sort(),
        "the last known set keeps serving"
    );
    let during = load.tally();
    assert!(
        during.from("a") > cut_served.from("a"),
        "a still serves during the cut"
    );

    ns.restore(0);
    wait_backends(
        &agent,
        &[&b.hostport(), &c.hostport()],
        Duration::from_secs(30),
    )
    .await;
    load.wait_for(100, Duration::from_secs(10)).await;
    let tally = load.finish().await;
    println!("case 8b: {tally:?}");
    tally.assert_clean(300, "cut off from ZooKeeper");
    assert!(
        tally.from("c") > 0,
        "the change made during the cut is picked up"
    );
}
