//! Running the `sinew` binary in tests: config files, free ports, a child stopped by PID on drop.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::net::TcpStream;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_sinew");

/// Writes `content` to a file in this test process's temporary directory.
pub fn temp_file(name: &str, content: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sinew-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write temp file");
    path
}

/// Runs `sinew check FLAG FILE`, asserts it succeeds (showing its stderr otherwise), and returns its output.
pub fn check_ok(flag: &str, file: &std::path::Path) -> std::process::Output {
    let out = Command::new(BIN)
        .args(["check", flag])
        .arg(file)
        .output()
        .expect("run sinew check");
    assert!(
        out.status.success(),
        "sinew check {flag} {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A free loopback port (bound and released; good enough for a test that binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A child process, killed and reaped by PID when dropped.
pub struct Proc(pub Child);

impl Proc {
    /// Starts `sinew run --config FILE` with logs discarded.
    pub fn run(config: &std::path::Path) -> Self {
        Proc(
            Command::new(BIN)
                .args(["run", "--config"])
                .arg(config)
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn sinew"),
        )
    }

    /// Sends a signal (`-TERM`, `-INT`, ...) by PID.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.0.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig}");
    }

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until something accepts connections on `addr`.
pub async fn wait_listening(addr: SocketAddr) {
    for _ in 0..250 {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{addr} never listened");
}
