//! Synapse configs, translated into sinew's own model: the `services` hash (or the older list with
//! `local_port`), `service_conf_dir`, discovery `base`, `zookeeper`, `dns` and `zookeeper_dns`,
//! `default_servers`, and the HAProxy directives sinew implements. Whatever sinew does not implement is reported once as a [`Warning`],
//! naming the service and the directive: never silently dropped, never fatal. Unknown keys are warned
//! about and ignored, as Synapse ignores them; a wrong value (a bad port, `retries many`) is an error
//! naming file, service and field. A service whose discovery method sinew does not support is skipped
//! with an error-level warning and the others run; when none is left, that is an error.

mod dns;
mod front;
mod frontend;
mod global;
mod native;
mod sections;
mod service;
mod shared;

pub use native::to_yaml;

use super::haproxy::{self, Directives};
use super::unique::{self, StrictValue};
use super::{Config, ConfigError, Level, Warning};
use serde_json::Value;
use std::collections::BTreeMap;
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
    /// A value of a service is wrong.
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
    /// A top-level value is wrong.
    #[error("{}: {field}: {message}", file.display())]
    Top {
        /// The file.
        file: PathBuf,
        /// The field, e.g. `haproxy.defaults`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// Every service was skipped.
    #[error("{}: no service can run: {reasons}", file.display())]
    NothingToRun {
        /// The file.
        file: PathBuf,
        /// Why each service was skipped.
        reasons: String,
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
    /// Each difference from Synapse + HAProxy, once.
    pub warnings: Vec<Warning>,
}

/// Warnings in the order found, each kept once.
#[derive(Default)]
struct Warnings(Vec<Warning>);

impl Warnings {
    fn push(&mut self, level: Level, message: String) {
        let w = Warning { level, message };
        if !self.0.contains(&w) {
            self.0.push(w);
        }
    }
}

/// Directives that drive an external HAProxy; sinew is the proxy, so they do not apply.
const EXTERNAL_HAPROXY: [&str; 12] = [
    "reload_command",
    "config_file_path",
    "do_writes",
    "do_reloads",
    "do_socket",
    "socket_file_path",
    "global",
    "restart_interval",
    "restart_jitter",
    "do_checks",
    "check_command",
    "candidate_config_file_path",
];

/// Other keys of the top-level `haproxy` hash that are read.
const HAPROXY_KEYS: [&str; 9] = [
    "defaults",
    "bind_address",
    "state_file_path",
    "state_file_ttl",
    "shared_frontend",
    "extra_sections",
    "use_nerve_weights",
    "server_order_seed",
    "max_server_id",
];

/// Loads and translates a Synapse config file (JSON, or YAML unless it ends in `.json`).
pub fn load(path: &Path) -> Result<Translation, SynapseError> {
    parse(&read_text(path)?, path)
}

/// Translates the text of a Synapse config; `path` names it in errors and decides the format like
/// [`load`]. A `service_conf_dir` it names is read from disk.
pub fn parse(text: &str, path: &Path) -> Result<Translation, SynapseError> {
    let root = parse_value(text, path)?;
    let mut services: Vec<(String, Value)> = Vec::new();
    match root.get("services") {
        Some(Value::Object(map)) => {
            services.extend(map.iter().map(|(k, v)| (k.clone(), v.clone())))
        }
        Some(Value::Array(list)) => {
            for (i, svc) in list.iter().enumerate() {
                let name =
                    svc.get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| SynapseError::Top {
                            file: path.to_path_buf(),
                            field: format!("services[{i}].name"),
                            message: "a service in the list form needs a name".into(),
                        })?;
                if services.iter().any(|(n, _)| n == name) {
                    return Err(SynapseError::Top {
                        file: path.to_path_buf(),
                        field: format!("services[{i}].name"),
                        message: format!("{name:?} is listed twice"),
                    });
                }
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
    let base = super::paths::base_of(path);
    if let Some(dir) = root.get("service_conf_dir").and_then(Value::as_str) {
        // A file there replaces a service of the same name, as in Synapse.
        for (name, v) in read_conf_dir(&super::paths::resolve(base, Path::new(dir)))? {
            services.retain(|(n, _)| *n != name);
            services.push((name, v));
        }
    }
    let mut t = translate(path, &root, services)?;
    t.config.resolve_paths(base);
    Ok(t)
}

fn read_value(path: &Path) -> Result<Value, SynapseError> {
    parse_value(&read_text(path)?, path)
}

fn read_text(path: &Path) -> Result<String, SynapseError> {
    super::text::read(path).map_err(|source| SynapseError::Read {
        file: path.to_path_buf(),
        source,
    })
}

fn parse_value(text: &str, path: &Path) -> Result<Value, SynapseError> {
    super::text::check(text).map_err(|e| SynapseError::Parse {
        file: path.to_path_buf(),
        message: e.to_string(),
    })?;
    // Strict: a service (or any key) given twice is an error naming both lines, not "the last wins".
    let with_lines = |message: String, line: Option<usize>, json: bool| match line
        .and_then(|l| unique::lines(text, &message, l, json))
    {
        Some(both) => format!("{} {both}", super::load::strip_location(&message)),
        None => message,
    };
    let parsed = if super::Format::of(path) == super::Format::Json {
        serde_json::from_str::<StrictValue>(text)
            .map_err(|e| with_lines(e.to_string(), Some(e.line()), true))
    } else {
        serde_norway::from_str::<StrictValue>(text)
            .map_err(|e| with_lines(e.to_string(), e.location().map(|l| l.line()), false))
    };
    parsed.map(|v| v.0).map_err(|message| SynapseError::Parse {
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
    let mut w = Warnings::default();
    let top_error = |field: &str, message: String| SynapseError::Top {
        file: file.to_path_buf(),
        field: field.to_string(),
        message,
    };
    for key in unknown_keys(
        root,
        &["services", "haproxy", "file_output", "service_conf_dir"],
    ) {
        w.push(Level::Warn, format!("unknown key `{key}` ignored"));
    }
    let top = root.get("haproxy").cloned().unwrap_or(Value::Null);
    let external: Vec<&str> = EXTERNAL_HAPROXY
        .into_iter()
        .filter(|k| top.get(k).is_some())
        .collect();
    if !external.is_empty() {
        w.push(
            Level::Info,
            format!(
                "haproxy.{}: sinew is the proxy; settings for an external HAProxy are ignored",
                external.join(", haproxy.")
            ),
        );
    }
    let known: Vec<&str> = EXTERNAL_HAPROXY.into_iter().chain(HAPROXY_KEYS).collect();
    for key in unknown_keys(&top, &known) {
        w.push(Level::Warn, format!("unknown key `haproxy.{key}` ignored"));
    }
    if top.get("max_server_id").is_some() {
        w.push(
            Level::Warn,
            "haproxy.max_server_id: sinew has no HAProxy server ids; ignored".into(),
        );
    }
    let stats_bind = sections::read(file, &top, &mut w)?;
    let state_file = match top.get("state_file_path").and_then(Value::as_str) {
        None => None,
        Some(p) => Some(super::StateFile {
            path: PathBuf::from(p),
            ttl: match top.get("state_file_ttl") {
                None | Some(Value::Null) => super::default_state_ttl(),
                Some(t) => t
                    .as_u64()
                    .map(std::time::Duration::from_secs)
                    .ok_or_else(|| {
                        top_error(
                            "haproxy.state_file_ttl",
                            format!("{t} is not a number of seconds"),
                        )
                    })?,
            },
        }),
    };
    let file_output = root
        .get("file_output")
        .and_then(|f| f.get("output_directory"))
        .and_then(Value::as_str)
        .map(|d| super::FileOutput {
            directory: PathBuf::from(d),
        });
    // `defaults` apply to every service but are read, and warned about, once.
    let mut defaults = Directives::default();
    for line in lines(top.get("defaults")) {
        haproxy::directive(&line, &mut defaults)
            .map_err(|e| top_error("haproxy.defaults", e.to_string()))?;
    }
    for n in defaults.noted.drain(..) {
        w.push(Level::Info, format!("haproxy.defaults: {n}"));
    }
    for u in defaults.unsupported.drain(..) {
        w.push(Level::Warn, format!("haproxy.defaults: {u}"));
    }
    let threads =
        global::nbthread(&lines(top.get("global"))).map_err(|m| top_error("haproxy.global", m))?;
    let bind = top.get("bind_address").and_then(Value::as_str);
    let reading = service::ZnodeReading {
        use_nerve_weights: match top.get("use_nerve_weights") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => Err(top_error(
                "haproxy.use_nerve_weights",
                format!("{other} is not true or false"),
            ))?,
        },
        // Synapse takes `.to_i` of it: a number, or a string of digits.
        order_seed: match top.get("server_order_seed") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                    .ok_or_else(|| {
                        top_error(
                            "haproxy.server_order_seed",
                            format!("{v} is not a whole number"),
                        )
                    })?,
            ),
        },
    };
    let given = services.len();
    // Each service's backend name and shared frontend lines, read after every service is translated.
    let shared: Vec<(String, String, Vec<String>)> = services
        .iter()
        .map(|(name, svc)| {
            let hap = svc.get("haproxy");
            let backend = hap
                .and_then(|h| h.get("backend_name"))
                .and_then(Value::as_str)
                .unwrap_or(name);
            let lines = lines(hap.and_then(|h| h.get("shared_frontend")));
            (name.clone(), backend.to_string(), lines)
        })
        .collect();
    let named = shared::named_backends(&top, &shared);
    let mut out = BTreeMap::new();
    for ((name, svc), (_, backend, own)) in services.into_iter().zip(&shared) {
        let routed = !own.is_empty() || named.contains(backend.as_str());
        if let Some(s) = service::translate(
            file,
            &name,
            &svc,
            &defaults,
            (bind, routed),
            reading,
            &mut w,
        )? {
            out.insert(name, s);
        }
    }
    if given > 0 && out.is_empty() {
        let reasons: Vec<String> =
            w.0.iter()
                .filter(|x| x.level == Level::Error)
                .map(|x| x.message.clone())
                .collect();
        return Err(SynapseError::NothingToRun {
            file: file.to_path_buf(),
            reasons: reasons.join("; "),
        });
    }
    let http_frontends = shared::shared_frontend(file, &top, &shared, &out, &mut w)?;
    let config = Config {
        http_frontends,
        services_explicit: !out.is_empty()
            || matches!(
                root.get("services"),
                Some(Value::Object(_) | Value::Array(_))
            ),
        services: out,
        state_file,
        file_output,
        threads,
        ..Config::default()
    };
    let mut config = config;
    if let Some(at) = stats_bind {
        w.push(
            Level::Info,
            format!(
                "haproxy.extra_sections: the stats bind address {at} is the admin server's address"
            ),
        );
        config.admin.listen = at;
    }
    config.validate(file)?;
    Ok(Translation {
        config,
        warnings: w.0,
    })
}

/// The keys of a hash that are not in `known`.
fn unknown_keys(v: &Value, known: &[&str]) -> Vec<String> {
    match v {
        Value::Object(map) => map
            .keys()
            .filter(|k| !known.contains(&k.as_str()))
            .cloned()
            .collect(),
        _ => Vec::new(),
    }
}

/// A list of lines (or a single string).
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
