//! `sinew status`: the admin API's view of every service, as a terminal table (or JSON).
//!
//! It reads the admin API into the same types the admin server serialises, so a field renamed there
//! is a compile error here, not a column of dashes.

use crate::admin::{ServiceJson, ServicesJson};
use crate::http_client::{self, Get};
use crate::register::RegisteredView;
use serde::de::DeserializeOwned;
use std::fmt::{Display, Write};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

/// Why the status could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The admin server could not be reached or answered badly.
    #[error(
        "admin server at {addr}: {message} (is sinew running, and is --admin its admin.listen?)"
    )]
    Admin {
        /// The admin address.
        addr: SocketAddr,
        /// What went wrong.
        message: String,
    },
    /// The named service does not exist.
    #[error("no service named {0:?}")]
    NoSuchService(String),
}

/// Largest API response read.
const MAX_BODY: usize = 64 << 20;

/// Fetches `/api/services` from the admin server.
pub async fn fetch(addr: SocketAddr) -> Result<ServicesJson, StatusError> {
    get(addr, "/api/services")
        .await?
        .ok_or_else(|| StatusError::Admin {
            addr,
            message: "no /api/services".into(),
        })
}

/// Fetches `/api/register`; `None` when nothing is registered.
pub async fn fetch_registered(
    addr: SocketAddr,
) -> Result<Option<Vec<RegisteredView>>, StatusError> {
    get(addr, "/api/register").await
}

/// GETs a JSON document from the admin server; `None` on 404.
async fn get<T: DeserializeOwned>(addr: SocketAddr, path: &str) -> Result<Option<T>, StatusError> {
    let err = |message: String| StatusError::Admin { addr, message };
    let call = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| err(format!("connect: {e}")))?;
        let host = addr.to_string();
        let request = Get {
            host: &host,
            path,
            user_agent: None,
            max_body: MAX_BODY,
            headers: &[],
        };
        let (status, body) = http_client::http1(stream, &request).await.map_err(err)?;
        if status == hyper::StatusCode::NOT_FOUND.as_u16() {
            return Ok(None);
        }
        if !(200..300).contains(&status) {
            let status = hyper::StatusCode::from_u16(status).map_err(|e| err(e.to_string()))?;
            return Err(err(format!("HTTP {status}")));
        }
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| err(format!("bad JSON: {e}")))
    };
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .map_err(|_| err("timed out".into()))?
}

/// A value for a table cell; `-` when there is none.
fn or_dash<T: Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".into(), |v| v.to_string())
}

/// Formats rows as left-aligned columns.
fn table(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |x| x.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

/// Seconds since the Unix epoch, now.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// How long ago discovery last reported, as of `now` (Unix seconds): `12s`, `3m`, `2h`, `never`.
fn updated(svc: &ServiceJson, now: f64) -> String {
    let Some(at) = svc.view.last_update_unix else {
        return "never".into();
    };
    let s = (now - at).max(0.0) as u64;
    match s {
        0..=119 => format!("{s}s ago"),
        120..=7199 => format!("{}m ago", s / 60),
        _ => format!("{}h ago", s / 3600),
    }
}

/// The ZooKeeper session of a service's discovery: `connected`, `LOST`, or `-` for other sources.
fn session(svc: &ServiceJson) -> &'static str {
    match svc.zookeeper_connected {
        Some(true) => "connected",
        Some(false) => "LOST",
        None => "-",
    }
}

/// All services, one line each.
pub fn overview(api: &ServicesJson) -> String {
    overview_at(api, unix_now())
}

/// [`overview`] as of `now` (Unix seconds).
fn overview_at(api: &ServicesJson, now: f64) -> String {
    let mut rows = vec![[
        "SERVICE",
        "LISTEN",
        "FRONTENDS",
        "MODE",
        "BALANCE",
        "UP/BACKENDS",
        "ACTIVE",
        "QUEUED",
        "SWAPS",
        "UPDATED",
        "ZOOKEEPER",
        "PANIC",
    ]
    .map(String::from)
    .to_vec()];
    for svc in &api.services {
        let backends = &svc.view.backends;
        let up = backends
            .iter()
            .filter(|b| matches!(&*b.state, "up" | "slow_start"))
            .count();
        rows.push(vec![
            svc.view.name.clone(),
            or_dash(svc.listen),
            frontends(svc),
            svc.mode.to_string(),
            svc.view.balance.to_string(),
            format!("{up}/{}", backends.len()),
            svc.view.active_connections.to_string(),
            svc.view.queued.to_string(),
            svc.view.swaps.to_string(),
            updated(svc, now),
            session(svc).into(),
            if svc.view.panic {
                "PANIC".into()
            } else {
                "-".into()
            },
        ]);
    }
    table(&rows)
}

/// The frontends that route to `svc`, comma-separated, or `-`.
fn frontends(svc: &ServiceJson) -> String {
    if svc.frontends.is_empty() {
        "-".into()
    } else {
        svc.frontends.join(",")
    }
}

/// Registered services, one line each.
pub fn registered(list: &[RegisteredView]) -> String {
    let mut rows = vec![["REGISTERED", "STATE", "MAINTENANCE", "ZNODE", "CHECKS"]
        .map(String::from)
        .to_vec()];
    for r in list {
        let checks: Vec<String> = r
            .checks
            .iter()
            .map(|c| {
                let state = if c.up { "up" } else { "down" };
                match &c.last_error {
                    Some(e) => format!("{}: {state} ({e})", c.kind),
                    None => format!("{}: {state}", c.kind),
                }
            })
            .collect();
        rows.push(vec![
            r.name.clone(),
            if r.up { "up".into() } else { "down".into() },
            if r.maintenance {
                "yes".into()
            } else {
                "-".into()
            },
            or_dash(r.znode.as_ref()),
            checks.join("; "),
        ]);
    }
    table(&rows)
}

/// One service, one line per backend.
pub fn detail(api: &ServicesJson, service: &str) -> Result<String, StatusError> {
    let svc: &ServiceJson = api
        .services
        .iter()
        .find(|v| v.view.name == service)
        .ok_or_else(|| StatusError::NoSuchService(service.to_string()))?;
    let zookeeper = match svc.zookeeper_connected {
        Some(true) => ", ZooKeeper session connected",
        Some(false) => ", ZooKeeper session LOST (routing on the last known set)",
        None => "",
    };
    let mut out = format!(
        "{} on {}, frontends {} ({}, {}), backends from {} (updated {}{zookeeper}), {} swaps, {} active, {} queued{}\n\n",
        svc.view.name,
        or_dash(svc.listen),
        frontends(svc),
        svc.mode,
        svc.view.balance,
        svc.discovery,
        updated(svc, unix_now()),
        svc.view.swaps,
        svc.view.active_connections,
        svc.view.queued,
        if svc.view.panic {
            ", PANIC: balancing over all backends"
        } else {
            ""
        }
    );
    let mut rows = vec![[
        "BACKEND",
        "STATE",
        "WEIGHT",
        "EFFECTIVE%",
        "ORIGIN",
        "ACTIVE",
        "TOTAL",
        "CONNECT_FAILS",
        "LAST CHECK",
        "LABELS",
    ]
    .map(String::from)
    .to_vec()];
    for b in &svc.view.backends {
        let last = match &b.last_check {
            None => "-".to_string(),
            Some(check) => format!(
                "{}: {}",
                if check.passed { "pass" } else { "FAIL" },
                check.detail
            ),
        };
        rows.push(vec![
            b.address.clone(),
            b.state.to_string(),
            or_dash(b.weight),
            or_dash(b.effective_weight_percent),
            or_dash(b.origin.as_ref()),
            b.active.to_string(),
            b.requests_total.to_string(),
            b.connect_failures_total.to_string(),
            last,
            labels(b),
        ]);
    }
    out.push_str(&table(&rows));
    Ok(out)
}

/// `--json`: the whole API document, or only `service`'s entry.
pub fn json(
    api: ServicesJson,
    registered: Option<Vec<RegisteredView>>,
    service: Option<&str>,
) -> Result<String, StatusError> {
    let text = match service {
        None => serde_json::to_string_pretty(
            &serde_json::json!({"services": api.services, "registered": registered}),
        ),
        Some(name) => {
            let svc = api
                .services
                .into_iter()
                .find(|s| s.view.name == name)
                .ok_or_else(|| StatusError::NoSuchService(name.to_string()))?;
            serde_json::to_string_pretty(&svc)
        }
    };
    // Values that were just read from JSON always serialise again.
    Ok(text.unwrap_or_default())
}

/// Prints `text` and a newline on standard output. A reader that went away (`sinew status | head -1`)
/// is not an error: what it wanted, it has.
pub fn print(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r,
    }
}

/// A backend's labels as `k=v,k=v`, or `-`.
fn labels(b: &crate::balance::BackendView) -> String {
    if b.labels.is_empty() {
        return "-".into();
    }
    let pairs: Vec<String> = b.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ServicesJson {
        serde_json::from_value(serde_json::json!({"services": [{
        "name": "web", "listen": "127.0.0.1:4001", "mode": "tcp", "balance": "round_robin", "swaps": 2,
        "discovery": "static", "last_update_unix": null,
        "active_connections": 1, "queued": 0, "panic": false,
        "backends": [
            {"address": "10.0.0.1:80", "state": "up", "weight": 1, "effective_weight_percent": 100, "origin": "static",
             "active": 1, "connections_total": 5, "connect_failures_total": 0, "last_check": null},
            {"address": "10.0.0.2:80", "state": "down", "weight": 1, "effective_weight_percent": 0, "origin": "static",
             "labels": {"az": "us-east-1a", "rack": "7"},
             "active": 0, "connections_total": 3, "connect_failures_total": 2,
             "last_check": {"passed": false, "detail": "connect: refused", "age_seconds": 1.0}}
        ]}]}))
        .unwrap()
    }

    #[test]
    fn overview_counts_usable_backends() {
        let out = overview(&sample());
        assert!(out.lines().next().unwrap().starts_with("SERVICE"));
        assert!(out.contains("web") && out.contains("1/2"), "{out}");
    }

    #[test]
    fn detail_lists_backends_and_checks() {
        let out = detail(&sample(), "web").unwrap();
        assert!(
            out.contains("10.0.0.2:80")
                && out.contains("down")
                && out.contains("FAIL: connect: refused"),
            "{out}"
        );
        let line = |addr: &str| out.lines().find(|l| l.starts_with(addr)).unwrap_or("");
        assert!(
            line("10.0.0.2:80").ends_with("az=us-east-1a,rack=7"),
            "{out}"
        );
        assert!(line("10.0.0.1:80").ends_with('-'), "no labels: {out}");
        assert!(matches!(
            detail(&sample(), "nope"),
            Err(StatusError::NoSuchService(_))
        ));
    }

    #[test]
    fn a_service_without_a_listener_shows_a_dash_and_its_frontends() {
        let mut api = sample();
        api.services[0].listen = None;
        api.services[0].frontends = vec!["web".into(), "edge".into()];
        let out = overview(&api);
        let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(row[..4], ["web", "-", "web,edge", "tcp"], "{out}");
        let out = detail(&api, "web").unwrap();
        assert!(out.starts_with("web on -, frontends web,edge ("), "{out}");
        // An entry without `frontends` (an older sinew) reads as routed by none.
        let row: Vec<String> = overview(&sample())
            .lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .map(String::from)
            .collect();
        assert_eq!(row[1..3], ["127.0.0.1:4001", "-"]);
    }

    #[test]
    fn the_overview_shows_the_last_update_and_the_zookeeper_session() {
        let mut api = sample();
        let row = |api: &ServicesJson, now| {
            let out = overview_at(api, now);
            let cells: Vec<String> = out
                .lines()
                .nth(1)
                .unwrap()
                .split("  ")
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
                .collect();
            cells[cells.len() - 3..].join("|")
        };
        assert_eq!(row(&api, 1000.0), "never|-|-", "static, never reported");
        api.services[0].view.last_update_unix = Some(1000.0);
        api.services[0].zookeeper_connected = Some(true);
        // (now, shown)
        for (now, shown) in [
            (1012.4, "12s ago|connected"),
            (1300.0, "5m ago|connected"),
            (8200.0, "2h ago|connected"),
        ] {
            assert_eq!(row(&api, now), format!("{shown}|-"));
        }
        api.services[0].zookeeper_connected = Some(false);
        assert_eq!(row(&api, 1000.0), "0s ago|LOST|-");
        assert!(detail(&api, "web")
            .unwrap()
            .contains("ZooKeeper session LOST"));
    }

    #[test]
    fn json_prints_one_service_when_named() {
        let one: serde_json::Value =
            serde_json::from_str(&json(sample(), None, Some("web")).unwrap()).unwrap();
        assert_eq!(one["name"], "web");
        assert!(one.get("services").is_none(), "{one}");
        let all: serde_json::Value =
            serde_json::from_str(&json(sample(), None, None).unwrap()).unwrap();
        assert_eq!(all["services"][0]["name"], "web");
        assert!(matches!(
            json(sample(), None, Some("nope")),
            Err(StatusError::NoSuchService(_))
        ));
    }

    #[test]
    fn missing_values_show_as_a_dash() {
        for (value, shown) in [(None, "-"), (Some(0), "0"), (Some(100), "100")] {
            assert_eq!(or_dash(value), shown);
        }
        assert_eq!(or_dash(Some("static")), "static");
    }
}
