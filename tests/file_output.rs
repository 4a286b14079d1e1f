//! `file_output` and `state_file` against a real ZooKeeper: the directory is created, every service's
//! file is written at start with the fields Synapse writes (Nerve's `name`, options, labels), stale
//! files are removed at start and on reload, and the state file restores what the znode said.

mod support;

use sinew::config::{Config, Format};
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::zk::{put, ZooKeeper};
use support::*;

const PATH: &str = "/nerve/services/web/services";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sinew-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// A native config: `web` discovered from ZooKeeper, `db` with one named static backend.
fn config(zk: &ZooKeeper, extra: &str, with_db: bool) -> String {
    let db = if with_db {
        "  db:\n    listen: 127.0.0.1:0\n    backends: [{ host: 127.0.0.1, port: 5432, name: db-primary }]\n"
    } else {
        ""
    };
    format!(
        "admin: {{ listen: 127.0.0.1:0 }}\n{extra}services:\n  web:\n    listen: 127.0.0.1:0\n    discovery:\n      zookeeper: {{ hosts: [{}], path: {PATH}, session_timeout: 1s }}\n{db}",
        zk.address()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_output_writes_every_service_as_synapse_does_and_removes_stale_files() {
    let zk = ZooKeeper::start().await;
    let client = zk.client().await;
    put(
        &client,
        &format!("{PATH}/i-web1_0000000007"),
        br#"{"host":"127.0.0.1","port":8081,"name":"i-web1","weight":3,"labels":{"az":"us-east-1a"},"haproxy_server_options":"backup"}"#,
    )
    .await;
    let root = scratch("file-output");
    let dir = root.join("nested/output");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("gone.json"), "[]").unwrap();
    std::fs::write(dir.join("notes.txt"), "kept").unwrap();
    // The directory is removed again: sinew must create it with its parents.
    std::fs::remove_dir_all(&root).unwrap();
    let extra = format!("file_output: {{ directory: {} }}\n", dir.display());
    let agent = agent(&config(&zk, &extra, true)).await;

    let web = dir.join("web.json");
    let expected = serde_json::json!([{
        "name": "i-web1",
        "host": "127.0.0.1",
        "port": 8081,
        "weight": 3,
        "haproxy_server_options": "backup",
        "labels": {"az": "us-east-1a"},
    }]);
    assert!(
        eventually(Duration::from_secs(5), || read_json(&web).as_ref()
            == Some(&expected))
        .await,
        "web.json: {:?}",
        read_json(&web)
    );
    let db =
        serde_json::json!([{"name": "db-primary", "host": "127.0.0.1", "port": 5432, "weight": 1}]);
    assert_eq!(
        read_json(&dir.join("db.json")),
        Some(db),
        "a static service is written at start"
    );

    // A stale file is removed on reload too.
    std::fs::write(dir.join("gone.json"), "[]").unwrap();
    std::fs::write(dir.join("notes.txt"), "kept").unwrap();
    let reloaded = Config::parse(
        &config(&zk, &extra, false),
        Format::Yaml,
        Path::new("t.yaml"),
    )
    .unwrap();
    agent.apply(reloaded).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || {
            !dir.join("db.json").exists() && !dir.join("gone.json").exists()
        })
        .await,
        "the files of services no longer configured are removed"
    );
    assert!(
        dir.join("notes.txt").exists(),
        "only .json files are removed"
    );
    assert!(web.exists());
    agent.shutdown(Duration::from_secs(1)).await;
    std::fs::remove_dir_all(&root).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_output_directory_that_cannot_be_created_stops_the_start() {
    let root = scratch("file-output-bad");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("plain"), "a file, not a directory").unwrap();
    let dir = root.join("plain/output");
    let yaml = format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nfile_output: {{ directory: {} }}\nservices:\n  db:\n    listen: 127.0.0.1:0\n    backends: [127.0.0.1:5432]\n",
        dir.display()
    );
    let config = Config::parse(&yaml, Format::Yaml, Path::new("t.yaml")).unwrap();
    let error = match sinew::agent::Agent::start(config).await {
        Ok(_) => panic!("started with an unusable file_output directory"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("file_output.directory"), "{error}");
    assert!(error.contains(&dir.display().to_string()), "{error}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_file_restores_server_options_labels_and_name() {
    let mut zk = ZooKeeper::start().await;
    let client = zk.client().await;
    let (a, b) = (EchoBackend::start("a").await, EchoBackend::start("b").await);
    let node = |port: u16, name: &str, options: &str| {
        format!(
            r#"{{"host":"127.0.0.1","port":{port},"name":"{name}","labels":{{"az":"a"}},"haproxy_server_options":"{options}"}}"#
        )
        .into_bytes()
    };
    put(
        &client,
        &format!("{PATH}/a"),
        &node(a.addr.port(), "i-a", ""),
    )
    .await;
    put(
        &client,
        &format!("{PATH}/b"),
        &node(b.addr.port(), "i-b", "backup"),
    )
    .await;
    let root = scratch("state-options");
    let extra = format!(
        "state_file: {{ path: {} }}\n",
        root.join("state.json").display()
    );
    std::fs::create_dir_all(&root).unwrap();
    let first = agent(&config(&zk, &extra, false)).await;
    let saved = || std::fs::read_to_string(root.join("state.json")).unwrap_or_default();
    assert!(
        eventually(Duration::from_secs(5), || saved().contains("\"backup\"")).await,
        "{}",
        saved()
    );
    first.shutdown(Duration::from_secs(1)).await;

    drop(client);
    zk.kill();
    let second = agent(&config(&zk, &extra, false)).await;
    let set = second.balancer("web").unwrap().current();
    let mut restored: Vec<_> = set.entries().iter().map(|e| e.backend.clone()).collect();
    restored.sort_by_key(|b| b.port);
    assert_eq!(restored.len(), 2);
    let backup = restored.iter().find(|r| r.port == b.addr.port()).unwrap();
    assert!(backup.options.backup, "{backup:?}");
    assert_eq!(backup.name.as_deref(), Some("i-b"));
    assert_eq!(backup.labels.get("az").map(String::as_str), Some("a"));
    for _ in 0..10 {
        assert_eq!(
            greet(second.service_addr("web").unwrap()).await.unwrap(),
            "a",
            "a restored backup server takes no traffic while another backend is usable"
        );
    }
    std::fs::remove_dir_all(&root).unwrap();
}
