//! Typed configuration: parsed once from YAML or JSON, validated at load, then read-only.
//!
//! Every struct denies unknown keys so a typo is an error at load rather than a silently ignored setting.
//! Errors name the file, the field path (`services.web.listen`) and, where the parser knows it, the line.

mod addr;
pub mod duration;
mod haproxy;
mod health;
mod http;
pub mod nerve;
pub mod register;
pub mod synapse;
mod text;
mod tls;
mod unique;
mod warning;

pub use addr::{parse_socket_addr, BackendAddr, DEFAULT_WEIGHT, MAX_WEIGHT};
pub use health::{CheckType, HealthCheck, Outlier};
pub use http::{Backoff, HttpOptions, RetryOn, UpstreamProtocol};
pub use text::TextError;
pub use tls::{TlsListen, TlsUpstream};
pub use warning::{Level, Warning};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What can go wrong loading a config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The config file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is not valid YAML/JSON or a field has the wrong type or value.
    #[error("{file}: {field}: {message}{}", line.map(|(l, c)| format!(" (line {l}, column {c})")).unwrap_or_default())]
    Parse {
        /// The config file.
        file: PathBuf,
        /// Dotted path of the offending field.
        field: String,
        /// What is wrong.
        message: String,
        /// Line and column, when the parser knows them.
        line: Option<(usize, usize)>,
    },
    /// The config parsed but does not make sense as a whole.
    #[error("{file}: {field}: {message}")]
    Invalid {
        /// The config file.
        file: PathBuf,
        /// Dotted path of the offending field.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// The whole agent configuration.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Admin HTTP server (metrics, API).
    #[serde(default)]
    pub admin: AdminConfig,
    /// How long open connections may keep running after SIGTERM/SIGINT.
    #[serde(default = "default_grace", with = "duration_serde")]
    pub shutdown_grace: Duration,
    /// Persist discovered backend sets here and load them at start (Synapse's `state_file_path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_file: Option<StateFile>,
    /// Write each service's current backends as JSON into this directory (Synapse's `file_output`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_output: Option<FileOutput>,
    /// The services this host depends on, by name.
    #[serde(default, deserialize_with = "unique::map")]
    pub services: BTreeMap<String, ServiceConfig>,
    /// This host's services to health-check and register in ZooKeeper.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register: Option<register::Register>,
    /// True when the file names its `services`, even as `services: {}`: no services was meant, so a
    /// reload may stop every running one. Set by the loaders, never read from the file.
    #[serde(skip)]
    pub services_explicit: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            admin: AdminConfig::default(),
            shutdown_grace: default_grace(),
            state_file: None,
            file_output: None,
            services: BTreeMap::new(),
            register: None,
            services_explicit: false,
        }
    }
}

/// Where the last known backend sets are kept, so a restart while discovery is down still routes.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    /// The file (written atomically: a temporary file, then a rename).
    pub path: PathBuf,
    /// Entries older than this are ignored at start.
    #[serde(default = "default_state_ttl", with = "duration_serde")]
    pub ttl: Duration,
}

/// A directory with one JSON file per service listing its current backends.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileOutput {
    /// The directory.
    pub directory: PathBuf,
}

/// Admin server settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin server; loopback by default.
    #[serde(
        default = "default_admin_listen",
        deserialize_with = "addr::socket_addr"
    )]
    pub listen: SocketAddr,
    /// When set, state-changing endpoints (reload, maintenance) need `Authorization: Bearer TOKEN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Unix socket on which this process offers its listening sockets to a successor (`sinew run --takeover`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_socket: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
            token: None,
            upgrade_socket: None,
        }
    }
}

/// One dependency served on a local listener.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The local address applications connect to.
    #[serde(deserialize_with = "addr::socket_addr")]
    pub listen: SocketAddr,
    /// Proxy mode.
    #[serde(default)]
    pub mode: Mode,
    /// Balancing algorithm.
    #[serde(default)]
    pub balance: Algorithm,
    /// Static backends.
    #[serde(default)]
    pub backends: Vec<BackendAddr>,
    /// A dynamic source of backends; replaces `backends` when set.
    #[serde(default)]
    pub discovery: Option<DiscoveryConfig>,
    /// Timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Retries of failed connection attempts (and, in HTTP mode, of failed requests).
    #[serde(default)]
    pub retries: Retries,
    /// HTTP mode: the protocol spoken to backends.
    #[serde(default)]
    pub upstream_protocol: UpstreamProtocol,
    /// HTTP mode: header handling and limits.
    #[serde(default)]
    pub http: HttpOptions,
    /// Backends used while discovery reports none (Synapse's `default_servers`).
    #[serde(default)]
    pub default_servers: Vec<BackendAddr>,
    /// Serve `default_servers` alongside discovered backends, not only as a fallback.
    #[serde(default)]
    pub keep_default_servers: bool,
    /// When discovery reports no backends and there are no default servers, keep the previous set.
    #[serde(default = "default_true")]
    pub use_previous_backends: bool,
    /// `balance: hash` in HTTP mode: hash this request header instead of the client address.
    #[serde(default)]
    pub hash_header: Option<String>,
    /// Most connections (TCP) or in-flight requests (HTTP) per backend; excess waits in the queue.
    #[serde(default)]
    pub max_connections: Option<u32>,
    /// TLS towards the backends (TCP mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_upstream: Option<TlsUpstream>,
    /// TLS terminated on the listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_listen: Option<TlsListen>,
    /// Most client connections open at once on the listener; beyond it new ones are closed at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_client_connections: Option<u32>,
    /// Most connections or requests waiting for a backend slot; beyond it they are turned away at once.
    #[serde(default = "default_max_queue")]
    pub max_queue: usize,
    /// Active health checks of each backend from this host.
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    /// Passive outlier ejection on real traffic failures; off unless set.
    #[serde(default)]
    pub outlier: Option<Outlier>,
    /// Below this percentage of usable backends, balance over all of them (Envoy's panic threshold); 0 disables.
    #[serde(default = "default_panic_threshold")]
    pub panic_threshold: u32,
    /// A backend that becomes usable ramps its weight up over this period (0s: at once).
    #[serde(default, with = "duration")]
    pub slow_start: Duration,
    /// `balance: p2c_ewma`: time constant of the latency estimates' decay, so a backend that was slow
    /// once and got no traffic since is tried again after a few periods.
    #[serde(default = "default_ewma_decay", with = "duration")]
    pub ewma_decay: Duration,
}

impl ServiceConfig {
    /// A service on `listen` with every other setting at its default and no backends yet.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            mode: Mode::default(),
            balance: Algorithm::default(),
            backends: Vec::new(),
            discovery: None,
            timeouts: Timeouts::default(),
            retries: Retries::default(),
            upstream_protocol: UpstreamProtocol::default(),
            http: HttpOptions::default(),
            default_servers: Vec::new(),
            keep_default_servers: false,
            use_previous_backends: true,
            hash_header: None,
            max_connections: None,
            max_client_connections: None,
            tls_upstream: None,
            tls_listen: None,
            max_queue: default_max_queue(),
            health_check: None,
            outlier: None,
            panic_threshold: default_panic_threshold(),
            slow_start: Duration::ZERO,
            ewma_decay: default_ewma_decay(),
        }
    }
}

/// How traffic is proxied.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Layer-4: bytes are copied both ways.
    #[default]
    Tcp,
    /// Layer-7 HTTP proxying.
    Http,
}

impl Mode {
    /// The name used in config and the admin API.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Tcp => "tcp",
            Mode::Http => "http",
        }
    }
}

/// How a backend is picked.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Smooth weighted round-robin.
    #[default]
    RoundRobin,
    /// Fewest active connections relative to weight.
    LeastConn,
    /// Weighted random.
    Random,
    /// Power of two choices on peak-EWMA latency × in-flight requests.
    P2cEwma,
    /// Consistent hashing of the client address, or of `hash_header` in HTTP mode.
    Hash,
}

impl Algorithm {
    /// The name used in config and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::LeastConn => "least_conn",
            Algorithm::Random => "random",
            Algorithm::P2cEwma => "p2c_ewma",
            Algorithm::Hash => "hash",
        }
    }
}

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

impl TryFrom<DiscoverySection> for DiscoveryConfig {
    type Error = String;
    fn try_from(d: DiscoverySection) -> Result<Self, String> {
        match (d.file, d.zookeeper) {
            (Some(f), None) => Ok(DiscoveryConfig::File(f)),
            (None, Some(z)) => Ok(DiscoveryConfig::Zookeeper(z)),
            _ => Err("give exactly one discovery source: `file` or `zookeeper`".into()),
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
    #[serde(default = "default_session_timeout", with = "duration_serde")]
    pub session_timeout: Duration,
    /// How znode data is decoded.
    #[serde(default)]
    pub decode: Decode,
    /// Connect to this port instead of the one registered (Synapse's `server_port_override`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_override: Option<u16>,
    /// After a change event, how long to gather further events before re-reading (at most [`MAX_COALESCE`]).
    #[serde(default = "default_coalesce", with = "duration_serde")]
    pub coalesce: Duration,
    /// How changes are watched.
    #[serde(default)]
    pub watch: WatchMode,
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

/// Per-service timeouts.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// Time allowed to establish a connection to one backend.
    #[serde(default = "default_connect", with = "duration_serde")]
    pub connect: Duration,
    /// A connection with no bytes in either direction for this long is closed.
    #[serde(default = "default_idle", with = "duration_serde")]
    pub idle: Duration,
    /// HTTP mode: time from sending a request to receiving the response head (504 beyond it).
    #[serde(default = "default_request", with = "duration_serde")]
    pub request: Duration,
    /// HTTP mode: a client must send a complete request head within this time (slowloris guard).
    #[serde(default = "default_header_read", with = "duration_serde")]
    pub header_read: Duration,
    /// HTTP mode: idle pooled backend connections are closed after this, before backends close them.
    #[serde(default = "default_pool_idle", with = "duration_serde")]
    pub pool_idle: Duration,
    /// Longest wait in the queue for a backend slot (with `max_connections`).
    #[serde(default = "default_queue", with = "duration_serde")]
    pub queue: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: default_connect(),
            idle: default_idle(),
            request: default_request(),
            header_read: default_header_read(),
            pool_idle: default_pool_idle(),
            queue: default_queue(),
        }
    }
}

/// Retry policy.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Retries {
    /// Extra attempts on other backends after a connect failure (HAProxy's `retries` + `option redispatch`).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// HTTP mode: conditions that trigger a retry; connect failures always do.
    #[serde(default = "default_retry_on")]
    pub on: Vec<RetryOn>,
    /// HTTP mode: status codes retried when `on` lists `retriable_status_codes`.
    #[serde(default)]
    pub retriable_status_codes: Vec<u16>,
    /// HTTP mode: retries in flight may not exceed this share of active requests...
    #[serde(default = "default_budget_percent")]
    pub budget_percent: f64,
    /// ...except that this many concurrent retries are always allowed.
    #[serde(default = "default_min_concurrent")]
    pub min_concurrent: u32,
    /// HTTP mode: delay between retries.
    #[serde(default)]
    pub backoff: Backoff,
}

impl Default for Retries {
    fn default() -> Self {
        Self {
            attempts: default_attempts(),
            on: default_retry_on(),
            retriable_status_codes: Vec::new(),
            budget_percent: default_budget_percent(),
            min_concurrent: default_min_concurrent(),
            backoff: Backoff::default(),
        }
    }
}

/// Smallest accepted `http.max_header_bytes` (the HTTP/1 parser's minimum buffer).
pub const MIN_HEADER_BYTES: usize = 8192;

/// Upper bound on `retries.attempts`, to keep a sick fleet from being stormed.
pub const MAX_RETRY_ATTEMPTS: u32 = 10;

mod duration_serde {
    pub use super::duration::{deserialize, serialize};
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 3210))
}
fn default_grace() -> Duration {
    Duration::from_secs(10)
}
fn default_state_ttl() -> Duration {
    Duration::from_secs(86_400)
}
fn default_session_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_coalesce() -> Duration {
    Duration::from_millis(100)
}
fn default_connect() -> Duration {
    Duration::from_secs(1)
}
fn default_idle() -> Duration {
    Duration::from_secs(300)
}
fn default_request() -> Duration {
    Duration::from_secs(15)
}
fn default_header_read() -> Duration {
    Duration::from_secs(10)
}
fn default_pool_idle() -> Duration {
    Duration::from_secs(4)
}
fn default_retry_on() -> Vec<RetryOn> {
    vec![RetryOn::ConnectFailure]
}
fn default_budget_percent() -> f64 {
    20.0
}
fn default_min_concurrent() -> u32 {
    3
}
fn default_queue() -> Duration {
    Duration::from_secs(5)
}
fn default_max_queue() -> usize {
    1000
}
fn default_ewma_decay() -> Duration {
    Duration::from_secs(10)
}
fn default_panic_threshold() -> u32 {
    50
}
fn default_true() -> bool {
    true
}
fn default_attempts() -> u32 {
    2
}

/// The file format, chosen by extension (`.json` is JSON, everything else YAML).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// YAML (which also reads most JSON).
    Yaml,
    /// Strict JSON.
    Json,
}

impl Format {
    /// Picks the format from a file name.
    pub fn of(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("json") => Format::Json,
            _ => Format::Yaml,
        }
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = text::read(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, Format::of(path), path)
    }

    /// Parses and validates config text; `file` is used in error messages.
    pub fn parse(text: &str, format: Format, file: &Path) -> Result<Self, ConfigError> {
        let parse_err = |field: String, message: String, line| ConfigError::Parse {
            file: file.to_path_buf(),
            field: if field.is_empty() || field == "." {
                "(top level)".into()
            } else {
                field
            },
            message,
            line,
        };
        text::check(text).map_err(|e| parse_err(String::new(), e.to_string(), None))?;
        let mut config: Config = match format {
            Format::Yaml => {
                let de = serde_norway::Deserializer::from_str(text);
                serde_path_to_error::deserialize(de).map_err(|e| {
                    let field = e.path().to_string();
                    let inner = e.into_inner();
                    let mut line = inner.location().map(|l| (l.line(), l.column()));
                    let mut message = strip_path(&field, &strip_location(&inner.to_string()));
                    if let Some(both) =
                        line.and_then(|(l, _)| unique::lines(text, &message, l, false))
                    {
                        message = format!("{message} {both}");
                        line = None;
                    }
                    parse_err(field, message, line)
                })?
            }
            Format::Json => {
                let mut de = serde_json::Deserializer::from_str(text);
                serde_path_to_error::deserialize(&mut de).map_err(|e| {
                    let field = e.path().to_string();
                    let inner = e.into_inner();
                    let mut line = Some((inner.line(), inner.column()));
                    let mut message = strip_location(&inner.to_string());
                    if let Some(both) = unique::lines(text, &message, inner.line(), true) {
                        message = format!("{message} {both}");
                        line = None;
                    }
                    parse_err(field, message, line)
                })?
            }
        };
        config.services_explicit = !config.services.is_empty() || names_services(text, format);
        config.validate(file)?;
        Ok(config)
    }

    /// Checks what the types alone cannot: cross-field rules and ranges.
    pub fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        let invalid = |field: String, message: String| ConfigError::Invalid {
            file: file.to_path_buf(),
            field,
            message,
        };
        if let Some(r) = &self.register {
            r.validate()
                .map_err(|(field, message)| invalid(format!("register.{field}"), message))?;
        }
        let mut listeners: Vec<(SocketAddr, &str)> = vec![(self.admin.listen, "admin")];
        for (name, svc) in &self.services {
            let at = |f: &str| format!("services.{name}.{f}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
            {
                return Err(invalid(
                    format!("services.{name}"),
                    "service names may use only letters, digits, '_', '-' and '.'".into(),
                ));
            }
            if let Some((addr, other)) = listeners
                .iter()
                .find(|(a, _)| addr::overlaps(*a, svc.listen))
            {
                let message = if *addr == svc.listen {
                    format!("{addr} is already used by {other}")
                } else {
                    format!("{} overlaps {addr} of {other}: a wildcard address takes its port on every address it covers", svc.listen)
                };
                return Err(invalid(at("listen"), message));
            }
            listeners.push((svc.listen, name));
            match &svc.discovery {
                None if svc.backends.is_empty() => {
                    return Err(invalid(
                        format!("services.{name}"),
                        "no backends: give a `backends` list or a `discovery` source".into(),
                    ))
                }
                Some(_) if !svc.backends.is_empty() => {
                    return Err(invalid(
                        at("backends"),
                        "static backends and a discovery source are exclusive; keep one".into(),
                    ))
                }
                Some(DiscoveryConfig::Zookeeper(zk)) => {
                    if zk.port_override == Some(0) {
                        return Err(invalid(
                            at("discovery.zookeeper.port_override"),
                            "must be a port 1-65535".into(),
                        ));
                    }
                    if zk.coalesce > MAX_COALESCE {
                        return Err(invalid(
                            at("discovery.zookeeper.coalesce"),
                            format!("at most {}", humantime::format_duration(MAX_COALESCE)),
                        ));
                    }
                    if zk.hosts.is_empty() {
                        return Err(invalid(
                            at("discovery.zookeeper.hosts"),
                            "at least one host is required".into(),
                        ));
                    }
                    if !zk.path.starts_with('/') || (zk.path.len() > 1 && zk.path.ends_with('/')) {
                        return Err(invalid(
                            at("discovery.zookeeper.path"),
                            format!("{:?} must start with '/' and not end with one", zk.path),
                        ));
                    }
                }
                _ => {}
            }
            if svc.timeouts.connect.is_zero() {
                return Err(invalid(
                    at("timeouts.connect"),
                    "must be greater than zero".into(),
                ));
            }
            if svc.timeouts.idle.is_zero() {
                return Err(invalid(
                    at("timeouts.idle"),
                    "must be greater than zero".into(),
                ));
            }
            if svc.retries.attempts > MAX_RETRY_ATTEMPTS {
                return Err(invalid(
                    at("retries.attempts"),
                    format!("must be at most {MAX_RETRY_ATTEMPTS}"),
                ));
            }
            validate_http(svc).map_err(|(field, message)| invalid(at(field), message))?;
            if let Some(t) = &svc.tls_upstream {
                if t.client_cert.is_some() != t.client_key.is_some() {
                    return Err(invalid(
                        at("tls_upstream"),
                        "client_cert and client_key go together".into(),
                    ));
                }
            }
            if let Some(hc) = &svc.health_check {
                hc.validate()
                    .map_err(|(f, m)| invalid(at(&format!("health_check.{f}")), m))?;
            }
            if svc.ewma_decay.is_zero() {
                return Err(invalid(
                    at("ewma_decay"),
                    "must be greater than zero".into(),
                ));
            }
            if svc.panic_threshold > 100 {
                return Err(invalid(
                    at("panic_threshold"),
                    "must be between 0 and 100 (percent)".into(),
                ));
            }
            if let Some(o) = &svc.outlier {
                if o.consecutive_failures == 0
                    || o.max_ejection_percent > 100
                    || o.base_ejection > o.max_ejection
                {
                    return Err(invalid(
                        at("outlier"),
                        "consecutive_failures must be at least 1, max_ejection_percent at most 100, base_ejection at most max_ejection".into(),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// True when the document gives `services` a value (`services: {}`), not merely leaves it out or
/// empty (`services:` alone, as a truncated file may end).
fn names_services(text: &str, format: Format) -> bool {
    #[derive(Deserialize)]
    struct Keys {
        services: Option<serde::de::IgnoredAny>,
    }
    let keys: Option<Keys> = match format {
        Format::Yaml => serde_norway::from_str(text).ok(),
        Format::Json => serde_json::from_str(text).ok(),
    };
    keys.is_some_and(|k| k.services.is_some())
}

/// HTTP-mode ranges: the field (relative to the service) and what is wrong.
fn validate_http(svc: &ServiceConfig) -> Result<(), (&'static str, String)> {
    if !(0.0..=100.0).contains(&svc.retries.budget_percent) {
        return Err(("retries.budget_percent", "must be between 0 and 100".into()));
    }
    if svc.retries.backoff.base > svc.retries.backoff.max {
        return Err(("retries.backoff", "base must not exceed max".into()));
    }
    if svc.max_connections == Some(0) {
        return Err(("max_connections", "must be at least 1".into()));
    }
    if svc.http.max_header_bytes < MIN_HEADER_BYTES {
        return Err((
            "http.max_header_bytes",
            format!("must be at least {MIN_HEADER_BYTES}"),
        ));
    }
    let t = &svc.timeouts;
    for (field, d) in [
        ("timeouts.request", t.request),
        ("timeouts.header_read", t.header_read),
        ("timeouts.pool_idle", t.pool_idle),
    ] {
        if d.is_zero() {
            return Err((field, "must be greater than zero".into()));
        }
    }
    Ok(())
}

/// serde_norway prefixes messages with the path of the enclosing mapping; the error already names the field.
fn strip_path(field: &str, message: &str) -> String {
    match message.split_once(": ") {
        Some((head, rest)) if !head.contains(' ') && field.starts_with(head) => rest.to_string(),
        _ => message.to_string(),
    }
}

/// serde_norway appends " at line L column C" to messages; the error type carries it separately.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Format::Yaml, Path::new("test.yaml"))
    }

    #[test]
    fn issue_example_parses() {
        let c = parse(
            "admin:\n  listen: 127.0.0.1:3210\nservices:\n  web:\n    listen: 127.0.0.1:4001\n    mode: tcp\n    balance: round_robin\n    backends:\n      - 127.0.0.1:8081\n      - { host: 127.0.0.1, port: 8082, weight: 2 }\n    timeouts: { connect: 1s, idle: 5m }\n    retries: { attempts: 2 }\n",
        )
        .unwrap();
        let web = &c.services["web"];
        assert_eq!(web.backends.len(), 2);
        assert_eq!(web.backends[1].weight, 2);
        assert_eq!(web.timeouts.idle, Duration::from_secs(300));
    }

    #[test]
    fn bad_listen_names_field_and_value() {
        let e =
            parse("services:\n  web:\n    listen: 127.0.0.1:99999\n    backends: [127.0.0.1:1]\n")
                .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with(
                "test.yaml: services.web.listen: invalid socket address \"127.0.0.1:99999\""
            ),
            "{msg}"
        );
        assert!(msg.contains("line 3"), "{msg}");
    }

    #[test]
    fn unknown_key_is_an_error() {
        let e = parse("services:\n  web:\n    listen: 127.0.0.1:1\n    backend: []\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `backend`"), "{e}");
    }

    #[test]
    fn duplicate_listen_rejected() {
        let e = parse(
            "services:\n  a: { listen: 127.0.0.1:5000, backends: [127.0.0.1:1] }\n  b: { listen: 127.0.0.1:5000, backends: [127.0.0.1:1] }\n",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("services.b.listen: 127.0.0.1:5000 is already used by a"),
            "{e}"
        );
    }

    #[test]
    fn a_wildcard_listen_beside_an_address_it_covers_is_rejected() {
        let two = |a: &str, b: &str| {
            parse(&format!("admin: {{ listen: 127.0.0.1:3210 }}\nservices:\n  a: {{ listen: \"{a}\", backends: [127.0.0.1:1] }}\n  b: {{ listen: \"{b}\", backends: [127.0.0.1:1] }}\n"))
        };
        let e = two("0.0.0.0:4001", "127.0.0.1:4001")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("services.b.listen: 127.0.0.1:4001 overlaps 0.0.0.0:4001 of a"),
            "{e}"
        );
        assert!(two("[::]:4001", "127.0.0.1:4001").is_err());
        assert!(two("127.0.0.1:4001", "127.0.0.2:4001").is_ok());
        let e = two("0.0.0.0:3210", "127.0.0.1:4001")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("services.a.listen: 0.0.0.0:3210 overlaps 127.0.0.1:3210 of admin"),
            "{e}"
        );
    }

    #[test]
    fn json_is_accepted() {
        let c = Config::parse(
            r#"{"services": {"web": {"listen": "127.0.0.1:4001", "discovery": {"file": "/tmp/b.json"}}}}"#,
            Format::Json,
            Path::new("c.json"),
        )
        .unwrap();
        assert_eq!(
            c.services["web"].discovery,
            Some(DiscoveryConfig::File("/tmp/b.json".into()))
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

    #[test]
    fn a_config_written_out_loads_back_the_same() {
        let c = parse(
            "services:\n  web:\n    listen: 127.0.0.1:4001\n    mode: http\n    balance: hash\n    backends: [127.0.0.1:1, { host: h, port: 2, weight: 3 }]\n    retries: { on: [5xx, reset] }\n    health_check: { type: http, fast_interval: 500ms }\n    outlier: {}\n  zk:\n    listen: 127.0.0.1:4002\n    discovery: { zookeeper: { hosts: [127.0.0.1:2181], path: /x } }\n",
        )
        .unwrap();
        let yaml = serde_norway::to_string(&c).unwrap();
        assert_eq!(parse(&yaml).unwrap(), c, "{yaml}");
    }

    #[test]
    fn ewma_decay_defaults_to_10s_and_must_be_positive() {
        let base = "services:\n  web:\n    listen: 127.0.0.1:1\n    backends: [127.0.0.1:1]\n";
        let svc = |c: Config| c.services["web"].ewma_decay;
        assert_eq!(svc(parse(base).unwrap()), Duration::from_secs(10));
        let set = parse(&format!("{base}    ewma_decay: 2s\n")).unwrap();
        assert_eq!(svc(set), Duration::from_secs(2));
        let e = parse(&format!("{base}    ewma_decay: 0s\n")).unwrap_err();
        assert!(
            e.to_string()
                .contains("services.web.ewma_decay: must be greater than zero"),
            "{e}"
        );
    }

    #[test]
    fn an_empty_file_is_an_error_and_services_explicit_records_an_empty_set_on_purpose() {
        for text in ["", "# nothing here\n", "---\n"] {
            let e = parse(text).unwrap_err();
            assert!(
                e.to_string().contains("empty or holds only comments"),
                "{e}"
            );
            let e = Config::parse(text, Format::Json, Path::new("c.json")).unwrap_err();
            assert!(
                e.to_string().contains("empty or holds only comments"),
                "{e}"
            );
        }
        let explicit = |text: &str| parse(text).unwrap().services_explicit;
        assert!(explicit("services: {}\n"));
        assert!(explicit(
            "services:\n  web: { listen: 127.0.0.1:1, backends: [127.0.0.1:2] }\n"
        ));
        assert!(!explicit("admin: { listen: 127.0.0.1:1 }\n"));
        assert!(!explicit("admin: { listen: 127.0.0.1:1 }\nservices:\n"));
        let json = Config::parse(r#"{"services": {}}"#, Format::Json, Path::new("c.json"));
        assert!(json.unwrap().services_explicit);
    }

    #[test]
    fn bad_duration_is_explained() {
        let e = parse("services:\n  web:\n    listen: 127.0.0.1:1\n    backends: [127.0.0.1:1]\n    timeouts: { connect: 5 }\n")
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("services.web.timeouts.connect: invalid duration"),
            "{e}"
        );
    }
}
