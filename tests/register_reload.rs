//! Registration follows a reload against a real ZooKeeper: added services register, removed ones delete
//! their znode, changed ones restart their checks and rewrite their znode's data in place, moved ones
//! leave the old path for the new one, and unchanged ones keep their znode (same name). In process
//! (Agent::reload) and through SIGHUP on the binary with a Nerve config.

mod support;

use sinew::config::{Config, Format};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::process::*;
use support::zk::ZooKeeper;
use support::*;
use zookeeper_client as zk;

const TCP: &str = "[{ type: tcp, timeout: 200ms }]";

fn path(name: &str) -> String {
    format!("/nerve/services/{name}/services")
}

/// One registered service `name` at 127.0.0.1:`port` under [`path`]`(at)`, with `checks` and `extra`
/// lines (indented by six).
fn service(zk: &ZooKeeper, name: &str, at: &str, port: u16, checks: &str, extra: &str) -> String {
    format!(
        "    {name}:\n      host: 127.0.0.1\n      port: {port}\n      zk_hosts: [{}]\n      zk_path: {}\n      session_timeout: 2s\n      check_interval: 100ms\n      checks: {checks}\n{extra}",
        zk.address(),
        path(at)
    )
}

fn config(services: &[String]) -> Config {
    let yaml = if services.is_empty() {
        "admin: { listen: 127.0.0.1:0 }\n".to_string()
    } else {
        format!(
            "admin: {{ listen: 127.0.0.1:0 }}\nregister:\n  instance_id: i-test\n  drain: 0s\n  services:\n{}",
            services.concat()
        )
    };
    Config::parse(&yaml, Format::Yaml, Path::new("register-reload.yaml")).unwrap()
}

/// The (name, data) of every child of `parent`.
async fn children(client: &zk::Client, parent: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for c in client.list_children(parent).await.unwrap_or_default() {
        if let Ok((data, _)) = client.get_data(&format!("{parent}/{c}")).await {
            out.push((c, String::from_utf8_lossy(&data).into_owned()));
        }
    }
    out
}

/// Waits until `parent` has exactly `count` children satisfying `pred` (and no others); returns them.
async fn wait_children(
    client: &zk::Client,
    parent: &str,
    count: usize,
    pred: impl Fn(&str) -> bool,
) -> Vec<(String, String)> {
    // Long enough for a loaded machine (ZooKeeper runs on the JVM beside the tests); returns at once
    // when the children are there.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let n = children(client, parent).await;
        if n.len() == count && n.iter().all(|(_, d)| pred(d)) {
            return n;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{parent}: wanted {count} matching children, have {n:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn plain(port: u16) -> String {
    format!(r#"{{"host":"127.0.0.1","port":{port},"name":"i-test"}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_removes_changes_and_moves_registrations_and_leaves_the_rest_alone() {
    let zk = ZooKeeper::start().await;
    let backend = EchoBackend::start("svc").await;
    let port = backend.addr.port();
    let dead = dead_addr().await.port();
    let agent = sinew::agent::Agent::start(config(&[
        service(&zk, "keep", "keep", port, TCP, ""),
        service(&zk, "tune", "tune", port, TCP, ""),
        service(&zk, "drop", "drop", port, TCP, ""),
    ]))
    .await
    .unwrap();
    let client = zk.client().await;
    let any = |_: &str| true;
    let keep = wait_children(&client, &path("keep"), 1, any).await;
    let tune = wait_children(&client, &path("tune"), 1, any).await;
    wait_children(&client, &path("drop"), 1, any).await;

    // "tune" gets a weight and labels, "drop" goes, "add" comes, "keep" is the same.
    let tuned = "      weight: 3\n      labels: { az: a }\n";
    let summary = agent
        .apply(config(&[
            service(&zk, "keep", "keep", port, TCP, ""),
            service(&zk, "tune", "tune", port, TCP, tuned),
            service(&zk, "add", "add", port, TCP, ""),
        ]))
        .await
        .unwrap();
    let r = &summary.registration;
    assert_eq!(
        (&r.added, &r.removed, &r.changed, r.unchanged),
        (
            &vec!["add".to_string()],
            &vec!["drop".to_string()],
            &vec!["tune".to_string()],
            1
        ),
        "{summary}"
    );
    // A removed service's node is gone when the reload returns.
    assert!(children(&client, &path("drop")).await.is_empty());
    wait_children(&client, &path("add"), 1, any).await;
    let rewritten = format!(
        r#"{{"host":"127.0.0.1","port":{port},"name":"i-test","weight":3,"labels":{{"az":"a"}}}}"#
    );
    let now = wait_children(&client, &path("tune"), 1, |d| d == rewritten).await;
    assert_eq!(
        now[0].0, tune[0].0,
        "the data is rewritten in the same node"
    );
    assert_eq!(children(&client, &path("keep")).await, keep, "untouched");

    // "tune" now checks a port nothing listens on: its new check runs and takes it down.
    let failing = format!("[{{ type: tcp, port: {dead}, timeout: 200ms }}]");
    let summary = agent
        .apply(config(&[
            service(&zk, "keep", "keep", port, TCP, ""),
            service(&zk, "tune", "tune", port, &failing, tuned),
            service(&zk, "add", "add", port, TCP, ""),
        ]))
        .await
        .unwrap();
    assert_eq!(summary.registration.changed, vec!["tune".to_string()]);
    wait_children(&client, &path("tune"), 0, any).await;
    let (_, view) = http_get(agent.admin_addr(), "/api/register").await;
    assert!(
        view.contains(&format!("connect 127.0.0.1:{dead}")),
        "{view}"
    );

    // "keep" moves to another path: the old node goes, a new one comes; "tune" goes.
    let added = wait_children(&client, &path("add"), 1, any).await;
    let summary = agent
        .apply(config(&[
            service(&zk, "keep", "moved", port, TCP, ""),
            service(&zk, "add", "add", port, TCP, ""),
        ]))
        .await
        .unwrap();
    let r = &summary.registration;
    assert_eq!(
        (&r.removed, &r.changed, r.unchanged),
        (&vec!["tune".to_string()], &vec!["keep".to_string()], 1),
        "{summary}"
    );
    assert!(children(&client, &path("keep")).await.is_empty());
    assert!(children(&client, &path("tune")).await.is_empty());
    wait_children(&client, &path("moved"), 1, |d| d == plain(port)).await;
    assert_eq!(children(&client, &path("add")).await, added, "untouched");

    // No register section at all: every node goes.
    let summary = agent.apply(config(&[])).await.unwrap();
    assert_eq!(summary.registration.removed.len(), 2, "{summary}");
    assert!(children(&client, &path("moved")).await.is_empty());
    assert!(children(&client, &path("add")).await.is_empty());
    let (status, _) = http_get(agent.admin_addr(), "/api/register").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_survives_a_reload_that_moves_the_service() {
    let zk = ZooKeeper::start().await;
    let backend = EchoBackend::start("svc").await;
    let port = backend.addr.port();
    let agent = sinew::agent::Agent::start(config(&[service(&zk, "web", "web", port, TCP, "")]))
        .await
        .unwrap();
    let client = zk.client().await;
    wait_children(&client, &path("web"), 1, |_| true).await;
    assert!(agent.registrar().set_maintenance("web", true));
    wait_children(&client, &path("web"), 0, |_| true).await;

    agent
        .apply(config(&[service(&zk, "web", "elsewhere", port, TCP, "")]))
        .await
        .unwrap();
    // Several check rounds: still held out.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(children(&client, &path("elsewhere")).await.is_empty());
    assert!(agent.registrar().set_maintenance("web", false));
    wait_children(&client, &path("elsewhere"), 1, |_| true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_changed_nerve_config() {
    let zk = ZooKeeper::start().await;
    let backend = EchoBackend::start("svc").await;
    let port = backend.addr.port();
    let nerve =
        |services: &str| format!(r#"{{"instance_id": "i-nerve", "services": {{{services}}}}}"#);
    let svc = |name: &str, extra: &str| {
        format!(
            r#""{name}": {{"host": "127.0.0.1", "port": {port}, "reporter_type": "zookeeper", "zk_hosts": ["{}"],
                "zk_path": "{}", "check_interval": 0.1, "checks": [{{"type": "tcp", "timeout": 0.2}}]{extra}}}"#,
            zk.address(),
            path(name)
        )
    };
    let file = temp_file("reload-nerve.conf.json", &nerve(&svc("web", "")));
    let admin = free_port();
    let config = temp_file(
        "reload-nerve.yaml",
        &format!("admin: {{ listen: 127.0.0.1:{admin} }}\n"),
    );
    let child = Proc(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&config)
            .arg("--nerve-config")
            .arg(&file)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = zk.client().await;
    let web = wait_children(&client, &path("web"), 1, |_| true).await;

    std::fs::write(
        &file,
        nerve(&format!(
            "{}, {}",
            svc("web", r#", "weight": 5"#),
            svc("api", "")
        )),
    )
    .unwrap();
    child.signal("-HUP");
    wait_children(&client, &path("api"), 1, |_| true).await;
    let weighted = format!(r#"{{"host":"127.0.0.1","port":{port},"name":"i-nerve","weight":5}}"#);
    let now = wait_children(&client, &path("web"), 1, |d| d == weighted).await;
    assert_eq!(now[0].0, web[0].0, "same node, new data");

    std::fs::write(&file, nerve(&svc("api", ""))).unwrap();
    child.signal("-HUP");
    wait_children(&client, &path("web"), 0, |_| true).await;
    assert_eq!(children(&client, &path("api")).await.len(), 1);
}
