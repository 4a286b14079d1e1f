//! Names for DNS discovery tests: backends on every address a name resolves to, and a network
//! namespace whose own `/etc/hosts` a test rewrites while a process inside it runs.

use super::netns::Netns;
use super::EchoBackend;
use std::path::PathBuf;

/// Starts one backend named `name` on `port` of every address `host` resolves to on this machine.
pub async fn serve_every_address(host: &str, port: u16, name: &str) -> Vec<EchoBackend> {
    let mut addrs: Vec<_> = tokio::net::lookup_host((host, port))
        .await
        .expect("resolve")
        .collect();
    addrs.sort();
    addrs.dedup();
    assert!(!addrs.is_empty(), "{host} resolves to nothing");
    let mut backends = Vec::new();
    for addr in addrs {
        backends.push(EchoBackend::start_on(addr, name).await);
    }
    backends
}

/// A namespace with its own hosts file (`ip netns exec` bind-mounts `/etc/netns/NAME/hosts` over
/// `/etc/hosts` for what it runs); the file and its directory go with the namespace.
pub struct HostsNs {
    /// The namespace.
    pub ns: Netns,
    hosts: PathBuf,
}

impl HostsNs {
    /// Wraps `ns`, giving it a hosts file with `content`.
    pub fn new(ns: Netns, content: &str) -> Self {
        let dir = PathBuf::from("/etc/netns").join(&ns.name);
        std::fs::create_dir_all(&dir).expect("create /etc/netns/NAME");
        let hosts = dir.join("hosts");
        std::fs::write(&hosts, content).expect("write the namespace's hosts file");
        Self { ns, hosts }
    }

    /// Rewrites the hosts file in place (a bind mount follows the inode, not the name).
    pub fn set(&self, content: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&self.hosts)
            .expect("open the namespace's hosts file");
        f.write_all(content.as_bytes()).expect("rewrite hosts");
    }
}

impl Drop for HostsNs {
    fn drop(&mut self) {
        if let Some(dir) = self.hosts.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
