//! A 3-node ZooKeeper ensemble on loopback ports, from Debian's `zookeeper` package: started, killed
//! and restarted by PID, with the CPU time its processes used read from `/proc/<pid>/stat`.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CLASSPATH: &str = "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar";

/// One server of the ensemble.
pub struct Node {
    /// Client port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// The ensemble, stopped and removed when dropped.
pub struct Ensemble {
    /// Its servers.
    pub nodes: Vec<Node>,
    root: PathBuf,
    /// CPU seconds used by server processes that have since been killed.
    spent: f64,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Ensemble {
    /// Starts `n` servers and waits until each serves clients.
    pub async fn start(n: usize, heap_mb: u32) -> Self {
        let root = std::env::temp_dir().join(format!("sinew-fleet-{}", std::process::id()));
        let ports: Vec<[u16; 3]> = (0..n)
            .map(|_| [free_port(), free_port(), free_port()])
            .collect();
        let servers: String = ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("server.{}=127.0.0.1:{}:{}\n", i + 1, p[1], p[2]))
            .collect();
        let mut nodes = Vec::with_capacity(n);
        for (i, p) in ports.iter().enumerate() {
            let dir = root.join(format!("zk{}", i + 1));
            std::fs::create_dir_all(dir.join("data")).expect("data dir");
            // Production-like ticks (sessions of 10 s are 5 ticks), no per-IP connection limit (every
            // agent connects from 127.0.0.1), no fsync (the bench measures watch fan-out, not disks).
            let cfg = format!(
                "tickTime=1000\ninitLimit=30\nsyncLimit=10\ndataDir={}\nclientPort={}\nclientPortAddress=127.0.0.1\n\
                 admin.enableServer=false\n4lw.commands.whitelist=*\nforceSync=no\nmaxClientCnxns=0\n\
                 minSessionTimeout=2000\nmaxSessionTimeout=60000\n{servers}",
                dir.join("data").display(),
                p[0]
            );
            std::fs::write(dir.join("zoo.cfg"), cfg).expect("zoo.cfg");
            std::fs::write(dir.join("data").join("myid"), (i + 1).to_string()).expect("myid");
            nodes.push(Node {
                port: p[0],
                dir,
                child: None,
            });
        }
        for node in nodes.iter_mut() {
            node.spawn(heap_mb);
        }
        let ensemble = Self {
            nodes,
            root,
            spent: 0.0,
        };
        ensemble.wait_serving(Duration::from_secs(90)).await;
        ensemble
    }

    /// `127.0.0.1:P1,127.0.0.1:P2,...` as a list.
    pub fn hosts(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect()
    }

    /// Waits until every running server serves clients; the time it took.
    pub async fn wait_serving(&self, within: Duration) -> Duration {
        let start = Instant::now();
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            while node.mode().await.is_none() {
                assert!(
                    start.elapsed() < within,
                    "ZooKeeper did not serve within {within:?}; see {}",
                    node.dir.join("zk.log").display()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        start.elapsed()
    }

    /// The index of the current leader.
    pub async fn leader(&self) -> Option<usize> {
        for (i, n) in self.nodes.iter().enumerate() {
            if n.mode().await.as_deref() == Some("leader") {
                return Some(i);
            }
        }
        None
    }

    /// Kills server `i` (SIGKILL), keeping the CPU time it used.
    pub fn kill(&mut self, i: usize) {
        self.spent += self.nodes[i].cpu_seconds();
        self.nodes[i].kill();
    }

    /// Starts server `i` again on its port and data.
    pub fn respawn(&mut self, i: usize, heap_mb: u32) {
        self.nodes[i].spawn(heap_mb);
    }

    /// CPU seconds (user + system) used by the ensemble's processes since it started.
    pub fn cpu_seconds(&self) -> f64 {
        self.spent + self.nodes.iter().map(Node::cpu_seconds).sum::<f64>()
    }
}

impl Node {
    fn spawn(&mut self, heap_mb: u32) {
        let log = std::fs::File::create(self.dir.join("zk.log")).expect("zk log");
        let child = Command::new("java")
            .arg(format!("-Xmx{heap_mb}m"))
            .args(["-Xms128m", "-XX:+UseSerialGC", "-cp", CLASSPATH])
            .arg("-Dzookeeper.log.level=WARN")
            .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
            .arg(self.dir.join("zoo.cfg"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("java runs ZooKeeper (Debian packages zookeeper and a JRE)");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The server's mode (`leader`, `follower`) once it serves clients.
    pub async fn mode(&self) -> Option<String> {
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().ok()?;
        let Ok(Ok(mut s)) =
            tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await
        else {
            return None;
        };
        s.write_all(b"srvr").await.ok()?;
        let mut out = String::new();
        let _ = tokio::time::timeout(Duration::from_millis(500), s.read_to_string(&mut out)).await;
        out.lines()
            .find_map(|l| l.strip_prefix("Mode: "))
            .map(|m| m.trim().to_string())
    }

    /// User + system CPU seconds of the running process (fields 14 and 15 of `/proc/<pid>/stat`).
    fn cpu_seconds(&self) -> f64 {
        let Some(child) = &self.child else {
            return 0.0;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", child.id())) else {
            return 0.0;
        };
        ticks(&stat) as f64 / CLK_TCK
    }
}

/// utime + stime of a `/proc/<pid>/stat` line; the fields after the parenthesised command name.
pub fn ticks(stat: &str) -> u64 {
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    field(14).unwrap_or(0) + field(15).unwrap_or(0)
}

/// Clock ticks per second of `/proc` times (`getconf CLK_TCK`, 100 on Linux).
pub const CLK_TCK: f64 = 100.0;

impl Drop for Ensemble {
    fn drop(&mut self) {
        for node in self.nodes.iter_mut() {
            node.kill();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
