//! Addresses in the config: listener socket addresses and backend endpoints, `host:port` or a Unix
//! socket (`unix:/run/app.sock`, `unix:@name` in Linux's abstract namespace; HAProxy's
//! `server s1 /run/app.sock` and `abns@name`).

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Deserializes a socket address with an error that quotes what was written.
pub fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    parse_socket_addr(&text).map_err(de::Error::custom)
}

/// [`socket_addr`] for an optional field (used with `#[serde(default)]`).
pub fn optional_socket_addr<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<SocketAddr>, D::Error> {
    socket_addr(d).map(Some)
}

/// Why an address in the config is refused; each message quotes what was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    /// A listener address that is not `ip:port`.
    #[error("invalid socket address {0:?} (expected ip:port, e.g. 127.0.0.1:4001)")]
    SocketAddr(String),
    /// A backend address that is not `host:port`.
    #[error("invalid backend address {0:?} (expected host:port, e.g. 127.0.0.1:8081)")]
    Backend(String),
    /// A backend without a host.
    #[error("backend host is empty")]
    EmptyHost,
    /// A backend port outside 1-65535.
    #[error("invalid port {port} for backend {host:?} (expected 1-65535)")]
    Port {
        /// The host it was given for.
        host: String,
        /// The port as written.
        port: u32,
    },
    /// A backend weight above [`MAX_WEIGHT`].
    #[error("weight {weight} for backend {backend} is above {MAX_WEIGHT}")]
    Weight {
        /// The backend's address (`host:port` or `unix:PATH`).
        backend: String,
        /// The weight as written.
        weight: u32,
    },
    /// A backend given as a map without a port (only a Unix socket needs none).
    #[error("backend {0:?} needs a port 1-65535")]
    MissingPort(String),
    /// A Unix-socket backend that is not `unix:/absolute/path` or `unix:@name`.
    #[error(
        "invalid Unix socket backend {0:?} (expected unix:/absolute/path or unix:@abstract-name)"
    )]
    Unix(String),
    /// A Unix socket path longer than the kernel takes.
    #[error("Unix socket backend {0:?} is longer than {MAX_UNIX_PATH} bytes, the most a socket address holds")]
    UnixTooLong(String),
    /// A Unix-socket backend given a port.
    #[error("Unix socket backend {0:?} takes no port")]
    UnixPort(String),
}

/// The prefix of a Unix-socket backend address.
pub const UNIX_PREFIX: &str = "unix:";
/// The longest Unix socket path or abstract name, in bytes (`sun_path` holds 108 with the final NUL
/// or the abstract namespace's leading one).
pub const MAX_UNIX_PATH: usize = 107;

/// True when `host` names a Unix socket (`unix:...`) rather than a host.
pub fn is_unix(host: &str) -> bool {
    host.starts_with(UNIX_PREFIX)
}

/// Checks a `unix:/absolute/path` or `unix:@name` address: absolute, no NUL byte, short enough.
pub fn check_unix(addr: &str) -> Result<(), AddrError> {
    let bad = || AddrError::Unix(addr.to_string());
    let rest = addr.strip_prefix(UNIX_PREFIX).ok_or_else(bad)?;
    let name = match rest.strip_prefix('@') {
        Some(name) => name,
        None if rest.starts_with('/') => rest,
        None => return Err(bad()),
    };
    if name.is_empty() || name.contains('\0') || (rest.starts_with('/') && rest.ends_with('/')) {
        return Err(bad());
    }
    if name.len() > MAX_UNIX_PATH {
        return Err(AddrError::UnixTooLong(addr.to_string()));
    }
    Ok(())
}

/// Parses `ip:port`, naming the bad input in the error.
pub fn parse_socket_addr(text: &str) -> Result<SocketAddr, AddrError> {
    text.trim()
        .parse()
        .map_err(|_| AddrError::SocketAddr(text.to_string()))
}

/// True when listeners on `a` and `b` cannot both be bound: the same port, and the same address or a
/// wildcard that covers the other (`0.0.0.0` every IPv4 address; `[::]` every address, IPv4 included,
/// as Linux binds it dual-stack by default). Port 0 asks for a free port, so it never overlaps.
pub fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() || a.port() == 0 {
        return false;
    }
    let (a, b) = (a.ip().to_canonical(), b.ip().to_canonical());
    let covers = |wild: IpAddr, other: IpAddr| match wild {
        IpAddr::V4(w) => w.is_unspecified() && other.is_ipv4(),
        IpAddr::V6(w) => w.is_unspecified(),
    };
    a == b || covers(a, b) || covers(b, a)
}

/// One static backend as written in the config: `"host:port"`, `"unix:/path"` or
/// `{ host, port, weight, name, labels }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendAddr {
    /// Host name or IP address, or `unix:PATH` for a Unix socket.
    pub host: String,
    /// TCP port, 1-65535; 0 for a Unix socket.
    pub port: u16,
    /// Relative weight, 1-256 (HAProxy's range); 0 means "never picked".
    pub weight: u32,
    /// The server's name (Synapse's default server `name`), written by `file_output`.
    pub name: Option<String>,
    /// Its labels (as Nerve's), shown in the admin API and on `sinew_backend_info`.
    pub labels: std::collections::BTreeMap<String, String>,
}

/// Default backend weight, as in HAProxy.
pub const DEFAULT_WEIGHT: u32 = 1;
/// Highest accepted weight, as in HAProxy.
pub const MAX_WEIGHT: u32 = 256;

impl BackendAddr {
    /// Parses `host:port`, `[v6]:port` or `unix:PATH`.
    pub fn parse(text: &str) -> Result<Self, AddrError> {
        let bad = || AddrError::Backend(text.to_string());
        let text = text.trim();
        if is_unix(text) {
            return Self::new(text.to_string(), 0, DEFAULT_WEIGHT);
        }
        if let Ok(sa) = text.parse::<SocketAddr>() {
            return Self::new(sa.ip().to_string(), u32::from(sa.port()), DEFAULT_WEIGHT);
        }
        let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
        if host.is_empty() || host.contains(':') {
            return Err(bad());
        }
        let port: u32 = port.parse().map_err(|_| bad())?;
        Self::new(host.to_string(), port, DEFAULT_WEIGHT)
    }

    /// Builds an address, checking the port and weight ranges; a `unix:PATH` host takes port 0.
    pub fn new(host: String, port: u32, weight: u32) -> Result<Self, AddrError> {
        if host.trim().is_empty() {
            return Err(AddrError::EmptyHost);
        }
        let port = if is_unix(&host) {
            check_unix(&host)?;
            if port != 0 {
                return Err(AddrError::UnixPort(host));
            }
            0
        } else {
            match u16::try_from(port).ok().filter(|p| *p != 0) {
                Some(port) => port,
                None => return Err(AddrError::Port { host, port }),
            }
        };
        if weight > MAX_WEIGHT {
            let backend = match port {
                0 => host,
                port => format!("{host}:{port}"),
            };
            return Err(AddrError::Weight { backend, weight });
        }
        Ok(Self {
            host,
            port,
            weight,
            name: None,
            labels: Default::default(),
        })
    }
}

impl serde::Serialize for BackendAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("host", &self.host)?;
        if !is_unix(&self.host) {
            map.serialize_entry("port", &self.port)?;
        }
        map.serialize_entry("weight", &self.weight)?;
        if let Some(name) = &self.name {
            map.serialize_entry("name", name)?;
        }
        if !self.labels.is_empty() {
            map.serialize_entry("labels", &self.labels)?;
        }
        map.end()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendMap {
    host: String,
    #[serde(default)]
    port: Option<u32>,
    #[serde(default = "default_weight")]
    weight: u32,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
}

fn default_weight() -> u32 {
    DEFAULT_WEIGHT
}

impl<'de> Deserialize<'de> for BackendAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BackendAddr;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"host:port\", \"unix:/path\" or { host, port, weight, name, labels }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<BackendAddr, E> {
                BackendAddr::parse(v).map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<BackendAddr, A::Error> {
                let m = BackendMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let port = match m.port {
                    Some(port) => port,
                    None if is_unix(&m.host) => 0,
                    None => return Err(de::Error::custom(AddrError::MissingPort(m.host))),
                };
                let mut addr =
                    BackendAddr::new(m.host, port, m.weight).map_err(de::Error::custom)?;
                addr.name = m.name;
                addr.labels = m.labels;
                Ok(addr)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_backend_forms() {
        let b = BackendAddr::parse("127.0.0.1:8081").unwrap();
        assert_eq!((b.host.as_str(), b.port, b.weight), ("127.0.0.1", 8081, 1));
        let b = BackendAddr::parse("[::1]:80").unwrap();
        assert_eq!((b.host.as_str(), b.port), ("::1", 80));
        let b = BackendAddr::parse("db.internal:5432").unwrap();
        assert_eq!((b.host.as_str(), b.port), ("db.internal", 5432));
    }

    #[test]
    fn rejects_bad_backends() {
        for bad in [
            "127.0.0.1",
            "127.0.0.1:0",
            "127.0.0.1:99999",
            ":80",
            "a:b:c",
        ] {
            assert!(BackendAddr::parse(bad).is_err(), "{bad}");
        }
        assert!(BackendAddr::new("h".into(), 80, 257).is_err());
    }

    #[test]
    fn unix_sockets_are_backends_without_a_port() {
        let b = BackendAddr::parse("unix:/run/app.sock").unwrap();
        assert_eq!(
            (b.host.as_str(), b.port, b.weight),
            ("unix:/run/app.sock", 0, 1)
        );
        let b = BackendAddr::parse("unix:@app").unwrap();
        assert_eq!((b.host.as_str(), b.port), ("unix:@app", 0));
        let b: BackendAddr =
            serde_json::from_str(r#"{"host": "unix:/run/a.sock", "weight": 3}"#).unwrap();
        assert_eq!(
            (b.host.as_str(), b.port, b.weight),
            ("unix:/run/a.sock", 0, 3)
        );
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            r#"{"host":"unix:/run/a.sock","weight":3}"#
        );
        let longest = format!("unix:/{}", "a".repeat(MAX_UNIX_PATH - 1));
        assert!(BackendAddr::parse(&longest).is_ok());
    }

    #[test]
    fn rejects_bad_unix_sockets() {
        let too_long = format!("unix:/{}", "a".repeat(MAX_UNIX_PATH));
        let abstract_too_long = format!("unix:@{}", "a".repeat(MAX_UNIX_PATH + 1));
        for (bad, says) in [
            ("unix:", "expected unix:/absolute/path"),
            ("unix:run/app.sock", "expected unix:/absolute/path"),
            ("unix:/run/", "expected unix:/absolute/path"),
            ("unix:@", "expected unix:/absolute/path"),
            ("unix:/run/a\0b", "expected unix:/absolute/path"),
            (too_long.as_str(), "longer than 107 bytes"),
            (abstract_too_long.as_str(), "longer than 107 bytes"),
        ] {
            let json = serde_json::to_string(bad).unwrap();
            let e = serde_json::from_str::<BackendAddr>(&json)
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let e = BackendAddr::new("unix:/run/a.sock".into(), 80, 1).unwrap_err();
        assert_eq!(e, AddrError::UnixPort("unix:/run/a.sock".into()));
        let e = serde_json::from_str::<BackendAddr>(r#"{"host": "db"}"#).unwrap_err();
        assert!(e.to_string().contains("\"db\" needs a port"), "{e}");
        let e = BackendAddr::new("unix:/a.sock".into(), 0, 300).unwrap_err();
        assert!(
            e.to_string().contains("backend unix:/a.sock is above"),
            "{e}"
        );
    }

    #[test]
    fn wildcards_overlap_the_addresses_they_cover() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        for (a, b, overlap) in [
            ("127.0.0.1:4001", "127.0.0.1:4001", true),
            ("0.0.0.0:4001", "127.0.0.1:4001", true),
            ("10.0.0.1:4001", "0.0.0.0:4001", true),
            ("[::]:4001", "127.0.0.1:4001", true),
            ("[::]:4001", "0.0.0.0:4001", true),
            ("[::]:4001", "[::1]:4001", true),
            ("[::ffff:127.0.0.1]:4001", "127.0.0.1:4001", true),
            ("0.0.0.0:4001", "[::1]:4001", false),
            ("127.0.0.1:4001", "127.0.0.2:4001", false),
            ("0.0.0.0:4001", "127.0.0.1:4002", false),
            ("0.0.0.0:0", "127.0.0.1:0", false),
        ] {
            assert_eq!(overlaps(addr(a), addr(b)), overlap, "{a} {b}");
        }
    }

    #[test]
    fn socket_addr_error_quotes_input() {
        let e = parse_socket_addr("127.0.0.1:99999")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"127.0.0.1:99999\""), "{e}");
    }
}
