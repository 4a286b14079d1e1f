//! One Synapse service translated into a [`ServiceConfig`]: the hash form (`haproxy: {port, ...}`) or a
//! list entry of the older form (`name`, `local_port`, `server_options`, `listen` beside `discovery`).

use super::{lines, unknown_keys, SynapseError, Warnings};
use crate::config::haproxy::{self, Directives};
use crate::config::{
    BackendAddr, Decode, DecodeMethod, DiscoveryConfig, LabelFilter, Level, Mode, Order,
    ServiceConfig, ZookeeperDiscovery,
};
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

/// Keys Synapse reads in a service.
const SERVICE_KEYS: &[&str] = &[
    "name",
    "discovery",
    "default_servers",
    "haproxy",
    "keep_default_servers",
    "use_previous_backends",
    "local_port",
    "server_options",
    "listen",
    "backend_port_override",
];

/// Keys Synapse reads in a service's `haproxy` hash.
const HAPROXY_KEYS: &[&str] = &[
    "port",
    "bind_address",
    "server_options",
    "listen",
    "frontend",
    "backend",
    "backend_name",
    "server_port_override",
    "shared_frontend",
    "backend_order",
    "cookie_value_method",
    "bind_options",
    "use_nerve_weights",
];

/// What the top-level `haproxy` hash says about reading znodes.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ZnodeReading {
    /// `use_nerve_weights`: a znode's `weight` is read (Synapse ignores it otherwise).
    pub(super) use_nerve_weights: bool,
    /// `server_order_seed`: the seed of the shuffled backend order.
    pub(super) order_seed: Option<u64>,
}

/// The one service being translated: where errors and warnings point.
pub(super) struct At<'a> {
    file: &'a Path,
    name: &'a str,
}

impl At<'_> {
    /// An error at `field` of this service.
    pub(super) fn invalid(&self, field: &str, message: String) -> SynapseError {
        SynapseError::Invalid {
            file: self.file.to_path_buf(),
            service: self.name.to_string(),
            field: field.to_string(),
            message,
        }
    }
}

/// Translates one service; `Ok(None)` means it is skipped, with an error-level warning saying why.
/// `routed`: the shared frontend routes to it, so it runs without a port of its own.
pub(super) fn translate(
    file: &Path,
    name: &str,
    svc: &Value,
    defaults: &Directives,
    global: (Option<&str>, bool),
    reading: ZnodeReading,
    w: &mut Warnings,
) -> Result<Option<ServiceConfig>, SynapseError> {
    let (global_bind, routed) = global;
    let at = At { file, name };
    let mut warn = |level: Level, m: String| w.push(level, format!("services.{name}: {m}"));
    if !svc.is_object() {
        return Err(at.invalid("", "a service must be a hash".into()));
    }
    let hap = svc.get("haproxy").cloned().unwrap_or(Value::Null);
    for key in unknown_keys(svc, SERVICE_KEYS) {
        warn(Level::Warn, format!("unknown key `{key}` ignored"));
    }
    for key in unknown_keys(&hap, HAPROXY_KEYS) {
        warn(Level::Warn, format!("unknown key `haproxy.{key}` ignored"));
    }
    let listen = match hap.get("port").or_else(|| svc.get("local_port")) {
        Some(port) => Some(listen(&at, port, hap.get("bind_address"), global_bind)?),
        None if routed => {
            warn(
                Level::Info,
                "no haproxy.port: reached through the shared frontend only (as in Synapse)".into(),
            );
            None
        }
        None => {
            warn(
                Level::Error,
                "no haproxy.port and no shared frontend routes to it, so nothing reaches it (Synapse would only write a backend): skipped"
                    .into(),
            );
            return Ok(None);
        }
    };

    let mut d = defaults.clone();
    d.unsupported.clear();
    d.noted.clear();
    // Without a port Synapse writes no frontend section, so its lines go nowhere.
    let frontend = match (listen, hap.get("frontend")) {
        (None, Some(v)) if !lines(Some(v)).is_empty() => {
            warn(
                Level::Warn,
                "haproxy.frontend: no port, so Synapse writes no frontend section: ignored".into(),
            );
            None
        }
        (_, v) => v,
    };
    for (field, v) in [
        ("listen", svc.get("listen")),
        ("haproxy.listen", hap.get("listen")),
        ("haproxy.frontend", frontend),
        ("haproxy.backend", hap.get("backend")),
    ] {
        for line in lines(v) {
            haproxy::directive(&line, &mut d).map_err(|e| at.invalid(field, e.to_string()))?;
        }
    }
    let options = match hap
        .get("server_options")
        .or_else(|| svc.get("server_options"))
    {
        None | Some(Value::Null) => "",
        Some(v) => v
            .as_str()
            .ok_or_else(|| at.invalid("haproxy.server_options", "expected a string".into()))?,
    };
    // Called even when empty: it also sets the default weight.
    haproxy::server_options(options, &mut d)
        .map_err(|e| at.invalid("haproxy.server_options", e.to_string()))?;
    for n in d.noted.drain(..) {
        warn(Level::Info, n);
    }
    for u in d.unsupported.drain(..) {
        warn(Level::Warn, u);
    }
    if hap.get("use_nerve_weights").is_some() {
        warn(
            Level::Warn,
            "haproxy.use_nerve_weights: Synapse reads it only in the top-level haproxy hash; ignored here as there".into(),
        );
    }
    if hap.get("cookie_value_method").is_some() {
        warn(
            Level::Warn,
            "haproxy.cookie_value_method: sinew has no cookie persistence; ignored".into(),
        );
    }
    if hap.get("backend_name").is_some() {
        warn(
            Level::Info,
            "haproxy.backend_name: names the service in shared_frontend lines only; sinew names everything else after the service".into(),
        );
    }
    // Newer Synapse reads `backend_port_override`; `haproxy.server_port_override` is the older name.
    let port_override = match svc
        .get("backend_port_override")
        .or_else(|| hap.get("server_port_override"))
    {
        None | Some(Value::Null) => None,
        Some(p) => Some(port_of(p).ok_or_else(|| {
            at.invalid(
                "haproxy.server_port_override",
                format!("{p} is not a port 1-65535"),
            )
        })?),
    };
    let health_check = match d.health_check.take() {
        Some(hc) if d.check => Some(hc),
        Some(_) => {
            warn(
                Level::Info,
                "no `check` in server_options, so no active health checks (as in HAProxy)".into(),
            );
            None
        }
        None => None,
    };
    let default_servers = servers(svc.get("default_servers"), d.weight)
        .map_err(|m| at.invalid("default_servers", m))?;

    let Some(discovery) = svc.get("discovery") else {
        return Err(at.invalid("discovery", "missing (Synapse requires it too)".into()));
    };
    let method = discovery
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or("");
    let (backends, source) = match method {
        "base" => {
            for key in unknown_keys(discovery, &["method"]) {
                warn(
                    Level::Warn,
                    format!("discovery.{key}: not supported, ignored"),
                );
            }
            if default_servers.is_empty() {
                warn(
                    Level::Error,
                    "discovery base without default_servers has no backends: skipped".into(),
                );
                return Ok(None);
            }
            if port_override.is_some() {
                // Synapse's base watcher never rewrites its default servers either.
                warn(
                    Level::Info,
                    "server_port_override has no effect with discovery base (as in Synapse)".into(),
                );
            }
            (default_servers.clone(), None)
        }
        "zookeeper" | "zookeeper_dns" => {
            // zookeeper_dns reads the same znodes and resolves their host names on an interval.
            let resolving = method == "zookeeper_dns";
            let mut known = vec![
                "method",
                "path",
                "hosts",
                "decode",
                "label_filters",
                "label_filter",
            ];
            if resolving {
                known.extend(["check_interval", "nameserver"]);
            }
            for key in unknown_keys(discovery, &known) {
                warn(
                    Level::Warn,
                    format!("discovery.{key}: not supported, ignored"),
                );
            }
            if discovery.get("label_filter").is_some() {
                warn(
                    Level::Warn,
                    "discovery.label_filter is deprecated (as in Synapse): use label_filters, a list"
                        .into(),
                );
            }
            let mut zk = zookeeper(&at, discovery, port_override)?;
            zk.use_weights = reading.use_nerve_weights;
            zk.label_filters = label_filters(&at, discovery)?;
            (zk.order, zk.order_seed) = (order(&hap, &mut warn), reading.order_seed);
            if resolving {
                zk.resolve_interval =
                    Some(super::dns::resolve_interval(&at, discovery, &mut warn)?);
            }
            (Vec::new(), Some(DiscoveryConfig::Zookeeper(zk)))
        }
        "dns" => {
            let dns = super::dns::dns(&at, discovery, port_override, d.weight, &mut warn)?;
            (Vec::new(), Some(dns))
        }
        other => {
            warn(
                Level::Error,
                format!("discovery method {other:?} is not supported: skipped"),
            );
            return Ok(None);
        }
    };
    let flag = |key: &str, default: bool| match svc.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(at.invalid(key, format!("{other} is not true or false"))),
    };
    let mut service = ServiceConfig::new(listen);
    service.mode = d.mode;
    service.balance = d.balance;
    service.backends = backends;
    service.default_servers = if source.is_some() {
        default_servers
    } else {
        Vec::new()
    };
    service.discovery = source;
    service.timeouts = d.timeouts;
    if let (Mode::Http, Some(t)) = (d.mode, d.server) {
        // HAProxy's `timeout server` bounds the wait for a response too; sinew's default is shorter.
        service.timeouts.request = t;
    }
    if let Some(n) = d.retries {
        if n > crate::config::MAX_RETRY_ATTEMPTS {
            warn(
                Level::Warn,
                format!(
                    "retries {n}: lowered to sinew's maximum, {}",
                    crate::config::MAX_RETRY_ATTEMPTS
                ),
            );
        }
        service.retries.attempts = n.min(crate::config::MAX_RETRY_ATTEMPTS);
    }
    service.keep_default_servers = flag("keep_default_servers", false)?;
    service.use_previous_backends = flag("use_previous_backends", true)?;
    service.health_check = health_check;
    service.max_connections = d.max_connections;
    service.slow_start = d.slow_start.unwrap_or(service.slow_start);
    service.send_proxy = d.send_proxy;
    service.outlier = d.outlier;
    super::front::apply(&d, &mut service, &mut warn);
    match hap.get("bind_options") {
        None | Some(Value::Null) => {}
        Some(Value::String(o)) => super::front::bind_options(o, &mut service, &mut warn)
            .map_err(|m| at.invalid("haproxy.bind_options", m))?,
        Some(_) => return Err(at.invalid("haproxy.bind_options", "expected a string".into())),
    }
    Ok(Some(service))
}

/// The listen address of `port` on `bind_address` (the service's, else the top level's).
fn listen(
    at: &At,
    port: &Value,
    bind: Option<&Value>,
    global_bind: Option<&str>,
) -> Result<SocketAddr, SynapseError> {
    let port = port_of(port)
        .ok_or_else(|| at.invalid("haproxy.port", format!("{port} is not a port 1-65535")))?;
    let bind = bind.and_then(Value::as_str).or(global_bind);
    // Synapse's default bind address is `localhost`, which HAProxy binds as 127.0.0.1.
    let ip = match bind.map(str::trim) {
        None | Some("localhost") => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some("*") => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Some(b) => b.parse().map_err(|_| {
            at.invalid(
                "haproxy.bind_address",
                format!("{b:?} is not an IP address (or localhost, *)"),
            )
        })?,
    };
    Ok(SocketAddr::new(ip, port))
}

/// A port 1-65535, written as a number or a string of digits.
pub(super) fn port_of(v: &Value) -> Option<u16> {
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    n.and_then(|n| u16::try_from(n).ok()).filter(|p| *p != 0)
}

/// `haproxy.backend_order`: `asc`, `desc`, `no_shuffle` (the watcher's order, which for ZooKeeper is
/// no order at all: sinew keeps znode-name order), anything else shuffled, as Synapse does.
fn order(hap: &Value, warn: &mut impl FnMut(Level, String)) -> Order {
    match hap.get("backend_order") {
        None | Some(Value::Null) => Order::Shuffle,
        Some(v) => match v.as_str() {
            Some("asc") | Some("no_shuffle") => Order::Asc,
            Some("desc") => Order::Desc,
            Some("shuffle") => Order::Shuffle,
            _ => {
                warn(
                    Level::Warn,
                    format!("haproxy.backend_order {v} is not asc, desc or no_shuffle: shuffled, as Synapse does"),
                );
                Order::Shuffle
            }
        },
    }
}

/// `discovery.label_filters` (a list) and the deprecated singular `label_filter`, all applied.
fn label_filters(at: &At<'_>, d: &Value) -> Result<Vec<LabelFilter>, SynapseError> {
    let mut out = Vec::new();
    for field in ["label_filter", "label_filters"] {
        let list = match d.get(field) {
            None | Some(Value::Null) => continue,
            Some(Value::Array(list)) => list.clone(),
            Some(one) => vec![one.clone()],
        };
        for (i, f) in list.into_iter().enumerate() {
            let filter = serde_json::from_value(f).map_err(|e| {
                at.invalid(
                    &format!("discovery.{field}[{i}]"),
                    format!("{e} (a filter is {{label, value, condition: equals | not-equals}})"),
                )
            })?;
            out.push(filter);
        }
    }
    Ok(out)
}

/// `discovery: {method: zookeeper, hosts, path, decode}`; `hosts` may be one string.
pub(super) fn zookeeper(
    at: &At<'_>,
    d: &Value,
    port_override: Option<u16>,
) -> Result<ZookeeperDiscovery, SynapseError> {
    let hosts = lines(d.get("hosts"));
    if hosts.is_empty() {
        return Err(at.invalid(
            "discovery.hosts",
            "give the ZooKeeper hosts, e.g. [\"zk1:2181\"]".into(),
        ));
    }
    let path = d
        .get("path")
        .and_then(Value::as_str)
        .ok_or_else(|| at.invalid("discovery.path", "give the ZooKeeper path".into()))?
        .to_string();
    let decode = match d.get("decode") {
        None | Some(Value::Null) => Decode::default(),
        Some(dec) => Decode {
            method: match dec.get("method").and_then(Value::as_str) {
                None | Some("nerve") => DecodeMethod::Nerve,
                Some("serverset") => DecodeMethod::Serverset,
                Some(other) => {
                    return Err(at.invalid(
                        "discovery.decode.method",
                        format!("unknown decoder {other:?} (nerve or serverset)"),
                    ))
                }
            },
            endpoint_name: dec
                .get("endpoint_name")
                .and_then(Value::as_str)
                .map(String::from),
        },
    };
    Ok(ZookeeperDiscovery {
        decode,
        port_override,
        ..ZookeeperDiscovery::new(hosts, path)
    })
}

/// `default_servers`: `[{name, host, port}]`.
fn servers(v: Option<&Value>, weight: u32) -> Result<Vec<BackendAddr>, String> {
    let list = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err("expected a list of {name, host, port}".into()),
    };
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            let host = s
                .get("host")
                .and_then(Value::as_str)
                .ok_or(format!("[{i}]: a default server needs a host"))?;
            // A Unix socket (`unix:/run/app.sock`) takes no port.
            let port = match s.get("port") {
                None if crate::config::is_unix(host) => 0,
                port => port
                    .and_then(port_of)
                    .ok_or(format!("[{i}]: a default server needs a port 1-65535"))?,
            };
            let mut addr = BackendAddr::new(host.to_string(), u32::from(port), weight)
                .map_err(|e| format!("[{i}]: {e}"))?;
            addr.name = s.get("name").and_then(Value::as_str).map(str::to_string);
            Ok(addr)
        })
        .collect()
}
