//! One dependency as configured: its listener, proxy mode, balancing, timeouts, retries and limits.

use super::{
    addr, duration, BackendAddr, Backoff, DiscoveryConfig, HealthCheck, HttpOptions, Outlier,
    RetryOn, TlsListen, TlsUpstream, UpstreamProtocol,
};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

/// One dependency served on a local listener.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The local address applications connect to; without one the service is reached only through an
    /// `http_frontends` route.
    #[serde(
        default,
        deserialize_with = "addr::optional_socket_addr",
        skip_serializing_if = "Option::is_none"
    )]
    pub listen: Option<SocketAddr>,
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
    /// TCP mode: one log line per closed client connection (target `sinew::connection`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub connection_log: bool,
    /// Write a PROXY protocol header first on every backend connection (HAProxy's `send-proxy`,
    /// `send-proxy-v2`), health checks included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_proxy: Option<SendProxy>,
    /// Read a PROXY protocol header (v1 or v2) first on every client connection (HAProxy's
    /// `accept-proxy`); its client address replaces the connection's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub accept_proxy: bool,
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
    /// Zone-aware routing: prefer backends in this host's zone, spilling over as they become unusable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_routing: Option<super::LocalityRouting>,
    /// TCP mode: how bytes move between client and backend (`copy`, the kernel's `sockmap`, or
    /// `io_uring`).
    #[serde(default, skip_serializing_if = "TcpFastpath::is_copy")]
    pub tcp_fastpath: TcpFastpath,
}

impl ServiceConfig {
    /// A service on `listen` (none: reached through a frontend only) with every other setting at its
    /// default and no backends yet.
    pub fn new(listen: Option<SocketAddr>) -> Self {
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
            connection_log: false,
            send_proxy: None,
            accept_proxy: false,
            health_check: None,
            outlier: None,
            panic_threshold: default_panic_threshold(),
            slow_start: Duration::ZERO,
            ewma_decay: default_ewma_decay(),
            locality_routing: None,
            tcp_fastpath: TcpFastpath::Copy,
        }
    }
}

/// The PROXY protocol version written to backends.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SendProxy {
    /// The text form (HAProxy's `send-proxy`).
    V1,
    /// The binary form (HAProxy's `send-proxy-v2`).
    V2,
}

/// How a TCP-mode service moves bytes between a client and its backend.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TcpFastpath {
    /// sinew reads and writes every byte.
    #[default]
    Copy,
    /// The kernel moves the bytes between the two sockets (eBPF sockmap); for bulk streams.
    Sockmap,
    /// sinew moves every byte through io_uring: one ring for the process, on its own thread.
    #[serde(rename = "io_uring")]
    IoUring,
}

impl TcpFastpath {
    /// True for the default, `copy`.
    pub fn is_copy(&self) -> bool {
        *self == TcpFastpath::Copy
    }

    /// The name used in the config and the `path` label.
    pub fn label(self) -> &'static str {
        match self {
            TcpFastpath::Copy => "copy",
            TcpFastpath::Sockmap => "sockmap",
            TcpFastpath::IoUring => "io_uring",
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

/// Per-service timeouts.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// Time allowed to establish a connection to one backend.
    #[serde(with = "duration")]
    pub connect: Duration,
    /// A connection with no bytes in either direction for this long is closed.
    #[serde(with = "duration")]
    pub idle: Duration,
    /// HTTP mode: time from sending a request to receiving the response head (504 beyond it).
    #[serde(with = "duration")]
    pub request: Duration,
    /// HTTP mode: a client must send a complete request head within this time (slowloris guard).
    #[serde(with = "duration")]
    pub header_read: Duration,
    /// HTTP mode: idle pooled backend connections are closed after this, before backends close them.
    #[serde(with = "duration")]
    pub pool_idle: Duration,
    /// Longest wait in the queue for a backend slot (with `max_connections`).
    #[serde(with = "duration")]
    pub queue: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(1),
            idle: Duration::from_secs(300),
            request: Duration::from_secs(15),
            header_read: Duration::from_secs(10),
            pool_idle: Duration::from_secs(4),
            queue: Duration::from_secs(5),
        }
    }
}

/// Retry policy.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Retries {
    /// Extra attempts on other backends after a connect failure (HAProxy's `retries` + `option redispatch`).
    pub attempts: u32,
    /// HTTP mode: conditions that trigger a retry; connect failures always do.
    pub on: Vec<RetryOn>,
    /// HTTP mode: status codes retried when `on` lists `retriable_status_codes`.
    pub retriable_status_codes: Vec<u16>,
    /// HTTP mode: retries in flight may not exceed this share of active requests...
    pub budget_percent: f64,
    /// ...except that this many concurrent retries are always allowed.
    pub min_concurrent: u32,
    /// HTTP mode: delay between retries.
    pub backoff: Backoff,
}

impl Default for Retries {
    fn default() -> Self {
        Self {
            attempts: 2,
            on: vec![RetryOn::ConnectFailure],
            retriable_status_codes: Vec::new(),
            budget_percent: 20.0,
            min_concurrent: 3,
            backoff: Backoff::default(),
        }
    }
}

/// Smallest accepted `http.max_header_bytes` (the HTTP/1 parser's minimum buffer).
pub const MIN_HEADER_BYTES: usize = 8192;

/// Upper bound on `retries.attempts`, to keep a sick fleet from being stormed.
pub const MAX_RETRY_ATTEMPTS: u32 = 10;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load::tests::parse;
    use crate::config::Config;

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
}
