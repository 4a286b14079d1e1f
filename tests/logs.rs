//! Logs as an operator ships them: the built binary with `--log-format json` (one flat object per
//! line), the access log of HTTP services and the connection log of TCP services.

mod support;

use serde_json::Value;
use std::process::Command;
use std::time::Duration;
use support::logged::Logged;
use support::process::{free_port, temp_file, BIN};

#[tokio::test]
async fn json_logs_are_flat_objects_carrying_span_fields_at_the_top_level() {
    let backends = temp_file(
        "logs-json-backends.json",
        r#"["127.0.0.1:9", "127.0.0.1:10"]"#,
    );
    let config = format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:{}\n    discovery: {{ file: {} }}\n",
        free_port(),
        backends.display()
    );
    let sinew = Logged::start("logs-json", &config, "info");
    let read = sinew
        .wait_for(1, |l| l["message"] == "backends file read")
        .await;
    let line = &read[0];
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["target"], "sinew::discovery::file");
    assert_eq!(line["service"], "web", "the span's field at the top level");
    assert_eq!(line["path"], backends.display().to_string());
    assert_eq!(line["backends"], 2, "the event's field, a number");
    for line in sinew.lines() {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(line[key].is_string(), "{key} in {line:?}");
        }
        for (key, value) in line.as_object().expect("an object") {
            assert!(
                !value.is_object() && !value.is_array(),
                "nested {key}: {line:?}"
            );
        }
    }
}

/// Sends `request` on a new connection to `addr` and reads the whole answer (the request closes it).
async fn exchange(addr: std::net::SocketAddr, request: &str) -> (String, std::net::SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let local = s.local_addr().expect("local addr");
    s.write_all(request.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer))
        .await
        .expect("answer in time")
        .expect("read");
    (String::from_utf8_lossy(&answer).into_owned(), local)
}

/// A field that must be a whole number of microseconds.
fn micros(line: &Value, key: &str) -> u64 {
    line[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a number: {line}"))
}

#[test]
fn a_fatal_error_is_a_json_line_too() {
    let config = temp_file("logs-fatal.yaml", "services: {}\nbogus: 1\n");
    let out = Command::new(BIN)
        .args(["--log-format", "json", "run", "--config"])
        .arg(&config)
        .output()
        .expect("run sinew");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().expect("a line");
    let line: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {err}"));
    assert_eq!(line["level"], "ERROR");
    assert_eq!(line["message"], "sinew exits");
    assert!(
        line["error"].as_str().is_some_and(|e| e.contains("bogus")),
        "{line}"
    );
}

#[tokio::test]
async fn the_access_log_has_one_line_per_request_with_every_field() {
    let backend = support::http::HttpBackend::start("b1").await;
    let dead = support::dead_addr().await;
    let (web, down) = (free_port(), free_port());
    let config = format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:{web}\n    mode: http\n    backends: [{}]\n    http: {{ access_log: true }}\n  down:\n    listen: 127.0.0.1:{down}\n    mode: http\n    backends: [{dead}]\n    retries: {{ attempts: 1, backoff: {{ base: 1ms, max: 2ms }} }}\n    http: {{ access_log: true }}\n",
        backend.hostport()
    );
    let sinew = Logged::start("logs-access", &config, "info");
    let web: std::net::SocketAddr = format!("127.0.0.1:{web}").parse().unwrap();
    let down: std::net::SocketAddr = format!("127.0.0.1:{down}").parse().unwrap();
    support::process::wait_listening(web).await;
    support::process::wait_listening(down).await;
    let access = |l: &Value| l["target"] == "sinew::access";
    // wait_listening's connections carry no request: nothing is logged for them.
    let (answer, echo_client) = exchange(
        web,
        "POST /echo?x=1&y=2 HTTP/1.1\r\nHost: web.example\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (answer, missing_client) = exchange(
        web,
        "GET /status/404 HTTP/1.1\r\nHost: web.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    let (answer, _) = exchange(
        down,
        "GET /x HTTP/1.1\r\nHost: down.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    let lines = sinew.wait_for(3, access).await;
    assert_eq!(lines.len(), 3, "one line per request: {lines:#?}");

    let echo = lines
        .iter()
        .find(|l| l["path"] == "/echo?x=1&y=2")
        .expect("echo line");
    assert_eq!(echo["service"], "web");
    assert_eq!(echo["client"], echo_client.to_string());
    assert_eq!(echo["host"], "web.example");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["status"], 200);
    assert_eq!(echo["bytes_in"], 5);
    assert_eq!(echo["bytes_out"], 5, "the echoed body: {echo}");
    assert_eq!(echo["upstream"], backend.hostport());
    assert_eq!(echo["retries"], 0);
    assert_eq!(echo["termination"], "done");
    let (queue, connect) = (micros(echo, "queue_us"), micros(echo, "connect_us"));
    let (head, total) = (micros(echo, "response_us"), micros(echo, "total_us"));
    assert!(queue <= head && connect <= head && head <= total, "{echo}");

    let missing = lines
        .iter()
        .find(|l| l["path"] == "/status/404")
        .expect("404 line");
    assert_eq!(missing["client"], missing_client.to_string());
    assert_eq!(missing["method"], "GET");
    assert_eq!(missing["status"], 404);
    assert_eq!(missing["bytes_in"], 0);
    assert_eq!(missing["upstream"], backend.hostport());
    assert_eq!(missing["termination"], "done");
    assert!(
        missing.get("connect_us").is_none(),
        "the first request's connection was reused: {missing}"
    );

    let failed = lines
        .iter()
        .find(|l| l["service"] == "down")
        .expect("down line");
    assert_eq!(failed["host"], "down.example");
    assert_eq!(failed["path"], "/x");
    assert_eq!(failed["status"], 502);
    assert_eq!(failed["upstream"], "-");
    assert_eq!(failed["retries"], 1);
    assert_eq!(failed["termination"], "connect_failure");
    assert!(
        failed["bytes_out"].as_u64().is_some_and(|n| n > 0),
        "{failed}"
    );
    assert!(failed.get("response_us").is_none(), "{failed}");
    micros(failed, "total_us");
}

#[tokio::test]
async fn the_connection_log_has_one_line_per_closed_tcp_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = support::EchoBackend::start("echo").await;
    let dead = support::dead_addr().await;
    let (tcp, down, quiet) = (free_port(), free_port(), free_port());
    let config = format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  tcp:\n    listen: 127.0.0.1:{tcp}\n    backends: [{}]\n    connection_log: true\n  down:\n    listen: 127.0.0.1:{down}\n    backends: [{dead}]\n    retries: {{ attempts: 0 }}\n    connection_log: true\n  quiet:\n    listen: 127.0.0.1:{quiet}\n    backends: [{}]\n",
        backend.hostport(),
        backend.hostport()
    );
    let sinew = Logged::start("logs-connection", &config, "info");
    let addr = |p: u16| -> std::net::SocketAddr { format!("127.0.0.1:{p}").parse().unwrap() };
    support::process::wait_listening(addr(tcp)).await;
    support::process::wait_listening(addr(down)).await;
    support::process::wait_listening(addr(quiet)).await;
    let connections = |l: &Value| l["target"] == "sinew::connection";
    // wait_listening's own connections are logged too: count from here.
    let before = sinew.wait_for(2, connections).await.len();

    let mut clients = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(addr(tcp))
            .await
            .expect("connect");
        clients.push(s.local_addr().expect("local").to_string());
        // "echo\n" greets, then the 11 bytes come back.
        s.write_all(b"hello world").await.expect("send");
        let mut got = vec![0u8; 5 + 11];
        s.read_exact(&mut got).await.expect("echoed");
        s.shutdown().await.expect("shutdown");
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
    }
    let mut q = tokio::net::TcpStream::connect(addr(quiet))
        .await
        .expect("connect");
    let mut greeting = [0u8; 5];
    q.read_exact(&mut greeting).await.expect("greeting");
    drop(q);
    let _ = tokio::net::TcpStream::connect(addr(down)).await;

    let lines = sinew.wait_for(before + 3, connections).await;
    for client in &clients {
        let line = lines
            .iter()
            .find(|l| l["client"] == *client)
            .unwrap_or_else(|| panic!("no line for {client}: {lines:#?}"));
        assert_eq!(line["service"], "tcp");
        assert_eq!(line["upstream"], backend.hostport());
        assert_eq!(line["bytes_in"], 11);
        assert_eq!(line["bytes_out"], 16);
        assert_eq!(line["termination"], "done");
        assert!(micros(line, "connect_us") <= micros(line, "duration_us"));
    }
    let failed: Vec<_> = lines.iter().filter(|l| l["service"] == "down").collect();
    assert!(!failed.is_empty(), "{lines:#?}");
    for line in failed {
        assert_eq!(line["upstream"], "-");
        assert_eq!(line["termination"], "no_backend");
        assert_eq!(line["bytes_in"], 0);
        micros(line, "duration_us");
    }
    assert!(
        lines.iter().all(|l| l["service"] != "quiet"),
        "connection_log is off by default: {lines:#?}"
    );
}

/// Runs sinew watching a real ZooKeeper with JSON logs at `level`, kills the server for two seconds
/// twice over (the session reconnects each time), and returns every line.
async fn zookeeper_run(name: &str, level: &str) -> Vec<Value> {
    let mut zk = support::zk::ZooKeeper::start().await;
    let config = format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:{}\n    discovery:\n      zookeeper: {{ hosts: [{}], path: /logs/web, session_timeout: 30s }}\n",
        free_port(),
        zk.address()
    );
    let sinew = Logged::start(name, &config, level);
    let said = |m: &'static str| move |l: &Value| l["message"] == m;
    sinew
        .wait_for(1, said("ZooKeeper session established"))
        .await;
    for round in 1..=2 {
        zk.kill();
        sinew
            .wait_for(
                round,
                said("ZooKeeper disconnected; last known backends keep serving"),
            )
            .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        zk.restart().await;
        sinew
            .wait_for(
                round,
                said("ZooKeeper reconnected; re-reading watched paths"),
            )
            .await;
        // The client library reports the session connected before its handshake with the server
        // ends; a server lost in that window leaves the reported state at connected until the
        // client next reaches one, so the next outage waits for the handshake to end.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    sinew.lines()
}

#[tokio::test]
async fn the_zookeeper_clients_info_lines_are_not_repeated_per_session_event() {
    let lines = zookeeper_run("logs-zk", "info").await;
    let count = |m: &str| lines.iter().filter(|l| l["message"] == m).count();
    // sinew's own lines say each session event once.
    assert_eq!(count("ZooKeeper session established"), 1, "{lines:#?}");
    assert_eq!(
        count("ZooKeeper disconnected; last known backends keep serving"),
        2,
        "{lines:#?}"
    );
    assert_eq!(
        count("ZooKeeper reconnected; re-reading watched paths"),
        2,
        "{lines:#?}"
    );
    // The client library's own (one or two per connect, state change and session) are held back
    // below WARN.
    let library: Vec<_> = lines
        .iter()
        .filter(|l| {
            l["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("zookeeper_client"))
        })
        .collect();
    assert!(
        library
            .iter()
            .all(|l| l["level"] == "WARN" || l["level"] == "ERROR"),
        "{library:#?}"
    );
}
