//! DNS discovery against the real system resolver: names from `/etc/hosts`, a namespace whose hosts
//! file moves a name while `sinew` runs in it, and ZooKeeper znodes whose host names are resolved.

mod support;

use std::net::SocketAddr;
use std::time::Duration;
use support::dns::{serve_every_address, HostsNs};
use support::process::{free_port, temp_file, wait_listening, Proc, BIN};
use support::zk::{nerve, put, ZooKeeper};
use support::*;

/// Waits (bounded) until `addr` answers with the greeting `name`.
async fn routes_to(addr: SocketAddr, name: &str) -> bool {
    for _ in 0..300 {
        if greet(addr).await.ok().as_deref() == Some(name) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// The sorted `host:port` of every backend the service `svc` routes to, from the admin API.
async fn backends(admin: SocketAddr, svc: &str) -> Vec<String> {
    let (_, body) = http_get(admin, "/api/services").await;
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let found = v["services"]
        .as_array()
        .and_then(|list| list.iter().find(|s| s["name"] == svc));
    let mut out: Vec<String> = found
        .and_then(|s| s["backends"].as_array())
        .map(|a| {
            a.iter()
                .filter_map(|b| b["address"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[tokio::test]
async fn localhost_resolves_from_etc_hosts_to_one_backend_per_address() {
    let port = free_port();
    let served = serve_every_address("localhost", port, "local").await;
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  local:\n    listen: 127.0.0.1:0\n    discovery:\n      dns: {{ servers: [{{ host: localhost, port: {port}, name: loc }}], interval: 1s }}\n"
    ))
    .await;
    assert!(routes_to(agent.service_addr("local").unwrap(), "local").await);
    let mut want: Vec<String> = served.iter().map(|b| b.addr.to_string()).collect();
    want.sort();
    assert_eq!(backends(agent.admin_addr(), "local").await, want);
    let (_, api) = http_get(agent.admin_addr(), "/api/services").await;
    assert!(api.contains("\"dns:loc\""), "{api}");
    assert!(
        api.contains("\"dns:localhost:"),
        "the source is described: {api}"
    );
    agent.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_moved_in_the_hosts_file_moves_and_an_unresolvable_name_keeps_its_last_answer() {
    let Some(ns) = support::netns::create_or_skip(2, "dns hosts file") else {
        return;
    };
    let (first_ip, second_ip, ns_ip) =
        (ns.links[0].host_ip, ns.links[1].host_ip, ns.links[0].ns_ip);
    let first = EchoBackend::start_on(SocketAddr::new(first_ip.into(), 0), "first").await;
    let port = first.addr.port();
    let second = EchoBackend::start_on(SocketAddr::new(second_ip.into(), port), "second").await;
    let ns = HostsNs::new(ns, &format!("127.0.0.1 localhost\n{first_ip} svc.test\n"));
    let (listen, admin) = (free_port(), free_port());
    let config = temp_file(
        "dns-netns.yaml",
        &format!(
            "admin: {{ listen: 0.0.0.0:{admin} }}\nservices:\n  svc:\n    listen: 0.0.0.0:{listen}\n    discovery:\n      dns: {{ servers: [svc.test:{port}], interval: 200ms }}\n"
        ),
    );
    let child = ns
        .ns
        .command(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn sinew in the namespace");
    let _sinew = Proc(child);
    let (svc, admin) = (
        SocketAddr::new(ns_ip.into(), listen),
        SocketAddr::new(ns_ip.into(), admin),
    );
    wait_listening(admin).await;
    assert!(
        routes_to(svc, "first").await,
        "the name's first address serves"
    );

    ns.set(&format!("127.0.0.1 localhost\n{second_ip} svc.test\n"));
    assert!(routes_to(svc, "second").await, "the moved name is followed");
    assert_eq!(backends(admin, "svc").await, [second.addr.to_string()]);

    // Unresolvable (no DNS server is reachable from the namespace): the last answer keeps serving.
    ns.set("127.0.0.1 localhost\n");
    let failures = "sinew_discovery_dns_failures_total{reason=\"error\",service=\"svc\"}";
    let mut counted = 0.0;
    for _ in 0..100 {
        let (_, body) = http_get(admin, "/metrics").await;
        counted = metric(&body, failures).unwrap_or(0.0);
        if counted >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        counted >= 2.0,
        "failed lookups are counted each round: {counted}"
    );
    assert_eq!(greet(svc).await.as_deref(), Ok("second"));
    assert_eq!(backends(admin, "svc").await, [second.addr.to_string()]);

    ns.set(&format!("127.0.0.1 localhost\n{first_ip} svc.test\n"));
    assert!(
        routes_to(svc, "first").await,
        "resolving again takes the new answer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn znode_host_names_are_resolved_and_follow_the_znodes() {
    let zk = ZooKeeper::start().await;
    let client = zk.client().await;
    let port = free_port();
    let served = serve_every_address("localhost", port, "named").await;
    let literal = EchoBackend::start("literal").await;
    put(
        &client,
        "/dns/web/n_0000000001",
        &nerve("localhost", port, "n1"),
    )
    .await;
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    discovery:\n      zookeeper: {{ hosts: [{}], path: /dns/web, resolve_interval: 1s }}\n",
        zk.address()
    ))
    .await;
    let web = agent.service_addr("web").unwrap();
    assert!(
        routes_to(web, "named").await,
        "the znode's host name resolves"
    );
    let mut want: Vec<String> = served.iter().map(|b| b.addr.to_string()).collect();
    want.sort();
    assert_eq!(backends(agent.admin_addr(), "web").await, want);
    let (_, api) = http_get(agent.admin_addr(), "/api/services").await;
    assert!(
        api.contains("zookeeper:n_0000000001"),
        "the znode is the origin: {api}"
    );

    // A change of znodes is resolved at once, not at the next interval.
    support::zk::remove(&client, "/dns/web/n_0000000001").await;
    put(
        &client,
        "/dns/web/n_0000000002",
        &nerve("127.0.0.1", literal.addr.port(), "n2"),
    )
    .await;
    assert!(routes_to(web, "literal").await, "the new znode serves");
    assert_eq!(
        backends(agent.admin_addr(), "web").await,
        [literal.addr.to_string()]
    );
    agent.shutdown(Duration::from_secs(1)).await;
}
