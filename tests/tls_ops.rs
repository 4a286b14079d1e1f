//! Operating TLS, with certificates made at run time (rcgen): health checks over TLS, handshake
//! failures counted by reason, the certificate-expiry gauge, and certificates rotated under load on the
//! listener and towards the backends.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use support::tls::*;
use support::*;
use tokio::io::AsyncWriteExt;

/// The state, and the last check's (passed, detail), of a backend in the admin API.
async fn backend(admin: SocketAddr, address: &str) -> (String, bool, String) {
    let (_, body) = http_get(admin, "/api/services").await;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let b = json["services"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == address)
        .cloned()
        .unwrap_or_default();
    (
        b["state"].as_str().unwrap_or_default().to_string(),
        b["last_check"]["passed"].as_bool().unwrap_or(false),
        b["last_check"]["detail"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// Polls the admin API until `address` is in state `want` with a last check, or 3 s pass.
async fn wait_checked(admin: SocketAddr, address: &str, want: &str) -> (String, bool, String) {
    let mut seen = backend(admin, address).await;
    for _ in 0..150 {
        if seen.0 == want && !seen.2.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        seen = backend(admin, address).await;
    }
    seen
}

/// Polls `/metrics` until `series` has `want`, or 4 s pass; returns the last value seen.
async fn wait_metric(admin: SocketAddr, series: &str, want: f64) -> Option<f64> {
    let mut value = None;
    for _ in 0..200 {
        let (_, body) = http_get(admin, "/metrics").await;
        value = metric(&body, series);
        if value == Some(want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    value
}

#[tokio::test]
async fn tcp_health_checks_pass_only_when_the_tls_handshake_does() {
    let (ca, other) = (ca("hc"), ca("hc-other"));
    let good = tls_backend("good", &leaf(&ca, "hc-good", &["127.0.0.1"]), None).await;
    let bad = tls_backend("bad", &leaf(&other, "hc-bad", &["127.0.0.1"]), None).await;
    let plain = EchoBackend::start("plain").await;
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  db:\n    listen: 127.0.0.1:0\n    backends: [{good}, {bad}, {}]\n    retries: {{ attempts: 0 }}\n    panic_threshold: 0\n    tls_upstream: {{ ca_file: {} }}\n    health_check: {{ type: tcp, interval: 100ms, rise: 1, fall: 1, timeout: 1s }}\n",
        plain.hostport(),
        ca.file.display()
    ))
    .await;
    let admin = agent.admin_addr();
    let (state, passed, detail) = wait_checked(admin, &bad.to_string(), "down").await;
    assert_eq!(
        (state.as_str(), passed),
        ("down", false),
        "a backend whose certificate another CA signed is down: {detail}"
    );
    assert!(detail.contains("TLS handshake"), "{detail}");
    let (state, _, detail) = wait_checked(admin, &plain.hostport(), "down").await;
    assert_eq!(state, "down", "a backend that does not speak TLS: {detail}");
    let (state, passed, detail) = wait_checked(admin, &good.to_string(), "up").await;
    assert_eq!(
        (state.as_str(), passed, detail.as_str()),
        ("up", true, "TLS handshake done")
    );
    let addr = agent.service_addr("db").unwrap();
    for _ in 0..10 {
        assert_eq!(greet(addr).await.unwrap(), "good");
    }
    let (_, metrics) = http_get(admin, "/metrics").await;
    let unknown_ca = "sinew_tls_handshake_failures_total{reason=\"unknown_ca\",service=\"db\",side=\"upstream\"}";
    assert!(
        metric(&metrics, unknown_ca).unwrap_or(0.0) >= 1.0,
        "check handshakes are counted"
    );
}

#[tokio::test]
async fn http_health_checks_send_their_get_over_tls() {
    let (ca, other) = (ca("hc-http"), ca("hc-http-other"));
    let good = https_backend("good", &leaf(&ca, "hc-http-good", &["127.0.0.1"])).await;
    let bad = https_backend("bad", &leaf(&other, "hc-http-bad", &["127.0.0.1"])).await;
    for alpn in ["[h2]", "[http/1.1]"] {
        let agent = agent(&format!(
            "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    mode: http\n    backends: [{good}, {bad}]\n    panic_threshold: 0\n    tls_upstream: {{ ca_file: {}, alpn: {alpn} }}\n    health_check: {{ type: http, path: /health, expect_body: good, interval: 100ms, rise: 1, fall: 1, timeout: 1s }}\n",
            ca.file.display()
        ))
        .await;
        let admin = agent.admin_addr();
        let (state, passed, detail) = wait_checked(admin, &good.to_string(), "up").await;
        assert_eq!(
            (state.as_str(), passed, detail.as_str()),
            ("up", true, "HTTP 200"),
            "ALPN {alpn}"
        );
        let (state, _, detail) = wait_checked(admin, &bad.to_string(), "down").await;
        assert_eq!(state, "down", "ALPN {alpn}: {detail}");
        assert!(detail.contains("TLS handshake"), "{detail}");
    }
}

#[tokio::test]
async fn handshake_failures_are_counted_by_reason() {
    let (ca, other) = (ca("why"), ca("why-other"));
    let expired = leaf_with(&ca, "why-expired", &["127.0.0.1"], |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let expired_backend = tls_backend("expired", &expired, None).await;
    let good_backend = tls_backend("fine", &leaf(&ca, "why-good", &["127.0.0.1"]), None).await;
    let server = leaf(&ca, "why-listen", &["127.0.0.1"]);
    let stranger = leaf(&other, "why-stranger", &["app.client"]);
    let plain = EchoBackend::start("plain").await;
    let ca_file = ca.file.display();
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  expired:\n    listen: 127.0.0.1:0\n    backends: [{expired_backend}]\n    retries: {{ attempts: 0 }}\n    tls_upstream: {{ ca_file: {ca_file} }}\n  mismatch:\n    listen: 127.0.0.1:0\n    backends: [{good_backend}]\n    retries: {{ attempts: 0 }}\n    tls_upstream: {{ ca_file: {ca_file}, server_name: other.internal }}\n  front:\n    listen: 127.0.0.1:0\n    backends: [{}]\n    tls_listen: {{ cert: {}, key: {}, client_ca: {ca_file} }}\n",
        plain.hostport(),
        server.0.display(),
        server.1.display()
    ))
    .await;
    let admin = agent.admin_addr();
    for service in ["expired", "mismatch"] {
        let greeting = greet(agent.service_addr(service).unwrap()).await;
        assert!(greeting.is_err(), "{service}: refused, got {greeting:?}");
    }
    let front = agent.service_addr("front").unwrap();
    let without = tls_client(front, &ca, None).await;
    assert!(
        without.as_ref().map(|l| l.is_empty()).unwrap_or(true),
        "mTLS required and no client certificate: refused, got {without:?}"
    );
    let foreign = tls_client(front, &ca, Some(&stranger)).await;
    assert!(
        foreign.as_ref().map(|l| l.is_empty()).unwrap_or(true),
        "a client certificate from another CA: refused, got {foreign:?}"
    );
    for (service, side, reason) in [
        ("expired", "upstream", "expired"),
        ("mismatch", "upstream", "hostname_mismatch"),
        ("front", "listen", "no_client_cert"),
        ("front", "listen", "unknown_ca"),
    ] {
        let series = format!(
            "sinew_tls_handshake_failures_total{{reason=\"{reason}\",service=\"{service}\",side=\"{side}\"}}"
        );
        assert_eq!(
            wait_metric(admin, &series, 1.0).await,
            Some(1.0),
            "{series}"
        );
    }
    let (_, metrics) = http_get(admin, "/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "sinew_tls_handshakes_total{result=\"failed\",service=\"front\",side=\"listen\"}"
        ),
        Some(2.0)
    );
}

#[tokio::test]
async fn certificate_expiry_is_exported_and_follows_rotation() {
    let ca = ca("expiry");
    let until = |y: i32| rcgen::date_time_ymd(y, 1, 2);
    let server = leaf_with(&ca, "expiry-server", &["127.0.0.1"], |p| {
        p.not_after = until(2031)
    });
    let renewed = leaf_with(&ca, "expiry-renewed", &["127.0.0.1"], |p| {
        p.not_after = until(2033)
    });
    let client = leaf_with(&ca, "expiry-client", &["sinew.client"], |p| {
        p.not_after = until(2032)
    });
    let live = (
        support::process::temp_file("expiry-live.pem", ""),
        support::process::temp_file("expiry-live.key", ""),
    );
    install(&server, &live);
    let backend = tls_backend("expiry", &leaf(&ca, "expiry-backend", &["127.0.0.1"]), None).await;
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  db:\n    listen: 127.0.0.1:0\n    backends: [{backend}]\n    tls_upstream: {{ ca_file: {}, client_cert: {}, client_key: {} }}\n    tls_listen: {{ cert: {}, key: {} }}\n",
        ca.file.display(),
        client.0.display(),
        client.1.display(),
        live.0.display(),
        live.1.display()
    ))
    .await;
    let admin = agent.admin_addr();
    let (_, metrics) = http_get(admin, "/metrics").await;
    let gauge = |side: &str, kind: &str| {
        format!("sinew_tls_certificate_expiry_timestamp_seconds{{kind=\"{kind}\",service=\"db\",side=\"{side}\"}}")
    };
    let ca_not_after = {
        let der = rustls::pki_types::CertificateDer::from(ca.cert.der().to_vec());
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        parsed.validity().not_after.timestamp() as f64
    };
    assert_eq!(
        metric(&metrics, &gauge("listen", "cert")),
        Some(until(2031).unix_timestamp() as f64)
    );
    assert_eq!(
        metric(&metrics, &gauge("upstream", "cert")),
        Some(until(2032).unix_timestamp() as f64)
    );
    assert_eq!(
        metric(&metrics, &gauge("upstream", "ca")),
        Some(ca_not_after)
    );
    assert_eq!(
        metric(&metrics, &gauge("listen", "ca")),
        None,
        "no client_ca, no series"
    );

    install(&renewed, &live);
    let want = until(2033).unix_timestamp() as f64;
    assert_eq!(
        wait_metric(admin, &gauge("listen", "cert"), want).await,
        Some(want),
        "the gauge follows the rotated file"
    );
}

#[tokio::test]
async fn a_listener_certificate_rotated_under_load_fails_no_request() {
    let ca = ca("load");
    let old = leaf_with(&ca, "load-old", &["127.0.0.1"], |p| {
        p.serial_number = Some(rcgen::SerialNumber::from(0x1001u64))
    });
    let new = leaf_with(&ca, "load-new", &["127.0.0.1"], |p| {
        p.serial_number = Some(rcgen::SerialNumber::from(0x2002u64))
    });
    let (old_serial, new_serial) = (serial_of_file(&old.0), serial_of_file(&new.0));
    assert_ne!(old_serial, new_serial);
    let live = (
        support::process::temp_file("load-live.pem", ""),
        support::process::temp_file("load-live.key", ""),
    );
    install(&old, &live);
    let backend = EchoBackend::start("loaded").await;
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  db:\n    listen: 127.0.0.1:0\n    backends: [{}]\n    tls_listen: {{ cert: {}, key: {} }}\n",
        backend.hostport(),
        live.0.display(),
        live.1.display()
    ))
    .await;
    let addr = agent.service_addr("db").unwrap();
    let ca = Arc::new(ca);

    // A connection open across the rotation keeps working.
    let mut held = tls_connect(addr, &ca, None).await.unwrap();
    assert_eq!(tls_line(&mut held).await.unwrap(), "loaded");

    // Four clients, each making TLS connections one after another, bounded in count and time.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (ca, new_serial) = (Arc::clone(&ca), new_serial.clone());
        clients.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut failures = 0;
            let mut after_new = 0;
            for _ in 0..2000 {
                if tokio::time::Instant::now() > deadline || after_new >= 20 {
                    break;
                }
                match tls_client_serial(addr, &ca).await {
                    Ok((line, serial)) if line == "loaded" => {
                        if serial == new_serial {
                            after_new += 1;
                        }
                        seen.push(serial);
                    }
                    _ => failures += 1,
                }
            }
            (seen, failures)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    install(&new, &live);
    for client in clients {
        let (seen, failures) = client.await.unwrap();
        assert_eq!(failures, 0, "no failed connection during the rotation");
        assert_eq!(
            seen.first(),
            Some(&old_serial),
            "started on the old certificate"
        );
        assert_eq!(
            seen.last(),
            Some(&new_serial),
            "ended on the new certificate"
        );
        let switch = seen.iter().position(|s| *s == new_serial).unwrap();
        assert!(
            seen[switch..].iter().all(|s| *s == new_serial),
            "once a client has seen the new certificate, every later handshake gets it"
        );
    }
    held.write_all(b"still here\n").await.unwrap();
    assert_eq!(tls_line(&mut held).await.unwrap(), "still here");
}

#[tokio::test]
async fn a_rotated_client_certificate_is_presented_to_new_backend_connections() {
    let ca = ca("up-rotate");
    let first = leaf_with(&ca, "up-first", &["sinew.client"], |p| {
        p.serial_number = Some(rcgen::SerialNumber::from(0xaaaau64))
    });
    let second = leaf_with(&ca, "up-second", &["sinew.client"], |p| {
        p.serial_number = Some(rcgen::SerialNumber::from(0xbbbbu64))
    });
    let live = (
        support::process::temp_file("up-live.pem", ""),
        support::process::temp_file("up-live.key", ""),
    );
    install(&first, &live);
    let backend = tls_backend("mtls", &leaf(&ca, "up-backend", &["127.0.0.1"]), Some(&ca)).await;
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  db:\n    listen: 127.0.0.1:0\n    backends: [{backend}]\n    tls_upstream: {{ ca_file: {}, client_cert: {}, client_key: {} }}\n",
        ca.file.display(),
        live.0.display(),
        live.1.display()
    ))
    .await;
    let (addr, admin) = (agent.service_addr("db").unwrap(), agent.admin_addr());
    let presented = |serial: String| format!("mtls {serial}");
    assert_eq!(
        greet(addr).await.unwrap(),
        presented(serial_of_file(&first.0))
    );
    let mut held = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        read_line(&mut held).await.unwrap(),
        presented(serial_of_file(&first.0))
    );

    // A broken certificate file keeps the current client certificate, counted.
    let aside = live.0.with_extension("tmp");
    std::fs::write(&aside, "garbage").unwrap();
    std::fs::rename(&aside, &live.0).unwrap();
    let failures = "sinew_tls_certificate_reload_failures_total{service=\"db\",side=\"upstream\"}";
    assert_eq!(wait_metric(admin, failures, 1.0).await, Some(1.0));
    assert_eq!(
        greet(addr).await.unwrap(),
        presented(serial_of_file(&first.0))
    );

    install(&second, &live);
    let want = presented(serial_of_file(&second.0));
    let mut rotated = false;
    for _ in 0..40 {
        if greet(addr).await.as_deref() == Ok(want.as_str()) {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        rotated,
        "new connections present the new client certificate"
    );
    held.write_all(b"still here\n").await.unwrap();
    assert_eq!(
        read_line(&mut held).await.unwrap(),
        "still here",
        "a connection made with the old certificate is not dropped"
    );
}
