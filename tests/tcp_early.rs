//! TCP mode with clients that speak first: what a client sent before sinew connected to a backend
//! reaches the backend whole and in order (a small request goes out with the connect, a large one
//! partly), is counted in the byte metrics, and server-speaks-first backends still greet at once.

mod support;

use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn what_a_client_sends_first_reaches_the_backend_whole() {
    let backend = EchoBackend::start("a").await;
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  db:\n    listen: 127.0.0.1:0\n    backends: [{}]\n",
        backend.hostport()
    ))
    .await;
    let addr = agent.service_addr("db").unwrap();
    let mut expected_sent = 0;
    for size in [6usize, 2048, 100_000] {
        let payload: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
        let mut s = TcpStream::connect(addr).await.unwrap();
        // Sent before sinew can have connected to the backend, then half-closed.
        s.write_all(&payload).await.unwrap();
        s.shutdown().await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
            .await
            .expect("echoed in time")
            .unwrap();
        assert_eq!(&got[..2], b"a\n", "the greeting first");
        assert!(
            got[2..] == payload[..],
            "{size} bytes echoed whole and in order"
        );
        expected_sent += size;
    }
    let series = format!(
        "sinew_backend_sent_bytes_total{{backend=\"{}\",name=\"\",service=\"db\"}}",
        backend.hostport()
    );
    let metrics = http_get(agent.admin_addr(), "/metrics").await.1;
    assert_eq!(
        metric(&metrics, &series),
        Some(expected_sent as f64),
        "{metrics}"
    );
}
