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
    /// Its client port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl ZooKeeper {
    /// Starts a server and waits until it serves.
    pub async fn start() -> Self {
        let port = super::process::free_port();
        let dir = std::env::temp_dir().join(format!("sinew-zk-{}-{port}", std::process::id()));
        std::fs::create_dir_all(dir.join("data")).expect("zk data dir");
        let cfg = format!(
            "tickTime=200\ninitLimit=20\nsyncLimit=5\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n4lw.commands.whitelist=*\nforceSync=no\nminSessionTimeout=400\nmaxSessionTimeout=30000\n",
            dir.join("data").display()
        );
        std::fs::write(dir.join("zoo.cfg"), cfg).expect("zoo.cfg");
        let mut zk = Self {
            port,
            dir,
            child: None,
        };
        zk.launch().await;
        zk
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn launch(&mut self) {
        let log = std::fs::File::create(self.dir.join("zk.log")).expect("zk log");
        let child = Command::new("java")
            .args(["-Xms32m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp", CLASSPATH])
            .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
            .arg(self.dir.join("zoo.cfg"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("java runs ZooKeeper (Debian packages zookeeper and a JRE; bash .ci/run installs them)");
        self.child = Some(child);
        for _ in 0..600 {
            if self.serving().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "ZooKeeper did not serve within 30 s; see {}",
            self.dir.join("zk.log").display()
        );
    }

    /// True once `srvr` reports a mode (standalone), i.e. the server serves clients.
    async fn serving(&self) -> bool {
        let addr: SocketAddr = match self.address().parse() {
            Ok(a) => a,
            Err(_) => return false,
        };
        let Ok(Ok(mut s)) =
            tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await
        else {
            return false;
        };
        if s.write_all(b"srvr").await.is_err() {
            return false;
        }
        let mut out = String::new();
        let _ = tokio::time::timeout(Duration::from_millis(300), s.read_to_string(&mut out)).await;
        out.contains("Mode: ")
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
        self.launch().await;
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

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        self.resume();
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const PERSISTENT: zk::CreateOptions<'static> =
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
