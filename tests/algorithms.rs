//! The load-aware and affinity algorithms against real backends: P2C peak-EWMA steers away from a slow
//! backend; consistent hashing keeps clients (by address or header) on their backend, also when one is added.

mod support;

use sinew::balance::{Backend, Origin};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use support::http::HttpBackend;
use support::*;
use tokio::net::TcpSocket;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_ewma_steers_away_from_a_slow_backend() {
    let fast = HttpBackend::start("fast").await;
    let slow = HttpBackend::slow("slow", Duration::from_millis(80)).await;
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    mode: http\n    balance: p2c_ewma\n    backends: [{}, {}]\n",
        fast.hostport(),
        slow.hostport()
    ))
    .await;
    let addr = agent.service_addr("web").unwrap();
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(tokio::spawn(async move {
            for _ in 0..30 {
                assert_eq!(http_get(addr, "/").await.0, 200);
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let (f, s) = (fast.requests(), slow.requests());
    assert_eq!(f + s, 120);
    assert!(
        s * 5 < f,
        "the slow backend gets far fewer requests: fast {f}, slow {s}"
    );
}

async fn from(source: &str, addr: SocketAddr) -> String {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    read_line(&mut stream).await.unwrap()
}

#[tokio::test]
async fn hash_keeps_each_client_address_on_its_backend() {
    let backends: Vec<EchoBackend> = vec![
        EchoBackend::start("a").await,
        EchoBackend::start("b").await,
        EchoBackend::start("c").await,
    ];
    let list: Vec<String> = backends.iter().map(|b| b.hostport()).collect();
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  db:\n    listen: 127.0.0.1:0\n    balance: hash\n    backends: [{}]\n",
        list.join(", ")
    ))
    .await;
    let addr = agent.service_addr("db").unwrap();
    let sources: Vec<String> = (1..=40).map(|i| format!("127.0.0.{i}")).collect();
    let mut first = HashMap::new();
    for s in &sources {
        first.insert(s.clone(), from(s, addr).await);
    }
    assert!(
        first
            .values()
            .collect::<std::collections::HashSet<_>>()
            .len()
            == 3,
        "keys spread: {first:?}"
    );
    for s in &sources {
        assert_eq!(from(s, addr).await, first[s], "{s} stays on its backend");
    }
    // A fourth backend takes over only some clients; the others stay where they were.
    let d = EchoBackend::start("d").await;
    let mut set: Vec<Backend> = backends
        .iter()
        .chain(std::iter::once(&d))
        .map(|b| Backend::new("127.0.0.1", b.addr.port(), 1, Origin::Static))
        .collect();
    agent
        .balancer("db")
        .unwrap()
        .update(std::mem::take(&mut set));
    let mut moved = 0;
    for s in &sources {
        let now = from(s, addr).await;
        if now != first[s] {
            assert_eq!(now, "d", "a moved client moves to the new backend only");
            moved += 1;
        }
    }
    assert!(
        (1..=20).contains(&moved),
        "about a quarter of clients move: {moved}"
    );
}

#[tokio::test]
async fn hash_on_a_header_in_http_mode() {
    let (a, b) = (HttpBackend::start("a").await, HttpBackend::start("b").await);
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    mode: http\n    balance: hash\n    hash_header: x-user\n    backends: [{}, {}]\n",
        a.hostport(),
        b.hostport()
    ))
    .await;
    let addr = agent.service_addr("web").unwrap();
    let mut owners = HashMap::new();
    for round in 0..3 {
        for user in 0..20 {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let req = format!(
                "GET / HTTP/1.1\r\nHost: x\r\nx-user: user-{user}\r\nConnection: close\r\n\r\n"
            );
            tokio::io::AsyncWriteExt::write_all(&mut s, req.as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            tokio::io::AsyncReadExt::read_to_string(&mut s, &mut out)
                .await
                .unwrap();
            let name = out.rsplit("\r\n\r\n").next().unwrap().to_string();
            if round == 0 {
                owners.insert(user, name);
            } else {
                assert_eq!(owners[&user], name, "user-{user} stays on its backend");
            }
        }
    }
    assert_eq!(
        owners
            .values()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        2,
        "{owners:?}"
    );
}
