//! Where a service's backends come from when they are not listed: a file, or a ZooKeeper path.

use super::duration;
use serde::{Deserialize, Serialize};
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
}

/// The `discovery:` mapping as written: exactly one source key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiscoverySection {
    file: Option<PathBuf>,
    zookeeper: Option<ZookeeperDiscovery>,
}

impl Serialize for DiscoveryConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(1))?;
        match self {
            DiscoveryConfig::File(path) => map.serialize_entry("file", path)?,
            DiscoveryConfig::Zookeeper(zk) => map.serialize_entry("zookeeper", zk)?,
        }
        map.end()
    }
}

/// A `discovery:` mapping that names no source, or both.
#[derive(Debug, thiserror::Error)]
#[error("give exactly one discovery source: `file` or `zookeeper`")]
pub struct NotOneSource;

impl TryFrom<DiscoverySection> for DiscoveryConfig {
    type Error = NotOneSource;
    fn try_from(d: DiscoverySection) -> Result<Self, NotOneSource> {
        match (d.file, d.zookeeper) {
            (Some(f), None) => Ok(DiscoveryConfig::File(f)),
            (None, Some(z)) => Ok(DiscoveryConfig::Zookeeper(z)),
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
        }
    }
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
