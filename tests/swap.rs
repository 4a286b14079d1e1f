//! Backend-set swaps: under load with zero failed connections, draining of removed backends, the
//! file discovery source, and default servers until a source first reports.

mod support;

use sinew::balance::{Backend, Origin};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn backend(b: &EchoBackend) -> Backend {
    Backend::new("127.0.0.1", b.addr.port(), 1, Origin::Static)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_under_load_fail_no_connection() {
    let backends: Vec<EchoBackend> =
        futures_join(["a", "b", "c", "d"].iter().map(|n| EchoBackend::start(n))).await;
    let yaml = format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    balance: least_conn\n    backends: [{}]\n",
        backends[0].hostport()
    );
    let agent = agent(&yaml).await;
    let addr = agent.service_addr("web").unwrap();
    let balancer = agent.balancer("web").unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (done, ok, failed) = (Arc::clone(&done), Arc::clone(&ok), Arc::clone(&failed));
        clients.push(tokio::spawn(async move {
            // Bounded: at most 400 connections per client, and it stops when the swapping is over.
            for _ in 0..400 {
                if done.load(Ordering::Relaxed) {
                    break;
                }
                match greet(addr).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("client failure: {e}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    // 500 swaps through every non-empty subset of the four backends.
    for i in 0..500usize {
        let mask = 1 + i % 15;
        let set: Vec<Backend> = backends
            .iter()
            .enumerate()
            .filter(|(k, _)| mask & (1 << k) != 0)
            .map(|(_, b)| backend(b))
            .collect();
        balancer.update(set);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    done.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{ok} connections succeeded");
    assert!(ok > 100, "the load ran during the swaps ({ok} connections)");
    assert!(balancer.view().swaps >= 400);
}

async fn futures_join<F: std::future::Future<Output = EchoBackend>>(
    it: impl Iterator<Item = F>,
) -> Vec<EchoBackend> {
    let mut out = Vec::new();
    for f in it {
        out.push(f.await);
    }
    out
}

#[tokio::test]
async fn removed_backend_drains_its_open_connections() {
    let (a, b) = (EchoBackend::start("a").await, EchoBackend::start("b").await);
    let yaml = format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    backends: [{}]\n",
        a.hostport()
    );
    let agent = agent(&yaml).await;
    let addr = agent.service_addr("web").unwrap();
    let mut open = TcpStream::connect(addr).await.unwrap();
    assert_eq!(read_line(&mut open).await.unwrap(), "a");

    agent.balancer("web").unwrap().update(vec![backend(&b)]);
    assert_eq!(
        greet(addr).await.unwrap(),
        "b",
        "new connections go to the new set"
    );
    let (_, api) = http_get(agent.admin_addr(), "/api/services").await;
    let json: serde_json::Value = serde_json::from_str(&api).unwrap();
    let states: Vec<(String, String)> = json["services"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["address"].as_str().unwrap().to_string(),
                x["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        states.contains(&(a.hostport(), "draining".into())),
        "{states:?}"
    );

    // The old connection still works end to end.
    open.write_all(b"still here\n").await.unwrap();
    assert_eq!(read_line(&mut open).await.unwrap(), "still here");
}

#[tokio::test]
async fn file_discovery_follows_the_file_and_survives_a_bad_edit() {
    let (a, b) = (EchoBackend::start("a").await, EchoBackend::start("b").await);
    let dir = std::env::temp_dir().join(format!("sinew-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("web.json");
    std::fs::write(&file, format!("[\"{}\"]", a.hostport())).unwrap();
    let yaml = format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    discovery: {{ file: {} }}\n",
        file.display()
    );
    let agent = agent(&yaml).await;
    let addr = agent.service_addr("web").unwrap();
    let balancer = agent.balancer("web").unwrap();
    let has = |port: u16| {
        let balancer = Arc::clone(&balancer);
        move || {
            balancer
                .current()
                .entries()
                .iter()
                .any(|e| e.backend.port == port)
        }
    };
    assert!(eventually(Duration::from_secs(10), has(a.addr.port())).await);
    assert_eq!(greet(addr).await.unwrap(), "a");

    // Replace the file by rename, as deploy tools do.
    let tmp = dir.join("web.json.tmp");
    std::fs::write(
        &tmp,
        format!(
            "[{{\"host\": \"127.0.0.1\", \"port\": {}, \"weight\": 2}}]",
            b.addr.port()
        ),
    )
    .unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    assert!(eventually(Duration::from_secs(10), has(b.addr.port())).await);
    assert_eq!(greet(addr).await.unwrap(), "b");

    std::fs::write(&file, "[\"127.0.0.1:8081\",").unwrap();
    let metrics = agent.admin_addr();
    let mut counted = false;
    for _ in 0..100 {
        let (_, body) = http_get(metrics, "/metrics").await;
        if metric(
            &body,
            "sinew_discovery_errors_total{service=\"web\",source=\"file\"}",
        ) == Some(1.0)
        {
            counted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(counted, "the malformed file is counted");
    assert_eq!(
        greet(addr).await.unwrap(),
        "b",
        "a malformed file keeps the previous set"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn default_servers_serve_until_a_missing_discovery_file_appears() {
    let (default, found) = (
        EchoBackend::start("default").await,
        EchoBackend::start("found").await,
    );
    let dir = std::env::temp_dir().join(format!("sinew-defaults-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("missing.json");
    let _ = std::fs::remove_file(&file);
    let agent = agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    discovery: {{ file: {} }}\n    default_servers: [{}]\n",
        file.display(),
        default.hostport()
    ))
    .await;
    let web = agent.service_addr("web").unwrap();
    assert_eq!(
        greet(web).await.as_deref(),
        Ok("default"),
        "defaults serve at start"
    );
    let (ready, _) = http_get(agent.admin_addr(), "/ready").await;
    assert_eq!(ready, 503, "defaults are not a discovery report");

    std::fs::write(&file, format!("[\"{}\"]", found.hostport())).unwrap();
    let mut moved = false;
    for _ in 0..250 {
        if greet(web).await.as_deref() == Ok("found") {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        moved,
        "the file's backends replace the defaults once it appears"
    );
    assert_eq!(agent.balancer("web").unwrap().current().entries().len(), 1);
    agent.shutdown(Duration::from_secs(1)).await;
    let _ = std::fs::remove_dir_all(&dir);
}
