//! An admin server address as the command line takes it (`--admin`): `127.0.0.1:3210`, `[::1]:3210`
//! or a host name such as `localhost:3210`, resolved once with the system resolver (`/etc/hosts`
//! included), so a name that does not resolve is an error before anything starts.

use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;
use std::time::Duration;

/// Why an `--admin` value cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// Not `host:port`.
    #[error("{text:?}: expected host:port, e.g. 127.0.0.1:3210, [::1]:3210 or localhost:3210")]
    Form {
        /// The value given.
        text: String,
    },
    /// The host name does not resolve.
    #[error("{text:?}: cannot resolve: {message}")]
    Unresolved {
        /// The value given.
        text: String,
        /// The resolver's answer.
        message: String,
    },
}

/// An admin address and what it resolved to, in the resolver's order (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    text: String,
    addrs: Vec<SocketAddr>,
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Self {
                text: text.into(),
                addrs: vec![addr],
            });
        }
        let form = || EndpointError::Form { text: text.into() };
        let (host, port) = text.rsplit_once(':').ok_or_else(form)?;
        if host.is_empty() || host.contains(':') || port.parse::<u16>().is_err() {
            return Err(form());
        }
        let addrs: Vec<SocketAddr> = text
            .to_socket_addrs()
            .map_err(|e| EndpointError::Unresolved {
                text: text.into(),
                message: e.to_string(),
            })?
            .collect();
        if addrs.is_empty() {
            return Err(EndpointError::Unresolved {
                text: text.into(),
                message: "no address".into(),
            });
        }
        Ok(Self {
            text: text.into(),
            addrs,
        })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Endpoint {
    /// The address to listen on: the first the resolver gave.
    pub fn first(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Every address the name resolved to, in the resolver's order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The address to talk to: the first that accepts a connection within a second, else the first
    /// (whose error the caller then reports).
    pub async fn reachable(&self) -> SocketAddr {
        for addr in &self.addrs {
            let connect = tokio::net::TcpStream::connect(addr);
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), connect).await {
                return *addr;
            }
        }
        self.first()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_names_resolve_and_bad_ones_are_named() {
        let v4: Endpoint = "127.0.0.1:3210".parse().unwrap();
        assert_eq!(v4.addrs(), ["127.0.0.1:3210".parse().unwrap()]);
        let v6: Endpoint = "[::1]:3211".parse().unwrap();
        assert_eq!(v6.first(), "[::1]:3211".parse().unwrap());
        let name: Endpoint = "localhost:3212".parse().unwrap();
        assert!(name
            .addrs()
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 3212));
        assert_eq!(name.to_string(), "localhost:3212");
        let e = "no-such-host.invalid:3210".parse::<Endpoint>().unwrap_err();
        assert!(
            e.to_string()
                .starts_with("\"no-such-host.invalid:3210\": cannot resolve"),
            "{e}"
        );
        for bad in [
            "localhost",
            "localhost:99999",
            ":3210",
            "::1:3210",
            "host:port",
        ] {
            let e = bad.parse::<Endpoint>().unwrap_err();
            assert!(matches!(e, EndpointError::Form { .. }), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn the_reachable_address_is_the_one_that_accepts() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap();
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let e = Endpoint {
            text: "x".into(),
            addrs: vec![closed, open],
        };
        assert_eq!(e.reachable().await, open);
        let none = Endpoint {
            text: "x".into(),
            addrs: vec![closed],
        };
        assert_eq!(none.reachable().await, closed);
    }
}
