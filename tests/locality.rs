//! Zone-aware routing against a real ZooKeeper: Nerve znodes carrying `labels: {az, region}` place
//! each backend local, in the region or remote; traffic stays local while the zone is healthy,
//! spills in proportion when it is not, and comes back when it recovers.

mod support;

use sinew::agent::Agent;
use sinew::config::{Config, Format};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use support::zk::{put, ZooKeeper};
use support::*;

const PATH: &str = "/nerve/services/web/services";

/// Nerve's JSON for a backend with `labels` (a JSON object).
fn nerve_labelled(port: u16, name: &str, labels: &str) -> Vec<u8> {
    format!(r#"{{"host":"127.0.0.1","port":{port},"name":"{name}","labels":{labels}}}"#)
        .into_bytes()
}

/// Connects `n` times and counts the backends that greeted.
async fn spread(addr: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for _ in 0..n {
        let name = greet(addr).await.expect("a backend answers");
        *out.entry(name).or_default() += 1;
    }
    out
}

/// The service's local share of new picks as the admin API shows it.
async fn local_percent(agent: &Agent) -> f64 {
    let (_, body) = http_get(agent.admin_addr(), "/api/services").await;
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    v["services"][0]["locality"]["local_percent"]
        .as_f64()
        .unwrap_or(-1.0)
}

async fn wait_local(agent: &Agent, want: f64) {
    for _ in 0..100 {
        if local_percent(agent).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "local share {} never became {want}",
        local_percent(agent).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_stays_in_the_zone_spills_by_capacity_and_comes_back() {
    let zk = ZooKeeper::start().await;
    let a1 = EchoBackend::start("a1").await;
    let a2 = EchoBackend::start("a2").await;
    let b1 = EchoBackend::start("b1").await;
    let far = EchoBackend::start("far").await;
    let bare = EchoBackend::start("bare").await;
    let client = zk.client().await;
    for (i, (b, labels)) in [
        (&a1, r#"{"az":"us-east-1a","region":"us-east-1"}"#),
        (&a2, r#"{"az":"us-east-1a","region":"us-east-1"}"#),
        (&b1, r#"{"az":"us-east-1b","region":"us-east-1"}"#),
        (&far, r#"{"az":"eu-west-1a","region":"eu-west-1"}"#),
        // No zone label: remote, though its region is ours.
        (&bare, r#"{"region":"us-east-1"}"#),
    ]
    .into_iter()
    .enumerate()
    {
        let node = format!("{PATH}/i-{}_{i:010}", b.name);
        put(
            &client,
            &node,
            &nerve_labelled(b.addr.port(), &b.name, labels),
        )
        .await;
    }
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nlocality: {{ zone: us-east-1a, region: us-east-1 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    panic_threshold: 0\n    discovery:\n      zookeeper: {{ hosts: [{}], path: {PATH} }}\n    health_check: {{ type: tcp, interval: 100ms, timeout: 200ms, rise: 1, fall: 1 }}\n    locality_routing: {{ overprovisioning: 1.4 }}\n",
        zk.address()
    ))
    .await;
    assert!(
        eventually(Duration::from_secs(5), || agent
            .balancer("web")
            .is_some_and(|b| b.current().entries().len() == 5))
        .await,
        "the five znodes are read"
    );
    wait_local(&agent, 100.0).await;
    let addr = agent.service_addr("web").expect("listening");

    let healthy = spread(addr, 100).await;
    assert_eq!(
        healthy.keys().collect::<Vec<_>>(),
        ["a1", "a2"],
        "all local while healthy: {healthy:?}"
    );

    let (_, api) = http_get(agent.admin_addr(), "/api/services").await;
    for (name, locality) in [
        ("a1", "local"),
        ("b1", "region"),
        ("far", "remote"),
        ("bare", "remote"),
    ] {
        let port = [&a1, &b1, &far, &bare]
            .into_iter()
            .find(|b| b.name == name)
            .map(|b| b.addr.port())
            .unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&api).expect("JSON");
        let found = v["services"][0]["backends"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|b| b["address"] == format!("127.0.0.1:{port}"))
            .unwrap_or_else(|| panic!("{name} in {api}"));
        assert_eq!(found["locality"], locality, "{name}: {found}");
    }

    // One of two local backends down: 0.5 x 1.4 = 70 % local, the rest to the region.
    a1.stop();
    wait_local(&agent, 70.0).await;
    let half = spread(addr, 200).await;
    let local = half.get("a2").copied().unwrap_or(0);
    assert!((110..=170).contains(&local), "about 70 % local: {half:?}");
    assert_eq!(
        local + half.get("b1").copied().unwrap_or(0),
        200,
        "the rest stays in the region: {half:?}"
    );

    // Both local down: nothing local; the region takes all while it is healthy.
    a2.stop();
    wait_local(&agent, 0.0).await;
    let away = spread(addr, 50).await;
    assert_eq!(away.keys().collect::<Vec<_>>(), ["b1"], "{away:?}");
    // And with the region gone too, the remote backends, the unlabelled one included.
    b1.stop();
    assert!(
        eventually(Duration::from_secs(5), || {
            let v = agent.balancer("web").map(|b| b.view());
            v.and_then(|v| v.locality)
                .is_some_and(|l| l.remote_percent == 100.0)
        })
        .await
    );
    let remote = spread(addr, 50).await;
    assert_eq!(
        remote.keys().collect::<Vec<_>>(),
        ["bare", "far"],
        "{remote:?}"
    );

    // The zone comes back: local again.
    let _a1 = EchoBackend::start_on(a1.addr, "a1").await;
    let _a2 = EchoBackend::start_on(a2.addr, "a2").await;
    wait_local(&agent, 100.0).await;
    let back = spread(addr, 50).await;
    assert_eq!(back.keys().collect::<Vec<_>>(), ["a1", "a2"], "{back:?}");

    let (_, metrics) = http_get(agent.admin_addr(), "/metrics").await;
    let count = |tier: &str| {
        metric(
            &metrics,
            &format!(
                "sinew_service_locality_requests_total{{locality=\"{tier}\",service=\"web\"}}"
            ),
        )
        .unwrap_or(-1.0)
    };
    assert!(count("local") >= 100.0 + 110.0 + 50.0, "{metrics}");
    assert!(count("region") >= 30.0 + 50.0, "{metrics}");
    assert!(count("remote") >= 50.0, "{metrics}");
    agent.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_zone_comes_from_its_own_registration_labels_and_a_reload_moves_it() {
    let zk = ZooKeeper::start().await;
    let a = EchoBackend::start("a").await;
    let b = EchoBackend::start("b").await;
    let client = zk.client().await;
    put(
        &client,
        &format!("{PATH}/i-a_0000000001"),
        &nerve_labelled(a.addr.port(), "a", r#"{"zone":"z1"}"#),
    )
    .await;
    put(
        &client,
        &format!("{PATH}/i-b_0000000002"),
        &nerve_labelled(b.addr.port(), "b", r#"{"zone":"z2"}"#),
    )
    .await;
    let config = |zone: &str| {
        format!(
            "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    discovery:\n      zookeeper: {{ hosts: [{zk}], path: {PATH} }}\n    locality_routing: {{}}\nregister:\n  services:\n    mine:\n      host: 127.0.0.1\n      port: {port}\n      zk_hosts: [{zk}]\n      zk_path: /nerve/services/mine/services\n      labels: {{ az: {zone} }}\n      checks: [{{ type: tcp }}]\n",
            zk = zk.address(),
            port = a.addr.port(),
        )
    };
    let agent = agent(&config("z1")).await;
    assert!(
        eventually(Duration::from_secs(5), || agent
            .balancer("web")
            .is_some_and(|b| b.current().entries().len() == 2))
        .await
    );
    let addr = agent.service_addr("web").expect("listening");
    let first = spread(addr, 20).await;
    assert_eq!(first.keys().collect::<Vec<_>>(), ["a"], "{first:?}");
    let moved = Config::parse(&config("z2"), Format::Yaml, Path::new("moved.yaml")).expect("valid");
    let summary = agent.apply(moved).await.expect("reload");
    assert_eq!(
        summary.changed,
        ["web"],
        "routing by locality, the service is rebuilt"
    );
    // The rebuilt service reads the znodes again.
    assert!(
        eventually(Duration::from_secs(5), || agent
            .balancer("web")
            .is_some_and(|b| b.current().entries().len() == 2))
        .await
    );
    let after = spread(addr, 20).await;
    assert_eq!(after.keys().collect::<Vec<_>>(), ["b"], "{after:?}");
    agent.shutdown(Duration::from_secs(1)).await;
}
