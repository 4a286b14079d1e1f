//! Typed configuration: parsed once from YAML or JSON, validated at load, then read-only.
//!
//! Every struct denies unknown keys so a typo is an error at load rather than a silently ignored setting.
//! Errors name the file, the field path (`services.web.listen`) and, where the parser knows it, the line.
//!
//! This module holds the top of the model ([`Config`]); [`ServiceConfig`] and its parts live in `service`,
//! backend sources in `discovery`, reading a file in `load`, cross-field rules in `validate`, and the
//! Synapse and Nerve readers translate their formats into the same model.

mod addr;
pub mod diff;
mod discovery;
pub mod duration;
mod field;
mod frontend;
mod haproxy;
mod health;
mod http;
pub mod layers;
mod load;
mod locality;
pub mod nerve;
mod nerve_keys;
mod network;
pub mod paths;
pub mod redact;
pub mod register;
mod service;
pub mod synapse;
mod text;
mod tls;
mod unique;
mod validate;
mod warning;

pub use addr::{
    is_unix, parse_socket_addr, AddrError, BackendAddr, DEFAULT_WEIGHT, MAX_WEIGHT, UNIX_PREFIX,
};
pub use discovery::{
    Decode, DecodeMethod, DiscoveryConfig, DnsDiscovery, LabelCondition, LabelFilter, NotOneSource,
    Order, WatchMode, ZookeeperDiscovery, DEFAULT_DNS_INTERVAL, MAX_COALESCE,
};
pub use field::FieldError;
pub use frontend::{
    compile_regex, Condition, FrontendTimeouts, HttpFrontend, MatchKind, Route as FrontendRoute,
};
pub use health::{CheckType, HealthCheck, Outlier};
pub use http::{Backoff, FieldName, HttpOptions, RetryOn, UpstreamProtocol};
pub use load::Format;
pub use locality::{HostLocality, LocalityRouting};
pub use network::{Network, NetworkError};
pub use service::{
    Algorithm, Mode, Retries, SendProxy, ServiceConfig, TcpFastpath, Timeouts, MAX_RETRY_ATTEMPTS,
    MIN_HEADER_BYTES,
};
pub use text::TextError;
pub use tls::{TlsListen, TlsUpstream};
pub use warning::{Level, Warning};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
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
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Admin HTTP server (metrics, API).
    pub admin: AdminConfig,
    /// How long open connections may keep running after SIGTERM/SIGINT.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    /// Persist discovered backend sets here and load them at start (Synapse's `state_file_path`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_file: Option<StateFile>,
    /// Write each service's current backends as JSON into this directory (Synapse's `file_output`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_output: Option<FileOutput>,
    /// Runtime worker threads; default: the CPUs the process may run on. Read at start only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<std::num::NonZeroUsize>,
    /// The services this host depends on, by name.
    #[serde(deserialize_with = "unique::map")]
    pub services: BTreeMap<String, ServiceConfig>,
    /// Shared HTTP listeners that route each request to one of `services`, by name.
    #[serde(
        default,
        deserialize_with = "unique::map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub http_frontends: BTreeMap<String, HttpFrontend>,
    /// This host's services to health-check and register in ZooKeeper.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub register: Option<register::Register>,
    /// This host's zone and region, for services with `locality_routing`; default: from `register` labels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality: Option<HostLocality>,
    /// True when the file names its `services`, even as `services: {}`: no services was meant, so a
    /// reload may stop every running one. Set by the loaders, never read from the file.
    #[serde(skip)]
    pub services_explicit: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            admin: AdminConfig::default(),
            shutdown_grace: Duration::from_secs(10),
            state_file: None,
            file_output: None,
            threads: None,
            services: BTreeMap::new(),
            http_frontends: BTreeMap::new(),
            register: None,
            locality: None,
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
    #[serde(default = "default_state_ttl", with = "duration")]
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
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin server; loopback by default.
    #[serde(deserialize_with = "addr::socket_addr")]
    pub listen: SocketAddr,
    /// When set, state-changing endpoints (reload, maintenance) need `Authorization: Bearer TOKEN`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Unix socket on which this process offers its listening sockets to a successor (`sinew run --takeover`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade_socket: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3210)),
            token: None,
            upgrade_socket: None,
        }
    }
}

/// The most runtime worker threads `threads` may ask for (HAProxy's own ceiling for `nbthread`).
pub const MAX_THREADS: usize = 4096;

fn default_state_ttl() -> Duration {
    Duration::from_secs(86_400)
}
