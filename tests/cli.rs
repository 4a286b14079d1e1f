//! The command line, run as the built binary: `--admin` on `run` and `status`, `check --strict`.

mod support;

use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use support::process::{free_port, temp_file, wait_listening, Proc, BIN};

/// Runs the binary with `args` to completion.
fn sinew(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run sinew")
}

/// Starts `sinew run ARGS...` with logs discarded.
fn run(args: &[&str]) -> Proc {
    Proc(
        Command::new(BIN)
            .arg("run")
            .args(args)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sinew"),
    )
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

#[tokio::test]
async fn admin_on_run_overrides_the_config_and_status_reaches_it_by_name() {
    let (own, configured, flag) = (free_port(), free_port(), free_port());
    let config = temp_file(
        "cli-admin.yaml",
        &format!("admin: {{ listen: 127.0.0.1:{configured} }}\nservices:\n  own: {{ listen: 127.0.0.1:{own}, backends: [127.0.0.1:1] }}\n"),
    );
    let flag_arg = format!("localhost:{flag}");
    let _sinew = run(&["--config", &config.to_string_lossy(), "--admin", &flag_arg]);
    wait_listening(SocketAddr::from(([127, 0, 0, 1], own))).await;
    wait_listening(SocketAddr::from(([127, 0, 0, 1], flag))).await;
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", configured)).is_err(),
        "the config's admin.listen is replaced, not added to"
    );
    let out = sinew(&["status", "--admin", &flag_arg]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("own"), "{}", text(&out.stdout));
}

#[tokio::test]
async fn admin_on_run_enables_the_admin_server_for_a_synapse_config_on_ipv6() {
    let (web, admin) = (free_port(), free_port());
    let synapse = temp_file(
        "cli-admin-synapse.json",
        &format!(
            r#"{{"services": {{"web": {{"discovery": {{"method": "base"}}, "haproxy": {{"port": {web}}},
                "default_servers": [{{"name": "b", "host": "127.0.0.1", "port": 1}}]}}}}}}"#
        ),
    );
    let flag = format!("[::1]:{admin}");
    let _sinew = run(&[
        "--synapse-config",
        &synapse.to_string_lossy(),
        "--admin",
        &flag,
    ]);
    wait_listening(format!("[::1]:{admin}").parse().unwrap()).await;
    let out = sinew(&["status", "--admin", &flag, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("\"web\""),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn an_admin_name_that_does_not_resolve_is_a_clear_error() {
    let config = temp_file(
        "cli-admin-bad.yaml",
        "services:\n  own: { listen: 127.0.0.1:0, backends: [127.0.0.1:1] }\n",
    );
    for args in [
        vec![
            "run",
            "--config",
            &*config.to_string_lossy(),
            "--admin",
            "no-such-host.invalid:3210",
        ],
        vec!["status", "--admin", "no-such-host.invalid:3210"],
        vec!["status", "--admin", "localhost"],
    ] {
        let out = sinew(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains("--admin"), "{args:?}: {err}");
        assert!(
            err.contains("cannot resolve") || err.contains("expected host:port"),
            "{args:?}: {err}"
        );
    }
}

/// A Synapse service `name` on `port` with one default server.
fn base_service(name: &str, port: u16, extra: &str) -> String {
    format!(
        r#""{name}": {{"discovery": {{"method": "base"}}, "haproxy": {{"port": {port}{extra}}},
            "default_servers": [{{"name": "a", "host": "127.0.0.1", "port": 1}}]}}"#
    )
}

#[test]
fn check_strict_fails_on_anything_ignored_and_plain_check_only_on_a_skipped_service() {
    let (p1, p2) = (free_port(), free_port());
    let ignored = temp_file(
        "cli-strict-ignored.json",
        &format!(
            r#"{{"services": {{{}}}, "haproxy": {{"reload_command": "true"}}, "surprise": 1}}"#,
            base_service(
                "web",
                p1,
                r#", "listen": ["option tcp-smart-accept", "mode tcp"]"#
            )
        ),
    );
    let file = ignored.to_string_lossy().into_owned();
    let plain = sinew(&["check", "--synapse-config", &file]);
    let err = text(&plain.stderr);
    assert!(plain.status.success(), "{err}");
    assert!(
        err.contains("warning: unknown key `surprise` ignored"),
        "{err}"
    );
    assert!(err.contains("note: haproxy.reload_command"), "{err}");

    let strict = sinew(&["check", "--strict", "--synapse-config", &file]);
    let err = text(&strict.stderr);
    assert!(!strict.status.success(), "{err}");
    assert!(
        err.contains("warning: unknown key `surprise` ignored"),
        "{err}"
    );
    assert!(
        err.contains("warning: services.web: directive \"option tcp-smart-accept\""),
        "{err}"
    );
    assert!(err.contains("--strict: 2 setting(s)"), "{err}");

    let clean = temp_file(
        "cli-strict-clean.json",
        &format!(
            r#"{{"services": {{{}}}, "haproxy": {{"reload_command": "true"}}}}"#,
            base_service("web", p1, "")
        ),
    );
    let out = sinew(&[
        "check",
        "--strict",
        "--synapse-config",
        &clean.to_string_lossy(),
    ]);
    assert!(
        out.status.success(),
        "notes alone pass: {}",
        text(&out.stderr)
    );

    let skipped = temp_file(
        "cli-strict-skipped.json",
        &format!(
            r#"{{"services": {{{}, "cloud": {{"discovery": {{"method": "ec2tag"}}, "haproxy": {{"port": {p2}}}}}}}}}"#,
            base_service("web", p1, "")
        ),
    );
    let out = sinew(&["check", "--synapse-config", &skipped.to_string_lossy()]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("error: services.cloud: discovery method \"ec2tag\""),
        "{err}"
    );
    assert!(
        err.contains("1 service(s) skipped: services.cloud"),
        "{err}"
    );
}

#[test]
fn plain_check_fails_when_a_nerve_service_cannot_be_registered() {
    let nerve = temp_file(
        "cli-nerve-etcd.json",
        r#"{"instance_id": "i-1", "services": {
              "web": {"host": "127.0.0.1", "port": 8080, "reporter_type": "zookeeper",
                      "zk_hosts": ["127.0.0.1:2181"], "zk_path": "/nerve/web", "checks": [{"type": "tcp"}]},
              "old": {"host": "127.0.0.1", "port": 8081, "reporter_type": "etcd",
                      "etcd_host": "127.0.0.1", "etcd_path": "/nerve/old", "checks": [{"type": "tcp"}]}}}"#,
    );
    let file = nerve.to_string_lossy().into_owned();
    let out = sinew(&["check", "--nerve-config", &file]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("error: services.old: reporter_type \"etcd\" is not supported"),
        "{err}"
    );
}

#[tokio::test]
async fn metrics_carry_process_families_and_logs_into_a_file_carry_no_colour_codes() {
    let admin = free_port();
    let config = temp_file(
        "cli-process.yaml",
        &format!(
            "admin: {{ listen: 127.0.0.1:{admin} }}\nservices:\n  web: {{ listen: 127.0.0.1:{}, backends: [127.0.0.1:1] }}\n",
            free_port()
        ),
    );
    let log = temp_file("cli-process.log", "");
    let child = Command::new(BIN)
        .args(["run", "--log-level", "info", "--config"])
        .arg(&config)
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn sinew");
    let sinew = Proc(child);
    let admin: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    wait_listening(admin).await;
    let (_, body) = support::http_get(admin, "/metrics").await;
    let cpu = support::metric(&body, "process_cpu_seconds_total");
    assert!(cpu.is_some_and(|v| v >= 0.0), "{cpu:?}");
    for family in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        let value = support::metric(&body, family);
        assert!(value.is_some_and(|v| v > 0.0), "{family}: {value:?}");
    }
    drop(sinew);
    let written = std::fs::read_to_string(&log).expect("log");
    assert!(written.contains("INFO"), "{written}");
    assert!(
        !written.contains('\u{1b}'),
        "colour codes in a file: {written:?}"
    );
}
