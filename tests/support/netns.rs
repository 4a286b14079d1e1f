//! Network namespaces for partition tests: a namespace joined to this host by veth pairs, each a /30 in
//! 10.250.X.0/24 (X random), each of which can be cut and restored. Everything is deleted on drop.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};

/// One veth pair: the host side and the namespace side, each with its address.
pub struct Link {
    /// Interface name on the host.
    pub host_if: String,
    /// Interface name in the namespace.
    pub ns_if: String,
    /// The host side's address.
    pub host_ip: Ipv4Addr,
    /// The namespace side's address (what the host reaches the namespace at).
    pub ns_ip: Ipv4Addr,
}

/// A network namespace and its links to the host.
pub struct Netns {
    /// The namespace's name (`sinew-XXXXXX`).
    pub name: String,
    /// Its links, in creation order.
    pub links: Vec<Link>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip` (Debian package iproute2): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    /// Creates a namespace with `links` veth pairs to the host, all up.
    ///
    /// Returns `Err(reason)` only when this process cannot create namespaces at all (not root, no
    /// `ip`); any other trouble is a test failure.
    pub fn create(links: usize) -> Result<Self, String> {
        let root = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .map(|l| l.split_whitespace().nth(1) == Some("0"))
            })
            .unwrap_or(false);
        if !root {
            return Err("network namespaces need root".into());
        }
        if Command::new("ip").arg("-V").output().is_err() {
            return Err("`ip` is missing (Debian package iproute2)".into());
        }
        static NEXT: AtomicU8 = AtomicU8::new(0);
        let tag = format!("{:06x}", fastrand::u32(..0x100_0000));
        let subnet = fastrand::u8(..).wrapping_add(NEXT.fetch_add(37, Ordering::Relaxed));
        let mut ns = Self {
            name: format!("sinew-{tag}"),
            links: Vec::new(),
        };
        ip(&["netns", "add", &ns.name]).expect("ip netns add");
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]).expect("lo up");
        for i in 0..links {
            let (host_if, ns_if) = (format!("sw{tag}{i}h"), format!("sw{tag}{i}n"));
            let base = u8::try_from(4 * i).expect("at most 63 links");
            let host_ip = Ipv4Addr::new(10, 250, subnet, base + 1);
            let ns_ip = Ipv4Addr::new(10, 250, subnet, base + 2);
            ip(&[
                "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if, "netns", &ns.name,
            ])
            .expect("veth pair");
            ns.links.push(Link {
                host_if: host_if.clone(),
                ns_if: ns_if.clone(),
                host_ip,
                ns_ip,
            });
            ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if]).expect("host address");
            ip(&["link", "set", &host_if, "up"]).expect("host side up");
            ip(&[
                "-n",
                &ns.name,
                "addr",
                "add",
                &format!("{ns_ip}/30"),
                "dev",
                &ns_if,
            ])
            .expect("namespace address");
            ip(&["-n", &ns.name, "link", "set", &ns_if, "up"]).expect("namespace side up");
        }
        Ok(ns)
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Cuts link `i` at the namespace's end: the host keeps its route, and what it sends vanishes
    /// without an answer, as in a real partition (no refusal, no unreachable error).
    pub fn cut(&self, i: usize) {
        ip(&[
            "-n",
            &self.name,
            "link",
            "set",
            &self.links[i].ns_if,
            "down",
        ])
        .expect("link down");
    }

    /// Restores link `i`.
    pub fn restore(&self, i: usize) {
        ip(&["-n", &self.name, "link", "set", &self.links[i].ns_if, "up"]).expect("link up");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for link in &self.links {
            let _ = ip(&["link", "del", &link.host_if]);
        }
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Creates a namespace, or says loudly why this host cannot (and the caller skips its case).
pub fn create_or_skip(links: usize, case: &str) -> Option<Netns> {
    match Netns::create(links) {
        Ok(ns) => Some(ns),
        Err(reason) => {
            eprintln!("SKIPPED {case}: {reason}");
            None
        }
    }
}
