//! Several config files at once: sinew's own file (the agent's settings, services of its own) beside a
//! Synapse config and a Nerve config; loading, checking and reloading them together.

mod support;

use sinew::agent::{Agent, Source};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use support::process::{free_port, temp_file, BIN};
use support::zk::ZooKeeper;
use support::*;

/// A Synapse config with one `base` service per `(name, port, backend port)`.
fn synapse(services: &[(&str, u16, u16)]) -> String {
    let services: Vec<String> = services
        .iter()
        .map(|(name, port, backend)| {
            format!(
                r#""{name}": {{"discovery": {{"method": "base"}}, "haproxy": {{"port": {port}}},
                   "default_servers": [{{"name": "b", "host": "127.0.0.1", "port": {backend}}}]}}"#
            )
        })
        .collect();
    format!(r#"{{"services": {{{}}}}}"#, services.join(", "))
}

/// A native service `name` on an ephemeral port with one static backend.
fn native_service(name: &str, backend: &EchoBackend) -> String {
    format!(
        "  {name}: {{ listen: 127.0.0.1:0, backends: [{}] }}\n",
        backend.addr
    )
}

/// A Nerve config registering `web` at `port` into `zk`, with `extra` JSON fields.
fn nerve(zk: &ZooKeeper, port: u16, extra: &str) -> String {
    format!(
        r#"{{"instance_id": "i-layers", "services": {{"web": {{"host": "127.0.0.1", "port": {port},
            "zk_hosts": ["{}"], "zk_path": "/layers/web", "check_interval": 0.1,
            "checks": [{{"type": "tcp", "timeout": 0.2}}]{extra}}}}}}}"#,
        zk.address()
    )
}

async fn start(source: Source) -> Agent {
    Agent::start_with(
        source.load().unwrap(),
        Some(source),
        sinew::upgrade::Inherited::default(),
        false,
    )
    .await
    .unwrap()
}

/// `POST /api/reload`: the raw response.
async fn reload_api(agent: &Agent) -> String {
    support::register::post(agent.admin_addr(), "POST", "/api/reload").await
}

/// The children of `/layers/web` and their data, waiting until one holds `want`.
async fn wait_znode(client: &zookeeper_client::Client, want: &str) -> String {
    for _ in 0..250 {
        if let Ok(children) = client.list_children("/layers/web").await {
            for c in children {
                if let Ok((data, _)) = client.get_data(&format!("/layers/web/{c}")).await {
                    let data = String::from_utf8_lossy(&data).into_owned();
                    if data.contains(want) {
                        return data;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    panic!("no znode under /layers/web holds {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_synapse_and_nerve_files_run_together_and_a_reload_rereads_each() {
    let zk = ZooKeeper::start().await;
    let (a, b, c) = (
        EchoBackend::start("a").await,
        EchoBackend::start("b").await,
        EchoBackend::start("c").await,
    );
    let (syn_port, extra_port) = (free_port(), free_port());
    let native_path = temp_file(
        "layers-sinew.yaml",
        &format!(
            "admin: {{ listen: 127.0.0.1:0 }}\nshutdown_grace: 2s\nservices:\n{}",
            native_service("own", &a)
        ),
    );
    let synapse_path = temp_file(
        "layers-synapse.json",
        &synapse(&[("web", syn_port, b.addr.port())]),
    );
    let nerve_path = temp_file("layers-nerve.json", &nerve(&zk, a.addr.port(), ""));
    let source = Source {
        config: Some(native_path.clone()),
        synapse_config: Some(synapse_path.clone()),
        nerve_config: Some(nerve_path.clone()),
        admin: None,
    };
    let agent = start(source).await;
    assert_eq!(
        greet(agent.service_addr("own").unwrap()).await.unwrap(),
        "a"
    );
    assert_eq!(
        greet(agent.service_addr("web").unwrap()).await.unwrap(),
        "b"
    );
    assert_eq!(agent.grace(), Duration::from_secs(2));
    let client = zk.client().await;
    wait_znode(&client, "i-layers").await;

    // The native file: a new grace period and a service of its own.
    std::fs::write(
        &native_path,
        format!(
            "admin: {{ listen: 127.0.0.1:0 }}\nshutdown_grace: 5s\nservices:\n{}{}",
            native_service("own", &a),
            native_service("more", &c)
        ),
    )
    .unwrap();
    let summary = agent.reload().await.unwrap();
    assert_eq!(summary.added, ["more"]);
    assert_eq!(agent.grace(), Duration::from_secs(5));
    assert_eq!(
        greet(agent.service_addr("more").unwrap()).await.unwrap(),
        "c"
    );

    // The Synapse file: `web` moves to another backend, a second service appears; through the API.
    std::fs::write(
        &synapse_path,
        synapse(&[
            ("web", syn_port, c.addr.port()),
            ("extra", extra_port, b.addr.port()),
        ]),
    )
    .unwrap();
    let body = reload_api(&agent).await;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("added [extra]"), "{body}");
    assert!(body.contains("changed [web]"), "{body}");
    assert_eq!(
        greet(agent.service_addr("web").unwrap()).await.unwrap(),
        "c"
    );

    // The Nerve file: the registration gets a weight.
    std::fs::write(&nerve_path, nerve(&zk, a.addr.port(), r#", "weight": 7"#)).unwrap();
    agent.reload().await.unwrap();
    wait_znode(&client, r#""weight":7"#).await;

    // Each file made invalid in turn: the reload is refused naming that file; everything keeps running.
    let cases = [
        (&native_path, "services:\n  own: { listen: nowhere }\n"),
        (&synapse_path, "{\"services\": [}"),
        (&nerve_path, "{\"services\": 3"),
    ];
    for (path, bad) in cases {
        let good = std::fs::read_to_string(path).unwrap();
        std::fs::write(path, bad).unwrap();
        let e = agent.reload().await.unwrap_err().to_string();
        assert!(e.contains(&*path.to_string_lossy()), "{e}");
        let body = reload_api(&agent).await;
        assert!(!body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(body.contains(&*path.to_string_lossy()), "{body}");
        std::fs::write(path, good).unwrap();
    }
    for (name, want) in [("own", "a"), ("more", "c"), ("web", "c"), ("extra", "b")] {
        assert_eq!(
            greet(agent.service_addr(name).unwrap()).await.unwrap(),
            want
        );
    }

    // A service the Synapse file already runs, added to the native file: both files are named.
    std::fs::write(
        &native_path,
        format!(
            "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n{}",
            native_service("web", &a)
        ),
    )
    .unwrap();
    let e = agent.reload().await.unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "services.web is defined in {} and in {}; remove it from one",
            native_path.display(),
            synapse_path.display()
        )
    );
    assert_eq!(
        greet(agent.service_addr("own").unwrap()).await.unwrap(),
        "a"
    );
    agent.shutdown(Duration::from_secs(1)).await;
}

/// Runs `sinew ARGS...` and returns (success, stdout, stderr).
fn sinew(args: &[&str], files: &[&PathBuf]) -> (bool, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for f in files {
        cmd.arg(f);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_with_a_native_and_a_synapse_file_checks_both_and_prints_the_merged_config() {
    let (own, web, admin) = (free_port(), free_port(), free_port());
    let native = temp_file(
        "check-layers.yaml",
        &format!("admin: {{ listen: 127.0.0.1:{admin}, token: secret }}\nservices:\n  own: {{ listen: 127.0.0.1:{own}, backends: [127.0.0.1:1] }}\n"),
    );
    let syn = temp_file("check-layers-synapse.json", &synapse(&[("web", web, 2)]));
    let (ok, _, err) = sinew(&["check", "--config"], &[&native]);
    assert!(ok, "{err}");
    let native_arg = native.to_string_lossy().into_owned();
    let (ok, stdout, err) = sinew(
        &["check", "--config", &native_arg, "--synapse-config"],
        &[&syn],
    );
    assert!(ok, "{err}");
    let printed: sinew::config::Config = serde_norway::from_str(&stdout).unwrap();
    assert_eq!(printed.admin.listen.port(), admin);
    assert_eq!(printed.admin.token.as_deref(), Some("secret"));
    assert_eq!(
        printed.services.keys().collect::<Vec<_>>(),
        ["own", "web"],
        "{stdout}"
    );

    // The same port in both files: named with both files.
    let clash = temp_file("check-layers-clash.json", &synapse(&[("web", own, 2)]));
    let (ok, _, err) = sinew(
        &["check", "--config", &native_arg, "--synapse-config"],
        &[&clash],
    );
    assert!(!ok);
    assert!(
        err.contains("services.web in") && err.contains("check-layers-clash.json"),
        "{err}"
    );
    assert!(
        err.contains("services.own in") && err.contains("check-layers.yaml"),
        "{err}"
    );
}

/// A fresh directory under the test's temporary directory.
fn fresh_dir(name: &str) -> PathBuf {
    let dir = temp_file("x", "").with_file_name(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn relative_paths_resolve_from_the_config_files_directory_not_the_working_one() {
    let backend = EchoBackend::start("rel").await;
    let dir = fresh_dir("relative");
    std::fs::write(dir.join("backends.json"), format!("[\"{}\"]", backend.addr)).unwrap();
    let (port, admin) = (free_port(), free_port());
    std::fs::write(
        dir.join("sinew.yaml"),
        format!("admin: {{ listen: 127.0.0.1:{admin} }}\nstate_file: {{ path: state.json }}\nservices:\n  f: {{ listen: 127.0.0.1:{port}, discovery: {{ file: backends.json }} }}\n"),
    )
    .unwrap();
    let _sinew = support::process::Proc(
        Command::new(BIN)
            .current_dir("/")
            .args(["run", "--config"])
            .arg(dir.join("sinew.yaml"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    support::process::wait_listening(addr).await;
    let mut answer = Err(String::new());
    for _ in 0..100 {
        answer = greet(addr).await;
        if answer.as_deref() == Ok("rel") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(answer.as_deref(), Ok("rel"));
    for _ in 0..100 {
        if dir.join("state.json").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        dir.join("state.json").exists(),
        "state file beside the config"
    );
}

#[test]
fn synapse_and_nerve_relative_paths_resolve_from_their_files() {
    let dir = fresh_dir("relative-foreign");
    std::fs::create_dir_all(dir.join("conf.d")).unwrap();
    std::fs::create_dir_all(dir.join("nerve.d")).unwrap();
    let port = free_port();
    std::fs::write(
        dir.join("conf.d/web.json"),
        format!(
            r#"{{"discovery": {{"method": "base"}}, "haproxy": {{"port": {port}}},
                "default_servers": [{{"name": "a", "host": "127.0.0.1", "port": 1}}]}}"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("synapse.json"),
        r#"{"service_conf_dir": "conf.d", "file_output": {"output_directory": "out"},
            "haproxy": {"state_file_path": "state.json"}}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("nerve.d/api.json"),
        r#"{"host": "127.0.0.1", "port": 9, "zk_hosts": ["127.0.0.1:1"], "zk_path": "/x",
            "checks": [{"type": "tcp"}]}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("nerve.json"),
        r#"{"instance_id": "i", "service_conf_dir": "nerve.d"}"#,
    )
    .unwrap();
    let out = Command::new(BIN)
        .current_dir("/")
        .args(["check", "--synapse-config"])
        .arg(dir.join("synapse.json"))
        .arg("--nerve-config")
        .arg(dir.join("nerve.json"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let printed: sinew::config::Config =
        serde_norway::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert!(printed.services.contains_key("web"));
    assert_eq!(printed.file_output.unwrap().directory, dir.join("out"));
    assert_eq!(printed.state_file.unwrap().path, dir.join("state.json"));
    assert!(printed.register.unwrap().services.contains_key("api"));
}

#[test]
fn synapse_global_nbthread_maps_to_threads_and_a_bad_value_is_an_error() {
    let with = |global: &str| {
        let text = format!(
            r#"{{"services": {{"web": {{"discovery": {{"method": "base"}}, "haproxy": {{"port": {}}},
                "default_servers": [{{"name": "a", "host": "127.0.0.1", "port": 1}}]}}}},
                "haproxy": {{"global": {global}}}}}"#,
            free_port()
        );
        sinew::config::synapse::parse(&text, std::path::Path::new("synapse.json"))
    };
    let t = with(r#"["daemon", "nbthread 3", "maxconn 4096"]"#).unwrap();
    assert_eq!(t.config.threads.map(|n| n.get()), Some(3));
    assert!(with(r#"["daemon"]"#).unwrap().config.threads.is_none());
    for bad in [
        "nbthread 0",
        "nbthread many",
        "nbthread",
        "nbthread 5000",
        "nbthread 2 3",
    ] {
        let e = with(&format!("[\"{bad}\"]")).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "synapse.json: haproxy.global: \"{bad}\": expected nbthread N"
            )),
            "{e}"
        );
    }
}

#[tokio::test]
async fn threads_sets_the_runtime_workers_of_the_process() {
    let admin = free_port();
    let config = temp_file(
        "threads.yaml",
        &format!("admin: {{ listen: 127.0.0.1:{admin} }}\nthreads: 3\nservices: {{}}\n"),
    );
    let _sinew = support::process::Proc::run(&config);
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], admin));
    support::process::wait_listening(admin).await;
    let (_, body) = http_get(admin, "/metrics").await;
    assert_eq!(
        metric(&body, "sinew_runtime_worker_threads"),
        Some(3.0),
        "{body}"
    );
}
