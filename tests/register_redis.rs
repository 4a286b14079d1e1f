//! The redis registration check against a real redis-server: it must write a key and read it back, so a
//! wrong password, a server that accepts connections but refuses writes, or a stopped server keeps (or
//! takes) the service out of ZooKeeper.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::register::*;
use support::zk::ZooKeeper;
use support::*;

const PASSWORD: &str = "s3cret";

/// A redis-server on a free loopback port with a password and no persistence, stopped by PID on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    /// Starts a server with `extra` arguments after the common ones.
    async fn start(extra: &[&str]) -> Self {
        Self::start_on(support::process::free_port(), extra).await
    }

    async fn start_on(port: u16, extra: &[&str]) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--requirepass",
                PASSWORD,
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "redis-server is installed (Debian package redis-server; bash .ci/run installs it)",
            );
        support::process::wait_listening(SocketAddr::from(([127, 0, 0, 1], port))).await;
        Self { child, port }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn check(password: &str) -> String {
    format!("[{{ type: redis, password: {password}, db: 1, timeout: 500ms, fall: 2 }}]")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_check_writes_and_reads_back() {
    let (zk, redis) = tokio::join!(ZooKeeper::start(), Redis::start(&[]));
    let agent = agent(&register(&zk, redis.port, &check(PASSWORD))).await;
    let client = zk.client().await;
    let n = wait_nodes(&client, 1, Duration::from_secs(5)).await;
    assert_eq!(
        n[0].1,
        format!(
            r#"{{"host":"127.0.0.1","port":{},"name":"i-test"}}"#,
            redis.port
        )
    );
    agent.shutdown(Duration::from_secs(1)).await;
    wait_nodes(&client, 0, Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_redis_password_fails_and_registers_nothing() {
    let (zk, redis) = tokio::join!(ZooKeeper::start(), Redis::start(&[]));
    let agent = agent(&register(&zk, redis.port, &check("wrong"))).await;
    let view = wait_view(agent.admin_addr(), Duration::from_secs(5), |v| {
        v.contains("AUTH: -WRONGPASS")
    })
    .await;
    assert!(
        view.contains("AUTH: -WRONGPASS") && view.contains("\"up\": false"),
        "{view}"
    );
    stays_empty(&zk.client().await, Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_accepts_connections_but_cannot_store_registers_nothing() {
    // Writes refused for want of replicas, and writes refused for want of memory: both answer PING, both
    // accept AUTH and SELECT, neither stores.
    for (args, reason) in [
        (&["--min-replicas-to-write", "1"][..], "SET: -NOREPLICAS"),
        (
            &["--maxmemory", "1", "--maxmemory-policy", "noeviction"][..],
            "SET: -OOM",
        ),
    ] {
        let (zk, redis) = tokio::join!(ZooKeeper::start(), Redis::start(args));
        let agent = agent(&register(&zk, redis.port, &check(PASSWORD))).await;
        let view = wait_view(agent.admin_addr(), Duration::from_secs(5), |v| {
            v.contains(reason)
        })
        .await;
        assert!(
            view.contains(reason) && view.contains("\"up\": false"),
            "{args:?}: {view}"
        );
        stays_empty(&zk.client().await, Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_znode_goes_when_redis_stops_and_comes_back_with_it() {
    let (zk, redis) = tokio::join!(ZooKeeper::start(), Redis::start(&[]));
    let port = redis.port;
    let agent = agent(&register(&zk, port, &check(PASSWORD))).await;
    let client = zk.client().await;
    wait_nodes(&client, 1, Duration::from_secs(5)).await;

    drop(redis);
    // fall 2 at a 100 ms interval, plus slack.
    wait_nodes(&client, 0, Duration::from_secs(2)).await;
    let view = wait_view(agent.admin_addr(), Duration::from_secs(2), |v| {
        v.contains("connect 127.0.0.1")
    })
    .await;
    assert!(
        view.contains("connect 127.0.0.1") && view.contains("\"up\": false"),
        "{view}"
    );

    let _back = Redis::start_on(port, &[]).await;
    wait_nodes(&client, 1, Duration::from_secs(5)).await;
}
