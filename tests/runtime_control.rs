//! Runtime control of a running `sinew` binary through its admin API and the `sinew log-level` and
//! `sinew reload` commands: the log filter, the running config, and a reload's dry run.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::process::*;
use support::*;

/// One request to the admin API: the status and the body.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    host: &str,
    headers: &str,
    body: &str,
) -> (u16, String) {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, _, body) = support::http_exchange(addr, &req).await;
    (status, body)
}

/// `sinew run --config FILE` with its log (text, no `RUST_LOG`) written to `log`.
fn run_logged(config: &Path, log: &Path) -> Proc {
    let file = std::fs::File::create(log).unwrap();
    Proc(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn sinew"),
    )
}

/// Runs `sinew ARGS` to its end: exit success, stdout, stderr.
fn sinew(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("SINEW_ADMIN_TOKEN")
        .envs(env.iter().copied())
        .output()
        .expect("run sinew");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn log_file(name: &str) -> PathBuf {
    temp_file(name, "")
}

/// A refused admin request is logged at debug level only (sinew::admin): the probe of these tests.
async fn refused_probe(admin: SocketAddr) {
    let (status, _) = request(admin, "POST", "/api/reload", "evil.example", "", "").await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn the_log_filter_is_read_and_replaced_at_run_time_and_a_bad_one_changes_nothing() {
    let backend = EchoBackend::start("a").await;
    let (port, admin) = (free_port(), free_port());
    let yaml = format!(
        "admin: {{ listen: 127.0.0.1:{admin}, token: s3cret }}\nservices:\n  web:\n    listen: 127.0.0.1:{port}\n    backends: [{}]\n",
        backend.hostport()
    );
    let config = temp_file("log-level.yaml", &yaml);
    let log = log_file("log-level.log");
    let _sinew = run_logged(&config, &log);
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    wait_listening(admin_addr).await;
    let admin_arg = admin_addr.to_string();

    // Reading needs no token; the default filter is info (the ZooKeeper client library at warn).
    let (ok, out, err) = sinew(&["log-level", "--admin", &admin_arg], &[]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "zookeeper_client=warn,info");
    refused_probe(admin_addr).await;

    // Replacing it is a state-changing request: the token is needed.
    let (ok, _, err) = sinew(&["log-level", "--admin", &admin_arg, "debug"], &[]);
    assert!(!ok);
    assert!(err.contains("401"), "{err}");
    let local = admin_addr.to_string();
    let auth = "Authorization: Bearer s3cret\r\n";
    let (status, body) = request(
        admin_addr,
        "PUT",
        "/api/log-level",
        &local,
        auth,
        "info,sinew::admin=[",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid log filter"), "{body}");
    let (status, body) = request(admin_addr, "PUT", "/api/log-level", &local, auth, "").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        request(admin_addr, "GET", "/api/log-level", &local, "", "")
            .await
            .1
            .trim(),
        "zookeeper_client=warn,info"
    );

    let before = std::fs::read_to_string(&log).unwrap();
    assert!(!before.contains("admin request refused"), "{before}");
    assert!(!before.contains("log filter changed"), "{before}");

    let (ok, out, err) = sinew(
        &[
            "log-level",
            "--admin",
            &admin_arg,
            "info,sinew::admin=debug",
        ],
        &[("SINEW_ADMIN_TOKEN", "s3cret")],
    );
    assert!(ok, "{err}");
    assert!(out.contains("info -> "), "{out}");
    let (_, out, _) = sinew(&["log-level", "--admin", &admin_arg], &[]);
    let current = out.trim();
    assert!(
        current.contains("sinew::admin=debug") && current.contains("info"),
        "{current}"
    );
    // A config reload keeps the filter set at run time.
    let (ok, _, err) = sinew(&["reload", "--admin", &admin_arg, "--token", "s3cret"], &[]);
    assert!(ok, "{err}");
    let (_, out, _) = sinew(&["log-level", "--admin", &admin_arg], &[]);
    assert_eq!(out.trim(), current, "the reload kept the filter");

    refused_probe(admin_addr).await;
    let logged = eventually(Duration::from_secs(5), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("admin request refused"))
    })
    .await;
    let after = std::fs::read_to_string(&log).unwrap();
    assert!(logged, "{after}");
    assert!(after.contains("log filter changed"), "{after}");
    assert!(
        after.contains("sinew::admin=debug"),
        "old and new are logged: {after}"
    );
    let page = http_get(admin_addr, "/metrics").await.1;
    let changes = |result: &str| {
        metric(
            &page,
            &format!("sinew_admin_log_filter_changes_total{{result=\"{result}\"}}"),
        )
    };
    assert_eq!(changes("ok"), Some(1.0), "{page}");
    assert_eq!(changes("rejected"), Some(2.0), "{page}");
}

#[tokio::test]
async fn the_running_config_is_served_with_the_token_redacted_and_only_to_the_token() {
    let backend = EchoBackend::start("a").await;
    let (port, admin) = (free_port(), free_port());
    let yaml = format!(
        "admin: {{ listen: 127.0.0.1:{admin}, token: very-s3cret }}\nservices:\n  web:\n    listen: 127.0.0.1:{port}\n    backends: [{}]\n    timeouts: {{ connect: 1500ms }}\n",
        backend.hostport()
    );
    let config = temp_file("api-config.yaml", &yaml);
    let _sinew = Proc::run(&config);
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    wait_listening(admin_addr).await;
    let local = admin_addr.to_string();

    let (status, body) = request(admin_addr, "GET", "/api/config", &local, "", "").await;
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains("very-s3cret"));
    let auth = "Authorization: Bearer very-s3cret\r\n";
    let (status, body) = request(admin_addr, "GET", "/api/config", "sinew.example", auth, "").await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("very-s3cret"), "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["admin"]["token"], "<redacted>");
    assert_eq!(json["admin"]["listen"], local);
    let web = &json["services"]["web"];
    assert_eq!(web["listen"], format!("127.0.0.1:{port}"));
    assert_eq!(web["timeouts"]["connect"], "1s 500ms");
    assert_eq!(web["backends"][0]["port"], backend.addr.port());
}

#[tokio::test]
async fn a_dry_run_shows_the_difference_and_applies_nothing_and_a_real_reload_applies_and_logs_it()
{
    let (a, b) = (EchoBackend::start("a").await, EchoBackend::start("b").await);
    let (port, admin) = (free_port(), free_port());
    let yaml = |backend: &EchoBackend, connect: &str| {
        format!(
            "admin: {{ listen: 127.0.0.1:{admin} }}\nservices:\n  web:\n    listen: 127.0.0.1:{port}\n    backends: [{}]\n    timeouts: {{ connect: {connect} }}\n",
            backend.hostport()
        )
    };
    let config = temp_file("dry-run.yaml", &yaml(&a, "1s"));
    let log = log_file("dry-run.log");
    let _sinew = run_logged(&config, &log);
    let (web, admin_addr): (SocketAddr, SocketAddr) = (
        format!("127.0.0.1:{port}").parse().unwrap(),
        format!("127.0.0.1:{admin}").parse().unwrap(),
    );
    wait_listening(web).await;
    wait_listening(admin_addr).await;
    let admin_arg = admin_addr.to_string();
    assert_eq!(greet(web).await.unwrap(), "a");

    let (ok, out, err) = sinew(&["reload", "--dry-run", "--admin", &admin_arg], &[]);
    assert!(ok, "{err}");
    assert!(out.contains("no changes"), "{out}");

    std::fs::write(&config, yaml(&b, "2s")).unwrap();
    let (ok, out, err) = sinew(&["reload", "--dry-run", "--admin", &admin_arg], &[]);
    assert!(ok, "{err}");
    assert!(out.contains("nothing applied"), "{out}");
    assert!(out.contains("web: timeouts.connect: 1s -> 2s"), "{out}");
    let backends = format!("web: backends: [{}] -> [{}]", a.hostport(), b.hostport());
    assert!(out.contains(&backends), "{out}");
    // Nothing was applied: the service still routes to the old backend, and the API shows the old config.
    assert_eq!(greet(web).await.unwrap(), "a");
    let local = admin_addr.to_string();
    let (_, body) = request(admin_addr, "GET", "/api/config", &local, "", "").await;
    assert!(body.contains("\"connect\": \"1s\""), "{body}");
    // Without a token, the topology is not served to a Host a rebound web page would send.
    let (status, _) = request(admin_addr, "GET", "/api/config", "sinew.example", "", "").await;
    assert_eq!(status, 403);

    // An invalid file: the dry run names the error and the command fails; the service still runs.
    std::fs::write(&config, "services:\n  web:\n    listen: nowhere\n").unwrap();
    let (ok, out, err) = sinew(&["reload", "--dry-run", "--admin", &admin_arg], &[]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("400") && err.contains("services.web.listen"),
        "{err}"
    );
    let (status, body) = request(
        admin_addr,
        "POST",
        "/api/reload?dry_run=true",
        &local,
        "",
        "",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("nothing applied"), "{body}");
    assert_eq!(greet(web).await.unwrap(), "a");
    let (ok, _, err) = sinew(&["reload", "--admin", &admin_arg], &[]);
    assert!(!ok && err.contains("services.web.listen"), "{err}");
    let page = http_get(admin_addr, "/metrics").await.1;
    assert_eq!(
        metric(&page, "sinew_config_last_reload_successful"),
        Some(0.0),
        "{page}"
    );
    assert_eq!(greet(web).await.unwrap(), "a");

    // A real reload through the command applies the change and logs the same difference.
    std::fs::write(&config, yaml(&b, "2s")).unwrap();
    let (ok, out, err) = sinew(&["reload", "--admin", &admin_arg], &[]);
    assert!(ok, "{err}");
    assert!(out.contains("changed [web]"), "{out}");
    assert_eq!(greet(web).await.unwrap(), "b");
    let logged = eventually(Duration::from_secs(5), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("reload changed the service"))
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(logged, "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("reload changed the service"))
        .unwrap();
    assert!(
        line.contains("service=web") && line.contains("timeouts.connect: 1s -> 2s"),
        "{line}"
    );
    let (ok, out, _) = sinew(&["reload", "--dry-run", "--admin", &admin_arg], &[]);
    assert!(ok && out.contains("no changes"), "{out}");
    let page = http_get(admin_addr, "/metrics").await.1;
    let reloads = |mode: &str, result: &str| {
        let series = format!("sinew_config_reloads_total{{mode=\"{mode}\",result=\"{result}\"}}");
        metric(&page, &series)
    };
    assert_eq!(reloads("dry_run", "ok"), Some(3.0), "{page}");
    assert_eq!(reloads("dry_run", "rejected"), Some(2.0), "{page}");
    assert_eq!(reloads("reload", "ok"), Some(1.0), "{page}");
    assert_eq!(reloads("reload", "rejected"), Some(1.0), "{page}");
    assert_eq!(
        metric(&page, "sinew_config_last_reload_successful"),
        Some(1.0),
        "{page}"
    );
}

#[test]
fn a_log_filter_that_does_not_parse_at_start_is_an_error_naming_where_it_came_from() {
    let config = temp_file(
        "bad-filter.yaml",
        "services:\n  web: { listen: 127.0.0.1:1, backends: [127.0.0.1:2] }\n",
    );
    let path = config.to_string_lossy();
    let (ok, _, err) = sinew(
        &["--log-level", "sinew=loud", "check", "--config", &path],
        &[],
    );
    assert!(!ok);
    assert!(
        err.contains("--log-level: invalid log filter \"sinew=loud\""),
        "{err}"
    );
    let (ok, _, err) = sinew(
        &["check", "--config", &path],
        &[("RUST_LOG", "info,sinew=[")],
    );
    assert!(!ok);
    assert!(err.contains("RUST_LOG: invalid log filter"), "{err}");
    let (ok, _, err) = sinew(
        &[
            "--log-level",
            "info,sinew::proxy=debug",
            "check",
            "--config",
            &path,
        ],
        &[],
    );
    assert!(ok, "{err}");
}

#[tokio::test]
async fn the_running_config_is_the_merged_one_with_synapse_services_translated() {
    let (web, admin) = (free_port(), free_port());
    let native = temp_file(
        "merged-native.yaml",
        &format!("admin: {{ listen: 127.0.0.1:{admin}, token: merged-s3cret }}\n"),
    );
    let synapse = temp_file(
        "merged-synapse.json",
        &format!(
            r#"{{"services": {{"web": {{"discovery": {{"method": "base"}}, "haproxy": {{"port": {web}}},
                "default_servers": [{{"name": "b", "host": "127.0.0.1", "port": 1}}]}}}}}}"#
        ),
    );
    let _sinew = Proc(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&native)
            .arg("--synapse-config")
            .arg(&synapse)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sinew"),
    );
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    wait_listening(admin_addr).await;
    let auth = "Authorization: Bearer merged-s3cret\r\n";
    let local = admin_addr.to_string();
    let (status, body) = request(admin_addr, "GET", "/api/config", &local, auth, "").await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("merged-s3cret"), "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["admin"]["token"], "<redacted>");
    let backend = &json["services"]["web"]["backends"][0];
    assert_eq!(backend["port"], 1, "{body}");
    assert_eq!(backend["name"], "b", "{body}");
    assert!(
        json["services"]["web"]["listen"]
            .as_str()
            .is_some_and(|l| l.ends_with(&format!(":{web}"))),
        "{body}"
    );
}
