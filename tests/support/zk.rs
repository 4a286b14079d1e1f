//! A real ZooKeeper for tests: Debian's `zookeeper` package run standalone on a free loopback port with
//! a temporary data dir, stopped by PID when dropped. `.ci/run` installs the package.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zookeeper_client as zk;

const CLASSPATH: &str = "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar";

/// A standalone ZooKeeper server.
pub struct ZooKeeper {
    /// Its client port.
    pub port: u16,
    /// The address clients reach it at (127.0.0.1 unless it runs in a namespace).
    host: String,
    /// The network namespace it runs in, if any.
    netns: Option<String>,
    dir: PathBuf,
    child: Option<Child>,
}

impl ZooKeeper {
    /// Starts a server and waits until it serves.
    pub async fn start() -> Self {
        let mut zk = Self::configure(super::process::free_port(), "", None);
        zk.spawn();
        zk.wait_serving().await;
        zk
    }

    /// Starts a server inside a network namespace, listening on every address there; clients (the
    /// test's own, and `address()`) reach it at `via`, an address of the namespace.
    pub async fn start_in(ns: &super::netns::Netns, via: std::net::Ipv4Addr) -> Self {
        let mut zk = Self::configure_at(super::process::free_port(), "0.0.0.0", "", None);
        zk.host = via.to_string();
        zk.netns = Some(ns.name.clone());
        zk.spawn();
        zk.wait_serving().await;
        zk
    }

    fn configure(port: u16, servers: &str, myid: Option<usize>) -> Self {
        Self::configure_at(port, "127.0.0.1", servers, myid)
    }

    fn configure_at(port: u16, bind: &str, servers: &str, myid: Option<usize>) -> Self {
        let dir = std::env::temp_dir().join(format!("sinew-zk-{}-{port}", std::process::id()));
        std::fs::create_dir_all(dir.join("data")).expect("zk data dir");
        let cfg = format!(
            "tickTime=200\ninitLimit=20\nsyncLimit=5\ndataDir={}\nclientPort={port}\nclientPortAddress={bind}\nadmin.enableServer=false\n4lw.commands.whitelist=*\nforceSync=no\nminSessionTimeout=400\nmaxSessionTimeout=30000\n{servers}",
            dir.join("data").display()
        );
        std::fs::write(dir.join("zoo.cfg"), cfg).expect("zoo.cfg");
        if let Some(id) = myid {
            std::fs::write(dir.join("data").join("myid"), id.to_string()).expect("myid");
        }
        Self {
            port,
            host: "127.0.0.1".into(),
            netns: None,
            dir,
            child: None,
        }
    }

    /// Starts an ensemble of `n` servers and waits until every one serves (a leader was elected).
    pub async fn ensemble(n: usize) -> Vec<Self> {
        Self::ensemble_with_observers(n, 0).await
    }

    /// Starts an ensemble of `voters` servers and `observers` observers (the last ones), and waits
    /// until every one serves.
    pub async fn ensemble_with_observers(voters: usize, observers: usize) -> Vec<Self> {
        let n = voters + observers;
        let ports: Vec<[u16; 3]> = (0..n)
            .map(|_| {
                [
                    super::process::free_port(),
                    super::process::free_port(),
                    super::process::free_port(),
                ]
            })
            .collect();
        let servers: String = ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let role = if i < voters { "" } else { ":observer" };
                format!("server.{}=127.0.0.1:{}:{}{role}\n", i + 1, p[1], p[2])
            })
            .collect();
        let mut nodes: Vec<Self> = ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let own = if i < voters {
                    servers.clone()
                } else {
                    format!("peerType=observer\n{servers}")
                };
                Self::configure(p[0], &own, Some(i + 1))
            })
            .collect();
        for node in nodes.iter_mut() {
            node.spawn();
        }
        for node in &nodes {
            node.wait_serving().await;
        }
        nodes
    }

    /// `HOST:PORT` (`127.0.0.1:PORT` unless it runs in a namespace).
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// `IP:PORT`: its client port at another of its addresses.
    pub fn address_via(&self, ip: std::net::Ipv4Addr) -> String {
        format!("{ip}:{}", self.port)
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.join("zk.log")).expect("zk log");
        let mut java = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "java"]);
                c
            }
            None => Command::new("java"),
        };
        let child = java
            .args(["-Xms32m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp", CLASSPATH])
            .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
            .arg(self.dir.join("zoo.cfg"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("java runs ZooKeeper (Debian packages zookeeper and a JRE; bash .ci/run installs them)");
        self.child = Some(child);
    }

    async fn wait_serving(&self) {
        for _ in 0..1200 {
            if self.mode().await.is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "ZooKeeper did not serve within 60 s; see {}",
            self.dir.join("zk.log").display()
        );
    }

    /// The server's mode (`standalone`, `leader`, `follower`, `observer`) once it serves clients.
    pub async fn mode(&self) -> Option<String> {
        let addr: SocketAddr = self.address().parse().ok()?;
        let Ok(Ok(mut s)) =
            tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await
        else {
            return None;
        };
        s.write_all(b"srvr").await.ok()?;
        let mut out = String::new();
        let _ = tokio::time::timeout(Duration::from_millis(300), s.read_to_string(&mut out)).await;
        out.lines()
            .find_map(|l| l.strip_prefix("Mode: "))
            .map(|m| m.trim().to_string())
    }

    fn signal(&self, sig: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([sig, &child.id().to_string()])
                .status();
        }
    }

    /// Kills the server (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_serving().await;
    }

    /// Freezes the server (SIGSTOP): sessions time out as if it were partitioned away.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a frozen server (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// A client session for the test itself.
    pub async fn client(&self) -> zk::Client {
        zk::Client::connector()
            .with_session_timeout(Duration::from_secs(10))
            .connect(&self.address())
            .await
            .expect("test client connects")
    }
}

/// A client session on any of `hosts`, tried again until one serves or `within` passes.
///
/// A node that has just lost its leader answers `srvr` before it serves clients again, so one
/// attempt is not enough after an election.
pub async fn connect_within(hosts: &str, within: Duration) -> zk::Client {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let attempt = zk::Client::connector()
            .with_session_timeout(Duration::from_secs(10))
            .with_connection_timeout(Duration::from_secs(2))
            .connect(hosts)
            .await;
        match attempt {
            Ok(client) => return client,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                panic!("no ZooKeeper node of {hosts} served within {within:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        self.resume();
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Options of a persistent znode, open to everyone.
pub const PERSISTENT: zk::CreateOptions<'static> =
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());

/// Creates (or overwrites) a persistent znode with `data`, making parents as needed.
pub async fn put(client: &zk::Client, path: &str, data: &[u8]) {
    if let Some((parent, _)) = path.rsplit_once('/') {
        if !parent.is_empty() {
            client.mkdir(parent, &PERSISTENT).await.expect("mkdir");
        }
    }
    match client.create(path, data, &PERSISTENT).await {
        Ok(_) => {}
        Err(zk::Error::NodeExists) => {
            client.set_data(path, data, None).await.expect("set data");
        }
        Err(e) => panic!("create {path}: {e}"),
    }
}

/// Deletes a znode, ignoring a missing one.
pub async fn remove(client: &zk::Client, path: &str) {
    match client.delete(path, None).await {
        Ok(()) | Err(zk::Error::NoNode) => {}
        Err(e) => panic!("delete {path}: {e}"),
    }
}

/// Nerve's JSON for a backend.
pub fn nerve(host: &str, port: u16, name: &str) -> Vec<u8> {
    format!(r#"{{"host":"{host}","port":{port},"name":"{name}"}}"#).into_bytes()
}
