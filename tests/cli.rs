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
