//! Where a service's backends come from when they are not listed: a file, a ZooKeeper path, or host
//! names resolved through the system resolver.

use super::addr::BackendAddr;
use super::duration;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Where backends come from, when not static.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(try_from = "DiscoverySection")]
pub enum DiscoveryConfig {
    /// A JSON file listing backends, re-read when it changes.
    File(PathBuf),
    /// Children of a ZooKeeper path (Nerve or ServerSet znodes).
    Zookeeper(ZookeeperDiscovery),
    /// Host names resolved on an interval, one backend per address.
    Dns(DnsDiscovery),
}

/// The `discovery:` mapping as written: exactly one source key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiscoverySection {
    file: Option<PathBuf>,
    zookeeper: Option<ZookeeperDiscovery>,
    dns: Option<DnsDiscovery>,
}

impl Serialize for DiscoveryConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(1))?;
        match self {
            DiscoveryConfig::File(path) => map.serialize_entry("file", path)?,
            DiscoveryConfig::Zookeeper(zk) => map.serialize_entry("zookeeper", zk)?,
            DiscoveryConfig::Dns(dns) => map.serialize_entry("dns", dns)?,
        }
        map.end()
    }
}

/// A `discovery:` mapping that names no source, or both.
#[derive(Debug, thiserror::Error)]
#[error("give exactly one discovery source: `file`, `zookeeper` or `dns`")]
pub struct NotOneSource;

impl TryFrom<DiscoverySection> for DiscoveryConfig {
    type Error = NotOneSource;
    fn try_from(d: DiscoverySection) -> Result<Self, NotOneSource> {
        match (d.file, d.zookeeper, d.dns) {
            (Some(f), None, None) => Ok(DiscoveryConfig::File(f)),
            (None, Some(z), None) => Ok(DiscoveryConfig::Zookeeper(z)),
            (None, None, Some(d)) => Ok(DiscoveryConfig::Dns(d)),
            _ => Err(NotOneSource),
        }
    }
}

/// ZooKeeper discovery settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ZookeeperDiscovery {
    /// Ensemble members, `host:port`, optionally with a chroot suffix on the last one.
    pub hosts: Vec<String>,
    /// The path whose children are the backends.
    pub path: String,
    /// ZooKeeper session timeout.
    #[serde(default = "default_session_timeout", with = "duration")]
    pub session_timeout: Duration,
    /// How znode data is decoded.
    #[serde(default)]
    pub decode: Decode,
    /// Connect to this port instead of the one registered (Synapse's `server_port_override`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_override: Option<u16>,
    /// After a change event, how long to gather further events before re-reading (at most [`MAX_COALESCE`]).
    #[serde(default = "default_coalesce", with = "duration")]
    pub coalesce: Duration,
    /// How changes are watched.
    #[serde(default)]
    pub watch: WatchMode,
    /// Whether a znode's `weight` is read (Synapse reads it only with `use_nerve_weights`).
    #[serde(default = "yes")]
    pub use_weights: bool,
    /// Only znodes whose labels pass every filter are backends (Synapse's `label_filters`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub label_filters: Vec<LabelFilter>,
    /// The order of the backends, which decides which `backup` serves first (Synapse's `backend_order`).
    #[serde(default)]
    pub order: Order,
    /// Seed of the `shuffle` order (Synapse's `server_order_seed`); random per process when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_seed: Option<u64>,
    /// When set, the znodes' host names are resolved to addresses (one backend per address) and
    /// resolved again on this interval (Synapse's `zookeeper_dns`).
    #[serde(
        default,
        with = "duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub resolve_interval: Option<Duration>,
}

/// The order of a service's discovered backends. Only `backup` selection depends on it (the first
/// usable backup serves); the balancing algorithms weigh backends, not positions.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// By znode name, ascending.
    #[default]
    Asc,
    /// By znode name, descending.
    Desc,
    /// A fixed pseudo-random order per seed: hosts with different seeds pick different first backups.
    Shuffle,
}

impl ZookeeperDiscovery {
    /// Discovery of the children of `path` on the ensemble `hosts`, every other setting at its default.
    pub fn new(hosts: Vec<String>, path: String) -> Self {
        Self {
            hosts,
            path,
            session_timeout: default_session_timeout(),
            decode: Decode::default(),
            port_override: None,
            coalesce: default_coalesce(),
            watch: WatchMode::default(),
            use_weights: true,
            label_filters: Vec::new(),
            order: Order::default(),
            order_seed: None,
            resolve_interval: None,
        }
    }

    /// True when a backend with `labels` passes every label filter.
    pub fn admits(&self, labels: &BTreeMap<String, String>) -> bool {
        self.label_filters.iter().all(|f| f.admits(labels))
    }
}

/// One of Synapse's `label_filters`: a backend's label compared with a value.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LabelFilter {
    /// The label's name.
    pub label: String,
    /// The value compared with.
    pub value: String,
    /// How they are compared.
    pub condition: LabelCondition,
}

/// How a [`LabelFilter`] compares, as Synapse's base watcher does.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LabelCondition {
    /// The label is present with this value.
    Equals,
    /// The label is absent or has another value.
    NotEquals,
}

impl LabelFilter {
    /// True when a backend with `labels` passes this filter.
    pub fn admits(&self, labels: &BTreeMap<String, String>) -> bool {
        let same = labels.get(&self.label) == Some(&self.value);
        match self.condition {
            LabelCondition::Equals => same,
            LabelCondition::NotEquals => !same,
        }
    }
}

fn yes() -> bool {
    true
}

/// How ZooKeeper discovery learns of changes.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WatchMode {
    /// One persistent recursive watch on the path (ZooKeeper 3.6+): each event names the child, so a
    /// change costs at most one read. Falls back to `oneshot` when the server does not support it.
    #[default]
    Recursive,
    /// One-shot watches on the listing and on each child, re-armed by every read (any ZooKeeper).
    Oneshot,
}

/// Longest accepted `discovery.zookeeper.coalesce`: a change is never held back longer than this.
pub const MAX_COALESCE: Duration = Duration::from_secs(5);

/// How znode data is decoded into a backend.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Decode {
    /// The znode format.
    #[serde(default)]
    pub method: DecodeMethod,
    /// For ServerSet data: which `additionalEndpoints` entry to use instead of `serviceEndpoint`.
    #[serde(default)]
    pub endpoint_name: Option<String>,
}

/// Znode formats.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DecodeMethod {
    /// Nerve's JSON: `{host, port, name, weight?}`.
    #[default]
    Nerve,
    /// Finagle ServerSet JSON: `{serviceEndpoint, additionalEndpoints, shard}`.
    Serverset,
}

/// DNS discovery settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DnsDiscovery {
    /// The names to resolve, each with the port its backends listen on.
    pub servers: Vec<BackendAddr>,
    /// How often every name is resolved again (Synapse's `check_interval`).
    #[serde(default = "default_dns_interval", with = "duration")]
    pub interval: Duration,
}

/// Synapse's dns watcher re-resolves every 30 seconds unless `check_interval` says otherwise.
pub const DEFAULT_DNS_INTERVAL: Duration = Duration::from_secs(30);

fn default_dns_interval() -> Duration {
    DEFAULT_DNS_INTERVAL
}

fn default_session_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_coalesce() -> Duration {
    Duration::from_millis(100)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load::tests::parse;

    #[test]
    fn new_has_the_defaults_a_file_leaves_out() {
        let written: ZookeeperDiscovery =
            serde_norway::from_str("{ hosts: [h:1], path: /p }").unwrap();
        assert_eq!(
            ZookeeperDiscovery::new(vec!["h:1".into()], "/p".into()),
            written
        );
    }

    #[test]
    fn label_filters_compare_as_synapse_does() {
        let filter = |condition| LabelFilter {
            label: "az".into(),
            value: "a".into(),
            condition,
        };
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        type Pairs = &'static [(&'static str, &'static str)];
        // (condition, labels, admitted)
        let table: [(LabelCondition, Pairs, bool); 6] = [
            (LabelCondition::Equals, &[("az", "a")], true),
            (LabelCondition::Equals, &[("az", "b")], false),
            (LabelCondition::Equals, &[], false),
            (LabelCondition::NotEquals, &[("az", "a")], false),
            (LabelCondition::NotEquals, &[("az", "b")], true),
            (LabelCondition::NotEquals, &[("rack", "a")], true),
        ];
        for (condition, pairs, admitted) in table {
            assert_eq!(
                filter(condition).admits(&labels(pairs)),
                admitted,
                "{condition:?} {pairs:?}"
            );
        }
        let mut zk = ZookeeperDiscovery::new(vec!["h:1".into()], "/p".into());
        assert!(zk.admits(&labels(&[])), "no filter admits all");
        zk.label_filters = vec![
            filter(LabelCondition::Equals),
            LabelFilter {
                label: "canary".into(),
                value: "true".into(),
                condition: LabelCondition::NotEquals,
            },
        ];
        assert!(zk.admits(&labels(&[("az", "a")])));
        assert!(
            !zk.admits(&labels(&[("az", "a"), ("canary", "true")])),
            "every filter must pass"
        );
    }

    #[test]
    fn an_unknown_label_condition_is_an_error_naming_the_field() {
        let c = parse(
            "services:\n  web:\n    listen: 127.0.0.1:1\n    discovery:\n      zookeeper: { hosts: [h:1], path: /p, use_weights: false, label_filters: [{label: az, value: a, condition: not-equals}] }\n",
        )
        .unwrap();
        let Some(DiscoveryConfig::Zookeeper(zk)) = &c.services["web"].discovery else {
            panic!("zookeeper expected")
        };
        assert!(!zk.use_weights);
        assert_eq!(zk.label_filters[0].condition, LabelCondition::NotEquals);
        let e = parse(
            "services:\n  web:\n    listen: 127.0.0.1:1\n    discovery:\n      zookeeper: { hosts: [h:1], path: /p, label_filters: [{label: az, value: a, condition: matches}] }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("label_filters") && e.contains("matches") && e.contains("not-equals"),
            "{e}"
        );
    }

    #[test]
    fn dns_discovery_parses_both_server_forms_and_rejects_bad_ones() {
        let c = parse(
            "services:\n  db:\n    listen: 127.0.0.1:1\n    discovery:\n      dns:\n        servers: [\"db.internal:5432\", { host: db2.internal, port: 5433, name: db2, weight: 3 }]\n",
        )
        .unwrap();
        let Some(DiscoveryConfig::Dns(dns)) = &c.services["db"].discovery else {
            panic!("dns expected")
        };
        assert_eq!(dns.interval, DEFAULT_DNS_INTERVAL);
        let s = &dns.servers;
        assert_eq!(
            (s[0].host.as_str(), s[0].port, s[0].name.as_deref()),
            ("db.internal", 5432, None)
        );
        assert_eq!(
            (s[1].port, s[1].weight, s[1].name.as_deref()),
            (5433, 3, Some("db2"))
        );
        for (bad, says) in [
            ("dns: { servers: [] }", "discovery.dns.servers"),
            (
                "dns: { servers: [\"h:1\"], interval: 0s }",
                "discovery.dns.interval",
            ),
            ("dns: { servers: [\"h\"] }", "expected host:port"),
            ("dns: { servers: [{ host: h, port: 0 }] }", "invalid port"),
            ("dns: { servers: [{ host: h, port: 1, ttl: 3 }] }", "ttl"),
            (
                "zookeeper: { hosts: [h:1], path: /p, resolve_interval: 0s }",
                "discovery.zookeeper.resolve_interval",
            ),
        ] {
            let e = parse(&format!(
                "services:\n  db:\n    listen: 127.0.0.1:1\n    discovery: {{ {bad} }}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn zookeeper_discovery_parses_and_two_sources_are_rejected() {
        let c = parse(
            "services:\n  web:\n    listen: 127.0.0.1:1\n    discovery:\n      zookeeper: { hosts: [127.0.0.1:2181], path: /nerve/services/web }\n",
        )
        .unwrap();
        let Some(DiscoveryConfig::Zookeeper(zk)) = &c.services["web"].discovery else {
            panic!("zookeeper expected")
        };
        assert_eq!(
            (zk.path.as_str(), zk.session_timeout, zk.coalesce),
            (
                "/nerve/services/web",
                Duration::from_secs(10),
                Duration::from_millis(100)
            )
        );
        let e = parse(
            "services:\n  web:\n    listen: 127.0.0.1:1\n    discovery:\n      zookeeper: { hosts: [h:1], path: /p, coalesce: 6s }\n",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("discovery.zookeeper.coalesce"),
            "{e}"
        );
        let c = parse(
            "services:\n  web:\n    listen: 127.0.0.1:1\n    discovery:\n      zookeeper: { hosts: [h:1], path: /p, coalesce: 0s }\n",
        )
        .unwrap();
        assert!(
            c.services["web"].discovery.is_some(),
            "0 s re-reads at once"
        );
        let e = parse(
            "services:\n  web:\n    listen: 127.0.0.1:1\n    discovery: { file: /x, zookeeper: { hosts: [h:1], path: /p } }\n",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("exactly one discovery source"),
            "{e}"
        );
    }
}
