//! Synapse configs, translated into sinew's own model: the `services` hash (or the older list with
//! `local_port`), `service_conf_dir`, discovery `base` and `zookeeper`, `default_servers`, and the HAProxy
//! directives sinew implements. Whatever sinew does not implement is reported once as a warning, naming
//! the service and the directive: never silently dropped, never fatal. A service whose discovery method
//! sinew does not support is skipped, with a warning, and the others run.

use super::haproxy::{self, Directives};
use super::{
    BackendAddr, Config, ConfigError, Decode, DecodeMethod, DiscoveryConfig, ServiceConfig,
    ZookeeperDiscovery,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// Why a Synapse config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SynapseError {
    /// A file could not be read.
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is not valid JSON/YAML.
    #[error("{}: {message}", file.display())]
    Parse {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A value is wrong.
    #[error("{}: services.{service}.{field}: {message}", file.display())]
    Invalid {
        /// The file.
        file: PathBuf,
        /// The service.
        service: String,
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The translated config does not validate.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// A translated config and what could not be carried over.
#[derive(Debug)]
pub struct Translation {
    /// The native config.
    pub config: Config,
    /// One line per thing sinew does not implement or ignores.
    pub warnings: Vec<String>,
}

/// Directives that drive an external HAProxy; sinew is the proxy, so they do not apply.
const EXTERNAL_HAPROXY: [&str; 8] = [
    "reload_command",
    "config_file_path",
    "do_writes",
    "do_reloads",
    "do_socket",
    "socket_file_path",
    "global",
    "restart_interval",
];

/// Loads and translates a Synapse config file (JSON, or YAML unless it ends in `.json`).
pub fn load(path: &Path) -> Result<Translation, SynapseError> {
    let root = read_value(path)?;
    let mut services: Vec<(String, Value)> = Vec::new();
    match root.get("services") {
        Some(Value::Object(map)) => {
            services.extend(map.iter().map(|(k, v)| (k.clone(), v.clone())))
        }
        Some(Value::Array(list)) => {
            for (i, svc) in list.iter().enumerate() {
                let name = svc.get("name").and_then(Value::as_str).ok_or_else(|| {
                    SynapseError::Invalid {
                        file: path.to_path_buf(),
                        service: format!("[{i}]"),
                        field: "name".into(),
                        message: "a service in the list form needs a name".into(),
                    }
                })?;
                services.push((name.to_string(), svc.clone()));
            }
        }
        None | Some(Value::Null) => {}
        Some(_) => {
            return Err(SynapseError::Parse {
                file: path.to_path_buf(),
                message: "`services` must be a hash or a list".into(),
            })
        }
    }
    if let Some(dir) = root.get("service_conf_dir").and_then(Value::as_str) {
        services.extend(read_conf_dir(Path::new(dir))?);
    }
    translate(path, &root, services)
}

fn read_value(path: &Path) -> Result<Value, SynapseError> {
    let text = std::fs::read_to_string(path).map_err(|source| SynapseError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    let parsed = if super::Format::of(path) == super::Format::Json {
        serde_json::from_str(&text).map_err(|e| e.to_string())
    } else {
        serde_yaml::from_str(&text).map_err(|e| e.to_string())
    };
    parsed.map_err(|message| SynapseError::Parse {
        file: path.to_path_buf(),
        message,
    })
}

/// One service per `.json`/`.yaml`/`.yml` file, named by the file's stem, in name order.
fn read_conf_dir(dir: &Path) -> Result<Vec<(String, Value)>, SynapseError> {
    let entries = std::fs::read_dir(dir).map_err(|source| SynapseError::Read {
        file: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("json" | "yaml" | "yml")
            )
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            read_value(&p).map(|v| (name, v))
        })
        .collect()
}

fn translate(
    file: &Path,
    root: &Value,
    services: Vec<(String, Value)>,
) -> Result<Translation, SynapseError> {
    let mut warnings = Vec::new();
    let top = root.get("haproxy").cloned().unwrap_or(Value::Null);
    for key in EXTERNAL_HAPROXY {
        if top.get(key).is_some() {
            warnings.push(format!(
                "haproxy.{key}: sinew is the proxy; settings for an external HAProxy are ignored"
            ));
        }
    }
    let state_file = top
        .get("state_file_path")
        .and_then(Value::as_str)
        .map(|p| super::StateFile {
            path: PathBuf::from(p),
            ttl: top
                .get("state_file_ttl")
                .and_then(Value::as_u64)
                .map(std::time::Duration::from_secs)
                .unwrap_or_else(super::default_state_ttl),
        });
    let file_output = root
        .get("file_output")
        .and_then(|f| f.get("output_directory"))
        .and_then(Value::as_str)
        .map(|d| super::FileOutput {
            directory: PathBuf::from(d),
        });
    let defaults = lines(top.get("defaults"));
    let mut out = BTreeMap::new();
    for (name, svc) in services {
        let at = |field: &str, message: String| SynapseError::Invalid {
            file: file.to_path_buf(),
            service: name.clone(),
            field: field.to_string(),
            message,
        };
        let mut warn = |w: String| warnings.push(format!("services.{name}: {w}"));
        let hap = svc.get("haproxy").cloned().unwrap_or(Value::Null);
        let port = match hap.get("port").or_else(|| svc.get("local_port")) {
            None | Some(Value::Null) => {
                warn("no haproxy.port: skipped (Synapse would only list it in file_output)".into());
                continue;
            }
            Some(p) => p
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0)
                .ok_or_else(|| at("haproxy.port", format!("{p} is not a port 1-65535")))?,
        };
        let bind = hap
            .get("bind_address")
            .or_else(|| top.get("bind_address"))
            .and_then(Value::as_str);
        let ip = match bind {
            None | Some("localhost") => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Some(b) => b.parse().map_err(|_| {
                at(
                    "haproxy.bind_address",
                    format!("{b:?} is not an IP address"),
                )
            })?,
        };
        let mut d = Directives::default();
        for line in defaults
            .iter()
            .chain(&lines(hap.get("listen")))
            .chain(&lines(svc.get("listen")))
            .chain(&lines(hap.get("backend")))
            .chain(&lines(hap.get("frontend")))
        {
            haproxy::directive(line, &mut d);
        }
        let server_options = hap
            .get("server_options")
            .or_else(|| svc.get("server_options"))
            .and_then(Value::as_str)
            .unwrap_or("");
        haproxy::server_options(server_options, &mut d);
        if hap.get("shared_frontend").is_some() {
            d.unsupported.push("haproxy.shared_frontend".into());
        }
        if hap.get("backend_name").is_some() {
            warn("haproxy.backend_name: sinew names the backend after the service; ignored".into());
        }
        let port_override = match hap.get("server_port_override") {
            None | Some(Value::Null) => None,
            Some(p) => Some(
                p.as_u64()
                    .or_else(|| p.as_str().and_then(|s| s.parse().ok()))
                    .and_then(|p| u16::try_from(p).ok())
                    .filter(|p| *p != 0)
                    .ok_or_else(|| {
                        at(
                            "haproxy.server_port_override",
                            format!("{p} is not a port 1-65535"),
                        )
                    })?,
            ),
        };
        for u in d.unsupported.drain(..) {
            warn(format!("{u}: not supported yet, ignored"));
        }
        let weight = d.weight;
        let default_servers =
            servers(svc.get("default_servers"), weight).map_err(|m| at("default_servers", m))?;
        let discovery = svc.get("discovery").cloned().unwrap_or(Value::Null);
        let method = discovery
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or("base");
        let (backends, source) = match method {
            "base" => {
                if default_servers.is_empty() {
                    warn("discovery base without default_servers has no backends: skipped".into());
                    continue;
                }
                (default_servers.clone(), None)
            }
            "zookeeper" => {
                let hosts: Vec<String> = discovery
                    .get("hosts")
                    .and_then(Value::as_array)
                    .map(|h| {
                        h.iter()
                            .filter_map(Value::as_str)
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default();
                let path = discovery
                    .get("path")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let decode = match discovery.get("decode") {
                    None | Some(Value::Null) => Decode::default(),
                    Some(dec) => Decode {
                        method: match dec.get("method").and_then(Value::as_str) {
                            None | Some("nerve") => DecodeMethod::Nerve,
                            Some("serverset") => DecodeMethod::Serverset,
                            Some(other) => {
                                return Err(at(
                                    "discovery.decode.method",
                                    format!("unknown decoder {other:?}"),
                                ))
                            }
                        },
                        endpoint_name: dec
                            .get("endpoint_name")
                            .and_then(Value::as_str)
                            .map(String::from),
                    },
                };
                let zk = ZookeeperDiscovery {
                    hosts,
                    path,
                    session_timeout: super::default_session_timeout(),
                    decode,
                    port_override,
                };
                (Vec::new(), Some(DiscoveryConfig::Zookeeper(zk)))
            }
            other => {
                warn(format!(
                    "discovery method {other:?} is not supported: skipped"
                ));
                continue;
            }
        };
        let mut service = ServiceConfig::new(SocketAddr::new(ip, port));
        service.mode = d.mode;
        service.balance = d.balance;
        service.backends = backends;
        service.discovery = source.clone();
        service.timeouts = d.timeouts;
        service.retries.attempts = d
            .retries
            .unwrap_or(service.retries.attempts)
            .min(super::MAX_RETRY_ATTEMPTS);
        service.default_servers = if source.is_some() {
            default_servers
        } else {
            Vec::new()
        };
        service.keep_default_servers = svc
            .get("keep_default_servers")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        service.use_previous_backends = svc
            .get("use_previous_backends")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        service.health_check = d.health_check;
        service.max_connections = d.max_connections;
        out.insert(name.clone(), service);
    }
    let config = Config {
        services: out,
        state_file,
        file_output,
        ..Config::default()
    };
    config.validate(file)?;
    warnings.dedup();
    Ok(Translation { config, warnings })
}

/// A list of directive lines (or a single string).
fn lines(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// `default_servers`: `[{name, host, port}]`.
fn servers(v: Option<&Value>, weight: u32) -> Result<Vec<BackendAddr>, String> {
    let Some(Value::Array(list)) = v else {
        return Ok(Vec::new());
    };
    list.iter()
        .map(|s| {
            let host = s
                .get("host")
                .and_then(Value::as_str)
                .ok_or("a default server needs a host")?;
            let port = s
                .get("port")
                .and_then(Value::as_u64)
                .ok_or("a default server needs a numeric port")?;
            BackendAddr::new(
                host.to_string(),
                u32::try_from(port).unwrap_or(u32::MAX),
                weight,
            )
        })
        .collect()
}
