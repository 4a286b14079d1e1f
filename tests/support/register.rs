//! Registration helpers: a native `register:` config for one service `web`, and reading the znodes it
//! writes under [`PATH`].

use std::net::SocketAddr;
use std::time::Duration;
use zookeeper_client as zk;

/// The parent path every registration test registers under.
pub const PATH: &str = "/nerve/services/web/services";

/// A config with an admin server and one registered service `web` at 127.0.0.1:`port`; `checks` is a
/// YAML flow sequence.
pub fn register(zk: &super::zk::ZooKeeper, port: u16, checks: &str) -> String {
    format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nregister:\n  instance_id: i-test\n  drain: 0s\n  services:\n    web:\n      host: 127.0.0.1\n      port: {port}\n      zk_hosts: [{}]\n      zk_path: {PATH}\n      session_timeout: 1s\n      check_interval: 100ms\n      checks: {checks}\n",
        zk.address()
    )
}

/// The name and data of every child of [`PATH`] (none while it does not exist). A failed listing is
/// tried again, never taken for an empty one.
pub async fn nodes(client: &zk::Client) -> Vec<(String, String)> {
    nodes_at(client, PATH).await
}

/// The name and data of every child of `path`, as [`nodes`] reads them.
pub async fn nodes_at(client: &zk::Client, path: &str) -> Vec<(String, String)> {
    let mut tries = 0;
    let children = loop {
        match client.list_children(path).await {
            Ok(children) => break children,
            Err(zk::Error::NoNode) => break Vec::new(),
            Err(e) => {
                tries += 1;
                assert!(tries < 100, "cannot list {path}: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let mut out = Vec::new();
    for c in children {
        if let Ok((data, _)) = client.get_data(&format!("{path}/{c}")).await {
            out.push((c, String::from_utf8_lossy(&data).into_owned()));
        }
    }
    out
}

/// Waits until [`PATH`] has exactly `count` children and returns them; fails after `within`.
pub async fn wait_nodes(
    client: &zk::Client,
    count: usize,
    within: Duration,
) -> Vec<(String, String)> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let n = nodes(client).await;
        if n.len() == count || tokio::time::Instant::now() > deadline {
            assert_eq!(n.len(), count, "{n:?}");
            return n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts that [`PATH`] stays without children for `period`.
pub async fn stays_empty(client: &zk::Client, period: Duration) {
    let deadline = tokio::time::Instant::now() + period;
    while tokio::time::Instant::now() < deadline {
        let n = nodes(client).await;
        assert!(n.is_empty(), "registered although the check fails: {n:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `GET /api/register` until its body satisfies `pred`; returns the last body.
pub async fn wait_view(admin: SocketAddr, within: Duration, pred: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (_, view) = super::http_get(admin, "/api/register").await;
        if pred(&view) || tokio::time::Instant::now() > deadline {
            return view;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `METHOD path` with an empty body and returns the raw response.
pub async fn post(addr: SocketAddr, method: &str, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    tokio::io::AsyncWriteExt::write_all(&mut s, req.as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut s, &mut out)
        .await
        .unwrap();
    out
}
