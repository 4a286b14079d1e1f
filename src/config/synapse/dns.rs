//! Synapse's `dns` and `zookeeper_dns` discovery methods, translated to sinew's DNS discovery and to
//! ZooKeeper discovery with `resolve_interval`.

use super::service::{port_of, At};
use super::{unknown_keys, SynapseError};
use crate::config::{BackendAddr, DiscoveryConfig, DnsDiscovery, Level, DEFAULT_DNS_INTERVAL};
use serde_json::Value;
use std::time::Duration;

/// Keys Synapse's dns watcher reads.
const DNS_KEYS: &[&str] = &["method", "servers", "check_interval", "nameserver"];
/// Keys of one entry of a dns watcher's `servers`.
const SERVER_KEYS: &[&str] = &["name", "host", "port"];

/// `discovery: {method: dns, servers: [{name, host, port}], check_interval, nameserver}`.
pub(super) fn dns(
    at: &At<'_>,
    d: &Value,
    port_override: Option<u16>,
    weight: u32,
    warn: &mut dyn FnMut(Level, String),
) -> Result<DiscoveryConfig, SynapseError> {
    ignore_unknown(d, DNS_KEYS, warn);
    nameserver(d, warn);
    let list = match d.get("servers") {
        Some(Value::Array(list)) if !list.is_empty() => list,
        _ => {
            return Err(at.invalid(
                "discovery.servers",
                "give a non-empty list of {name, host, port} (Synapse requires it too)".into(),
            ))
        }
    };
    let servers = list
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let field = format!("discovery.servers[{i}]");
            for key in unknown_keys(s, SERVER_KEYS) {
                warn(
                    Level::Warn,
                    format!("{field}.{key}: not supported, ignored"),
                );
            }
            let host = s
                .get("host")
                .and_then(Value::as_str)
                .ok_or_else(|| at.invalid(&field, "a server needs a host".into()))?;
            // Synapse puts `backend_port_override` in place of every discovered port.
            let port = port_override
                .or_else(|| s.get("port").and_then(port_of))
                .ok_or_else(|| at.invalid(&field, "a server needs a port 1-65535".into()))?;
            let mut addr = BackendAddr::new(host.to_string(), u32::from(port), weight)
                .map_err(|e| at.invalid(&field, e.to_string()))?;
            addr.name = s.get("name").and_then(Value::as_str).map(String::from);
            Ok(addr)
        })
        .collect::<Result<Vec<_>, SynapseError>>()?;
    Ok(DiscoveryConfig::Dns(DnsDiscovery {
        servers,
        interval: check_interval(at, d)?,
    }))
}

/// The re-resolve interval of `method: zookeeper_dns` (its `check_interval`); a `nameserver` is
/// warned about, as names go through the system resolver.
pub(super) fn resolve_interval(
    at: &At<'_>,
    d: &Value,
    warn: &mut dyn FnMut(Level, String),
) -> Result<Duration, SynapseError> {
    nameserver(d, warn);
    check_interval(at, d)
}

fn ignore_unknown(d: &Value, known: &[&str], warn: &mut dyn FnMut(Level, String)) {
    for key in unknown_keys(d, known) {
        warn(
            Level::Warn,
            format!("discovery.{key}: not supported, ignored"),
        );
    }
}

/// sinew resolves through the system resolver only; a `nameserver` of its own is said to be unused.
fn nameserver(d: &Value, warn: &mut dyn FnMut(Level, String)) {
    if let Some(ns) = d.get("nameserver").filter(|v| !v.is_null()) {
        warn(
            Level::Warn,
            format!("discovery.nameserver {ns}: not used; names are resolved by the system resolver (/etc/hosts, /etc/resolv.conf)"),
        );
    }
}

/// `check_interval`, in seconds (a number, as Synapse sleeps it); 30 when absent, as in Synapse.
fn check_interval(at: &At<'_>, d: &Value) -> Result<Duration, SynapseError> {
    match d.get("check_interval") {
        None | Some(Value::Null) => Ok(DEFAULT_DNS_INTERVAL),
        Some(v) => v
            .as_f64()
            .filter(|s| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| {
                at.invalid(
                    "discovery.check_interval",
                    format!("{v} is not a number of seconds above 0 (at most a day)"),
                )
            }),
    }
}
