//! What a Nerve znode says about its server, against a real ZooKeeper: `haproxy_server_options`
//! (`backup`, `disabled`, `weight`, `maxconn`, unknown options), `labels` with `label_filters`,
//! whether the znode's `weight` is read, and the same through a Synapse config (`label_filters`,
//! `use_nerve_weights`, `backend_order`, `server_port_override`).

mod support;

use sinew::agent::Agent;
use std::net::SocketAddr;
use std::time::Duration;
use support::zk::{put, remove, ZooKeeper};
use support::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const PATH: &str = "/nerve/services/web/services";

/// Nerve's JSON for `backend`, with `extra` fields (`"weight":2,...`) after its name.
fn znode(backend: &EchoBackend, extra: &str) -> Vec<u8> {
    let comma = if extra.is_empty() { "" } else { "," };
    format!(
        r#"{{"host":"127.0.0.1","port":{},"name":"i-{}"{comma}{extra}}}"#,
        backend.addr.port(),
        backend.name
    )
    .into_bytes()
}

/// Writes one znode per `(backend, extra)` and starts an agent whose `web` service watches them,
/// with `settings` in its `zookeeper` mapping and `service` lines under the service; waits until
/// `routed` backends are in its set.
async fn start(
    zk: &ZooKeeper,
    znodes: &[(&EchoBackend, &str)],
    settings: &str,
    service: &str,
    routed: usize,
) -> Agent {
    let client = zk.client().await;
    for (b, extra) in znodes {
        put(&client, &format!("{PATH}/i-{}", b.name), &znode(b, extra)).await;
    }
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    discovery:\n      zookeeper: {{ hosts: [{}], path: {PATH}, session_timeout: 2s{settings} }}\n{service}",
        zk.address()
    ))
    .await;
    let set = |a: &Agent| a.balancer("web").map_or(0, |b| b.current().entries().len());
    assert!(
        eventually(Duration::from_secs(5), || set(&agent) == routed).await,
        "{} backends in the set, expected {routed}",
        set(&agent)
    );
    agent
}

/// `/api/services`, without the whitespace of its pretty-printing.
async fn services_api(agent: &Agent) -> String {
    let (_, api) = http_get(agent.admin_addr(), "/api/services").await;
    api.split_whitespace().collect()
}

/// Who greets `n` connections in a row, by name.
async fn tally(addr: SocketAddr, n: usize) -> std::collections::BTreeMap<String, usize> {
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..n {
        *seen
            .entry(greet(addr).await.expect("greeting"))
            .or_insert(0) += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_takes_no_traffic_while_the_primary_serves_and_all_of_it_when_it_stops() {
    let zk = ZooKeeper::start().await;
    let (primary, backup) = (
        EchoBackend::start("primary").await,
        EchoBackend::start("backup").await,
    );
    let agent = start(
        &zk,
        &[
            (&primary, ""),
            (&backup, r#""haproxy_server_options":"backup""#),
        ],
        "",
        "    retries: { attempts: 0 }\n    health_check: { type: tcp, interval: 100ms, rise: 1, fall: 1, timeout: 200ms }\n",
        2,
    )
    .await;
    let addr = agent.service_addr("web").unwrap();
    let seen = tally(addr, 12).await;
    assert_eq!(seen.get("primary"), Some(&12), "{seen:?}");
    let api = services_api(&agent).await;
    assert!(api.contains(r#""state":"backup""#), "{api}");

    primary.stop();
    let web = agent.balancer("web").unwrap();
    let primary_down = || web.view().backends.iter().any(|b| b.state == "down");
    assert!(eventually(Duration::from_secs(5), primary_down).await);
    let seen = tally(addr, 12).await;
    assert_eq!(seen.get("backup"), Some(&12), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_takes_over_when_the_primary_znode_goes() {
    let zk = ZooKeeper::start().await;
    let (primary, backup) = (
        EchoBackend::start("primary").await,
        EchoBackend::start("backup").await,
    );
    let agent = start(
        &zk,
        &[
            (&primary, ""),
            (&backup, r#""haproxy_server_options":"backup""#),
        ],
        "",
        "",
        2,
    )
    .await;
    let addr = agent.service_addr("web").unwrap();
    assert_eq!(tally(addr, 6).await.get("primary"), Some(&6));
    remove(&zk.client().await, &format!("{PATH}/i-primary")).await;
    let web = agent.balancer("web").unwrap();
    assert!(
        eventually(Duration::from_secs(5), || web.current().entries().len()
            == 1)
        .await
    );
    assert_eq!(tally(addr, 6).await.get("backup"), Some(&6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_backend_gets_no_traffic_and_shows_maintenance() {
    let zk = ZooKeeper::start().await;
    let (a, off) = (
        EchoBackend::start("a").await,
        EchoBackend::start("off").await,
    );
    let agent = start(
        &zk,
        &[(&a, ""), (&off, r#""haproxy_server_options":"disabled""#)],
        "",
        "",
        2,
    )
    .await;
    let seen = tally(agent.service_addr("web").unwrap(), 10).await;
    assert_eq!(seen.get("a"), Some(&10), "{seen:?}");
    assert_eq!(off.accepted(), 0);
    let api = services_api(&agent).await;
    assert!(api.contains(r#""state":"maintenance""#), "{api}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_option_weights_1_and_3_split_about_1_to_3() {
    let zk = ZooKeeper::start().await;
    let (light, heavy) = (
        EchoBackend::start("light").await,
        EchoBackend::start("heavy").await,
    );
    let agent = start(
        &zk,
        &[
            (&light, r#""haproxy_server_options":"weight 1""#),
            (&heavy, r#""haproxy_server_options":"check weight 3""#),
        ],
        "",
        "    balance: random\n",
        2,
    )
    .await;
    let seen = tally(agent.service_addr("web").unwrap(), 80).await;
    let light_share = seen.get("light").copied().unwrap_or(0);
    assert!(
        (8..=35).contains(&light_share),
        "about 20 of 80 expected: {seen:?}"
    );
    assert_eq!(light_share + seen.get("heavy").copied().unwrap_or(0), 80);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maxconn_1_queues_the_second_connection_until_the_first_ends() {
    let zk = ZooKeeper::start().await;
    let only = EchoBackend::start("only").await;
    let agent = start(
        &zk,
        &[(&only, r#""haproxy_server_options":"maxconn 1""#)],
        "",
        "    timeouts: { queue: 10s }\n",
        1,
    )
    .await;
    let addr = agent.service_addr("web").unwrap();
    let mut first = TcpStream::connect(addr).await.unwrap();
    assert_eq!(read_line(&mut first).await.unwrap(), "only");
    let mut second = TcpStream::connect(addr).await.unwrap();
    let web = agent.balancer("web").unwrap();
    assert!(
        eventually(Duration::from_secs(5), || web.view().queued == 1).await,
        "the second connection waits in the queue"
    );
    let mut byte = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), second.read(&mut byte))
            .await
            .is_err(),
        "no greeting while the first holds the only slot"
    );
    assert_eq!(only.accepted(), 1);
    drop(first);
    assert_eq!(read_line(&mut second).await.unwrap(), "only");
    let api = services_api(&agent).await;
    assert!(api.contains(r#""max_connections":1"#), "{api}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_malformed_options_are_counted_and_the_rest_applies() {
    let zk = ZooKeeper::start().await;
    let (a, b) = (EchoBackend::start("a").await, EchoBackend::start("b").await);
    let agent = start(
        &zk,
        &[
            (
                &a,
                r#""haproxy_server_options":"check inter 2s id 3 weight x""#,
            ),
            (&b, r#""haproxy_server_options":"cookie b backup""#),
        ],
        "",
        "",
        2,
    )
    .await;
    let seen = tally(agent.service_addr("web").unwrap(), 6).await;
    assert_eq!(
        seen.get("a"),
        Some(&6),
        "b's backup still applies: {seen:?}"
    );
    let (_, metrics) = http_get(agent.admin_addr(), "/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "sinew_discovery_znode_options_ignored_total{service=\"web\"}"
        ),
        Some(5.0),
        "check, inter, id, weight x, cookie"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_znode_failing_a_label_filter_takes_no_traffic_and_labels_are_shown() {
    let zk = ZooKeeper::start().await;
    let (east, west, canary) = (
        EchoBackend::start("east").await,
        EchoBackend::start("west").await,
        EchoBackend::start("canary").await,
    );
    let agent = start(
        &zk,
        &[
            (&east, r#""labels":{"region":"east","az":"e1"}"#),
            (&west, r#""labels":{"region":"west"}"#),
            (&canary, r#""labels":{"region":"east","canary":"true"}"#),
        ],
        ", label_filters: [{ label: region, value: east, condition: equals }, { label: canary, value: 'true', condition: not-equals }]",
        "",
        1,
    )
    .await;
    let seen = tally(agent.service_addr("web").unwrap(), 6).await;
    assert_eq!(seen.get("east"), Some(&6), "{seen:?}");
    assert_eq!(west.accepted() + canary.accepted(), 0);
    let api = services_api(&agent).await;
    assert!(
        api.contains(r#""labels":{"az":"e1","region":"east"}"#),
        "{api}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_znode_weight_is_ignored_when_use_weights_is_off() {
    let zk = ZooKeeper::start().await;
    let (a, b) = (EchoBackend::start("a").await, EchoBackend::start("b").await);
    let znodes = [(&a, r#""weight":0"#), (&b, r#""weight":1"#)];
    let read = start(&zk, &znodes, "", "", 2).await;
    let seen = tally(read.service_addr("web").unwrap(), 4).await;
    assert_eq!(seen.get("b"), Some(&4), "weight 0 read: {seen:?}");
    read.shutdown(Duration::from_secs(1)).await;
    let ignored = start(&zk, &znodes, ", use_weights: false", "", 2).await;
    let seen = tally(ignored.service_addr("web").unwrap(), 4).await;
    assert_eq!(seen.get("a"), Some(&2), "weights ignored: {seen:?}");
}

/// A Synapse config watching `PATH`, with `haproxy` as its top-level `haproxy` hash.
fn synapse_config(zk: &ZooKeeper, port_override: u16, top: &str) -> sinew::config::Config {
    let file = support::process::temp_file(
        "znodes-synapse.json",
        &format!(
            r#"{{"services": {{"web": {{
                "discovery": {{"method": "zookeeper", "hosts": ["{}"], "path": "{PATH}",
                              "label_filters": [{{"label": "az", "value": "a", "condition": "equals"}}]}},
                "haproxy": {{"port": {}, "server_port_override": {port_override}, "backend_order": "desc"}}}}}},
              "haproxy": {top}}}"#,
            zk.address(),
            support::process::free_port()
        ),
    );
    let mut config = sinew::config::synapse::load(&file).unwrap().config;
    config.admin.listen = "127.0.0.1:0".parse().unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synapse_service_honours_filters_backups_order_weights_and_the_port_override() {
    let zk = ZooKeeper::start().await;
    // Three backends on one port of three loopback addresses: the znodes register port 1, and
    // server_port_override sends each to the real one.
    let first = EchoBackend::start("primary").await;
    let port = first.addr.port();
    let on = |ip: &str| format!("{ip}:{port}").parse::<SocketAddr>().unwrap();
    let backup_1 = EchoBackend::start_on(on("127.0.0.2"), "backup-1").await;
    let _backup_2 = EchoBackend::start_on(on("127.0.0.3"), "backup-2").await;
    let other_az = EchoBackend::start_on(on("127.0.0.4"), "other-az").await;
    let client = zk.client().await;
    for (name, ip, extra) in [
        ("i-1", "127.0.0.1", r#""weight":0,"labels":{"az":"a"}"#),
        (
            "i-2",
            "127.0.0.2",
            r#""labels":{"az":"a"},"haproxy_server_options":"backup""#,
        ),
        (
            "i-3",
            "127.0.0.3",
            r#""labels":{"az":"a"},"haproxy_server_options":"backup""#,
        ),
        ("i-4", "127.0.0.4", r#""labels":{"az":"b"}"#),
    ] {
        let data = format!(r#"{{"host":"{ip}","port":1,"name":"{name}",{extra}}}"#);
        put(&client, &format!("{PATH}/{name}"), data.as_bytes()).await;
    }

    // Without use_nerve_weights the znode's weight 0 is ignored, as Synapse does: the primary serves.
    let agent = Agent::start(synapse_config(&zk, port, "{}")).await.unwrap();
    let web = agent.balancer("web").unwrap();
    assert!(
        eventually(Duration::from_secs(5), || web.current().entries().len()
            == 3)
        .await
    );
    let addr = agent.service_addr("web").unwrap();
    let seen = tally(addr, 6).await;
    assert_eq!(seen.get("primary"), Some(&6), "{seen:?}");
    assert_eq!(other_az.accepted(), 0, "az b is filtered out");
    agent.shutdown(Duration::from_secs(1)).await;

    // With it, weight 0 takes the primary out, and the first backup in descending order serves.
    let agent = Agent::start(synapse_config(&zk, port, r#"{"use_nerve_weights": true}"#))
        .await
        .unwrap();
    let web = agent.balancer("web").unwrap();
    assert!(
        eventually(Duration::from_secs(5), || web.current().entries().len()
            == 3)
        .await
    );
    let seen = tally(agent.service_addr("web").unwrap(), 6).await;
    assert_eq!(seen.get("backup-2"), Some(&6), "{seen:?}");
    assert_eq!(backup_1.accepted() + other_az.accepted(), 0);
}
