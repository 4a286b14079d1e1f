//! The checklist of docs/MIGRATING.md, step by step: a Synapse config and a Nerve config in the shapes of
//! their READMEs, unmodified, beside a small native file with the admin address, against a real
//! ZooKeeper.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use support::http::HttpBackend;
use support::process::{free_port, temp_file, wait_listening, Proc, BIN};
use support::zk::{put, ZooKeeper};
use support::*;

/// Where Nerve registers `api` and Synapse discovers it.
const API: &str = "/nerve/services/api/services";

/// The ports and files of one migrated host.
struct Host {
    api: u16,
    local: u16,
    front: u16,
    admin: u16,
    out: PathBuf,
    native: PathBuf,
    synapse: PathBuf,
    nerve: PathBuf,
}

/// Synapse's README example, extended with every mapped feature: ZooKeeper discovery with label
/// filters and Nerve weights, dns discovery, a portless service behind the shared frontend, HAProxy
/// `global`, `defaults` and a `listen stats` section, and `file_output`.
fn synapse_config(zk: &str, docs: &HttpBackend, local: &HttpBackend, h: &Host) -> String {
    format!(
        r#"{{
  "services": {{
    "api": {{
      "discovery": {{
        "method": "zookeeper", "path": "{API}", "hosts": ["{zk}"],
        "label_filters": [{{"label": "az", "value": "a", "condition": "equals"}}]
      }},
      "haproxy": {{
        "port": {api},
        "server_options": "check inter 500 rise 1 fall 2",
        "backend_order": "asc",
        "listen": ["mode http", "balance leastconn", "option httpchk /", "option forwardfor",
                   "retry-on conn-failure empty-response", "maxconn 100"]
      }}
    }},
    "docs": {{
      "default_servers": [{{"name": "docs1", "host": "127.0.0.1", "port": {docs}}}],
      "discovery": {{"method": "base"}},
      "haproxy": {{
        "listen": ["mode http"],
        "shared_frontend": ["acl is_docs hdr_dom(host) -i docs.example.com", "use_backend docs if is_docs"]
      }}
    }},
    "local": {{
      "discovery": {{"method": "dns", "servers": [{{"name": "local", "host": "localhost", "port": {lport}}}],
                     "check_interval": 1}},
      "haproxy": {{"port": {local}, "listen": ["mode http"]}}
    }}
  }},
  "file_output": {{"output_directory": "{out}"}},
  "haproxy": {{
    "bind_address": "127.0.0.1",
    "use_nerve_weights": true,
    "do_checks": false,
    "check_command": "haproxy -c -f /etc/haproxy/haproxy-candidate.cfg",
    "do_reloads": false,
    "reload_command": "sudo service haproxy reload",
    "do_writes": false,
    "config_file_path": "/etc/haproxy/haproxy.cfg",
    "do_socket": false,
    "global": ["daemon", "user haproxy", "nbthread 2",
               "stats   socket /var/haproxy/stats.sock mode 666 level admin"],
    "defaults": ["log      global", "option   dontlognull", "retries  3", "timeout  connect 5s",
                 "timeout  client  1m", "timeout  server  1m", "option   redispatch",
                 "option   http-keep-alive"],
    "shared_frontend": ["bind 127.0.0.1:{front}", "mode http"],
    "extra_sections": {{"listen stats :{stats}": ["mode http", "stats enable", "stats uri /"]}}
  }},
  "statsd": {{"host": "localhost", "port": 8125}}
}}"#,
        api = h.api,
        docs = docs.addr.port(),
        lport = local.addr.port(),
        local = h.local,
        out = h.out.display(),
        front = h.front,
        stats = free_port(),
    )
}

/// Nerve's README example: the host's `api` instance, checked over HTTP and registered with a weight
/// and labels.
fn nerve_config(zk: &str, a: &HttpBackend) -> String {
    format!(
        r#"{{
  "instance_id": "host-1",
  "max_repeated_report_failures": 10,
  "services": {{
    "api": {{
      "host": "127.0.0.1", "port": {port}, "reporter_type": "zookeeper",
      "zk_hosts": ["{zk}"], "zk_path": "{API}", "check_interval": 0.2,
      "weight": 2, "labels": {{"az": "a"}},
      "checks": [{{"type": "http", "uri": "/", "timeout": 0.5, "open_timeout": 0.5, "rise": 1, "fall": 1,
                   "headers": {{"Host": "api.internal"}}}}]
    }}
  }}
}}"#,
        port = a.addr.port(),
    )
}

/// `sinew ARGS...` run to completion.
fn sinew(args: &[&str], files: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (flag, file) in files {
        cmd.arg(flag).arg(file);
    }
    cmd.output().expect("run sinew")
}

/// One HTTP/1.1 request with a given Host; returns (status, body).
async fn get_with_host(addr: SocketAddr, host: &str) -> (u16, String) {
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let (status, _, body) = support::http_exchange(addr, &req).await;
    (status, body)
}

/// Polls `/api/services` until `pred` holds for the JSON of service `name`; returns it.
async fn wait_service(
    admin: SocketAddr,
    name: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    for _ in 0..300 {
        let (_, body) = http_get(admin, "/api/services").await;
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
            if let Some(s) = v["services"]
                .as_array()
                .and_then(|l| l.iter().find(|s| s["name"] == name))
            {
                if pred(s) {
                    return s.clone();
                }
                last = s.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("service {name} never got there: {last}");
}

/// The `host:port` of every backend of a service's JSON.
fn backend_keys(service: &serde_json::Value) -> Vec<String> {
    service["backends"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|b| b["address"].as_str())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synapse_and_a_nerve_host_moves_onto_sinew_by_the_checklist() {
    let zk = ZooKeeper::start().await;
    let (a, b, backup) = (
        HttpBackend::start("a").await,
        HttpBackend::start("b").await,
        HttpBackend::start("backup").await,
    );
    let (docs, local) = (
        HttpBackend::start("docs").await,
        HttpBackend::start("local").await,
    );
    let dir = temp_file("migration-keep", "")
        .parent()
        .expect("temp dir")
        .to_path_buf();
    let mut host = Host {
        api: free_port(),
        local: free_port(),
        front: free_port(),
        admin: free_port(),
        out: dir.join("out/services"),
        native: PathBuf::new(),
        synapse: PathBuf::new(),
        nerve: PathBuf::new(),
    };
    // Step 1: a small native file beside the unmodified Synapse and Nerve files.
    host.native = temp_file(
        "migration-sinew.yaml",
        &format!("admin: {{ listen: 127.0.0.1:{} }}\n", host.admin),
    );
    host.synapse = temp_file(
        "migration-synapse.conf.json",
        &synapse_config(&zk.address(), &docs, &local, &host),
    );
    host.nerve = temp_file(
        "migration-nerve.conf.json",
        &nerve_config(&zk.address(), &a),
    );
    let native = ("--config", host.native.as_path());
    let synapse = ("--synapse-config", host.synapse.as_path());
    let nerve = ("--nerve-config", host.nerve.as_path());

    // Step 2: check prints the merged native config and every difference; --strict fails on the
    // ignored `option http-keep-alive`, naming it.
    let out = sinew(&["check"], &[native, synapse]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("api:") && stdout.contains("http_frontends:") && stdout.contains("dns:"),
        "{stdout}"
    );
    assert!(stderr.contains("note: haproxy.reload_command"), "{stderr}");
    let strict = sinew(&["check", "--strict"], &[native, synapse]);
    assert!(!strict.status.success());
    assert!(
        String::from_utf8_lossy(&strict.stderr).contains("option   http-keep-alive")
            || String::from_utf8_lossy(&strict.stderr).contains("option http-keep-alive"),
        "{}",
        String::from_utf8_lossy(&strict.stderr)
    );

    // Step 3: the Nerve file checks too.
    let out = sinew(&["check"], &[native, nerve]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Znodes another host's Nerve wrote: one in another zone, one backup.
    let client = zk.client().await;
    put(
        &client,
        &format!("{API}/b_0000000001"),
        format!(
            r#"{{"host":"127.0.0.1","port":{},"name":"host-2","labels":{{"az":"b"}}}}"#,
            b.addr.port()
        )
        .as_bytes(),
    )
    .await;
    put(
        &client,
        &format!("{API}/backup_0000000002"),
        format!(
            r#"{{"host":"127.0.0.1","port":{},"name":"host-3","labels":{{"az":"a"}},"haproxy_server_options":"backup"}}"#,
            backup.addr.port()
        )
        .as_bytes(),
    )
    .await;

    // Step 4: run on the same files.
    let log = temp_file("migration-sinew.log", "");
    let mut cmd = Command::new(BIN);
    cmd.arg("run");
    for (flag, file) in [native, synapse, nerve] {
        cmd.arg(flag).arg(file);
    }
    let stderr = std::fs::File::create(&log).expect("log file");
    let sinew_process = Proc(
        cmd.stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn sinew"),
    );
    let admin: SocketAddr = format!("127.0.0.1:{}", host.admin).parse().unwrap();
    wait_listening(admin).await;

    // Nerve's half: this host's instance is registered with its weight and labels.
    let api = wait_service(admin, "api", |s| {
        let keys = backend_keys(s);
        keys.contains(&a.hostport()) && keys.contains(&backup.hostport())
    })
    .await;
    assert!(
        !backend_keys(&api).contains(&b.hostport()),
        "label_filters keep the other zone out: {api}"
    );
    let nodes = support::register::nodes_at(&client, API).await;
    let mine: Vec<_> = nodes
        .iter()
        .filter(|(_, data)| data.contains("\"host-1\""))
        .collect();
    assert_eq!(mine.len(), 1, "{nodes:?}");
    let data: serde_json::Value = serde_json::from_str(&mine[0].1).expect("znode JSON");
    assert_eq!(data["port"], a.addr.port());
    assert_eq!(data["weight"], 2);
    assert_eq!(data["labels"]["az"], "a");

    // Step 5: `sinew status` reaches the admin server by name.
    let status = Command::new(BIN)
        .args(["status", "--admin", &format!("localhost:{}", host.admin)])
        .output()
        .expect("run sinew status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    for name in ["api", "docs", "local"] {
        assert!(text.contains(name), "{text}");
    }

    // Apps keep connecting to the same ports: the primary serves, the backup and the other zone do not.
    let api_addr: SocketAddr = format!("127.0.0.1:{}", host.api).parse().unwrap();
    for _ in 0..10 {
        assert_eq!(get_with_host(api_addr, "api").await, (200, "a".into()));
    }
    // (The backup is health-checked, as HAProxy checks backups; the filtered-out zone is not even that.)
    assert_eq!(b.requests(), 0);
    // The shared frontend routes by Host to a service without a port of its own.
    let front: SocketAddr = format!("127.0.0.1:{}", host.front).parse().unwrap();
    assert_eq!(
        get_with_host(front, "docs.example.com").await,
        (200, "docs".into())
    );
    // dns discovery resolves `localhost` from /etc/hosts.
    let local_addr: SocketAddr = format!("127.0.0.1:{}", host.local).parse().unwrap();
    assert_eq!(
        get_with_host(local_addr, "local").await,
        (200, "local".into())
    );

    // file_output writes every service's file, in a directory it creates.
    for name in ["api", "docs", "local"] {
        let file = host.out.join(format!("{name}.json"));
        assert!(
            eventually(Duration::from_secs(5), || file.exists()).await,
            "{} missing",
            file.display()
        );
    }
    // api.json follows discovery: Nerve's instance name and the backend, as Synapse writes them.
    let api_json = host.out.join("api.json");
    let written = eventually(Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&api_json).unwrap_or_default();
        let list: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        list.as_array().is_some_and(|l| {
            l.iter()
                .any(|b| b["name"] == "host-1" && b["port"] == a.addr.port())
        })
    })
    .await;
    assert!(written, "{:?}", std::fs::read_to_string(&api_json));
    // global nbthread sizes the runtime.
    let (_, body) = http_get(admin, "/metrics").await;
    assert_eq!(
        metric(&body, "sinew_runtime_worker_threads"),
        Some(2.0),
        "{body}"
    );

    // The primary goes (its check fails, so this host's znode goes): the backup takes over.
    drop(a);
    let mut answers = Vec::new();
    for _ in 0..50 {
        answers.push(get_with_host(api_addr, "api").await);
        if answers.last().is_some_and(|r| r.1 == "backup") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        answers.iter().any(|r| *r == (200, "backup".into())),
        "{answers:?}"
    );
    drop(sinew_process);
}
