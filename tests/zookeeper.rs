//! ZooKeeper discovery against a real ZooKeeper: Nerve znodes move traffic, ZooKeeper outages and
//! session expiry never stop routing, malformed znodes are skipped, a late path is waited for.

mod support;

use sinew::agent::Agent;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::relay::Relay;
use support::zk::{nerve, put, remove, ZooKeeper};
use support::*;

const PATH: &str = "/nerve/services/web/services";

async fn start(zk: &ZooKeeper, extra: &str) -> Agent {
    start_with(&zk.address(), "session_timeout: 1s", extra).await
}

/// An agent watching `PATH` on `hosts`, with `settings` in its `zookeeper` mapping.
async fn start_with(hosts: &str, settings: &str, extra: &str) -> Agent {
    agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    discovery:\n      zookeeper: {{ hosts: [{hosts}], path: {PATH}, {settings} }}\n{extra}",
    ))
    .await
}

fn ports(agent: &Agent) -> Vec<u16> {
    let mut p: Vec<u16> = agent
        .balancer("web")
        .unwrap()
        .current()
        .entries()
        .iter()
        .map(|e| e.backend.port)
        .collect();
    p.sort_unstable();
    p
}

async fn wait_ports(agent: &Agent, mut want: Vec<u16>, within: Duration) {
    want.sort_unstable();
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if ports(agent) == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("backends {:?}, expected {want:?}", ports(agent));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nerve_znodes_added_and_removed_move_traffic_within_a_second() {
    let zk = ZooKeeper::start().await;
    let (a, b, c) = (
        EchoBackend::start("a").await,
        EchoBackend::start("b").await,
        EchoBackend::start("c").await,
    );
    let client = zk.client().await;
    put(
        &client,
        &format!("{PATH}/i-a_0000000001"),
        &nerve("127.0.0.1", a.addr.port(), "i-a"),
    )
    .await;
    put(
        &client,
        &format!("{PATH}/i-b_0000000002"),
        &nerve("127.0.0.1", b.addr.port(), "i-b"),
    )
    .await;
    let agent = start(&zk, "").await;
    wait_ports(
        &agent,
        vec![a.addr.port(), b.addr.port()],
        Duration::from_secs(5),
    )
    .await;
    let addr = agent.service_addr("web").unwrap();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        seen.insert(greet(addr).await.unwrap());
    }
    assert_eq!(seen.len(), 2);

    put(
        &client,
        &format!("{PATH}/i-c_0000000003"),
        &nerve("127.0.0.1", c.addr.port(), "i-c"),
    )
    .await;
    wait_ports(
        &agent,
        vec![a.addr.port(), b.addr.port(), c.addr.port()],
        Duration::from_secs(1),
    )
    .await;
    remove(&client, &format!("{PATH}/i-a_0000000001")).await;
    wait_ports(
        &agent,
        vec![b.addr.port(), c.addr.port()],
        Duration::from_secs(1),
    )
    .await;
    for _ in 0..6 {
        assert_ne!(greet(addr).await.unwrap(), "a");
    }
    let (_, api) = http_get(agent.admin_addr(), "/api/services").await;
    assert!(
        api.contains("zookeeper:i-b_0000000002"),
        "origins name the znode: {api}"
    );
    let (_, metrics) = http_get(agent.admin_addr(), "/metrics").await;
    assert!(
        metrics.contains(&format!(
            "sinew_discovery_zookeeper_connected{{ensemble=\"{}\"}} 1",
            zk.address()
        )),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_outage_and_restart_never_stop_routing() {
    let mut zk = ZooKeeper::start().await;
    let (a, b) = (EchoBackend::start("a").await, EchoBackend::start("b").await);
    let client = zk.client().await;
    put(
        &client,
        &format!("{PATH}/a"),
        &nerve("127.0.0.1", a.addr.port(), "a"),
    )
    .await;
    let agent = start(&zk, "").await;
    wait_ports(&agent, vec![a.addr.port()], Duration::from_secs(5)).await;
    let addr = agent.service_addr("web").unwrap();

    // Clients keep connecting while ZooKeeper is killed, stays down past the session timeout, and restarts.
    let failures = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let load = {
        let (failures, ok) = (Arc::clone(&failures), Arc::clone(&ok));
        tokio::spawn(async move {
            for _ in 0..400 {
                match greet(addr).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failures.fetch_add(1, Ordering::Relaxed),
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    drop(client);
    zk.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        ports(&agent),
        vec![a.addr.port()],
        "the last known set stays while ZooKeeper is down"
    );
    zk.restart().await;
    load.await.unwrap();
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "{} connections succeeded",
        ok.load(Ordering::Relaxed)
    );

    // After the restart, changes are seen again (new session, watches re-armed).
    let client = zk.client().await;
    put(
        &client,
        &format!("{PATH}/b"),
        &nerve("127.0.0.1", b.addr.port(), "b"),
    )
    .await;
    wait_ports(
        &agent,
        vec![a.addr.port(), b.addr.port()],
        Duration::from_secs(10),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_new_znodes_is_one_swap() {
    const SWAPS: &str = "sinew_service_backend_swaps_total{service=\"web\"}";
    let zk = ZooKeeper::start().await;
    let client = zk.client().await;
    put(
        &client,
        &format!("{PATH}/n00"),
        &nerve("127.0.0.1", 20000, "n00"),
    )
    .await;
    let agent = start(&zk, "").await;
    wait_ports(&agent, vec![20000], Duration::from_secs(5)).await;
    let (_, body) = http_get(agent.admin_addr(), "/metrics").await;
    let before = metric(&body, SWAPS).expect("swaps counted");

    // 30 creates, one after the other: a burst spread over a few tens of milliseconds.
    for i in 1..=30u16 {
        let name = format!("n{i:02}");
        client
            .create(
                &format!("{PATH}/{name}"),
                &nerve("127.0.0.1", 20000 + i, &name),
                &support::zk::PERSISTENT,
            )
            .await
            .expect("create");
    }
    wait_ports(&agent, (20000..=20030).collect(), Duration::from_secs(1)).await;
    let (_, body) = http_get(agent.admin_addr(), "/metrics").await;
    let swaps = metric(&body, SWAPS).expect("swaps counted") - before;
    assert!(swaps <= 3.0, "30 changes in a burst made {swaps} swaps");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_data_in_an_existing_znode_moves_traffic_within_a_second() {
    let zk = ZooKeeper::start().await;
    let (a, b) = (EchoBackend::start("a").await, EchoBackend::start("b").await);
    let client = zk.client().await;
    let node = format!("{PATH}/i-1_0000000001");
    put(&client, &node, &nerve("127.0.0.1", a.addr.port(), "i-1")).await;
    let agent = start(&zk, "").await;
    wait_ports(&agent, vec![a.addr.port()], Duration::from_secs(5)).await;
    // Nerve's report_up writes into the node it already has (`set`), rather than a new child.
    put(&client, &node, &nerve("127.0.0.1", b.addr.port(), "i-1")).await;
    wait_ports(&agent, vec![b.addr.port()], Duration::from_secs(1)).await;
    assert_eq!(
        greet(agent.service_addr("web").unwrap()).await.unwrap(),
        "b"
    );
    // The data watch is armed again: a second write is seen too.
    put(&client, &node, &nerve("127.0.0.1", a.addr.port(), "i-1")).await;
    wait_ports(&agent, vec![a.addr.port()], Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chroot_on_the_hosts_roots_the_path() {
    let zk = ZooKeeper::start().await;
    let (a, b) = (EchoBackend::start("a").await, EchoBackend::start("b").await);
    let client = zk.client().await;
    put(
        &client,
        &format!("/smartstack{PATH}/a"),
        &nerve("127.0.0.1", a.addr.port(), "a"),
    )
    .await;
    put(
        &client,
        &format!("{PATH}/b"),
        &nerve("127.0.0.1", b.addr.port(), "b"),
    )
    .await;
    let agent = agent(&format!(
        "services:\n  web:\n    listen: 127.0.0.1:0\n    discovery:\n      zookeeper: {{ hosts: [\"{}/smartstack\"], path: {PATH} }}\n",
        zk.address()
    ))
    .await;
    wait_ports(&agent, vec![a.addr.port()], Duration::from_secs(5)).await;
    assert_eq!(
        greet(agent.service_addr("web").unwrap()).await.unwrap(),
        "a"
    );
}

/// Polls `/metrics` until `series` has the value `want`; its last value otherwise.
async fn wait_metric(agent: &Agent, series: &str, want: f64, within: Duration) -> Option<f64> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (_, body) = http_get(agent.admin_addr(), "/metrics").await;
        let got = metric(&body, series);
        if got == Some(want) || tokio::time::Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_service_connected_and_last_update_gauges_follow_zookeeper() {
    const CONNECTED: &str = "sinew_discovery_connected{service=\"web\"}";
    const UPDATED: &str = "sinew_discovery_last_update_timestamp_seconds{service=\"web\"}";
    let mut zk = ZooKeeper::start().await;
    let a = EchoBackend::start("a").await;
    let client = zk.client().await;
    put(
        &client,
        &format!("{PATH}/a"),
        &nerve("127.0.0.1", a.addr.port(), "a"),
    )
    .await;
    drop(client);
    let agent = start(&zk, "").await;
    wait_ports(&agent, vec![a.addr.port()], Duration::from_secs(5)).await;
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as f64
    };
    let connected_at = now();
    assert_eq!(
        wait_metric(&agent, CONNECTED, 1.0, Duration::from_secs(2)).await,
        Some(1.0)
    );
    let (_, body) = http_get(agent.admin_addr(), "/metrics").await;
    let first = metric(&body, UPDATED).expect("a last-update timestamp");
    assert!(
        (first - connected_at).abs() <= 5.0,
        "{first} vs {connected_at}"
    );

    zk.kill();
    assert_eq!(
        wait_metric(&agent, CONNECTED, 0.0, Duration::from_secs(5)).await,
        Some(0.0),
        "a lost connection shows in the service's gauge"
    );
    assert_eq!(ports(&agent), vec![a.addr.port()], "the set stays");

    tokio::time::sleep(Duration::from_millis(1100)).await;
    zk.restart().await;
    assert_eq!(
        wait_metric(&agent, CONNECTED, 1.0, Duration::from_secs(10)).await,
        Some(1.0),
        "the gauge comes back with the session"
    );
    let (_, body) = http_get(agent.admin_addr(), "/metrics").await;
    let second = metric(&body, UPDATED).expect("a last-update timestamp");
    assert!(
        second > first,
        "re-read after the restart: {second} > {first}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_re_establishes_watches() {
    let zk = ZooKeeper::start().await;
    let (a, b) = (EchoBackend::start("a").await, EchoBackend::start("b").await);
    let client = zk.client().await;
    put(
        &client,
        &format!("{PATH}/a"),
        &nerve("127.0.0.1", a.addr.port(), "a"),
    )
    .await;
    let agent = start(&zk, "").await;
    wait_ports(&agent, vec![a.addr.port()], Duration::from_secs(5)).await;
    drop(client);
    // Frozen past the 1 s session timeout: the server expires sinew's session when it thaws.
    zk.pause();
    tokio::time::sleep(Duration::from_secs(3)).await;
    zk.resume();
    assert_eq!(
        greet(agent.service_addr("web").unwrap()).await.unwrap(),
        "a"
    );
    let client = zk.client().await;
    put(
        &client,
        &format!("{PATH}/b"),
        &nerve("127.0.0.1", b.addr.port(), "b"),
    )
    .await;
    wait_ports(
        &agent,
        vec![a.addr.port(), b.addr.port()],
        Duration::from_secs(10),
    )
    .await;
    let (_, metrics) = http_get(agent.admin_addr(), "/metrics").await;
    let expired = format!(
        "sinew_discovery_zookeeper_session_events_total{{ensemble=\"{}\",event=\"expired\"}}",
        zk.address()
    );
    assert!(
        metric(&metrics, &expired).unwrap_or(0.0) >= 1.0,
        "the session expired and was replaced: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_znodes_are_skipped_and_a_late_path_is_waited_for() {
    let zk = ZooKeeper::start().await;
    let (a, b) = (EchoBackend::start("a").await, EchoBackend::start("b").await);
    let agent = start(&zk, "").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        http_get(agent.admin_addr(), "/ready").await.0,
        200,
        "an absent path is a known, empty set"
    );
    assert!(ports(&agent).is_empty());

    let client = zk.client().await;
    put(
        &client,
        &format!("{PATH}/a"),
        &nerve("127.0.0.1", a.addr.port(), "a"),
    )
    .await;
    put(&client, &format!("{PATH}/junk"), b"this is not json").await;
    put(
        &client,
        &format!("{PATH}/noport"),
        br#"{"host":"127.0.0.1"}"#,
    )
    .await;
    wait_ports(&agent, vec![a.addr.port()], Duration::from_secs(5)).await;
    put(
        &client,
        &format!("{PATH}/b"),
        &nerve("127.0.0.1", b.addr.port(), "b"),
    )
    .await;
    wait_ports(
        &agent,
        vec![a.addr.port(), b.addr.port()],
        Duration::from_secs(2),
    )
    .await;
    let (_, metrics) = http_get(agent.admin_addr(), "/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "sinew_discovery_znodes_skipped_total{service=\"web\"}"
        ),
        Some(2.0),
        "once per node version"
    );
    assert_eq!(
        metric(&metrics, "sinew_discovery_znodes{service=\"web\"}"),
        Some(2.0)
    );

    // Every node gone: the previous backends stay (use_previous_backends).
    for n in ["a", "b", "junk", "noport"] {
        remove(&client, &format!("{PATH}/{n}")).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ports(&agent).len(), 2);
    let (_, api) = http_get(agent.admin_addr(), "/api/services").await;
    assert!(api.contains("\"previous\""), "{api}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serverset_znodes_decode_with_an_endpoint_name() {
    let zk = ZooKeeper::start().await;
    let a = EchoBackend::start("a").await;
    let client = zk.client().await;
    let data = format!(
        r#"{{"serviceEndpoint":{{"host":"127.0.0.1","port":1}},"additionalEndpoints":{{"http":{{"host":"127.0.0.1","port":{}}}}},"shard":0,"status":"ALIVE"}}"#,
        a.addr.port()
    );
    put(&client, "/aurora/web/member_0000000001", data.as_bytes()).await;
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    discovery:\n      zookeeper: {{ hosts: [{}], path: /aurora/web, decode: {{ method: serverset, endpoint_name: http }} }}\n",
        zk.address()
    ))
    .await;
    wait_ports(&agent, vec![a.addr.port()], Duration::from_secs(5)).await;
    assert_eq!(
        greet(agent.service_addr("web").unwrap()).await.unwrap(),
        "a"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_file_lets_a_restart_route_while_zookeeper_is_down() {
    let mut zk = ZooKeeper::start().await;
    let a = EchoBackend::start("a").await;
    let client = zk.client().await;
    put(
        &client,
        &format!("{PATH}/a"),
        &nerve("127.0.0.1", a.addr.port(), "a"),
    )
    .await;
    let dir = std::env::temp_dir().join(format!("sinew-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let extra = format!(
        "state_file: {{ path: {} }}\nfile_output: {{ directory: {} }}\n",
        dir.join("state.json").display(),
        dir.display()
    );
    let config = |zk: &ZooKeeper| {
        format!(
            "admin: {{ listen: 127.0.0.1:0 }}\n{extra}services:\n  web:\n    listen: 127.0.0.1:0\n    discovery:\n      zookeeper: {{ hosts: [{}], path: {PATH}, session_timeout: 1s }}\n",
            zk.address()
        )
    };
    let first = agent(&config(&zk)).await;
    wait_ports(&first, vec![a.addr.port()], Duration::from_secs(5)).await;
    let port = format!("\"port\": {}", a.addr.port());
    let mut persisted = false;
    for _ in 0..150 {
        let state = std::fs::read_to_string(dir.join("state.json")).unwrap_or_default();
        let output = std::fs::read_to_string(dir.join("web.json")).unwrap_or_default();
        if state.contains(&port) && output.contains(&port) {
            persisted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(persisted, "state file and file output are written");
    first.shutdown(Duration::from_secs(1)).await;

    drop(client);
    zk.kill();
    let second = agent(&config(&zk)).await;
    assert_eq!(
        ports(&second),
        vec![a.addr.port()],
        "the saved set serves at once"
    );
    assert_eq!(
        greet(second.service_addr("web").unwrap()).await.unwrap(),
        "a"
    );
    let (_, api) = http_get(second.admin_addr(), "/api/services").await;
    assert!(api.contains("\"state_file\""), "{api}");
    // The agent writes its state and file output while it runs: stop it before removing them.
    second.shutdown(Duration::from_secs(1)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_override_replaces_the_registered_port() {
    let zk = ZooKeeper::start().await;
    let a = EchoBackend::start("a").await;
    let client = zk.client().await;
    put(&client, &format!("{PATH}/a"), &nerve("127.0.0.1", 1, "a")).await;
    let overridden = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    discovery:\n      zookeeper: {{ hosts: [{}], path: {PATH}, port_override: {} }}\n",
        zk.address(),
        a.addr.port()
    ))
    .await;
    wait_ports(&overridden, vec![a.addr.port()], Duration::from_secs(5)).await;
    assert_eq!(
        greet(overridden.service_addr("web").unwrap())
            .await
            .unwrap(),
        "a"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_continues_when_the_ensemble_loses_its_leader() {
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
    wait_ports(&agent, vec![a.addr.port()], Duration::from_secs(10)).await;

    let mut leader = None;
    for (i, n) in nodes.iter().enumerate() {
        if n.mode().await.as_deref() == Some("leader") {
            leader = Some(i);
        }
    }
    let leader = leader.expect("one node leads");
    nodes[leader].kill();
    assert_eq!(
        greet(agent.service_addr("web").unwrap()).await.unwrap(),
        "a",
        "routing goes on meanwhile"
    );

    // The survivors elect a new leader; a change written through one of them reaches sinew.
    let survivor = (leader + 1) % 3;
    let mut client = None;
    for _ in 0..200 {
        if nodes[survivor].mode().await.is_some() {
            client = Some(nodes[survivor].client().await);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = client.expect("the survivors serve again");
    put(
        &client,
        &format!("{PATH}/b"),
        &nerve("127.0.0.1", b.addr.port(), "b"),
    )
    .await;
    wait_ports(
        &agent,
        vec![a.addr.port(), b.addr.port()],
        Duration::from_secs(15),
    )
    .await;
}

/// The ZooKeeper requests of service `web` so far: list, get_data, exists, watch, multi_read.
async fn requests(agent: &Agent) -> [f64; 5] {
    let (_, body) = http_get(agent.admin_addr(), "/metrics").await;
    ["list", "get_data", "exists", "watch", "multi_read"].map(|k| {
        metric(
            &body,
            &format!("sinew_discovery_zookeeper_requests_total{{kind=\"{k}\",service=\"web\"}}"),
        )
        .unwrap_or(0.0)
    })
}

/// Observations in the write-to-swap histogram of service `web`.
async fn propagations(agent: &Agent) -> f64 {
    let (_, body) = http_get(agent.admin_addr(), "/metrics").await;
    metric(
        &body,
        "sinew_discovery_propagation_seconds_count{service=\"web\"}",
    )
    .unwrap_or(0.0)
}

/// Backends 21000..21000+n as children `n00`, `n01`, ...
async fn put_many(client: &zookeeper_client::Client, n: u16) {
    for i in 0..n {
        let name = format!("n{i:02}");
        put(
            client,
            &format!("{PATH}/{name}"),
            &nerve("127.0.0.1", 21000 + i, &name),
        )
        .await;
    }
}

/// The requests a watcher in `watch` mode has made after each step of [`change_costs`].
struct Costs {
    first: [f64; 5],
    rewritten: [f64; 5],
    added: [f64; 5],
    deleted: [f64; 5],
}

/// Reads 20 children, then rewrites one, adds one and deletes one, checking the requests after each.
async fn change_costs(watch: &str, want: Costs) {
    let zk = ZooKeeper::start().await;
    let client = zk.client().await;
    put_many(&client, 20).await;
    let agent = start_with(
        &zk.address(),
        &format!("session_timeout: 1s, watch: {watch}"),
        "",
    )
    .await;
    wait_ports(&agent, (21000..21020).collect(), Duration::from_secs(5)).await;
    assert_eq!(
        requests(&agent).await,
        want.first,
        "first read: one listing, every child"
    );
    assert_eq!(
        propagations(&agent).await,
        0.0,
        "what existed before is not a change"
    );

    // New data in one child: that child alone is read again, and no listing.
    put(
        &client,
        &format!("{PATH}/n05"),
        &nerve("127.0.0.1", 22005, "n05"),
    )
    .await;
    let mut want_ports: Vec<u16> = (21000..21020).filter(|p| *p != 21005).collect();
    want_ports.push(22005);
    wait_ports(&agent, want_ports.clone(), Duration::from_secs(2)).await;
    assert_eq!(requests(&agent).await, want.rewritten);
    assert_eq!(
        propagations(&agent).await,
        1.0,
        "the write-to-swap delay is recorded"
    );

    put(
        &client,
        &format!("{PATH}/n20"),
        &nerve("127.0.0.1", 21020, "n20"),
    )
    .await;
    want_ports.push(21020);
    wait_ports(&agent, want_ports.clone(), Duration::from_secs(2)).await;
    assert_eq!(requests(&agent).await, want.added);
    assert_eq!(propagations(&agent).await, 2.0);

    remove(&client, &format!("{PATH}/n00")).await;
    want_ports.retain(|p| *p != 21000);
    wait_ports(&agent, want_ports, Duration::from_secs(2)).await;
    assert_eq!(requests(&agent).await, want.deleted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_reads_only_the_children_that_changed() {
    // The recursive watch names each child: a new one is read, a deleted one costs nothing, and the
    // listing is never fetched again. The first read fetches the 20 children in one multi-read.
    change_costs(
        "recursive",
        Costs {
            first: [1.0, 0.0, 0.0, 1.0, 1.0],
            rewritten: [1.0, 1.0, 0.0, 1.0, 1.0],
            added: [1.0, 2.0, 0.0, 1.0, 1.0],
            deleted: [1.0, 2.0, 0.0, 1.0, 1.0],
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_oneshot_watches_a_change_reads_only_the_children_that_changed() {
    // One-shot watches: a new child costs a listing and its data, a deletion a listing.
    change_costs(
        "oneshot",
        Costs {
            first: [1.0, 20.0, 0.0, 0.0, 0.0],
            rewritten: [1.0, 21.0, 0.0, 0.0, 0.0],
            added: [2.0, 22.0, 0.0, 0.0, 0.0],
            deleted: [3.0, 22.0, 0.0, 0.0, 0.0],
        },
    )
    .await;
}

/// The session events of kind `event` (`reconnected`, `expired`, ...) an agent has counted, summed
/// over its ensembles.
async fn session_events(agent: &Agent, event: &str) -> f64 {
    let (_, body) = http_get(agent.admin_addr(), "/metrics").await;
    let label = format!("event=\"{event}\"");
    body.lines()
        .filter(|l| {
            l.starts_with("sinew_discovery_zookeeper_session_events_total") && l.contains(&label)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Cuts the agent's connection to ZooKeeper (a relay) for a moment, shorter than its session, and
/// rewrites, adds and deletes children meanwhile: after the reconnection (same session) the agent
/// has every change, although ZooKeeper does not replay a persistent watch's missed events.
async fn changes_while_disconnected_are_caught_up(watch: &str) {
    let zk = ZooKeeper::start().await;
    let client = zk.client().await;
    put_many(&client, 10).await;
    let target: std::net::SocketAddr = zk.address().parse().expect("zk address");
    let relay = Relay::start(target).await;
    let at = relay.addr;
    let agent = start_with(
        &at.to_string(),
        &format!("session_timeout: 6s, watch: {watch}"),
        "",
    )
    .await;
    wait_ports(&agent, (21000..21010).collect(), Duration::from_secs(5)).await;
    drop(relay);
    tokio::time::sleep(Duration::from_millis(300)).await;
    put(
        &client,
        &format!("{PATH}/n03"),
        &nerve("127.0.0.1", 22003, "n03"),
    )
    .await;
    remove(&client, &format!("{PATH}/n05")).await;
    put(
        &client,
        &format!("{PATH}/n10"),
        &nerve("127.0.0.1", 21010, "n10"),
    )
    .await;
    let _back = Relay::start_on(at, target).await;
    let mut want: Vec<u16> = (21000..21011)
        .filter(|p| *p != 21003 && *p != 21005)
        .collect();
    want.push(22003);
    wait_ports(&agent, want.clone(), Duration::from_secs(10)).await;
    // And the watch still reports what comes after.
    put(
        &client,
        &format!("{PATH}/n11"),
        &nerve("127.0.0.1", 21011, "n11"),
    )
    .await;
    want.push(21011);
    wait_ports(&agent, want, Duration::from_secs(2)).await;
    let expired = session_events(&agent, "expired").await;
    assert_eq!(expired, 0.0, "the session survived the cut");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_while_disconnected_are_caught_up_with_a_recursive_watch() {
    changes_while_disconnected_are_caught_up("recursive").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_while_disconnected_are_caught_up_with_oneshot_watches() {
    changes_while_disconnected_are_caught_up("oneshot").await;
}

/// A reconnection that happens while a change waits out the coalescing window is not missed: the
/// re-read after the window lists again (and arms the recursive watch anew), so what was written
/// while disconnected arrives, and so does what is written afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnection_within_the_coalescing_window_is_caught_up() {
    let zk = ZooKeeper::start().await;
    let client = zk.client().await;
    put_many(&client, 3).await;
    let target: std::net::SocketAddr = zk.address().parse().expect("zk address");
    let relay = Relay::start(target).await;
    let at = relay.addr;
    let agent = start_with(&at.to_string(), "session_timeout: 6s, coalesce: 5s", "").await;
    wait_ports(&agent, (21000..21003).collect(), Duration::from_secs(5)).await;
    // A change opens the window; the connection drops and comes back within it.
    let opened = tokio::time::Instant::now();
    put(
        &client,
        &format!("{PATH}/n03"),
        &nerve("127.0.0.1", 21003, "n03"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(relay);
    tokio::time::sleep(Duration::from_millis(300)).await;
    put(
        &client,
        &format!("{PATH}/n04"),
        &nerve("127.0.0.1", 21004, "n04"),
    )
    .await;
    let _back = Relay::start_on(at, target).await;
    while session_events(&agent, "reconnected").await < 1.0 {
        assert!(
            opened.elapsed() < Duration::from_millis(4500),
            "the agent did not reconnect within the coalescing window"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_ports(&agent, (21000..21005).collect(), Duration::from_secs(10)).await;
    put(
        &client,
        &format!("{PATH}/n05"),
        &nerve("127.0.0.1", 21005, "n05"),
    )
    .await;
    wait_ports(&agent, (21000..21006).collect(), Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_znode_deleted_and_created_again_under_its_name_is_read_again() {
    let zk = ZooKeeper::start().await;
    let client = zk.client().await;
    put_many(&client, 3).await;
    let agent = start(&zk, "").await;
    wait_ports(&agent, vec![21000, 21001, 21002], Duration::from_secs(5)).await;
    // Back to back, within one coalescing window: the name is listed both before and after.
    let node = format!("{PATH}/n01");
    remove(&client, &node).await;
    put(&client, &node, &nerve("127.0.0.1", 23001, "n01")).await;
    wait_ports(&agent, vec![21000, 21002, 23001], Duration::from_secs(2)).await;
    // And its new data watch is armed.
    put(&client, &node, &nerve("127.0.0.1", 24001, "n01")).await;
    wait_ports(&agent, vec![21000, 21002, 24001], Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_children_are_read_in_batches() {
    let zk = ZooKeeper::start().await;
    let client = zk.client().await;
    put_many(&client, 450).await;
    let agent = start(&zk, "").await;
    wait_ports(&agent, (21000..21450).collect(), Duration::from_secs(10)).await;
    // 200 + 200 + 50 reads in three requests.
    assert_eq!(requests(&agent).await, [1.0, 0.0, 0.0, 1.0, 3.0]);
}

/// Expires the agent's session with 10 children known, in `watch` mode: the new session fetches
/// what it needs to learn which children changed (`after`, the requests so far), decodes none again,
/// and its watch reports the next change (one more `get_data`).
async fn new_session_costs(watch: &str, first: [f64; 5], after: [f64; 5]) {
    let zk = ZooKeeper::start().await;
    let client = zk.client().await;
    put_many(&client, 10).await;
    let agent = start_with(
        &zk.address(),
        &format!("session_timeout: 1s, watch: {watch}"),
        "",
    )
    .await;
    wait_ports(&agent, (21000..21010).collect(), Duration::from_secs(5)).await;
    assert_eq!(requests(&agent).await, first);
    // Frozen past the 1 s session timeout: the server expires sinew's session when it thaws.
    zk.pause();
    tokio::time::sleep(Duration::from_secs(3)).await;
    zk.resume();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    // The listing of the new session comes first, then the checks.
    let revalidated = |r: [f64; 5]| r[0] >= 2.0 && r[1..] == after[1..];
    while !revalidated(requests(&agent).await) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no re-validation: {:?}, want {after:?}",
            requests(&agent).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(propagations(&agent).await, 0.0, "no child decoded again");
    put(
        &client,
        &format!("{PATH}/n03"),
        &nerve("127.0.0.1", 22003, "n03"),
    )
    .await;
    let mut want: Vec<u16> = (21000..21010).filter(|p| *p != 21003).collect();
    want.push(22003);
    wait_ports(&agent, want, Duration::from_secs(5)).await;
    assert_eq!(requests(&agent).await[1], after[1] + 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_fetches_children_in_a_batch_and_decodes_only_changed_ones() {
    // A new recursive watch, one listing, one multi-read of the 10 children.
    new_session_costs(
        "recursive",
        [1.0, 0.0, 0.0, 1.0, 1.0],
        [2.0, 0.0, 0.0, 2.0, 2.0],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_oneshot_watches_a_new_session_checks_versions_and_reads_only_changed_children() {
    // One listing and an `exists` per child (arming its data watch), no data read.
    new_session_costs(
        "oneshot",
        [1.0, 10.0, 0.0, 0.0, 0.0],
        [2.0, 10.0, 10.0, 0.0, 0.0],
    )
    .await;
}

/// ZooKeeper down for 5 s, then back: a znode written once it serves is routed within 2 s. The
/// session (1 s) expires during the outage, so sinew's own reconnect backoff finds the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_zookeeper_restart_a_change_is_routed_within_2_seconds() {
    let mut zk = ZooKeeper::start().await;
    let (a, b) = (EchoBackend::start("a").await, EchoBackend::start("b").await);
    let client = zk.client().await;
    put(
        &client,
        &format!("{PATH}/a"),
        &nerve("127.0.0.1", a.addr.port(), "a"),
    )
    .await;
    drop(client);
    let agent = start(&zk, "").await;
    wait_ports(&agent, vec![a.addr.port()], Duration::from_secs(5)).await;
    let client = outage_then_b_within_2_seconds(&mut zk, &agent, 5, &a, &b).await;
    drop(client);
}

/// ZooKeeper down for 7 s, then back, with the default 10 s session, which outlives the outage: a
/// znode written once the server serves is routed within 2 s, and the session (with the znodes it
/// registered) is kept, not replaced. 7 s places the server's return just after one of the session
/// client's own reconnect attempts, whose next one is seconds later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_outlives_an_outage_catches_up_within_2_seconds() {
    let mut zk = ZooKeeper::start().await;
    let (a, b) = (EchoBackend::start("a").await, EchoBackend::start("b").await);
    let client = zk.client().await;
    put(
        &client,
        &format!("{PATH}/a"),
        &nerve("127.0.0.1", a.addr.port(), "a"),
    )
    .await;
    let registered = "/nerve/services/registered/services";
    let register = format!(
        "register:\n  instance_id: i-test\n  drain: 0s\n  services:\n    registered:\n      host: 127.0.0.1\n      port: {}\n      zk_hosts: [{}]\n      zk_path: {registered}\n      session_timeout: 10s\n      check_interval: 100ms\n      checks: [{{ type: tcp }}]\n",
        a.addr.port(),
        zk.address()
    );
    let agent = start_with(&zk.address(), "session_timeout: 10s", &register).await;
    wait_ports(&agent, vec![a.addr.port()], Duration::from_secs(5)).await;
    let before = wait_children(&client, registered, Duration::from_secs(5)).await;
    drop(client);
    let client = outage_then_b_within_2_seconds(&mut zk, &agent, 7, &a, &b).await;
    // The registration kept its session: the same znode, never deleted and created again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = wait_children(&client, registered, Duration::from_secs(5)).await;
    assert_eq!(before, after, "the registered znode was replaced");
}

/// Stops ZooKeeper for `outage` seconds and starts it again, then writes `b`'s znode beside `a`'s and
/// asserts that the agent routes to both within 2 s of the server serving again; the client it wrote with.
async fn outage_then_b_within_2_seconds(
    zk: &mut ZooKeeper,
    agent: &Agent,
    outage: u64,
    a: &EchoBackend,
    b: &EchoBackend,
) -> zookeeper_client::Client {
    zk.kill();
    tokio::time::sleep(Duration::from_secs(outage)).await;
    zk.restart().await;
    let serving = tokio::time::Instant::now();
    let client = zk.client().await;
    put(
        &client,
        &format!("{PATH}/b"),
        &nerve("127.0.0.1", b.addr.port(), "b"),
    )
    .await;
    let mut want = vec![a.addr.port(), b.addr.port()];
    want.sort_unstable();
    while ports(agent) != want && serving.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = serving.elapsed();
    eprintln!("routed {took:?} after ZooKeeper served again");
    assert_eq!(ports(agent), want);
    assert!(
        took < Duration::from_secs(2),
        "routed {took:?} after ZooKeeper served again"
    );
    client
}

/// The children of `path` once it has any; fails after `within`.
async fn wait_children(
    client: &zookeeper_client::Client,
    path: &str,
    within: Duration,
) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let children = client.list_children(path).await.unwrap_or_default();
        if !children.is_empty() || tokio::time::Instant::now() > deadline {
            assert!(!children.is_empty(), "nothing registered under {path}");
            return children;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
