//! Health from the balancing side against real backends: active TCP and HTTP checks take a backend out
//! and bring it back, a backend that accepts but never answers fails its HTTP check by timeout, and
//! passive outlier detection ejects a backend that fails real traffic, and takes it back when the
//! ejection ends.

mod support;

use std::time::Duration;
use support::http::HttpBackend;
use support::*;

async fn backend_state(admin: std::net::SocketAddr, address: &str) -> String {
    let (_, body) = http_get(admin, "/api/services").await;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    json["services"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == address)
        .map(|b| b["state"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

async fn wait_state(admin: std::net::SocketAddr, address: &str, want: &str) -> bool {
    for _ in 0..150 {
        if backend_state(admin, address).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn tcp_checks_take_a_dead_backend_out_and_bring_it_back() {
    let live = EchoBackend::start("live").await;
    let flaky = EchoBackend::start("flaky").await;
    let flaky_addr = flaky.addr;
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    backends: [{}, {}]\n    retries: {{ attempts: 0 }}\n    health_check: {{ type: tcp, interval: 100ms, rise: 2, fall: 2, timeout: 200ms }}\n",
        live.hostport(),
        flaky.hostport()
    ))
    .await;
    let (addr, admin) = (agent.service_addr("web").unwrap(), agent.admin_addr());
    drop(flaky);
    assert!(
        wait_state(admin, &flaky_addr.to_string(), "down").await,
        "marked down after `fall` failed checks"
    );
    // No retries configured: every connection succeeding proves the dead backend gets no traffic.
    for _ in 0..20 {
        assert_eq!(greet(addr).await.unwrap(), "live");
    }
    let (_, metrics) = http_get(admin, "/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            &format!("sinew_backend_up{{backend=\"{flaky_addr}\",name=\"\",service=\"web\"}}")
        ),
        Some(0.0)
    );
    let (_, api) = http_get(admin, "/api/services").await;
    assert!(
        api.contains("connect:"),
        "the last check's reason is shown: {api}"
    );

    let _back = EchoBackend::start_on(flaky_addr, "flaky").await;
    assert!(
        wait_state(admin, &flaky_addr.to_string(), "up").await,
        "back after `rise` passing checks"
    );
    let mut seen = std::collections::HashSet::new();
    for _ in 0..10 {
        seen.insert(greet(addr).await.unwrap());
    }
    assert!(seen.contains("flaky"));
}

#[tokio::test]
async fn http_checks_follow_status_and_fail_backends_that_do_not_speak_http() {
    let good = HttpBackend::start("good").await;
    let silent = EchoBackend::start("silent").await; // accepts, but answers with a greeting, not HTTP
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    mode: http\n    backends: [{}, {}]\n    health_check: {{ type: http, path: /status/200, interval: 100ms, rise: 1, fall: 1, timeout: 150ms }}\n",
        good.hostport(),
        silent.hostport()
    ))
    .await;
    let admin = agent.admin_addr();
    assert!(wait_state(admin, &silent.hostport(), "down").await);
    assert_eq!(backend_state(admin, &good.hostport()).await, "up");

    let failing = HttpBackend::start("failing").await;
    let agent2 = support::agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    mode: http\n    backends: [{}]\n    panic_threshold: 0\n    health_check: {{ type: http, path: /status/503, interval: 100ms, rise: 1, fall: 1 }}\n",
        failing.hostport()
    ))
    .await;
    assert!(wait_state(agent2.admin_addr(), &failing.hostport(), "down").await);
    let (status, _) = http_get(agent2.service_addr("web").unwrap(), "/").await;
    assert_eq!(
        status, 503,
        "the only backend is down and panic mode is off"
    );
}

#[tokio::test]
async fn outlier_detection_ejects_a_backend_failing_real_traffic() {
    let (sick, good) = (
        HttpBackend::sick("sick").await,
        HttpBackend::start("good").await,
    );
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    mode: http\n    backends: [{}, {}]\n    outlier: {{ consecutive_failures: 3, base_ejection: 30s }}\n",
        sick.hostport(),
        good.hostport()
    ))
    .await;
    let addr = agent.service_addr("web").unwrap();
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(http_get(addr, "/").await.0);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 503).count(),
        3,
        "{statuses:?}"
    );
    assert!(statuses[10..].iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        backend_state(agent.admin_addr(), &sick.hostport()).await,
        "ejected"
    );
    let (_, metrics) = http_get(agent.admin_addr(), "/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            &format!(
                "sinew_backend_ejections_total{{backend=\"{}\",name=\"\",service=\"web\"}}",
                sick.hostport()
            )
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_backend_takes_traffic_again_when_its_ejection_ends() {
    // Outlier ejection only: no active checks, no slow start, so only the clock can end the ejection.
    let (steady, flaky) = (
        HttpBackend::start("steady").await,
        HttpBackend::start("flaky").await,
    );
    let flaky_addr = flaky.addr;
    let agent = agent(&support::http::web_service(
        &[steady.hostport(), flaky.hostport()],
        "    outlier: { consecutive_failures: 2, base_ejection: 2s }\n",
    ))
    .await;
    let (addr, admin) = (agent.service_addr("web").unwrap(), agent.admin_addr());
    drop(flaky);
    for _ in 0..10 {
        assert_eq!(
            http_get(addr, "/").await,
            (200, "steady".into()),
            "connect failures are retried"
        );
    }
    assert_eq!(
        backend_state(admin, &flaky_addr.to_string()).await,
        "ejected"
    );
    let _back = HttpBackend::start_on(flaky_addr, "flaky").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(backend_state(admin, &flaky_addr.to_string()).await, "up");
    let mut reached = 0;
    for _ in 0..20 {
        if http_get(addr, "/").await.1 == "flaky" {
            reached += 1;
        }
    }
    assert!(
        reached >= 8,
        "round robin over two backends again: {reached} of 20"
    );
}

#[tokio::test]
async fn a_backend_that_accepts_nothing_is_marked_down_by_its_checks() {
    // A listener that never accepts and whose accept queue is full: the kernel drops new SYNs, so
    // connections hang like those to a partitioned host.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let blackhole = socket.listen(1).unwrap();
    let hole = blackhole.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(hole),
        )
        .await
        {
            fillers.push(s);
        }
    }
    let live = EchoBackend::start("live").await;
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    backends: [{}, {hole}]\n    timeouts: {{ connect: 200ms }}\n    health_check: {{ interval: 100ms, timeout: 150ms, rise: 1, fall: 2 }}\n",
        live.hostport()
    ))
    .await;
    assert!(wait_state(agent.admin_addr(), &hole.to_string(), "down").await);
    let (_, api) = http_get(agent.admin_addr(), "/api/services").await;
    assert!(
        api.contains("timed out"),
        "the check times out rather than being refused: {api}"
    );
    for _ in 0..10 {
        assert_eq!(
            greet(agent.service_addr("web").unwrap()).await.unwrap(),
            "live"
        );
    }
    drop(blackhole);
}
