//! Live reload: services added, removed and changed take effect without dropping a connection; a broken
//! config is rejected and the running one stays (SIGHUP and POST /api/reload on the binary, and
//! `Agent::reload` in process).

mod support;

use sinew::config::{Config, Format};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use support::process::*;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn service(name: &str, backend: &EchoBackend, listen: &str) -> String {
    format!(
        "  {name}:\n    listen: {listen}\n    backends: [{}]\n",
        backend.hostport()
    )
}

fn config(services: &[String]) -> Config {
    let yaml = format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n{}",
        services.concat()
    );
    Config::parse(&yaml, Format::Yaml, Path::new("reload.yaml")).unwrap()
}

async fn echo(stream: &mut TcpStream, text: &str) -> String {
    stream
        .write_all(format!("{text}\n").as_bytes())
        .await
        .unwrap();
    read_line(stream).await.unwrap()
}

#[tokio::test]
async fn reload_adds_changes_and_removes_services_without_dropping_connections() {
    let (a, b, c, d) = (
        EchoBackend::start("a").await,
        EchoBackend::start("b").await,
        EchoBackend::start("c").await,
        EchoBackend::start("d").await,
    );
    let agent = sinew::agent::Agent::start(config(&[
        service("one", &a, "127.0.0.1:0"),
        service("two", &b, "127.0.0.1:0"),
    ]))
    .await
    .unwrap();
    let (one, two) = (
        agent.service_addr("one").unwrap(),
        agent.service_addr("two").unwrap(),
    );
    let mut held_one = TcpStream::connect(one).await.unwrap();
    assert_eq!(read_line(&mut held_one).await.unwrap(), "a");
    let mut held_two = TcpStream::connect(two).await.unwrap();
    assert_eq!(read_line(&mut held_two).await.unwrap(), "b");

    // "two" moves to backend c on the same listener; "three" is added.
    let summary = agent
        .apply(config(&[
            service("one", &a, "127.0.0.1:0"),
            service("two", &c, &two.to_string()),
            service("three", &d, "127.0.0.1:0"),
        ]))
        .await
        .unwrap();
    assert_eq!(summary.added, vec!["three".to_string()]);
    assert_eq!(summary.changed, vec!["two".to_string()]);
    assert_eq!(summary.unchanged, 1, "one is left alone");
    assert_eq!(agent.service_addr("one"), Some(one));
    let three = agent.service_addr("three").unwrap();
    assert_eq!(greet(three).await.unwrap(), "d");
    assert_eq!(
        greet(two).await.unwrap(),
        "c",
        "new connections use the new generation"
    );
    assert_eq!(
        echo(&mut held_two, "old two").await,
        "old two",
        "an open connection of a changed service keeps working"
    );
    assert_eq!(echo(&mut held_one, "old one").await, "old one");

    // Unchanged config for "one" and "two": nothing happens to them; "three" goes away.
    let summary = agent
        .apply(config(&[
            service("one", &a, &one.to_string()),
            service("two", &c, &two.to_string()),
        ]))
        .await
        .unwrap();
    assert_eq!(summary.removed, vec!["three".to_string()]);
    assert!(agent.service_addr("three").is_none());
    let mut refused = false;
    for _ in 0..50 {
        if TcpStream::connect(three).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "a removed service stops listening");
    assert_eq!(echo(&mut held_one, "still").await, "still");
}

#[tokio::test]
async fn a_reload_that_cannot_bind_changes_nothing() {
    let a = EchoBackend::start("a").await;
    let agent = sinew::agent::Agent::start(config(&[service("one", &a, "127.0.0.1:0")]))
        .await
        .unwrap();
    let one = agent.service_addr("one").unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    let result = agent
        .apply(config(&[
            service("one", &a, &one.to_string()),
            service("two", &a, &busy),
        ]))
        .await;
    assert!(result.is_err(), "the busy port is reported");
    assert!(agent.service_addr("two").is_none());
    assert_eq!(greet(one).await.unwrap(), "a");
}

#[tokio::test]
async fn sighup_and_api_reload_apply_good_configs_and_reject_broken_ones() {
    let (a, b) = (EchoBackend::start("a").await, EchoBackend::start("b").await);
    let (p1, p2, admin) = (free_port(), free_port(), free_port());
    let good = |extra: &str| {
        format!("admin: {{ listen: 127.0.0.1:{admin} }}\nservices:\n  one:\n    listen: 127.0.0.1:{p1}\n    backends: [{}]\n{extra}", a.hostport())
    };
    let path = temp_file("reload.yaml", &good(""));
    let sinew = Proc::run(&path);
    let (one, two): (SocketAddr, SocketAddr) = (
        format!("127.0.0.1:{p1}").parse().unwrap(),
        format!("127.0.0.1:{p2}").parse().unwrap(),
    );
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    wait_listening(one).await;
    wait_listening(admin_addr).await;
    let mut held = TcpStream::connect(one).await.unwrap();
    assert_eq!(read_line(&mut held).await.unwrap(), "a");

    // SIGHUP with a second service.
    std::fs::write(
        &path,
        good(&format!(
            "  two:\n    listen: 127.0.0.1:{p2}\n    backends: [{}]\n",
            b.hostport()
        )),
    )
    .unwrap();
    sinew.signal("-HUP");
    wait_listening(two).await;
    assert_eq!(greet(two).await.unwrap(), "b");

    // A broken file: SIGHUP and the API both keep the running config.
    std::fs::write(&path, "services:\n  one:\n    listen: nowhere\n").unwrap();
    sinew.signal("-HUP");
    let (status, body) = post(admin_addr, "/api/reload").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("services.one.listen"), "{body}");
    assert_eq!(greet(two).await.unwrap(), "b");

    // The API applies a fixed file: "two" goes away.
    std::fs::write(&path, good("")).unwrap();
    let (status, body) = post(admin_addr, "/api/reload").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("removed [two]"), "{body}");
    assert_eq!(echo(&mut held, "never dropped").await, "never dropped");
}

#[tokio::test]
async fn an_empty_or_truncated_file_never_stops_the_running_services() {
    let a = EchoBackend::start("a").await;
    let (p1, admin) = (free_port(), free_port());
    let good = format!(
        "admin: {{ listen: 127.0.0.1:{admin} }}\nservices:\n  one:\n    listen: 127.0.0.1:{p1}\n    backends: [{}]\n",
        a.hostport()
    );
    let path = temp_file("truncated.yaml", &good);
    let sinew = Proc::run(&path);
    let one: SocketAddr = format!("127.0.0.1:{p1}").parse().unwrap();
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    // The services and the admin server are bound one after the other: wait for both.
    wait_listening(one).await;
    wait_listening(admin_addr).await;

    // A truncated write: nothing, only a comment, or the top of the file without its services.
    for (text, why) in [
        ("", "empty"),
        ("# generated by chef\n", "empty"),
        (
            &format!("admin: {{ listen: 127.0.0.1:{admin} }}\nservices:\n"),
            "would stop every running one (one)",
        ),
    ] {
        std::fs::write(&path, text).unwrap();
        sinew.signal("-HUP");
        let (status, body) = post(admin_addr, "/api/reload").await;
        assert_eq!(status, 400, "{text:?}: {body}");
        assert!(body.contains(why), "{text:?}: {body}");
        assert_eq!(greet(one).await.unwrap(), "a", "{text:?}");
    }

    // Saying so explicitly removes every service.
    std::fs::write(
        &path,
        format!("admin: {{ listen: 127.0.0.1:{admin} }}\nservices: {{}}\n"),
    )
    .unwrap();
    let (status, body) = post(admin_addr, "/api/reload").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("removed [one]"), "{body}");
}

#[tokio::test]
async fn a_reload_without_services_is_refused_unless_it_says_so() {
    let a = EchoBackend::start("a").await;
    let agent = sinew::agent::Agent::start(config(&[service("one", &a, "127.0.0.1:0")]))
        .await
        .unwrap();
    let one = agent.service_addr("one").unwrap();
    let silent = Config::parse(
        "admin: { listen: 127.0.0.1:0 }\n",
        Format::Yaml,
        Path::new("r.yaml"),
    )
    .unwrap();
    let e = agent.apply(silent).await.unwrap_err();
    assert!(e.to_string().contains("services: {}"), "{e}");
    assert_eq!(greet(one).await.unwrap(), "a");
    let explicit = Config::parse(
        "admin: { listen: 127.0.0.1:0 }\nservices: {}\n",
        Format::Yaml,
        Path::new("r.yaml"),
    )
    .unwrap();
    let summary = agent.apply(explicit).await.unwrap();
    assert_eq!(summary.removed, vec!["one".to_string()]);
}

#[tokio::test]
async fn a_large_rejected_reload_gives_its_memory_back() {
    let a = EchoBackend::start("a").await;
    let (p1, admin) = (free_port(), free_port());
    let head = format!("admin: {{ listen: 127.0.0.1:{admin} }}\nservices:\n");
    let one = format!(
        "  one: {{ listen: 127.0.0.1:{p1}, backends: [{}] }}\n",
        a.hostport()
    );
    let path = temp_file("large.yaml", &format!("{head}{one}"));
    let sinew = Proc::run(&path);
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    wait_listening(format!("127.0.0.1:{p1}").parse().unwrap()).await;
    let before = sinew.rss_kib();

    // Just under the size cap, with a mistake in its last line: parsing peaks at some 150 MB.
    let mut large = format!("{head}{one}");
    let mut i = 0;
    while large.len() < (4 << 20) - 200 {
        large.push_str(&format!(
            "  s{i}: {{ listen: 127.0.0.1:{}, backends: [127.0.0.1:9, 127.0.0.1:10] }}\n",
            10_000 + i % 50_000
        ));
        i += 1;
    }
    large.push_str("  last: { listen: nowhere, backends: [127.0.0.1:9] }\n");
    std::fs::write(&path, &large).unwrap();
    let (status, body) = post(admin_addr, "/api/reload").await;
    assert_eq!(status, 400, "{body}");
    let after = sinew.rss_kib();
    assert!(
        after < before + 40 * 1024,
        "resident memory grew from {before} KiB to {after} KiB after a rejected reload"
    );

    // Beyond the cap, the file is not even read.
    large.push_str(&"#".repeat(1 << 20));
    std::fs::write(&path, &large).unwrap();
    let (status, body) = post(admin_addr, "/api/reload").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("larger than 4 MiB"), "{body}");
}

#[tokio::test]
async fn a_listen_address_moves_between_services_without_a_gap() {
    let (a, b, c) = (
        EchoBackend::start("a").await,
        EchoBackend::start("b").await,
        EchoBackend::start("c").await,
    );
    let agent = sinew::agent::Agent::start(config(&[
        service("web", &a, "127.0.0.1:0"),
        service("api", &b, "127.0.0.1:0"),
    ]))
    .await
    .unwrap();
    let (web, api) = (
        agent.service_addr("web").unwrap(),
        agent.service_addr("api").unwrap(),
    );
    let mut held = TcpStream::connect(web).await.unwrap();
    assert_eq!(read_line(&mut held).await.unwrap(), "a");

    // Clients keep connecting to the address while it changes hands: none is refused.
    let stop = tokio_util::sync::CancellationToken::new();
    let prober = tokio::spawn({
        let stop = stop.clone();
        async move {
            let (mut ok, mut refused) = (0u32, 0u32);
            for _ in 0..2000 {
                if stop.is_cancelled() {
                    break;
                }
                match greet(web).await {
                    Ok(_) => ok += 1,
                    Err(_) => refused += 1,
                }
            }
            (ok, refused)
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;

    // `web` is renamed `web2` on the same address, and `api` moves to a new name too: both swap.
    let summary = agent
        .apply(config(&[
            service("web2", &c, &web.to_string()),
            service("api2", &a, &api.to_string()),
        ]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.cancel();
    let (ok, refused) = prober.await.unwrap();
    assert_eq!(summary.added, vec!["api2".to_string(), "web2".to_string()]);
    assert_eq!(summary.removed, vec!["api".to_string(), "web".to_string()]);
    assert_eq!(agent.service_addr("web2"), Some(web));
    assert_eq!(
        greet(web).await.unwrap(),
        "c",
        "the new service serves the address"
    );
    assert_eq!(greet(api).await.unwrap(), "a");
    assert!(ok > 0, "the prober ran");
    assert_eq!(
        refused, 0,
        "{ok} connections served, {refused} failed during the handover"
    );
    assert_eq!(
        echo(&mut held, "kept").await,
        "kept",
        "open connections finish"
    );

    // Two services swap addresses in one reload.
    agent
        .apply(config(&[
            service("web2", &c, &api.to_string()),
            service("api2", &a, &web.to_string()),
        ]))
        .await
        .unwrap();
    assert_eq!(greet(api).await.unwrap(), "c");
    assert_eq!(greet(web).await.unwrap(), "a");
}

#[tokio::test]
async fn a_new_admin_token_applies_on_reload() {
    let a = EchoBackend::start("a").await;
    let with_token = |token: &str| {
        let yaml = format!(
            "admin: {{ listen: 127.0.0.1:0, token: {token} }}\nservices:\n{}",
            service("one", &a, "127.0.0.1:0")
        );
        Config::parse(&yaml, Format::Yaml, Path::new("reload.yaml")).unwrap()
    };
    let agent = sinew::agent::Agent::start(with_token("leaked"))
        .await
        .unwrap();
    let admin = agent.admin_addr();
    // No register section: an authorized request gets 404, an unauthorized one 401.
    let path = "/api/register/one/maintenance";
    assert_eq!(post_auth(admin, path, Some("leaked")).await.0, 404);
    assert_eq!(post_auth(admin, path, Some("fresh")).await.0, 401);

    let summary = agent.apply(with_token("fresh")).await.unwrap();
    assert!(summary.token_changed);
    assert!(
        summary.to_string().contains("admin.token replaced"),
        "{summary}"
    );
    assert_eq!(
        post_auth(admin, path, Some("leaked")).await.0,
        401,
        "the old token is refused"
    );
    assert_eq!(
        post_auth(admin, path, Some("fresh")).await.0,
        404,
        "the new token works"
    );
    assert_eq!(post_auth(admin, path, None).await.0, 401);

    let summary = agent.apply(with_token("fresh")).await.unwrap();
    assert!(!summary.token_changed, "an unchanged token is not reported");
}

async fn post(addr: SocketAddr, path: &str) -> (u16, String) {
    post_auth(addr, path, None).await
}

async fn post_auth(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut s, &mut out)
        .await
        .unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        status,
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    )
}

/// The `/metrics` page, polled until `check` holds (5 s at most); the last page either way.
async fn metrics_until(admin: SocketAddr, check: impl Fn(&str) -> bool) -> String {
    let mut page = String::new();
    for _ in 0..100 {
        page = http_get(admin, "/metrics").await.1;
        if check(&page) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    page
}

#[tokio::test]
async fn a_reload_removes_the_series_of_removed_services_and_backends() {
    let (a, b, c, d) = (
        EchoBackend::start("a").await,
        EchoBackend::start("b").await,
        EchoBackend::start("c").await,
        EchoBackend::start("d").await,
    );
    let agent = sinew::agent::Agent::start(config(&[
        service("one", &a, "127.0.0.1:0"),
        service("two", &b, "127.0.0.1:0"),
        service("gone", &d, "127.0.0.1:0"),
    ]))
    .await
    .unwrap();
    let two = agent.service_addr("two").unwrap();
    assert_eq!(greet(two).await.unwrap(), "b");
    assert_eq!(
        greet(agent.service_addr("gone").unwrap()).await.unwrap(),
        "d"
    );
    let admin = agent.admin_addr();
    let gone = "service=\"gone\"";
    let old_backend = format!("backend=\"{}\"", b.hostport());
    let page = metrics_until(admin, |p| {
        metric(p, "sinew_service_connections_total{service=\"gone\"}") == Some(1.0)
    })
    .await;
    assert!(page.contains(&old_backend), "{page}");

    // "two" moves from backend b to c; "gone" is removed.
    agent
        .apply(config(&[
            service("one", &a, "127.0.0.1:0"),
            service("two", &c, &two.to_string()),
        ]))
        .await
        .unwrap();
    assert_eq!(greet(two).await.unwrap(), "c");
    let page = metrics_until(admin, |p| !p.contains(gone) && !p.contains(&old_backend)).await;
    for stale in [gone, old_backend.as_str()] {
        let lines: Vec<&str> = page.lines().filter(|l| l.contains(stale)).collect();
        assert!(lines.is_empty(), "series of {stale} left: {lines:#?}");
    }
    for (service, backend) in [("one", &a), ("two", &c)] {
        let up = format!(
            "sinew_backend_up{{backend=\"{}\",name=\"\",service=\"{service}\"}}",
            backend.hostport()
        );
        assert_eq!(metric(&page, &up), Some(1.0), "{up} in\n{page}");
    }
    assert_eq!(
        metric(&page, "sinew_service_connections_total{service=\"two\"}"),
        Some(2.0),
        "a changed service keeps its series"
    );
}

#[tokio::test]
async fn a_backend_removed_by_discovery_is_down_while_it_drains_and_then_gone() {
    let (a, b) = (EchoBackend::start("a").await, EchoBackend::start("b").await);
    let file = temp_file(
        "drain-series.json",
        &format!("[\"{}\", \"{}\"]", a.hostport(), b.hostport()),
    );
    let yaml = format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    balance: round_robin\n    discovery: {{ file: {} }}\n",
        file.display()
    );
    let agent = agent(&yaml).await;
    let (addr, admin) = (agent.service_addr("web").unwrap(), agent.admin_addr());
    let up = |backend: &EchoBackend| {
        format!(
            "sinew_backend_up{{backend=\"{}\",name=\"\",service=\"web\"}}",
            backend.hostport()
        )
    };
    let page = metrics_until(admin, |p| {
        metric(p, "sinew_service_backends{service=\"web\"}") == Some(2.0)
    })
    .await;
    assert_eq!(metric(&page, &up(&b)), Some(1.0), "{page}");
    // A connection to b stays open while discovery drops b.
    let mut held = None;
    for _ in 0..4 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        if read_line(&mut s).await.unwrap() == "b" {
            held = Some(s);
            break;
        }
    }
    let mut held = held.expect("round robin reaches b");
    std::fs::write(&file, format!("[\"{}\"]", a.hostport())).unwrap();
    let page = metrics_until(admin, |p| {
        metric(p, "sinew_service_backends{service=\"web\"}") == Some(1.0)
    })
    .await;
    assert_eq!(
        metric(&page, &up(&b)),
        Some(0.0),
        "draining, so no new traffic:\n{page}"
    );
    assert_eq!(echo(&mut held, "still served").await, "still served");

    drop(held);
    let old_backend = format!("backend=\"{}\"", b.hostport());
    let page = metrics_until(admin, |p| !p.contains(&old_backend)).await;
    let lines: Vec<&str> = page.lines().filter(|l| l.contains(&old_backend)).collect();
    assert!(
        lines.is_empty(),
        "series of the drained backend left: {lines:#?}"
    );
    assert_eq!(metric(&page, &up(&a)), Some(1.0), "{page}");
}

/// In process, without the binary: an agent started from its files reloads them itself, through
/// `Agent::reload` (what SIGHUP calls) and `POST /api/reload` alike, and keeps the new grace period;
/// one started from a config has nothing to read again.
#[tokio::test]
async fn an_agent_started_from_files_reloads_them_itself() {
    let (a, b) = (EchoBackend::start("a").await, EchoBackend::start("b").await);
    let path = temp_file("in-process.yaml", "");
    let write = |services: &[String], grace: &str| {
        let yaml = format!(
            "admin: {{ listen: 127.0.0.1:0 }}\nshutdown_grace: {grace}\nservices:\n{}",
            services.concat()
        );
        std::fs::write(&path, yaml).unwrap();
    };
    write(&[service("one", &a, "127.0.0.1:0")], "3s");
    let source = sinew::agent::Source {
        config: Some(path.clone()),
        ..Default::default()
    };
    let agent = sinew::agent::Agent::start_with(
        source.load().unwrap(),
        Some(source),
        sinew::upgrade::Inherited::default(),
        false,
    )
    .await
    .unwrap();
    assert_eq!(agent.grace(), Duration::from_secs(3));

    write(
        &[
            service("one", &a, "127.0.0.1:0"),
            service("two", &b, "127.0.0.1:0"),
        ],
        "7s",
    );
    let summary = agent.reload().await.unwrap();
    assert_eq!(summary.added, ["two"]);
    assert_eq!(agent.grace(), Duration::from_secs(7));
    let two = agent.service_addr("two").unwrap();
    assert_eq!(greet(two).await.unwrap(), "b");

    write(&[service("one", &a, "127.0.0.1:0")], "7s");
    let (status, body) = post(agent.admin_addr(), "/api/reload").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("removed [two]"), "{body}");

    std::fs::write(&path, "services:\n  one:\n    listen: nowhere\n").unwrap();
    let e = agent.reload().await.unwrap_err().to_string();
    assert!(e.contains("services.one.listen"), "{e}");
    assert!(agent.service_addr("one").is_some());
    agent.shutdown(Duration::from_secs(1)).await;

    let plain = sinew::agent::Agent::start(config(&[service("one", &a, "127.0.0.1:0")]))
        .await
        .unwrap();
    assert!(matches!(
        plain.reload().await,
        Err(sinew::agent::AgentError::NoSource)
    ));
    let (status, body) = post(plain.admin_addr(), "/api/reload").await;
    assert_eq!(status, 503, "{body}");
    plain.shutdown(Duration::from_secs(1)).await;
}
