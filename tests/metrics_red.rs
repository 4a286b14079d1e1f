//! The RED families end to end: an agent with HTTP and TCP services, a bounded number of requests and
//! connections, and the exact counts `/metrics` shows for them (requests by status class, failures by
//! cause, histogram counts), the backends' name and labels, and `promtool check metrics` on it all.

mod support;

use std::time::Duration;
use support::http::HttpBackend;
use support::process::temp_file;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `raw` on a fresh connection to `addr` and returns the status of the answer.
async fn raw_status(addr: std::net::SocketAddr, raw: &[u8]) -> u16 {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(raw).await.expect("send");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Asserts every `(series, value)` is in `body` with that value.
fn assert_series(body: &str, expected: &[(String, f64)]) {
    for (series, want) in expected {
        assert_eq!(metric(body, series), Some(*want), "{series} in\n{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_errors_and_timings_count_exactly_per_service_and_backend() {
    let good = HttpBackend::start("good").await;
    let echo = EchoBackend::start("db").await;
    let dead = dead_addr().await;
    let backends = temp_file(
        "metrics-red-web.json",
        &format!(
            r#"[{{"host":"127.0.0.1","port":{},"name":"web-1","labels":{{"az":"us-east-1a","k8s.io/zone":"z1"}}}},
               {{"host":"127.0.0.1","port":{},"name":"web-dead"}}]"#,
            good.addr.port(),
            dead.port()
        ),
    );
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}
services:
  web:
    listen: 127.0.0.1:0
    mode: http
    discovery: {{ file: {} }}
  down:
    listen: 127.0.0.1:0
    mode: http
    backends: [{dead}]
  db:
    listen: 127.0.0.1:0
    backends: [{}]
  nodb:
    listen: 127.0.0.1:0
    backends: [{dead}]
",
        backends.display(),
        echo.hostport()
    ))
    .await;
    let admin = agent.admin_addr();
    let scrape = || async move { http_get(admin, "/metrics").await.1 };

    // Before any traffic, every series of every service is there at 0.
    let body = scrape().await;
    let mut zero = Vec::new();
    for code in ["1xx", "2xx", "3xx", "4xx", "5xx", "other"] {
        zero.push((
            format!("sinew_service_requests_total{{code=\"{code}\",service=\"web\"}}"),
            0.0,
        ));
    }
    for cause in [
        "no_backend",
        "backend_5xx",
        "bad_request",
        "client_aborted",
        "timeout",
    ] {
        zero.push((
            format!("sinew_service_errors_total{{cause=\"{cause}\",service=\"web\"}}"),
            0.0,
        ));
    }
    for cause in ["no_backend", "connect_failure", "idle_timeout", "reset"] {
        zero.push((
            format!("sinew_service_errors_total{{cause=\"{cause}\",service=\"db\"}}"),
            0.0,
        ));
    }
    zero.push((
        "sinew_service_request_duration_seconds_count{service=\"web\"}".into(),
        0.0,
    ));
    zero.push((
        "sinew_service_connect_duration_seconds_count{service=\"db\"}".into(),
        0.0,
    ));
    assert_series(&body, &zero);

    let mut discovered = false;
    for _ in 0..100 {
        if metric(&scrape().await, "sinew_service_backends{service=\"web\"}") == Some(2.0) {
            discovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(discovered, "the backends file was read");

    // web: 8 answered 200, 3 answered 500 by the backend, 2 answered 404, 1 bad head answered 400 by
    // sinew. A request that picks the dead backend first is retried on the good one.
    let web = agent.service_addr("web").unwrap();
    for (path, status, times) in [
        ("/", 200, 8),
        ("/status/500", 500, 3),
        ("/status/404", 404, 2),
    ] {
        for _ in 0..times {
            assert_eq!(http_get(web, path).await.0, status, "{path}");
        }
    }
    let bad = raw_status(web, b"GET / HTTP/1.1\r\nHost: a\r\nno colon here\r\n\r\n").await;
    assert_eq!(bad, 400);
    // down: its only backend refuses, twice.
    let down = agent.service_addr("down").unwrap();
    for _ in 0..2 {
        assert_eq!(http_get(down, "/").await.0, 502);
    }
    // db: three connections through; nodb: two that find no backend to connect to.
    for _ in 0..3 {
        assert_eq!(
            greet(agent.service_addr("db").unwrap()).await.as_deref(),
            Ok("db")
        );
    }
    for _ in 0..2 {
        assert!(greet(agent.service_addr("nodb").unwrap()).await.is_err());
    }
    let closed = |body: &str, service: &str| {
        metric(
            body,
            &format!("sinew_service_connection_duration_seconds_count{{service=\"{service}\"}}"),
        )
    };
    let mut body = scrape().await;
    for _ in 0..100 {
        if closed(&body, "db") == Some(3.0) && closed(&body, "nodb") == Some(2.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        body = scrape().await;
    }

    let good_labels = format!(
        "backend=\"{}\",name=\"web-1\",service=\"web\"",
        good.hostport()
    );
    let dead_labels = format!("backend=\"{dead}\",name=\"web-dead\",service=\"web\"");
    let s = |series: &str, value: f64| (series.to_string(), value);
    let mut expected = vec![
        s(r#"sinew_service_requests_total{code="1xx",service="web"}"#, 0.0),
        s(r#"sinew_service_requests_total{code="2xx",service="web"}"#, 8.0),
        s(r#"sinew_service_requests_total{code="3xx",service="web"}"#, 0.0),
        s(r#"sinew_service_requests_total{code="4xx",service="web"}"#, 3.0),
        s(r#"sinew_service_requests_total{code="5xx",service="web"}"#, 3.0),
        s(r#"sinew_service_requests_total{code="other",service="web"}"#, 0.0),
        s(r#"sinew_service_request_duration_seconds_count{service="web"}"#, 14.0),
        s(r#"sinew_service_errors_total{cause="backend_5xx",service="web"}"#, 3.0),
        s(r#"sinew_service_errors_total{cause="bad_request",service="web"}"#, 1.0),
        // Connect failures retried away never reached a client.
        s(r#"sinew_service_errors_total{cause="connect_failure",service="web"}"#, 0.0),
        s(r#"sinew_service_errors_total{cause="no_backend",service="web"}"#, 0.0),
        s(r#"sinew_service_client_errors_total{kind="bad_request",service="web"}"#, 1.0),
        s(r#"sinew_service_requests_total{code="5xx",service="down"}"#, 2.0),
        s(r#"sinew_service_requests_total{code="2xx",service="down"}"#, 0.0),
        s(r#"sinew_service_request_duration_seconds_count{service="down"}"#, 2.0),
        s(r#"sinew_service_errors_total{cause="connect_failure",service="down"}"#, 2.0),
        s(r#"sinew_service_errors_total{cause="backend_5xx",service="down"}"#, 0.0),
        s(r#"sinew_service_connect_duration_seconds_count{service="db"}"#, 3.0),
        s(r#"sinew_service_connection_duration_seconds_count{service="db"}"#, 3.0),
        s(r#"sinew_service_errors_total{cause="connect_failure",service="db"}"#, 0.0),
        s(r#"sinew_service_connect_duration_seconds_count{service="nodb"}"#, 0.0),
        s(r#"sinew_service_connection_duration_seconds_count{service="nodb"}"#, 2.0),
        s(r#"sinew_service_errors_total{cause="connect_failure",service="nodb"}"#, 2.0),
        s(r#"sinew_service_errors_total{cause="no_backend",service="nodb"}"#, 0.0),
        // The backends' name and labels.
        (
            format!("sinew_backend_info{{{good_labels},label_az=\"us-east-1a\",label_k8s_io_zone=\"z1\"}}"),
            1.0,
        ),
        (format!("sinew_backend_info{{{dead_labels}}}"), 1.0),
        (format!("sinew_backend_errors_total{{{good_labels},cause=\"http_5xx\"}}"), 3.0),
        (format!("sinew_backend_errors_total{{{good_labels},cause=\"connect_failure\"}}"), 0.0),
        (format!("sinew_backend_errors_total{{{good_labels},cause=\"reset\"}}"), 0.0),
        (format!("sinew_backend_http_responses_total{{{good_labels},code=\"5xx\"}}"), 3.0),
        (format!("sinew_backend_http_responses_total{{{good_labels},code=\"2xx\"}}"), 8.0),
        (format!("sinew_backend_http_responses_total{{{good_labels},code=\"4xx\"}}"), 2.0),
    ];
    // The dead backend of web was tried first by some requests (round robin over two), each retried.
    let dead_failures = metric(
        &body,
        &format!("sinew_backend_connect_failures_total{{{dead_labels}}}"),
    )
    .expect("the dead backend's series");
    assert!(dead_failures >= 1.0, "{body}");
    expected.push((
        format!("sinew_backend_errors_total{{{dead_labels},cause=\"connect_failure\"}}"),
        dead_failures,
    ));
    expected.push((
        "sinew_service_retries_total{service=\"web\"}".into(),
        dead_failures,
    ));
    assert_series(&body, &expected);
    // The bad head never reached a backend: 13 requests, all on the good one.
    assert_eq!(good.requests(), 13);
    support::promtool_check_metrics(&body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_client_left_before_its_answer_counts_as_other() {
    let good = HttpBackend::start("good").await;
    let agent = agent(&support::http::web_service(&[good.hostport()], "")).await;
    let web = agent.service_addr("web").unwrap();
    // A chunked body goes to hyper's server path; the client leaves while the backend takes 300 ms.
    let mut s = TcpStream::connect(web).await.expect("connect");
    s.write_all(
        b"POST /slow/300 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await
    .expect("send");
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(s);
    let admin = agent.admin_addr();
    let other = r#"sinew_service_requests_total{code="other",service="web"}"#;
    let mut body = String::new();
    for _ in 0..100 {
        body = http_get(admin, "/metrics").await.1;
        if metric(&body, other) == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = |series: &str, value: f64| (series.to_string(), value);
    assert_series(
        &body,
        &[
            s(other, 1.0),
            s(
                r#"sinew_service_requests_total{code="2xx",service="web"}"#,
                0.0,
            ),
            s(
                r#"sinew_service_errors_total{cause="client_aborted",service="web"}"#,
                1.0,
            ),
            s(
                r#"sinew_service_request_duration_seconds_count{service="web"}"#,
                1.0,
            ),
        ],
    );
}
