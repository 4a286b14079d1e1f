//! An HTTP backend in a separate process (Python's `http.server`), so that a test can kill it with
//! SIGKILL by PID, start it again on the same port, or run it inside a network namespace.
//! `GET /name` answers the backend's name.

use super::netns::Netns;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::net::TcpStream;

/// A `python3 -m http.server` process serving a directory with one file, `name`.
pub struct PyHttp {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its name (the body of `GET /name`).
    pub name: String,
    netns: Option<String>,
    dir: PathBuf,
    child: Option<Child>,
}

impl PyHttp {
    /// Starts a backend on `addr` (inside `netns` when given) and waits until it answers.
    pub async fn start(name: &str, addr: SocketAddr, netns: Option<&Netns>) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "sinew-py-{}-{name}-{}",
            std::process::id(),
            addr.port()
        ));
        std::fs::create_dir_all(&dir).expect("backend dir");
        std::fs::write(dir.join("name"), name).expect("name file");
        let mut backend = Self {
            addr,
            name: name.to_string(),
            netns: netns.map(|n| n.name.clone()),
            dir,
            child: None,
        };
        backend.restart().await;
        backend
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Kills the process with SIGKILL (by PID) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let ok = Command::new("kill")
                .args(["-KILL", &child.id().to_string()])
                .status()
                .expect("kill")
                .success();
            assert!(ok, "kill -KILL {}", child.id());
            let _ = child.wait();
        }
    }

    /// Starts the process (again) on the same address and waits until it accepts connections.
    pub async fn restart(&mut self) {
        self.kill();
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "python3"]);
                c
            }
            None => Command::new("python3"),
        };
        let child = cmd
            .args([
                "-m",
                "http.server",
                "--bind",
                &self.addr.ip().to_string(),
                "--directory",
            ])
            .arg(&self.dir)
            .arg(self.addr.port().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs http.server (bash .ci/run installs python3)");
        self.child = Some(child);
        for _ in 0..250 {
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(self.addr))
                    .await
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("python http.server on {} never listened", self.addr);
    }

    /// `host:port` for configs and znodes.
    pub fn hostport(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for PyHttp {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
