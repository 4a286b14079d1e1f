//! The connection log of TCP services (`connection_log: true`): one event per closed client
//! connection, target `sinew::connection`, as HAProxy's `option tcplog` line.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;

/// How a logged connection ended.
pub mod cause {
    /// Both sides closed their half.
    pub const DONE: &str = "done";
    /// A read or write failed (a reset, most often); the event's `error` says which.
    pub const ERROR: &str = "error";
    /// No byte moved either way for `timeouts.idle`.
    pub const IDLE_TIMEOUT: &str = "idle_timeout";
    /// Cut at the end of sinew's shutdown grace period.
    pub const SHUTDOWN: &str = "shutdown";
    /// No backend could be reached.
    pub const NO_BACKEND: &str = "no_backend";
    /// Connecting ran out of a local resource (descriptors, ports).
    pub const LOCAL_LIMIT: &str = "local_limit";
}

/// One client connection as the log describes it.
pub struct Connection {
    service: String,
    client: SocketAddr,
    started: Instant,
    /// The backend it was relayed to, once connected.
    pub upstream: Option<String>,
    /// How long connecting to the backend took, retries included.
    pub connect: Option<Duration>,
    /// Bytes from the client.
    pub from_client: u64,
    /// Bytes to the client.
    pub to_client: u64,
    /// The error that ended it, if one did.
    pub error: Option<String>,
}

impl Connection {
    /// A connection of `service` from `client`, opened now.
    pub fn new(service: &str, client: SocketAddr) -> Self {
        Self {
            service: service.to_string(),
            client,
            started: Instant::now(),
            upstream: None,
            connect: None,
            from_client: 0,
            to_client: 0,
            error: None,
        }
    }

    /// Time since the connection opened.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    /// Writes the event: the connection ended with `termination`.
    pub fn log(&self, termination: &str) {
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        tracing::info!(
            target: "sinew::connection",
            service = self.service,
            client = %self.client,
            upstream = self.upstream.as_deref().unwrap_or("-"),
            bytes_in = self.from_client,
            bytes_out = self.to_client,
            termination,
            error = self.error.as_deref(),
            connect_us = self.connect.map(us),
            duration_us = us(self.started.elapsed()),
        );
    }
}
