//! Discovery only reads, so it may read from a ZooKeeper observer: just another entry in `hosts`.

mod support;

use sinew::agent::Agent;
use std::time::Duration;
use support::zk::{nerve, put, ZooKeeper};
use support::*;

const PATH: &str = "/nerve/services/web/services";

async fn start(hosts: &str) -> Agent {
    agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    discovery:\n      zookeeper: {{ hosts: [{hosts}], path: {PATH}, session_timeout: 4s }}\n",
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_pointed_at_an_observer_follows_changes() {
    let nodes = ZooKeeper::ensemble_with_observers(3, 1).await;
    assert_eq!(nodes[3].mode().await.as_deref(), Some("observer"));
    let client = nodes[0].client().await;
    put(
        &client,
        &format!("{PATH}/a"),
        &nerve("127.0.0.1", 21001, "a"),
    )
    .await;
    let agent = start(&nodes[3].address()).await;
    assert!(
        eventually(Duration::from_secs(10), || ports(&agent) == [21001]).await,
        "first read through the observer: {:?}",
        ports(&agent)
    );
    // A write on a voting member reaches the agent through the observer.
    put(
        &client,
        &format!("{PATH}/b"),
        &nerve("127.0.0.1", 21002, "b"),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(5), || ports(&agent) == [21001, 21002]).await,
        "change through the observer: {:?}",
        ports(&agent)
    );
}
