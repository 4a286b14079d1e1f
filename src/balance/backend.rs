//! `Backend`: one address a service can be reached at, as reported by a discovery source.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// A backend's labels (Nerve's `labels`), by name.
pub type Labels = BTreeMap<String, String>;

/// Where a backend was learned from; shown in the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Listed in the config.
    Static,
    /// Read from a backends file.
    File,
    /// A ZooKeeper znode, by name.
    Zookeeper(String),
    /// An address the host name resolved to.
    Dns(String),
    /// A default server used while discovery has none.
    Default,
    /// Kept from the previous set because discovery reported none.
    Previous,
    /// Loaded from the state file at start, until discovery reports.
    StateFile,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Static => f.write_str("static"),
            Origin::File => f.write_str("file"),
            Origin::Zookeeper(node) => write!(f, "zookeeper:{node}"),
            Origin::Dns(name) => write!(f, "dns:{name}"),
            Origin::Default => f.write_str("default"),
            Origin::Previous => f.write_str("previous"),
            Origin::StateFile => f.write_str("state_file"),
        }
    }
}

/// One backend of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Host name or IP address, or `unix:PATH` for a Unix socket.
    pub host: String,
    /// TCP port; 0 for a Unix socket.
    pub port: u16,
    /// Relative weight; 0 takes no new connections.
    pub weight: u32,
    /// Where this backend came from.
    pub origin: Origin,
    /// What its server line says beyond the weight (HAProxy's `backup`, `disabled`, `maxconn`).
    pub options: ServerOptions,
    /// Its labels, shown in the admin API (and filtered on by discovery).
    pub labels: Labels,
    /// Nerve's instance `name` (from the znode, or a default server's config), when given.
    pub name: Option<String>,
    /// The znode's `haproxy_server_options` as written, when given; `options` is what sinew reads of it.
    pub server_options: Option<String>,
}

/// HAProxy server options a backend can carry (Nerve's `haproxy_server_options`), beyond the weight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerOptions {
    /// `backup`: no traffic while any non-backup backend of the service is usable.
    pub backup: bool,
    /// `disabled`: in maintenance, never routed to.
    pub disabled: bool,
    /// `maxconn N`: this backend's own connection (request) limit, over the service's `max_connections`.
    pub max_connections: Option<u32>,
    /// `send-proxy` / `send-proxy-v2`: a PROXY protocol header first on every connection to it, over
    /// the service's `send_proxy`.
    pub send_proxy: Option<crate::config::SendProxy>,
}

impl Backend {
    /// A backend with no server options and no labels.
    pub fn new(host: impl Into<String>, port: u16, weight: u32, origin: Origin) -> Self {
        Self {
            host: host.into(),
            port,
            weight,
            origin,
            options: ServerOptions::default(),
            labels: Labels::new(),
            name: None,
            server_options: None,
        }
    }

    /// The `host:port` key that identifies the backend across swaps (IPv6 hosts bracketed); a Unix
    /// socket's is its `unix:PATH`.
    pub fn key(&self) -> String {
        let mut key = String::new();
        self.write_key(&mut key);
        key
    }

    /// Writes [`Backend::key`] into `buf` (cleared first), reusing its allocation.
    pub fn write_key(&self, buf: &mut String) {
        use std::fmt::Write;
        buf.clear();
        // Writing into a String cannot fail.
        let _ = if self.is_unix() {
            buf.write_str(&self.host)
        } else if self.host.contains(':') {
            write!(buf, "[{}]:{}", self.host, self.port)
        } else {
            write!(buf, "{}:{}", self.host, self.port)
        };
    }

    /// True for a Unix-socket backend (`unix:PATH`).
    pub fn is_unix(&self) -> bool {
        self.port == 0 && crate::config::is_unix(&self.host)
    }

    /// The address to connect to: resolved now when the host is an IP, by name at connect time
    /// otherwise; a Unix socket's path (`unix:@name` is in the abstract namespace: a leading NUL).
    pub fn target(&self) -> Target {
        if self.is_unix() {
            let path = &self.host[crate::config::UNIX_PREFIX.len()..];
            return Target::Unix(match path.strip_prefix('@') {
                Some(name) => PathBuf::from(format!("\0{name}")),
                None => PathBuf::from(path),
            });
        }
        match self.host.parse::<IpAddr>() {
            Ok(ip) => Target::Addr(SocketAddr::new(ip, self.port)),
            Err(_) => Target::Name(self.key()),
        }
    }
}

/// A connectable address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A literal socket address.
    Addr(SocketAddr),
    /// `host:port`, resolved when connecting.
    Name(String),
    /// A Unix socket's path (a leading NUL names one in Linux's abstract namespace).
    Unix(PathBuf),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unix_socket_is_keyed_and_reached_by_its_path() {
        let b = Backend::new("unix:/run/app.sock", 0, 1, Origin::File);
        assert_eq!(b.key(), "unix:/run/app.sock");
        assert_eq!(b.target(), Target::Unix("/run/app.sock".into()));
        let b = Backend::new("unix:@app", 0, 1, Origin::File);
        assert_eq!(b.key(), "unix:@app");
        assert_eq!(b.target(), Target::Unix("\0app".into()));
        let b = Backend::new("10.0.0.1", 80, 1, Origin::File);
        assert_eq!(
            (b.key(), b.target()),
            (
                "10.0.0.1:80".into(),
                Target::Addr("10.0.0.1:80".parse().unwrap())
            )
        );
        assert_eq!(Backend::new("::1", 80, 1, Origin::File).key(), "[::1]:80");
    }
}
