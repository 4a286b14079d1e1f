//! A client connection's addresses as the proxy uses them: the client (for `X-Forwarded-For`, source
//! hashing, the logs) and, when a PROXY header may go to a backend, the address it connected to.
//! With `accept_proxy`, both come from the PROXY header the client's own proxy sent.

use super::ServiceProxy;
use crate::balance::Backend;
use crate::config::SendProxy;
use crate::proxy_protocol::{Addresses, Header};
use std::net::SocketAddr;
use std::os::fd::AsFd;

/// One client connection's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The client.
    pub addr: SocketAddr,
    /// The address the client connected to; known only where a PROXY header may be sent (finding it
    /// on a wildcard listener costs a system call per connection).
    pub local: Option<SocketAddr>,
}

impl Peer {
    /// The addresses of `socket`, accepted from `addr` on a listener bound to `bound`.
    pub fn accepted(
        socket: impl AsFd,
        addr: SocketAddr,
        bound: Option<SocketAddr>,
        proxy: &ServiceProxy,
    ) -> Self {
        let local = match bound {
            _ if !proxy.may_send_proxy => None,
            Some(b) if !b.ip().is_unspecified() => Some(b),
            _ => rustix::net::getsockname(socket)
                .ok()
                .and_then(|a| SocketAddr::try_from(a).ok()),
        };
        Self { addr, local }
    }

    /// The PROXY header (and its version) to write first on a new connection to `backend`: the
    /// backend's own `send-proxy` option wins over the service's `send_proxy`.
    pub fn header_for(
        &self,
        service: Option<SendProxy>,
        backend: &Backend,
    ) -> Option<(SendProxy, Header)> {
        let version = backend.options.send_proxy.or(service)?;
        let header = match self.local {
            Some(destination) => Header::Proxy(Addresses {
                source: self.addr,
                destination,
            }),
            None => Header::Local,
        };
        Some((version, header))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::Origin;

    #[test]
    fn the_backends_option_wins_over_the_services() {
        let peer = Peer {
            addr: "10.0.0.1:5000".parse().unwrap(),
            local: Some("127.0.0.1:80".parse().unwrap()),
        };
        let mut backend = Backend::new("10.0.0.9", 80, 1, Origin::Static);
        assert_eq!(peer.header_for(None, &backend), None);
        let (v, h) = peer.header_for(Some(SendProxy::V1), &backend).unwrap();
        assert_eq!(v, SendProxy::V1);
        assert_eq!(
            h,
            Header::Proxy(Addresses {
                source: peer.addr,
                destination: "127.0.0.1:80".parse().unwrap()
            })
        );
        backend.options.send_proxy = Some(SendProxy::V2);
        assert_eq!(
            peer.header_for(Some(SendProxy::V1), &backend).unwrap().0,
            SendProxy::V2
        );
        assert_eq!(peer.header_for(None, &backend).unwrap().0, SendProxy::V2);
        let unknown = Peer {
            local: None,
            ..peer
        };
        assert_eq!(unknown.header_for(None, &backend).unwrap().1, Header::Local);
    }
}
