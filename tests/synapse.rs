//! Unmodified Synapse configs: both forms load and route, unsupported parts are warned about without
//! stopping other services, and `sinew check --synapse-config` prints a native config that loads.

mod support;

use sinew::agent::Agent;
use sinew::config::synapse;
use sinew::config::{Algorithm, DiscoveryConfig, Level, Mode};
use std::process::Command;
use std::time::Duration;
use support::process::{temp_file, BIN};
use support::zk::{nerve, put, ZooKeeper};
use support::*;

fn example(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/synapse")
        .join(name)
}

#[test]
fn the_example_configs_translate() {
    let t = synapse::load(&example("synapse.conf.json")).unwrap();
    let web = &t.config.services["web"];
    assert_eq!(web.listen, Some("127.0.0.1:4001".parse().unwrap()));
    assert_eq!(web.mode, Mode::Http);
    assert_eq!(web.backends.len(), 2);
    let check = web.health_check.as_ref().unwrap();
    assert_eq!(
        (
            check.path.as_str(),
            check.rise,
            check.fall,
            check.expect_status.as_slice()
        ),
        ("/health", 3, 2, &[200][..])
    );
    assert_eq!(web.retries.attempts, 3);
    let users = &t.config.services["users"];
    assert_eq!(users.balance, Algorithm::LeastConn);
    assert_eq!(users.timeouts.idle.as_secs(), 60);
    assert_eq!(users.default_servers.len(), 1);
    assert_eq!(
        users.default_servers[0].name.as_deref(),
        Some("fallback"),
        "a default server keeps its name, for file_output"
    );
    assert!(
        t.warnings
            .iter()
            .any(|w| w.message.contains("haproxy.reload_command")),
        "{:?}",
        t.warnings
    );

    let t = synapse::load(&example("synapse-list.json")).unwrap();
    assert_eq!(
        t.config.services["search"].listen.map(|l| l.port()),
        Some(4003)
    );

    let t = synapse::load(&example("synapse.conf.yaml")).unwrap();
    assert_eq!(
        t.config.services.keys().collect::<Vec<_>>(),
        ["proddb", "search"],
        "cloud (ec2tag) is skipped"
    );
    let search = &t.config.services["search"];
    assert_eq!(
        (search.mode, search.balance, search.max_connections),
        (Mode::Http, Algorithm::LeastConn, Some(100))
    );
    assert_eq!(search.timeouts.idle.as_secs(), 50);
    assert!(t.config.state_file.is_some() && t.config.file_output.is_some());
    let error = |text: &str| {
        t.warnings
            .iter()
            .any(|w| w.level == Level::Error && w.message.contains(text))
    };
    assert!(error("services.cloud"), "{:?}", t.warnings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synapse_config_routes_through_zookeeper_and_skips_what_it_cannot_run() {
    let zk = ZooKeeper::start().await;
    let (a, b) = (EchoBackend::start("a").await, EchoBackend::start("b").await);
    let client = zk.client().await;
    put(
        &client,
        "/nerve/services/users/services/i-a_0000000001",
        &nerve("127.0.0.1", a.addr.port(), "i-a"),
    )
    .await;
    let (p1, p2, p3) = (
        support::process::free_port(),
        support::process::free_port(),
        support::process::free_port(),
    );
    let config = temp_file(
        "synapse.json",
        &format!(
            r#"{{"services": {{
                "users": {{"discovery": {{"method": "zookeeper", "path": "/nerve/services/users/services", "hosts": ["{zk}"]}},
                          "haproxy": {{"port": {p1}, "listen": ["mode tcp", "option tcplog"]}}}},
                "static": {{"default_servers": [{{"name": "b", "host": "127.0.0.1", "port": {bp}}}], "discovery": {{"method": "base"}},
                           "haproxy": {{"port": {p2}}}}},
                "cloud": {{"discovery": {{"method": "ec2tag", "tag_name": "role"}}, "haproxy": {{"port": {p3}}}}}
              }},
              "haproxy": {{"reload_command": "true", "config_file_path": "/tmp/x.cfg"}}}}"#,
            zk = zk.address(),
            bp = b.addr.port()
        ),
    );
    let t = synapse::load(&config).unwrap();
    assert!(
        t.warnings
            .iter()
            .any(|w| w.message.contains("services.cloud") && w.message.contains("ec2tag")),
        "{:?}",
        t.warnings
    );
    assert!(
        t.warnings
            .iter()
            .any(|w| w.message.contains("option tcplog")),
        "{:?}",
        t.warnings
    );
    assert!(!t.config.services.contains_key("cloud"));
    let agent = start(t.config).await;
    let users = agent.service_addr("users").unwrap();
    let mut routed = false;
    for _ in 0..250 {
        if greet(users).await.ok().as_deref() == Some("a") {
            routed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(routed, "the ZooKeeper-discovered backend serves");
    assert_eq!(
        greet(agent.service_addr("static").unwrap()).await.unwrap(),
        "b"
    );
}

/// Starts an agent with the admin server on a free port, so tests can run side by side.
async fn start(mut config: sinew::config::Config) -> Agent {
    config.admin.listen = "127.0.0.1:0".parse().unwrap();
    Agent::start(config).await.unwrap()
}

/// The backend names that answer `n` connections to `addr`, sorted and deduplicated.
async fn answering(addr: std::net::SocketAddr, n: usize) -> Vec<String> {
    let mut names = Vec::new();
    for _ in 0..n {
        names.push(greet(addr).await.unwrap());
    }
    names.sort();
    names.dedup();
    names
}

#[tokio::test]
async fn the_list_form_routes_to_its_default_servers() {
    let (a, b) = (EchoBackend::start("a").await, EchoBackend::start("b").await);
    let (p1, p2) = (support::process::free_port(), support::process::free_port());
    // The oldest Synapse layout: a list of services with `name`, `local_port`, `server_options`, `listen`.
    let config = temp_file(
        "synapse-list.json",
        &format!(
            r#"{{"services": [
                {{"name": "pair", "local_port": {p1}, "server_options": "weight 3",
                  "default_servers": [{{"name": "a", "host": "127.0.0.1", "port": {pa}}},
                                      {{"name": "b", "host": "127.0.0.1", "port": {pb}}}],
                  "discovery": {{"method": "base"}}, "listen": ["mode tcp", "balance roundrobin"]}},
                {{"name": "single", "local_port": {p2},
                  "default_servers": [{{"name": "b", "host": "127.0.0.1", "port": {pb}}}],
                  "discovery": {{"method": "base"}}}}
              ],
              "haproxy": {{"reload_command": "true", "defaults": ["retries 3", "timeout connect 500"]}}}}"#,
            pa = a.addr.port(),
            pb = b.addr.port()
        ),
    );
    let t = synapse::load(&config).unwrap();
    let pair = &t.config.services["pair"];
    assert_eq!(
        pair.backends.iter().map(|b| b.weight).collect::<Vec<_>>(),
        [3, 3]
    );
    assert_eq!(pair.retries.attempts, 3);
    assert_eq!(pair.timeouts.connect.as_millis(), 500);
    let agent = start(t.config).await;
    assert_eq!(
        answering(agent.service_addr("pair").unwrap(), 6).await,
        ["a", "b"]
    );
    assert_eq!(
        answering(agent.service_addr("single").unwrap(), 3).await,
        ["b"]
    );
    agent.shutdown(std::time::Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_yaml_hash_form_routes_while_an_unsupported_method_is_skipped() {
    let a = EchoBackend::start("a").await;
    let (p1, p2) = (support::process::free_port(), support::process::free_port());
    let config = temp_file(
        "synapse-hash.yaml",
        &format!(
            "services:\n  web:\n    default_servers:\n      - {{ name: a, host: 127.0.0.1, port: {pa} }}\n    discovery: {{ method: base }}\n    haproxy:\n      port: {p1}\n      listen: [\"mode tcp\"]\n  resolver:\n    discovery: {{ method: ec2tag, tag_name: role }}\n    haproxy: {{ port: {p2}, server_port_override: 80 }}\nhaproxy:\n  bind_address: 127.0.0.1\n  reload_command: /bin/true\n",
            pa = a.addr.port()
        ),
    );
    let t = synapse::load(&config).unwrap();
    assert!(
        t.warnings
            .iter()
            .any(|w| w.message.contains("services.resolver") && w.message.contains("ec2tag")),
        "{:?}",
        t.warnings
    );
    assert_eq!(t.config.services.keys().collect::<Vec<_>>(), ["web"]);
    let agent = start(t.config).await;
    assert_eq!(
        answering(agent.service_addr("web").unwrap(), 3).await,
        ["a"]
    );
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", p2))
            .await
            .is_err(),
        "nothing listens for the skipped service"
    );
    agent.shutdown(std::time::Duration::from_secs(1)).await;
}

#[test]
fn check_prints_a_native_config_that_loads() {
    let out = Command::new(BIN)
        .args(["check", "--synapse-config"])
        .arg(example("synapse.conf.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("note: haproxy.reload_command"));
    let native = temp_file("native.yaml", &String::from_utf8_lossy(&out.stdout));
    support::process::check_ok("--config", &native);
    let out = Command::new(BIN)
        .args(["check", "--synapse-config", "/nonexistent/synapse.json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/synapse.json"));
}

/// Translates a JSON Synapse config written to a temporary file.
fn translate(name: &str, json: &str) -> Result<synapse::Translation, synapse::SynapseError> {
    synapse::load(&temp_file(name, json))
}

#[test]
fn defaults_are_warned_about_once_and_unknown_keys_are_reported() {
    let t = translate(
        "once.json",
        r#"{"services": {
              "a": {"discovery": {"method": "base", "label_filters": []}, "default_servers": [{"host": "127.0.0.1", "port": 1}],
                    "haproxy": {"port": 4101, "colour": "blue"}, "owner": "team-a"},
              "b": {"discovery": {"method": "zookeeper", "hosts": "127.0.0.1:2181", "path": "/nerve/b"},
                    "haproxy": {"port": 4102, "listen": ["option httpchk /health"]}}},
            "haproxy": {"defaults": ["option http-keep-alive", "log global"], "reload_command": "true", "do_reloads": true},
            "statsd": {"host": "localhost"}}"#,
    )
    .unwrap();
    let said = |text: &str| {
        t.warnings
            .iter()
            .filter(|w| w.message.contains(text))
            .count()
    };
    assert_eq!(said("option http-keep-alive"), 1, "{:?}", t.warnings);
    assert_eq!(said("reload_command"), 1, "{:?}", t.warnings);
    assert_eq!(said("`statsd`"), 1, "{:?}", t.warnings);
    assert_eq!(
        said("services.a: unknown key `owner`"),
        1,
        "{:?}",
        t.warnings
    );
    assert_eq!(
        said("services.a: discovery.label_filters"),
        1,
        "{:?}",
        t.warnings
    );
    assert_eq!(
        said("services.a: unknown key `haproxy.colour`"),
        1,
        "{:?}",
        t.warnings
    );
    let Some(sinew::config::DiscoveryConfig::Zookeeper(zk)) = &t.config.services["b"].discovery
    else {
        panic!("zookeeper discovery expected");
    };
    assert_eq!(
        zk.hosts,
        ["127.0.0.1:2181"],
        "a single host string is a list of one"
    );
    assert!(
        t.config.services["b"].health_check.is_none(),
        "HAProxy checks nothing without `check` in server_options"
    );
}

#[test]
fn wrong_values_are_errors_naming_the_service_and_field() {
    let base =
        r#""discovery": {"method": "base"}, "default_servers": [{"host": "127.0.0.1", "port": 1}]"#;
    for (haproxy, expect) in [
        (r#""port": 70000"#, "services.web.haproxy.port"),
        (
            r#""port": 4103, "listen": ["retries many"]"#,
            "services.web.haproxy.listen: \"retries many\"",
        ),
        (
            r#""port": 4103, "server_options": "check inter soon""#,
            "services.web.haproxy.server_options",
        ),
        (
            r#""port": 4103, "bind_address": "eth0""#,
            "services.web.haproxy.bind_address",
        ),
    ] {
        let e = translate(
            "wrong.json",
            &format!(r#"{{"services": {{"web": {{{base}, "haproxy": {{{haproxy}}}}}}}}}"#),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("wrong.json") && e.contains(expect), "{e}");
    }
    let e = translate(
        "defaults.json",
        &format!(r#"{{"services": {{"web": {{{base}, "haproxy": {{"port": 4103}}}}}}, "haproxy": {{"defaults": ["timeout connect soon"]}}}}"#),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("haproxy.defaults: \"timeout connect soon\""),
        "{e}"
    );
}

#[test]
fn a_config_whose_every_service_is_skipped_is_an_error() {
    let e = translate(
        "none.json",
        r#"{"services": {"cloud": {"discovery": {"method": "ec2tag"}, "haproxy": {"port": 4104}},
                         "names": {"discovery": {"method": "consul"}, "haproxy": {"port": 4105}}}}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("no service can run") && e.contains("services.cloud") && e.contains("consul"),
        "{e}"
    );
}

#[test]
fn service_conf_dir_adds_one_service_per_file_and_replaces_same_named_ones() {
    let dir = temp_file("conf.anchor", "").with_extension("d");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("api.yaml"),
        "discovery: { method: base }\ndefault_servers: [{ name: a, host: 127.0.0.1, port: 9001 }]\nhaproxy: { port: 4201 }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("web.json"),
        r#"{"discovery": {"method": "zookeeper", "hosts": ["127.0.0.1:2181"], "path": "/nerve/web"}, "haproxy": {"port": 4202}}"#,
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), "not a service").unwrap();
    let t = translate(
        "with-dir.json",
        &format!(
            r#"{{"services": {{"web": {{"discovery": {{"method": "base"}}, "default_servers": [{{"host": "127.0.0.1", "port": 1}}], "haproxy": {{"port": 4200}}}}}},
                "service_conf_dir": "{}"}}"#,
            dir.display()
        ),
    )
    .unwrap();
    assert_eq!(t.config.services.keys().collect::<Vec<_>>(), ["api", "web"]);
    assert_eq!(
        t.config.services["web"].listen.map(|l| l.port()),
        Some(4202),
        "the file replaces the inline service"
    );
    assert!(t.config.services["web"].discovery.is_some());
}

#[test]
fn the_printed_native_config_loads_back_to_the_same_config() {
    for name in [
        "synapse.conf.json",
        "synapse-list.json",
        "synapse.conf.yaml",
    ] {
        let t = synapse::load(&example(name)).unwrap();
        let yaml = synapse::to_yaml(&t.config).unwrap();
        assert!(
            !yaml.contains("budget_percent"),
            "defaults are left out:\n{yaml}"
        );
        let back = sinew::config::Config::parse(
            &yaml,
            sinew::config::Format::Yaml,
            std::path::Path::new("native.yaml"),
        )
        .unwrap();
        assert_eq!(back, t.config, "{name}:\n{yaml}");
    }
}

/// A JSON Synapse config of one service `web` on `default_servers` at `backend`, with `haproxy` fields.
fn web(port: u16, backend: &str, haproxy: &str) -> String {
    let (host, bport) = backend.rsplit_once(':').unwrap();
    format!(
        r#"{{"services": {{"web": {{"discovery": {{"method": "base"}},
            "default_servers": [{{"name": "a", "host": "{host}", "port": {bport}}}],
            "haproxy": {{"port": {port}, {haproxy}}}}}}}}}"#
    )
}

#[test]
fn haproxy_values_haproxy_rejects_are_errors_naming_service_and_line() {
    for (haproxy, expect) in [
        (
            r#""listen": ["mode http", "balance leastconnn"]"#,
            "services.web.haproxy.listen: \"balance leastconnn\": unknown algorithm",
        ),
        (
            r#""backend": ["retry-on 503 sometimes"]"#,
            "services.web.haproxy.backend: \"retry-on 503 sometimes\": unknown keyword \"sometimes\"",
        ),
        (
            r#""frontend": ["option forwardfor except everyone"]"#,
            "services.web.haproxy.frontend: \"option forwardfor except everyone\"",
        ),
        (
            r#""frontend": ["maxconn none"]"#,
            "services.web.haproxy.frontend: \"maxconn none\"",
        ),
        (
            r#""bind_options": "accept-proxxy""#,
            "services.web.haproxy.bind_options: unknown bind option \"accept-proxxy\"",
        ),
        (
            r#""bind_options": "ssl crt""#,
            "services.web.haproxy.bind_options: crt needs a value",
        ),
    ] {
        let e = translate("reject.json", &web(4110, "127.0.0.1:1", haproxy))
            .unwrap_err()
            .to_string();
        assert!(e.contains("reject.json") && e.contains(expect), "{e}");
    }
    let t = translate(
        "approx.json",
        &web(4110, "127.0.0.1:1", r#""listen": ["balance uri"]"#),
    )
    .unwrap();
    assert!(
        t.warnings.iter().any(|w| w.level == Level::Warn
            && w.message
                == "services.web: directive \"balance uri\": not supported, sinew balances with round_robin instead"),
        "{:?}",
        t.warnings
    );
}

#[test]
fn proxy_protocol_options_map_to_send_proxy_and_accept_proxy() {
    let t = translate(
        "proxy-protocol.json",
        &web(
            4112,
            "127.0.0.1:1",
            r#""server_options": "check inter 2s send-proxy-v2 check-send-proxy",
               "bind_options": "accept-proxy""#,
        ),
    )
    .unwrap();
    let svc = &t.config.services["web"];
    assert_eq!(svc.send_proxy, Some(sinew::config::SendProxy::V2));
    assert!(svc.accept_proxy);
    assert!(
        !t.warnings.iter().any(|w| w.message.contains("proxy")),
        "{:?}",
        t.warnings
    );
}

#[test]
fn frontend_directives_map_to_the_service() {
    let t = translate(
        "front.json",
        &web(
            4111,
            "127.0.0.1:1",
            r#""listen": ["mode http", "option forwardfor except 10.0.0.0/8 header X-Client",
                          "retry-on conn-failure empty-response 503 response-timeout"],
               "frontend": ["maxconn 250"],
               "bind_options": "ssl crt /etc/ssl/web.pem v6only""#,
        ),
    )
    .unwrap();
    let svc = &t.config.services["web"];
    assert!(svc.http.forwarded_headers);
    assert_eq!(svc.http.forwarded_for_header.0.as_str(), "x-client");
    assert_eq!(
        svc.http.forwarded_except,
        ["10.0.0.0/8".parse::<sinew::config::Network>().unwrap()]
    );
    use sinew::config::RetryOn::*;
    assert_eq!(
        svc.retries.on,
        [ConnectFailure, Reset, RetriableStatusCodes]
    );
    assert_eq!(svc.retries.retriable_status_codes, [503]);
    assert_eq!(svc.max_client_connections, Some(250));
    let tls = svc.tls_listen.as_ref().unwrap();
    assert_eq!(tls.cert, std::path::Path::new("/etc/ssl/web.pem"));
    let warned = |text: &str| t.warnings.iter().any(|w| w.message.contains(text));
    assert!(warned("response-timeout"), "{:?}", t.warnings);
    assert!(warned("bind option \"v6only\""), "{:?}", t.warnings);

    // Without `option forwardfor` HAProxy adds no X-Forwarded-For; `retry-on none` retries nothing.
    let t = translate(
        "plain.json",
        &web(
            4111,
            "127.0.0.1:1",
            r#""listen": ["mode http", "retries 3", "retry-on none"]"#,
        ),
    )
    .unwrap();
    let svc = &t.config.services["web"];
    assert!(!svc.http.forwarded_headers);
    assert_eq!(svc.retries.attempts, 0);
}

#[tokio::test]
async fn option_forwardfor_decides_the_header_backends_see() {
    let backend = support::http::HttpBackend::start("a").await;
    let headers_seen = |listen: &str| {
        let port = support::process::free_port();
        let config = temp_file(
            "forwardfor.json",
            &web(port, &backend.hostport(), &format!(r#""listen": {listen}"#)),
        );
        async move {
            let agent = start(synapse::load(&config).unwrap().config).await;
            let (status, body) = http_get(agent.service_addr("web").unwrap(), "/headers").await;
            agent.shutdown(std::time::Duration::from_secs(1)).await;
            assert_eq!(status, 200, "{body}");
            body.to_ascii_lowercase()
        }
    };
    let body = headers_seen(r#"["mode http", "option forwardfor header X-Client"]"#).await;
    assert!(body.contains("x-client: 127.0.0.1"), "{body}");
    assert!(!body.contains("x-forwarded-for"), "{body}");
    let body = headers_seen(r#"["mode http", "option forwardfor except 127.0.0.0/8"]"#).await;
    assert!(!body.contains("x-forwarded-for"), "{body}");
    let body = headers_seen(r#"["mode http", "option forwardfor"]"#).await;
    assert!(body.contains("x-forwarded-for: 127.0.0.1"), "{body}");
    let body = headers_seen(r#"["mode http"]"#).await;
    assert!(!body.contains("x-forwarded-for"), "{body}");
}

#[test]
fn a_stats_section_gives_the_admin_address_and_other_sections_are_warned_about() {
    let base = r#""services": {"web": {"discovery": {"method": "base"},
        "default_servers": [{"host": "127.0.0.1", "port": 1}], "haproxy": {"port": 4112}}}"#;
    let t = translate(
        "stats.json",
        &format!(
            r#"{{{base}, "haproxy": {{
                "global": ["daemon", "stats socket /var/run/haproxy.sock mode 666 level admin"],
                "extra_sections": {{
                    "listen stats": ["mode http", "bind :3212", "stats enable", "stats uri /"],
                    "frontend legacy": ["bind :8080", "default_backend web"]}}}}}}"#
        ),
    )
    .unwrap();
    assert_eq!(t.config.admin.listen.to_string(), "0.0.0.0:3212");
    let said = |level: Level, text: &str| {
        t.warnings
            .iter()
            .any(|w| w.level == level && w.message.contains(text))
    };
    assert!(said(Level::Info, "stats socket"), "{:?}", t.warnings);
    assert!(said(Level::Info, "admin API"), "{:?}", t.warnings);
    assert!(
        said(Level::Warn, "haproxy.extra_sections.frontend legacy"),
        "{:?}",
        t.warnings
    );
    assert!(
        !said(Level::Warn, "haproxy.extra_sections.listen stats"),
        "{:?}",
        t.warnings
    );

    // Synapse's own example writes the address in the title, HAProxy's older `listen NAME ADDR` form.
    let t = translate(
        "stats-title.json",
        &format!(
            r#"{{{base}, "haproxy": {{"extra_sections": {{"listen stats :3213": ["mode http", "stats enable"]}}}}}}"#
        ),
    )
    .unwrap();
    assert_eq!(t.config.admin.listen.to_string(), "0.0.0.0:3213");

    let e = translate(
        "stats-bad.json",
        &format!(
            r#"{{{base}, "haproxy": {{"extra_sections": {{"listen stats": ["bind eth0:3212", "stats enable"]}}}}}}"#
        ),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("stats-bad.json: haproxy.extra_sections.listen stats")
            && e.contains("eth0:3212"),
        "{e}"
    );
    let t = translate("no-stats.json", &format!("{{{base}}}")).unwrap();
    assert_eq!(t.config.admin.listen.to_string(), "127.0.0.1:3210");
}

#[test]
fn label_filters_backend_order_and_use_nerve_weights_translate() {
    use sinew::config::{DiscoveryConfig, LabelCondition, Order};
    let zk = |t: &synapse::Translation, name: &str| match &t.config.services[name].discovery {
        Some(DiscoveryConfig::Zookeeper(zk)) => zk.clone(),
        _ => panic!("{name}: zookeeper discovery expected"),
    };
    let t = translate(
        "labels.json",
        r#"{"services": {
              "a": {"discovery": {"method": "zookeeper", "hosts": ["127.0.0.1:2181"], "path": "/nerve/a",
                                  "label_filters": [{"label": "az", "value": "us-1a", "condition": "equals"}],
                                  "label_filter": {"label": "canary", "value": "true", "condition": "not-equals"}},
                    "haproxy": {"port": 4201, "backend_order": "desc", "use_nerve_weights": true}},
              "b": {"discovery": {"method": "zookeeper", "hosts": ["127.0.0.1:2181"], "path": "/nerve/b"},
                    "haproxy": {"port": 4202, "backend_order": "no_shuffle"}},
              "c": {"discovery": {"method": "zookeeper", "hosts": ["127.0.0.1:2181"], "path": "/nerve/c"},
                    "haproxy": {"port": 4203, "backend_order": "random"}}},
            "haproxy": {"use_nerve_weights": true, "server_order_seed": "42"}}"#,
    )
    .unwrap();
    let a = zk(&t, "a");
    let filters: Vec<(&str, LabelCondition)> = a
        .label_filters
        .iter()
        .map(|f| (f.label.as_str(), f.condition))
        .collect();
    assert_eq!(
        filters,
        [
            ("canary", LabelCondition::NotEquals),
            ("az", LabelCondition::Equals)
        ]
    );
    assert!(a.use_weights);
    assert_eq!((a.order, a.order_seed), (Order::Desc, Some(42)));
    assert_eq!(zk(&t, "b").order, Order::Asc);
    assert_eq!(zk(&t, "c").order, Order::Shuffle);
    let said = |text: &str| t.warnings.iter().any(|w| w.message.contains(text));
    assert!(said("label_filter is deprecated"), "{:?}", t.warnings);
    assert!(
        said("services.c: haproxy.backend_order \"random\""),
        "{:?}",
        t.warnings
    );
    assert!(
        said("services.a: haproxy.use_nerve_weights: Synapse reads it only in the top-level"),
        "{:?}",
        t.warnings
    );

    // Without use_nerve_weights, Synapse ignores a znode's weight; backends are shuffled by default.
    let plain = translate(
        "plain.json",
        r#"{"services": {"d": {"discovery": {"method": "zookeeper", "hosts": ["127.0.0.1:2181"], "path": "/nerve/d"},
                               "haproxy": {"port": 4204}}}}"#,
    )
    .unwrap();
    let d = zk(&plain, "d");
    assert!(!d.use_weights);
    assert_eq!((d.order, d.order_seed), (Order::Shuffle, None));
}

#[test]
fn a_bad_label_filter_or_znode_setting_is_an_error_naming_the_field() {
    for (discovery, top, field) in [
        (
            r#""label_filters": [{"label": "az", "value": "a", "condition": "matches"}]"#,
            "{}",
            "services.web.discovery.label_filters[0]",
        ),
        (
            r#""label_filter": {"label": "az", "condition": "equals"}"#,
            "{}",
            "services.web.discovery.label_filter[0]",
        ),
        (
            "",
            r#"{"use_nerve_weights": "yes"}"#,
            "haproxy.use_nerve_weights",
        ),
        (
            "",
            r#"{"server_order_seed": "many"}"#,
            "haproxy.server_order_seed",
        ),
    ] {
        let comma = if discovery.is_empty() { "" } else { "," };
        let e = translate(
            "bad-label.json",
            &format!(
                r#"{{"services": {{"web": {{"discovery": {{"method": "zookeeper", "hosts": ["h:1"], "path": "/p"{comma}{discovery}}},
                    "haproxy": {{"port": 4205}}}}}}, "haproxy": {top}}}"#
            ),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains(field), "{field}: {e}");
    }
}

#[test]
fn dns_and_zookeeper_dns_translate_to_resolved_discovery() {
    let t = translate(
        "dns.json",
        r#"{"services": {
            "db": {"discovery": {"method": "dns", "check_interval": 5, "nameserver": "10.0.0.53",
                                 "servers": [{"name": "db1", "host": "db1.internal", "port": 5432},
                                             {"name": "db2", "host": "10.0.0.7", "port": "5433", "labels": {"az": "a"}}]},
                   "haproxy": {"port": 4201, "server_options": "check weight 4"}},
            "over": {"discovery": {"method": "dns", "servers": [{"host": "db1.internal"}]},
                     "haproxy": {"port": 4202, "server_port_override": 6000}},
            "web": {"discovery": {"method": "zookeeper_dns", "hosts": ["zk1:2181"], "path": "/nerve/web",
                                  "check_interval": 0.5},
                    "default_servers": [{"name": "d", "host": "127.0.0.1", "port": 9}],
                    "haproxy": {"port": 4203}}}}"#,
    )
    .unwrap();
    let Some(DiscoveryConfig::Dns(db)) = &t.config.services["db"].discovery else {
        panic!("dns expected: {:?}", t.config.services["db"].discovery)
    };
    assert_eq!(db.interval, Duration::from_secs(5));
    let servers: Vec<_> = db
        .servers
        .iter()
        .map(|s| (s.host.as_str(), s.port, s.weight, s.name.as_deref()))
        .collect();
    assert_eq!(
        servers,
        [
            ("db1.internal", 5432, 4, Some("db1")),
            ("10.0.0.7", 5433, 4, Some("db2"))
        ]
    );
    let warned = |what: &str| t.warnings.iter().any(|w| w.message.contains(what));
    assert!(
        warned("services.db: discovery.nameserver"),
        "{:?}",
        t.warnings
    );
    assert!(warned("discovery.servers[1].labels"), "{:?}", t.warnings);
    let Some(DiscoveryConfig::Dns(over)) = &t.config.services["over"].discovery else {
        panic!("dns expected")
    };
    assert_eq!(
        (over.servers[0].port, over.interval),
        (6000, Duration::from_secs(30))
    );
    let web = &t.config.services["web"];
    let Some(DiscoveryConfig::Zookeeper(zk)) = &web.discovery else {
        panic!("zookeeper expected")
    };
    assert_eq!(
        (zk.path.as_str(), zk.resolve_interval),
        ("/nerve/web", Some(Duration::from_millis(500)))
    );
    assert_eq!(web.default_servers.len(), 1);

    for (discovery, says) in [
        (r#"{"method": "dns"}"#, "discovery.servers"),
        (r#"{"method": "dns", "servers": []}"#, "discovery.servers"),
        (
            r#"{"method": "dns", "servers": [{"host": "h"}]}"#,
            "discovery.servers[0]",
        ),
        (
            r#"{"method": "dns", "servers": [{"port": 1}]}"#,
            "discovery.servers[0]",
        ),
        (
            r#"{"method": "dns", "servers": [{"host": "h", "port": 1}], "check_interval": "often"}"#,
            "discovery.check_interval",
        ),
        (
            r#"{"method": "dns", "servers": [{"host": "h", "port": 1}], "check_interval": 0}"#,
            "discovery.check_interval",
        ),
        (
            r#"{"method": "zookeeper_dns", "path": "/p"}"#,
            "discovery.hosts",
        ),
    ] {
        let e = translate(
            "bad-dns.json",
            &format!(r#"{{"services": {{"x": {{"discovery": {discovery}, "haproxy": {{"port": 4204}}}}}}}}"#),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("services.x") || e.contains("x"), "{e}");
        assert!(e.contains(says), "{discovery}: {e}");
    }
}

#[tokio::test]
async fn a_synapse_dns_service_routes_to_what_localhost_resolves_to() {
    let port = support::process::free_port();
    let backends = support::dns::serve_every_address("localhost", port, "local").await;
    let listen = support::process::free_port();
    let config = temp_file(
        "synapse-dns.json",
        &format!(
            r#"{{"services": {{"local": {{"discovery": {{"method": "dns", "check_interval": 1,
                   "servers": [{{"name": "l", "host": "localhost", "port": {port}}}]}},
                   "haproxy": {{"port": {listen}, "listen": ["mode tcp"]}}}}}}}}"#
        ),
    );
    let t = synapse::load(&config).unwrap();
    let agent = start(t.config).await;
    let addr = agent.service_addr("local").unwrap();
    let mut routed = false;
    for _ in 0..250 {
        if greet(addr).await.ok().as_deref() == Some("local") {
            routed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(routed, "the name's backend serves");
    let view = agent.balancer("local").unwrap().view();
    let mut hosts: Vec<String> = view.backends.iter().map(|b| b.address.clone()).collect();
    hosts.sort();
    let mut want: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
    want.sort();
    assert_eq!(hosts, want, "one backend per address of localhost");
    agent.shutdown(Duration::from_secs(1)).await;
}

#[test]
fn keys_for_an_external_haproxy_are_notes_and_keys_sinew_cannot_honour_are_warnings() {
    let t = translate(
        "keys.json",
        r#"{"services": {
              "a": {"discovery": {"method": "base"}, "default_servers": [{"host": "127.0.0.1", "port": 1}],
                    "haproxy": {"port": 4101, "cookie_value_method": "hash"}}},
            "haproxy": {"do_checks": true, "check_command": "haproxy -c -f /tmp/c", "candidate_config_file_path": "/tmp/c",
                        "max_server_id": 65535}}"#,
    )
    .unwrap();
    let at = |text: &str| -> Vec<Level> {
        t.warnings
            .iter()
            .filter(|w| w.message.contains(text))
            .map(|w| w.level)
            .collect()
    };
    for key in ["do_checks", "check_command", "candidate_config_file_path"] {
        assert_eq!(
            at(&format!("haproxy.{key}")),
            vec![Level::Info],
            "{key}: {:?}",
            t.warnings
        );
    }
    assert_eq!(at("haproxy.max_server_id: sinew has no"), vec![Level::Warn]);
    assert_eq!(
        at("services.a: haproxy.cookie_value_method"),
        vec![Level::Warn],
        "{:?}",
        t.warnings
    );
}

#[test]
fn a_default_server_may_be_a_unix_socket_without_a_port() {
    let config = |server: &str| {
        format!(
            r#"{{"services": {{"a": {{"discovery": {{"method": "base"}}, "default_servers": [{server}],
                   "haproxy": {{"port": 4103}}}}}}, "haproxy": {{"reload_command": "true"}}}}"#
        )
    };
    let t = translate(
        "unix-default.json",
        &config(r#"{"name": "local", "host": "unix:/run/app.sock"}"#),
    )
    .unwrap();
    let server = &t.config.services["a"].backends[0];
    assert_eq!(
        (server.host.as_str(), server.port, server.name.as_deref()),
        ("unix:/run/app.sock", 0, Some("local"))
    );
    for (server, says) in [
        (
            r#"{"host": "unix:/run/app.sock", "port": 80}"#,
            "default_servers: [0]: Unix socket backend \"unix:/run/app.sock\" takes no port",
        ),
        (
            r#"{"host": "unix:app.sock"}"#,
            "invalid Unix socket backend \"unix:app.sock\"",
        ),
    ] {
        let Err(e) = translate("unix-bad.json", &config(server)) else {
            panic!("{server} accepted");
        };
        let e = e.to_string();
        assert!(e.contains(says), "{server}: {e}");
    }
}
