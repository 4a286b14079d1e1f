//! One agent watching many services, at rest: the `sinew` binary itself, with `services` services of
//! `backends` ZooKeeper-registered backends each, measured once it has loaded them all: its resident
//! memory, its CPU while nothing changes, and the ZooKeeper requests it makes meanwhile.

use crate::writer::Writer;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long the agent is watched at rest.
const REST: Duration = Duration::from_secs(30);

/// The `sinew` process and its directory, stopped by PID and removed when dropped.
struct Agent(Child, PathBuf);

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

impl Agent {
    fn stop(&mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Registers the services, runs the agent on them and returns the report's lines.
pub async fn measure(
    writer: &Writer,
    hosts: &[String],
    services: usize,
    backends: usize,
) -> String {
    eprintln!("at rest: registering {services} services x {backends} backends");
    for s in 0..services {
        writer.at(&path(s)).populate(backends).await;
    }
    let dir = std::env::temp_dir().join(format!("sinew-fleet-rest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let admin = free_port();
    let config = dir.join("sinew.yaml");
    std::fs::write(&config, yaml(hosts, admin, services)).expect("write config");
    let log = std::fs::File::create(dir.join("sinew.log")).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_sinew"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start sinew");
    let agent = Agent(child, dir.clone());
    let pid = agent.0.id();
    let started = Instant::now();
    let want = (services * backends) as f64;
    loop {
        let loaded = metrics(admin)
            .await
            .map_or(0.0, |m| sum(&m, "sinew_service_backends{"));
        if loaded >= want {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            let log = std::fs::read_to_string(dir.join("sinew.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            return format!(
                "sinew loaded {loaded} of {want} backends within 300 s; its last log lines:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let load = started.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let requests = |m: &str| sum(m, "sinew_discovery_zookeeper_requests_total{");
    let before = metrics(admin).await.unwrap_or_default();
    let cpu0 = cpu_seconds(pid);
    tokio::time::sleep(REST).await;
    let cpu = cpu_seconds(pid) - cpu0;
    let after = metrics(admin).await.unwrap_or_default();
    let rss = status_kib(pid, "VmRSS:");
    drop(agent);
    format!(
        "{services} services x {backends} backends on one agent (the sinew binary): loaded in {:.1} s; \
         at rest: RSS {:.1} MiB, CPU {:.2} % of a core over {} s, {} ZooKeeper requests",
        load.as_secs_f64(),
        rss as f64 / 1024.0,
        100.0 * cpu / REST.as_secs_f64(),
        REST.as_secs(),
        requests(&after) - requests(&before),
    )
}

/// The ZooKeeper path of service `s`.
fn path(s: usize) -> String {
    format!("/rest/s{s:03}/services")
}

/// The agent's config: every service discovered from ZooKeeper, on a kernel-chosen port.
fn yaml(hosts: &[String], admin: u16, services: usize) -> String {
    let mut y = format!("admin: {{ listen: 127.0.0.1:{admin} }}\nservices:\n");
    for s in 0..services {
        y += &format!(
            "  s{s:03}:\n    listen: 127.0.0.1:0\n    discovery:\n      zookeeper: {{ hosts: [{}], path: {} }}\n",
            hosts.join(", "),
            path(s)
        );
    }
    y
}

/// A port free on loopback now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The agent's `/metrics`, or `None` while it does not answer.
async fn metrics(admin: u16) -> Option<String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", admin))
        .await
        .ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).await.ok()?;
    Some(body)
}

/// The sum of every series of `prefix` (a metric name and `{`).
fn sum(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// CPU time (user + system) of process `pid` so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    crate::ensemble::ticks(&stat) as f64 / crate::ensemble::CLK_TCK
}

/// A `kB` field of `/proc/PID/status`.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status"))
        .unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
