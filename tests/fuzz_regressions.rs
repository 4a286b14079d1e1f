//! Inputs that once crashed a parser of outside input, fed to the same functions the fuzz targets in
//! `fuzz/` call. Each must now be answered with an error naming the field, never a panic.

use sinew::config::{Config, Format};
use std::path::Path;

/// Nerve's seconds beyond what a Duration holds (`Duration::from_secs_f64` panicked on them).
#[test]
fn nerve_seconds_too_large_for_a_duration() {
    for (field, json) in [
        (
            "check_interval",
            r#"{"services":{"w":{"host":"h","port":1,"zk_hosts":["z:1"],"zk_path":"/a","check_interval":1e300,"checks":[{"type":"tcp"}]}}}"#,
        ),
        (
            "timeout",
            r#"{"services":{"w":{"host":"h","port":1,"zk_hosts":["z:1"],"zk_path":"/a","checks":[{"type":"tcp","timeout":1e30}]}}}"#,
        ),
    ] {
        let Err(err) = sinew::config::nerve::parse(json, Path::new("nerve.conf.json")) else {
            panic!("{field} of 1e30 s or more is accepted");
        };
        let err = err.to_string();
        assert!(err.contains(field), "{err}");
    }
}

/// A check interval that parses but would overflow the clock when the next round is scheduled.
#[test]
fn native_check_interval_too_large_for_the_clock() {
    let yaml = "register:\n  services:\n    w:\n      host: h\n      port: 1\n      zk_hosts: [z:1]\n      zk_path: /a\n      check_interval: 100000years\n      checks: [{ type: tcp }]\n";
    let Err(err) = Config::parse(yaml, Format::Yaml, Path::new("fuzz.yaml")) else {
        panic!("a check interval of 100000 years is accepted");
    };
    let err = err.to_string();
    assert!(err.contains("check_interval"), "{err}");
}

/// An HAProxy time whose multiplication by its unit overflowed (a panic in debug builds, a wrapped,
/// tiny timeout in release builds), in every place a Synapse config carries one.
#[test]
fn haproxy_time_too_large_for_a_duration() {
    for (field, defaults, options) in [
        ("haproxy.defaults", "timeout connect 300000000000000d", ""),
        ("haproxy.defaults", "timeout server 213503982334601h", ""),
        ("server_options", "", "check inter 300000000000000d"),
    ] {
        let json = format!(
            r#"{{"haproxy": {{"defaults": ["{defaults}"]}}, "services": {{"web": {{"default_servers": [{{"host": "127.0.0.1", "port": 9}}], "haproxy": {{"port": 4001, "server_options": "{options}"}}}}}}}}"#
        );
        let Err(err) = sinew::config::synapse::parse(&json, Path::new("synapse.json")) else {
            panic!("{defaults}{options} is accepted");
        };
        let err = err.to_string();
        assert!(err.contains(field) && err.contains("too long"), "{err}");
    }
}

/// Flow collections nested 100,000 deep (200 KB) kept the YAML parser busy for 25 s of CPU before any
/// error; the pre-scan refuses them at once, for native and Synapse configs alike.
#[test]
fn deeply_nested_yaml_is_refused_before_parsing() {
    let deep = format!("services: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let started = std::time::Instant::now();
    let Err(err) = Config::parse(&deep, Format::Yaml, Path::new("deep.yaml")) else {
        panic!("100,000 levels are accepted");
    };
    assert!(err.to_string().contains("nested deeper than 64"), "{err}");
    let Err(err) = sinew::config::synapse::parse(&deep, Path::new("deep.yaml")) else {
        panic!("100,000 levels are accepted");
    };
    assert!(err.to_string().contains("nested deeper than 64"), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}
