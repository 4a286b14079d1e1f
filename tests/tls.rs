//! TLS in TCP mode with certificates made at run time (rcgen): origination verified against a CA,
//! wrong CA, hostname mismatch, mTLS required and missing, `verify: false`, and termination on the
//! listener with and without client certificates.

mod support;

use std::net::SocketAddr;
use std::time::Duration;
use support::process::temp_file;
use support::tls::*;
use support::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

fn service(backend: SocketAddr, tls: &str) -> String {
    format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  db:\n    listen: 127.0.0.1:0\n    backends: [{backend}]\n    retries: {{ attempts: 0 }}\n    {tls}\n"
    )
}

async fn fails(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return true;
    };
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn origination_verifies_the_backend() {
    let (ca, other) = (ca("good"), ca("other"));
    let server = leaf(&ca, "server", &["127.0.0.1", "db.internal"]);
    let backend = tls_backend("tls-db", &server, None).await;

    let ok = agent(&service(
        backend,
        &format!("tls_upstream: {{ ca_file: {} }}", ca.file.display()),
    ))
    .await;
    assert_eq!(
        greet(ok.service_addr("db").unwrap()).await.unwrap(),
        "tls-db"
    );
    let named = agent(&service(
        backend,
        &format!(
            "tls_upstream: {{ ca_file: {}, server_name: db.internal }}",
            ca.file.display()
        ),
    ))
    .await;
    assert_eq!(
        greet(named.service_addr("db").unwrap()).await.unwrap(),
        "tls-db"
    );

    let wrong_ca = agent(&service(
        backend,
        &format!("tls_upstream: {{ ca_file: {} }}", other.file.display()),
    ))
    .await;
    assert!(
        fails(wrong_ca.service_addr("db").unwrap()).await,
        "a certificate from another CA is refused"
    );
    let (_, metrics) = http_get(wrong_ca.admin_addr(), "/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "sinew_tls_handshakes_total{result=\"failed\",service=\"db\",side=\"upstream\"}"
        ),
        Some(1.0)
    );

    let mismatch = agent(&service(
        backend,
        &format!(
            "tls_upstream: {{ ca_file: {}, server_name: web.internal }}",
            ca.file.display()
        ),
    ))
    .await;
    assert!(
        fails(mismatch.service_addr("db").unwrap()).await,
        "a certificate for another name is refused"
    );

    let unverified = agent(&service(
        backend,
        &format!(
            "tls_upstream: {{ ca_file: {}, verify: false }}",
            other.file.display()
        ),
    ))
    .await;
    assert_eq!(
        greet(unverified.service_addr("db").unwrap()).await.unwrap(),
        "tls-db",
        "verify: false accepts it"
    );
}

#[tokio::test]
async fn mutual_tls_to_the_backend() {
    let ca = ca("mtls");
    let server = leaf(&ca, "mtls-server", &["127.0.0.1"]);
    let client = leaf(&ca, "mtls-client", &["sinew.client"]);
    let backend = tls_backend("mtls-db", &server, Some(&ca)).await;
    let without = agent(&service(
        backend,
        &format!("tls_upstream: {{ ca_file: {} }}", ca.file.display()),
    ))
    .await;
    assert!(
        fails(without.service_addr("db").unwrap()).await,
        "no client certificate: refused by the backend"
    );
    let with = agent(&service(
        backend,
        &format!(
            "tls_upstream: {{ ca_file: {}, client_cert: {}, client_key: {} }}",
            ca.file.display(),
            client.0.display(),
            client.1.display()
        ),
    ))
    .await;
    let greeting = greet(with.service_addr("db").unwrap()).await.unwrap();
    assert_eq!(
        greeting,
        format!("mtls-db {}", serial_of_file(&client.0)),
        "the backend saw sinew's client certificate"
    );
}

#[tokio::test]
async fn termination_on_the_listener_with_optional_client_certificates() {
    let ca = ca("listen");
    let server = leaf(&ca, "listen-server", &["127.0.0.1"]);
    let client = leaf(&ca, "listen-client", &["app.client"]);
    let backend = EchoBackend::start("plain-backend").await;
    let open = agent(&service(
        backend.addr,
        &format!(
            "tls_listen: {{ cert: {}, key: {} }}",
            server.0.display(),
            server.1.display()
        ),
    ))
    .await;
    assert_eq!(
        tls_client(open.service_addr("db").unwrap(), &ca, None)
            .await
            .unwrap(),
        "plain-backend"
    );

    let mtls = agent(&service(
        backend.addr,
        &format!(
            "tls_listen: {{ cert: {}, key: {}, client_ca: {} }}",
            server.0.display(),
            server.1.display(),
            ca.file.display()
        ),
    ))
    .await;
    let addr = mtls.service_addr("db").unwrap();
    assert!(
        tls_client(addr, &ca, None)
            .await
            .map(|l| l.is_empty())
            .unwrap_or(true),
        "no client certificate: refused"
    );
    assert_eq!(
        tls_client(addr, &ca, Some(&client)).await.unwrap(),
        "plain-backend"
    );
}

#[test]
fn a_missing_or_bad_certificate_file_stops_the_start_with_its_name() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bad = temp_file("not-a-cert.pem", "hello");
    let yaml = service(
        "127.0.0.1:1".parse().unwrap(),
        &format!("tls_upstream: {{ ca_file: {} }}", bad.display()),
    );
    let config = sinew::config::Config::parse(
        &yaml,
        sinew::config::Format::Yaml,
        std::path::Path::new("t.yaml"),
    )
    .unwrap();
    let err = rt
        .block_on(sinew::agent::Agent::start(config))
        .err()
        .expect("start fails");
    assert!(err.to_string().contains("not-a-cert.pem"), "{err}");
}

#[tokio::test]
async fn http_mode_speaks_tls_to_backends_with_alpn() {
    let (ca, other) = (ca("https"), ca("https-other"));
    let server = leaf(&ca, "https-server", &["127.0.0.1"]);
    let backend = https_backend("secure", &server).await;
    for (alpn, version) in [("[h2]", "HTTP/2.0"), ("[http/1.1]", "HTTP/1.1")] {
        let agent = agent(&format!(
            "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    mode: http\n    backends: [{backend}]\n    tls_upstream: {{ ca_file: {}, alpn: {alpn} }}\n",
            ca.file.display()
        ))
        .await;
        let (status, body) = http_get(agent.service_addr("web").unwrap(), "/").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, format!("secure over {version}"));
    }
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    mode: http\n    backends: [{backend}]\n    tls_upstream: {{ ca_file: {} }}\n",
        other.file.display()
    ))
    .await;
    assert_eq!(
        http_get(agent.service_addr("web").unwrap(), "/").await.0,
        502,
        "a backend failing verification"
    );
}

#[tokio::test]
async fn a_rotated_listener_certificate_is_served_without_a_restart() {
    let (old_ca, new_ca) = (ca("rotate-old"), ca("rotate-new"));
    let old = leaf(&old_ca, "rotate-server-old", &["127.0.0.1"]);
    let new = leaf(&new_ca, "rotate-server-new", &["127.0.0.1"]);
    let live = (
        temp_file("rotate-live.pem", ""),
        temp_file("rotate-live.key", ""),
    );
    std::fs::copy(&old.0, &live.0).unwrap();
    std::fs::copy(&old.1, &live.1).unwrap();
    let backend = EchoBackend::start("rotated").await;
    let agent = agent(&service(
        backend.addr,
        &format!(
            "tls_listen: {{ cert: {}, key: {} }}",
            live.0.display(),
            live.1.display()
        ),
    ))
    .await;
    let addr = agent.service_addr("db").unwrap();
    assert_eq!(tls_client(addr, &old_ca, None).await.unwrap(), "rotated");

    // A broken file keeps the current certificate.
    std::fs::write(&live.0, "garbage").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        tls_client(addr, &old_ca, None).await.unwrap(),
        "rotated",
        "the old certificate stays"
    );
    let (_, metrics) = http_get(agent.admin_addr(), "/metrics").await;
    assert!(
        metric(
            &metrics,
            "sinew_tls_certificate_reload_failures_total{service=\"db\",side=\"listen\"}"
        )
        .unwrap_or(0.0)
            >= 1.0
    );

    // Rotation: new handshakes get the new certificate.
    std::fs::copy(&new.1, &live.1).unwrap();
    std::fs::copy(&new.0, &live.0).unwrap();
    let mut rotated = false;
    for _ in 0..40 {
        if tls_client(addr, &new_ca, None)
            .await
            .map(|l| l == "rotated")
            .unwrap_or(false)
        {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rotated, "the new certificate is served within seconds");
    assert!(
        tls_client(addr, &old_ca, None)
            .await
            .map(|l| l.is_empty())
            .unwrap_or(true),
        "the old CA no longer matches"
    );
}
