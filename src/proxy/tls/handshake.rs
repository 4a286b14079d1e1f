//! TLS handshakes on both sides of a service, each with the config its files hold now, counted by
//! result and, when they fail, by reason.

use super::reason;
use super::reload::Reloading;
use crate::health::probe::CheckTls;
use crate::proxy::TlsMetrics;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

/// Time a client has to finish a TLS handshake on a listener that terminates TLS.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS from sinew to a service's backends (proxied connections, the HTTP pool and health checks).
pub struct UpstreamTls {
    config: Arc<Reloading<ClientConfig>>,
    server_name: Option<String>,
    timeout: Duration,
    metrics: TlsMetrics,
}

impl UpstreamTls {
    /// Handshakes with backends using `config`, verifying `server_name` (default: the backend's host);
    /// a handshake gets `timeout`.
    pub fn new(
        config: Arc<Reloading<ClientConfig>>,
        server_name: Option<String>,
        timeout: Duration,
        metrics: TlsMetrics,
    ) -> Self {
        Self {
            config,
            server_name,
            timeout,
            metrics,
        }
    }

    /// The config, for its file watcher.
    pub fn config(&self) -> &Arc<Reloading<ClientConfig>> {
        &self.config
    }

    /// Handshakes with the backend `host` over `stream`.
    pub async fn connect(
        &self,
        host: &str,
        stream: TcpStream,
    ) -> io::Result<client::TlsStream<TcpStream>> {
        let wanted = self.server_name.as_deref().unwrap_or(host);
        let name = ServerName::try_from(wanted.to_string()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{wanted:?} is not a valid TLS server name"),
            )
        })?;
        let connector = TlsConnector::from(self.config.current());
        // Dropped unfinished means the caller's own deadline ran out: a timeout too.
        let mut pending = Pending {
            metrics: &self.metrics,
            done: false,
        };
        let result = tokio::time::timeout(self.timeout, connector.connect(name, stream)).await;
        pending.done = true;
        match result {
            Ok(Ok(s)) => {
                self.metrics.handshake("upstream", Ok(()));
                Ok(s)
            }
            Ok(Err(e)) => {
                self.metrics.handshake("upstream", Err(reason::of(&e)));
                Err(e)
            }
            Err(_) => {
                self.metrics.handshake("upstream", Err("timeout"));
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                ))
            }
        }
    }
}

impl CheckTls for UpstreamTls {
    fn handshake<'a>(
        &'a self,
        host: &'a str,
        stream: TcpStream,
    ) -> Pin<Box<dyn Future<Output = io::Result<client::TlsStream<TcpStream>>> + Send + 'a>> {
        Box::pin(self.connect(host, stream))
    }
}

/// Counts an upstream handshake abandoned by its caller as a timeout.
struct Pending<'a> {
    metrics: &'a TlsMetrics,
    done: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.metrics.handshake("upstream", Err("timeout"));
        }
    }
}

/// TLS terminated on a service's listener.
pub struct ListenTls {
    config: Arc<Reloading<ServerConfig>>,
    metrics: TlsMetrics,
}

impl ListenTls {
    /// Accepts clients with `config`.
    pub fn new(config: Arc<Reloading<ServerConfig>>, metrics: TlsMetrics) -> Self {
        Self { config, metrics }
    }

    /// The config, for its file watcher.
    pub fn config(&self) -> &Arc<Reloading<ServerConfig>> {
        &self.config
    }

    /// Handshakes with a client (who gets 10 seconds for it).
    pub async fn accept(&self, stream: TcpStream) -> io::Result<server::TlsStream<TcpStream>> {
        let acceptor = TlsAcceptor::from(self.config.current());
        match tokio::time::timeout(LISTEN_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(s)) => {
                self.metrics.handshake("listen", Ok(()));
                Ok(s)
            }
            Ok(Err(e)) => {
                self.metrics.handshake("listen", Err(reason::of(&e)));
                Err(e)
            }
            Err(_) => {
                self.metrics.handshake("listen", Err("timeout"));
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                ))
            }
        }
    }
}
