//! The Nerve keys sinew does not honour, and keys Nerve does not know: each is warned about by name,
//! never dropped in silence.

use serde_json::Value;

/// Top-level keys sinew reads, or warns about elsewhere.
const TOP: &[&str] = &[
    "instance_id",
    "services",
    "service_conf_dir",
    "max_repeated_report_failures",
];

/// Service keys sinew reads, or warns about elsewhere.
const SERVICE: &[&str] = &[
    "name",
    "host",
    "port",
    "zk_hosts",
    "zk_path",
    "check_interval",
    "checks",
    "weight",
    "labels",
    "haproxy_server_options",
    "reporter_type",
    "max_repeated_report_failures",
];

/// Service keys Nerve reads that sinew does not honour, and why.
const SERVICE_IGNORED: &[(&str, &str)] = &[
    ("heartbeat_path", "sinew touches no heartbeat file; /ready and the sinew_task_* metrics show it is making progress"),
    ("rate_limiting", "sinew does not rate-limit its reports"),
    (
        "check_mocked",
        "sinew always runs the checks; list none you do not want",
    ),
    (
        "use_path_encoding",
        "sinew names its znodes by instance id without path encoding",
    ),
    ("node_type", "sinew registers ephemeral znodes only"),
    (
        "ttl_seconds",
        "sinew's znodes live as long as its ZooKeeper session",
    ),
];

/// Check keys sinew reads.
const CHECK: &[&str] = &[
    "type",
    "name",
    "timeout",
    "rise",
    "fall",
    "host",
    "port",
    "uri",
    "expect",
    "key",
    "password",
    "username",
    "vhost",
    "db",
    "headers",
    "open_timeout",
];

/// Check keys Nerve reads that sinew does not honour, and why.
const CHECK_IGNORED: &[(&str, &str)] = &[
    ("read_timeout", "the whole check runs within `timeout`"),
    ("ssl", "sinew's http check speaks plain HTTP only"),
    ("ssl_timeout", "sinew's http check speaks plain HTTP only"),
];

/// Warnings for the top-level keys of a Nerve config.
pub fn top(root: &Value) -> Vec<String> {
    unknown(root, "", TOP, &[])
}

/// Warnings for one service's keys and its checks' keys, prefixed `services.NAME.`.
pub fn service(name: &str, svc: &Value) -> Vec<String> {
    let at = format!("services.{name}.");
    let mut out = unknown(svc, &at, SERVICE, SERVICE_IGNORED);
    let checks = svc.get("checks").and_then(Value::as_array);
    for (i, c) in checks.into_iter().flatten().enumerate() {
        out.extend(unknown(
            c,
            &format!("{at}checks[{i}]."),
            CHECK,
            CHECK_IGNORED,
        ));
    }
    out
}

fn unknown(v: &Value, at: &str, known: &[&str], ignored: &[(&str, &str)]) -> Vec<String> {
    let Some(map) = v.as_object() else {
        return Vec::new();
    };
    map.keys()
        .filter(|k| !known.contains(&k.as_str()))
        .map(|k| match ignored.iter().find(|(name, _)| name == k) {
            Some((_, why)) => format!("{at}{k}: ignored because {why}"),
            None => format!("{at}{k}: not a Nerve key sinew knows, ignored"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_sinew_does_not_honour_is_named() {
        let svc = serde_json::json!({
            "host": "h", "port": 1, "zk_hosts": [], "zk_path": "/p", "check_interval": 1,
            "heartbeat_path": "/hb", "rate_limiting": {}, "check_mocked": true,
            "use_path_encoding": true, "node_type": "persistent", "ttl_seconds": 5, "colour": "red",
            "checks": [{"type": "http", "uri": "/", "read_timeout": 1, "ssl": true, "verb": "HEAD"}],
        });
        // The warnings' prefixes, in key order.
        let table = [
            "services.s.check_mocked: ignored",
            "services.s.colour: not a Nerve key",
            "services.s.heartbeat_path: ignored",
            "services.s.node_type: ignored",
            "services.s.rate_limiting: ignored",
            "services.s.ttl_seconds: ignored",
            "services.s.use_path_encoding: ignored",
            "services.s.checks[0].read_timeout: ignored",
            "services.s.checks[0].ssl: ignored",
            "services.s.checks[0].verb: not a Nerve key",
        ];
        let warnings = service("s", &svc);
        assert_eq!(warnings.len(), table.len(), "{warnings:?}");
        for (prefix, w) in table.iter().zip(&warnings) {
            assert!(w.starts_with(prefix), "{w} vs {prefix}");
        }
        let root = serde_json::json!({"instance_id": "i", "services": {}, "statsd": {}});
        assert_eq!(top(&root), ["statsd: not a Nerve key sinew knows, ignored"]);
    }
}
