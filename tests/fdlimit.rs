//! Out of file descriptors: the `sinew` binary under a low `RLIMIT_NOFILE`, flooded with more client
//! connections than it can hold. Healthy backends are not charged with the local limit, the log says
//! so a bounded number of times, the admin API still answers, and the service serves again once the
//! flood is gone.

mod support;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::http::HttpBackend;
use support::process::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The open-file limit of the agent (soft and hard, so it cannot raise it).
const LIMIT: u64 = 256;
/// Client connections in the flood.
const FLOOD: usize = 1000;

/// Starts `sinew run --config FILE` with at most [`LIMIT`] descriptors, its log written to `log`.
fn run_limited(config: &std::path::Path, log: &std::path::Path) -> Proc {
    let stderr = std::fs::File::create(log).expect("log file");
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(stderr);
    // SAFETY: setrlimit is async-signal-safe and touches nothing of the parent.
    unsafe {
        cmd.pre_exec(|| {
            let limit = rustix::process::Rlimit {
                current: Some(LIMIT),
                maximum: Some(LIMIT),
            };
            rustix::process::setrlimit(rustix::process::Resource::Nofile, limit)?;
            Ok(())
        });
    }
    Proc(cmd.spawn().expect("spawn sinew"))
}

/// One flood client: a request to a slow route, its answer read (or not) within a few seconds; or
/// (`idle`) no request, the connection only held open for a few seconds.
async fn flood_client(addr: std::net::SocketAddr, idle: bool) -> Option<String> {
    let mut s = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let mut out = Vec::new();
    if idle {
        let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
        return None;
    }
    s.write_all(b"GET /slow/1000 HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let _ = tokio::time::timeout(Duration::from_secs(8), s.read_to_end(&mut out)).await;
    Some(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_no_backend_is_charged_and_the_admin_api_answers() {
    // The test itself holds the flood's client ends and the backends' server ends.
    sinew::fdlimit::raise().expect("raise the test's own limit");
    let backends = [HttpBackend::start("a").await, HttpBackend::start("b").await];
    let (admin, port, checked) = (free_port(), free_port(), free_port());
    // A second service checks its backend actively and often: its checks run out of descriptors
    // too, and must not take the backend down.
    let config = temp_file(
        "fdlimit.yaml",
        &format!(
            "admin: {{ listen: 127.0.0.1:{admin} }}\nservices:\n  web:\n    listen: 127.0.0.1:{port}\n    mode: http\n    backends: [{}, {}]\n    outlier: {{ consecutive_failures: 2, base_ejection: 60s }}\n  checked:\n    listen: 127.0.0.1:{checked}\n    backends: [{}]\n    health_check: {{ type: tcp, interval: 50ms, fall: 2, rise: 1, timeout: 1s }}\n",
            backends[0].hostport(),
            backends[1].hostport(),
            backends[0].hostport()
        ),
    );
    let log = std::env::temp_dir().join(format!("sinew-fdlimit-{}.log", std::process::id()));
    let agent = run_limited(&config, &log);
    let (admin, addr) = (
        format!("127.0.0.1:{admin}").parse().unwrap(),
        format!("127.0.0.1:{port}").parse().unwrap(),
    );
    wait_listening(admin).await;
    wait_listening(addr).await;

    let started = Instant::now();
    // Half the flood holds connections open without a request: every descriptor of the agent is
    // taken, and stays taken for three seconds. The other half then sends requests, which the
    // agent accepts when those close, each needing a backend connection as well.
    let mut flood: Vec<_> = (0..FLOOD / 2)
        .map(|_| tokio::spawn(flood_client(addr, true)))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    flood.extend((0..FLOOD / 2).map(|_| tokio::spawn(flood_client(addr, false))));
    tokio::time::sleep(Duration::from_millis(500)).await;
    // In the middle of the flood, with every descriptor taken, the admin API answers at once.
    let within = Duration::from_secs(1);
    let (status, during) = tokio::time::timeout(within, http_get(admin, "/metrics"))
        .await
        .expect("/metrics answers during the flood");
    assert_eq!(status, 200, "/metrics during the flood");
    let (status, _) = tokio::time::timeout(within, http_get(admin, "/api/services"))
        .await
        .expect("/api/services answers during the flood");
    assert_eq!(status, 200, "/api/services during the flood");

    for client in flood {
        client.await.unwrap();
    }
    let flood_time = started.elapsed();

    // No backend was charged with the agent's own limit.
    let (_, metrics) = http_get(admin, "/metrics").await;
    for b in &backends {
        for name in [
            "sinew_backend_connect_failures_total",
            "sinew_backend_ejections_total",
        ] {
            let series = format!(
                "{name}{{backend=\"{}\",name=\"\",service=\"web\"}}",
                b.hostport()
            );
            assert_eq!(metric(&metrics, &series), Some(0.0), "{series}");
        }
    }
    let checks = |name: &str| {
        metric(
            &metrics,
            &format!(
                "{name}{{backend=\"{}\",name=\"\",service=\"checked\"}}",
                backends[0].hostport()
            ),
        )
    };
    assert_eq!(
        checks("sinew_backend_health_check_failures_total"),
        Some(0.0),
        "a check this host could not run is no failure of the backend"
    );
    assert!(
        checks("sinew_backend_health_checks_skipped_total").unwrap_or(0.0) > 0.0,
        "the flood reached the checks:\n{metrics}"
    );
    let (_, api) = http_get(admin, "/api/services").await;
    let json: serde_json::Value = serde_json::from_str(&api).unwrap();
    for service in json["services"].as_array().unwrap() {
        for b in service["backends"].as_array().unwrap() {
            assert_eq!(b["state"], "up", "{}: {b}", service["name"]);
        }
    }

    // The flood is gone: the service serves again, from both backends.
    let before = [backends[0].requests(), backends[1].requests()];
    for _ in 0..10 {
        assert_eq!(http_get(addr, "/").await.0, 200);
    }
    assert!(backends[0].requests() > before[0] && backends[1].requests() > before[1]);

    // The flood did reach the limit, and the metrics say where.
    let exhausted = [
        "sinew_listener_accept_errors_total",
        "sinew_service_local_errors_total",
    ]
    .iter()
    .filter_map(|name| {
        metric(
            &during,
            &format!("{name}{{kind=\"emfile\",service=\"web\"}}"),
        )
    })
    .sum::<f64>();
    assert!(exhausted > 0.0, "the flood reached the limit:\n{during}");

    drop(agent);
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    let warnings = log.lines().filter(|l| l.contains("accept failed")).count();
    // At most one line a second (and one more for the second the flood began in).
    let bound = flood_time.as_secs() as usize + 2;
    assert!(
        warnings <= bound,
        "{warnings} accept warnings in {flood_time:?} (at most {bound})"
    );
}
