//! Binary upgrade without dropping a connection, after HAProxy's `-x` socket transfer.
//!
//! A running sinew with `admin.upgrade_socket` set offers its listening sockets (every service's and the
//! admin server's) on that unix socket. `sinew run --takeover PATH` connects, receives each descriptor with
//! `SCM_RIGHTS` beside the service and address it belongs to, and uses it instead of binding wherever its
//! config listens on the same address; everything else binds as usual. Both processes accept from the same
//! kernel sockets until the new one reports `Ready`; then the old one stops accepting, drains its open
//! connections within its grace period and exits, while connections waiting in the accept queues are the
//! new process's to take. The old process does not delete its znodes: it leaves them until the new
//! process registers the same instance (which replaces them) or its grace period ends.

mod offer;
pub mod successor;
mod takeover;
mod wire;

pub use offer::{HandoverMetrics, Offer};
pub use takeover::{take_over, Predecessor};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use tokio::net::TcpListener;

/// Why a handover could not be offered or taken.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// Nothing accepts on the path given to `--takeover`.
    #[error("cannot take over from {path}: nobody listens there ({error}); give the running sinew's admin.upgrade_socket")]
    Connect {
        /// The path.
        path: PathBuf,
        /// The OS error (in the message, not repeated as a cause).
        error: std::io::Error,
    },
    /// The upgrade socket could not be created.
    #[error("admin.upgrade_socket {path}: {error}")]
    Bind {
        /// The path.
        path: PathBuf,
        /// The OS error (in the message, not repeated as a cause).
        error: std::io::Error,
    },
    /// Another process serves the upgrade socket already.
    #[error("admin.upgrade_socket {path}: a running sinew serves it; start this one with --takeover {path}")]
    InUse {
        /// The path.
        path: PathBuf,
    },
    /// The running sinew said no.
    #[error("the running sinew refused the handover: {0}")]
    Refused(String),
    /// The other side broke the protocol.
    #[error("handover: {0}")]
    Frame(String),
    /// The other side took too long.
    #[error("handover: no answer within {0:?}")]
    Timeout(std::time::Duration),
    /// A received descriptor is not the listening socket it was announced as.
    #[error("handover: {owner} ({bound}): {reason}")]
    Listener {
        /// What it was announced for.
        owner: Owner,
        /// The address it was announced at.
        bound: SocketAddr,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading or writing the unix socket failed.
    #[error("handover: {0}")]
    Io(#[from] std::io::Error),
}

/// What a listening socket serves.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Owner {
    /// The admin server.
    Admin,
    /// A service, by name.
    Service(String),
    /// A shared HTTP frontend, by name.
    Frontend(String),
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::Admin => f.write_str("admin"),
            Owner::Service(name) => write!(f, "services.{name}"),
            Owner::Frontend(name) => write!(f, "http_frontends.{name}"),
        }
    }
}

/// The listening sockets this process could hand over. Entries hold the sockets weakly: a listener that
/// stops (a service removed by a reload) closes as it always did and drops out of the offer.
#[derive(Clone, Default)]
pub struct Listeners(Arc<Mutex<BTreeMap<Owner, Entry>>>);

struct Entry {
    configured: SocketAddr,
    socket: Weak<TcpListener>,
}

/// One socket as offered: who it is for, where, and a duplicate of its descriptor.
struct Offered {
    owner: Owner,
    configured: SocketAddr,
    bound: SocketAddr,
    fd: OwnedFd,
}

impl Listeners {
    /// Records `owner`'s listener (replacing the one it had), configured at `configured`.
    pub fn insert(&self, owner: Owner, configured: SocketAddr, socket: &Arc<TcpListener>) {
        let entry = Entry {
            configured,
            socket: Arc::downgrade(socket),
        };
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(owner, entry);
    }

    /// Every live listener, with a duplicated descriptor to send.
    fn offer(&self) -> std::io::Result<Vec<Offered>> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, e| e.socket.strong_count() > 0);
        let mut out = Vec::with_capacity(map.len());
        for (owner, e) in map.iter() {
            let Some(socket) = e.socket.upgrade() else {
                continue;
            };
            out.push(Offered {
                owner: owner.clone(),
                configured: e.configured,
                bound: socket.local_addr()?,
                fd: socket.as_fd().try_clone_to_owned()?,
            });
        }
        Ok(out)
    }
}

/// Listening sockets received from the process being replaced, used instead of binding where the
/// address matches. Those no service claims are closed here when this is dropped.
#[derive(Default)]
pub struct Inherited(Vec<Received>);

struct Received {
    owner: Owner,
    configured: SocketAddr,
    bound: SocketAddr,
    socket: std::net::TcpListener,
}

impl Inherited {
    /// How many sockets are left unclaimed.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no socket is left.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A listener for `owner` on `listen`: the inherited socket bound to exactly that address, or (for a
    /// configured port 0) the one `owner` had under the same configured address; otherwise a new bind.
    pub async fn listen(
        &mut self,
        owner: Owner,
        listen: SocketAddr,
    ) -> std::io::Result<TcpListener> {
        let found = self.0.iter().position(|r| r.bound == listen).or_else(|| {
            self.0
                .iter()
                .position(|r| r.owner == owner && r.configured == listen)
        });
        let Some(i) = found else {
            return TcpListener::bind(listen).await;
        };
        let r = self.0.swap_remove(i);
        tracing::info!(owner = %owner, listen = %r.bound, from = %r.owner, "listening socket taken over");
        r.socket.set_nonblocking(true)?;
        TcpListener::from_std(r.socket)
    }

    /// Keeps a listening socket bound by a service manager (systemd socket activation); `name` is its
    /// `FileDescriptorName=`, `admin` for the admin server.
    pub fn adopt(&mut self, fd: OwnedFd, name: Option<&str>) -> Result<(), UpgradeError> {
        let owner = match name {
            Some("admin") => Owner::Admin,
            Some(n) => Owner::Service(n.to_string()),
            None => Owner::Service("unnamed".into()),
        };
        let bound = rustix::net::getsockname(&fd)
            .ok()
            .and_then(|a| SocketAddr::try_from(a).ok())
            .ok_or_else(|| UpgradeError::Listener {
                owner: owner.clone(),
                bound: SocketAddr::from(([0, 0, 0, 0], 0)),
                reason: "a socket passed by systemd is not a TCP socket".into(),
            })?;
        self.push(owner, bound, bound, fd)
    }

    /// Checks a received descriptor and keeps it.
    fn push(
        &mut self,
        owner: Owner,
        configured: SocketAddr,
        bound: SocketAddr,
        fd: OwnedFd,
    ) -> Result<(), UpgradeError> {
        let bad = |reason: String| UpgradeError::Listener {
            owner: owner.clone(),
            bound,
            reason,
        };
        match rustix::net::sockopt::socket_acceptconn(&fd) {
            Ok(true) => {}
            Ok(false) => return Err(bad("not a listening socket".into())),
            Err(e) => return Err(bad(format!("not a socket: {e}"))),
        }
        let socket = std::net::TcpListener::from(fd);
        match socket.local_addr() {
            Ok(addr) if addr == bound => {}
            Ok(addr) => return Err(bad(format!("bound to {addr} instead"))),
            Err(e) => return Err(bad(e.to_string())),
        }
        self.0.push(Received {
            owner,
            configured,
            bound,
            socket,
        });
        Ok(())
    }
}

impl Drop for Inherited {
    fn drop(&mut self) {
        for r in &self.0 {
            tracing::info!(owner = %r.owner, listen = %r.bound, "inherited socket not in this config: closed here; the old process closes it when it stops accepting");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inherited(owner: Owner, configured: SocketAddr) -> (Inherited, SocketAddr) {
        let socket = std::net::TcpListener::bind(configured).unwrap();
        let bound = socket.local_addr().unwrap();
        let mut i = Inherited::default();
        i.push(owner, configured, bound, socket.into()).unwrap();
        (i, bound)
    }

    #[tokio::test]
    async fn a_socket_is_claimed_by_its_address_or_by_owner_and_ephemeral_config() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (mut i, bound) = inherited(Owner::Service("web".into()), any);
        let other = i.listen(Owner::Service("api".into()), any).await.unwrap();
        assert_ne!(
            other.local_addr().unwrap(),
            bound,
            "another owner binds anew"
        );
        let got = i.listen(Owner::Service("web".into()), any).await.unwrap();
        assert_eq!(
            got.local_addr().unwrap(),
            bound,
            "same owner, same port-0 config"
        );
        assert!(i.is_empty());

        let (mut i, bound) = inherited(Owner::Admin, any);
        let got = i.listen(Owner::Service("x".into()), bound).await.unwrap();
        assert_eq!(got.local_addr().unwrap(), bound, "exact address, any owner");
    }

    #[test]
    fn a_descriptor_that_is_not_a_listener_is_refused() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let udp = std::net::UdpSocket::bind(any).unwrap();
        let bound = udp.local_addr().unwrap();
        let err = Inherited::default()
            .push(Owner::Admin, any, bound, OwnedFd::from(udp))
            .unwrap_err();
        assert!(err.to_string().contains("not a listening socket"), "{err}");
    }
}
