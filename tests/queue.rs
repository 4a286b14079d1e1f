//! Queueing with `max_connections`: excess requests wait for a slot, a full queue rejects at once, a
//! waiter that outlives `timeouts.queue` is turned away; in TCP mode a waiting connection is served
//! as soon as a slot frees.

mod support;

use std::time::Duration;
use support::http::HttpBackend;
use support::*;
use tokio::net::TcpStream;

#[tokio::test]
async fn http_requests_queue_for_a_slot_and_overflow_gets_503() {
    let backend = HttpBackend::slow("slow", Duration::from_millis(300)).await;
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    mode: http\n    backends: [{}]\n    max_connections: 1\n    max_queue: 1\n    timeouts: {{ queue: 2s }}\n",
        backend.hostport()
    ))
    .await;
    let addr = agent.service_addr("web").unwrap();
    let mut tasks = Vec::new();
    for i in 0..3u64 {
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50 * i)).await;
            let mut s = TcpStream::connect(addr).await.unwrap();
            let req = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
            tokio::io::AsyncWriteExt::write_all(&mut s, req.as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            tokio::io::AsyncReadExt::read_to_string(&mut s, &mut out)
                .await
                .unwrap();
            out
        }));
    }
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.unwrap());
    }
    assert!(replies[0].starts_with("HTTP/1.1 200"), "{}", replies[0]);
    assert!(
        replies[1].starts_with("HTTP/1.1 200"),
        "queued, then served: {}",
        replies[1]
    );
    assert!(replies[2].starts_with("HTTP/1.1 503"), "{}", replies[2]);
    assert!(
        replies[2].contains("x-sinew-error: queue_full"),
        "{}",
        replies[2]
    );
    let (_, metrics) = http_get(agent.admin_addr(), "/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "sinew_service_queue_rejected_total{reason=\"full\",service=\"web\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &metrics,
            "sinew_service_queue_wait_seconds_count{service=\"web\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn http_queue_timeout_answers_503() {
    let backend = HttpBackend::slow("slow", Duration::from_millis(800)).await;
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    mode: http\n    backends: [{}]\n    max_connections: 1\n    timeouts: {{ queue: 100ms }}\n",
        backend.hostport()
    ))
    .await;
    let addr = agent.service_addr("web").unwrap();
    let first = tokio::spawn(async move { http_get(addr, "/").await.0 });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut s,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut out = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut s, &mut out)
        .await
        .unwrap();
    assert!(
        out.starts_with("HTTP/1.1 503") && out.contains("queue_timeout"),
        "{out}"
    );
    assert_eq!(first.await.unwrap(), 200);
}

#[tokio::test]
async fn tcp_connections_wait_for_a_free_slot() {
    let backend = EchoBackend::start("a").await;
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  db:\n    listen: 127.0.0.1:0\n    backends: [{}]\n    max_connections: 1\n    timeouts: {{ queue: 5s }}\n",
        backend.hostport()
    ))
    .await;
    let addr = agent.service_addr("db").unwrap();
    let mut first = TcpStream::connect(addr).await.unwrap();
    assert_eq!(read_line(&mut first).await.unwrap(), "a");
    let second = tokio::spawn(async move { greet(addr).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !second.is_finished(),
        "the second connection waits while the slot is taken"
    );
    assert_eq!(backend.accepted(), 1);
    drop(first);
    assert_eq!(second.await.unwrap().unwrap(), "a");
}
