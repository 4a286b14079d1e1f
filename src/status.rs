//! `sinew status`: the admin API's view of every service, as a terminal table (or JSON).

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::fmt::Write;
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
pub async fn fetch(addr: SocketAddr) -> Result<Value, StatusError> {
    get(addr, "/api/services")
        .await?
        .ok_or_else(|| StatusError::Admin {
            addr,
            message: "no /api/services".into(),
        })
}

/// Fetches `/api/register`; `None` when nothing is registered.
pub async fn fetch_registered(addr: SocketAddr) -> Result<Option<Value>, StatusError> {
    get(addr, "/api/register").await
}

/// GETs a JSON document from the admin server; `None` on 404.
async fn get(addr: SocketAddr, path: &str) -> Result<Option<Value>, StatusError> {
    let err = |message: String| StatusError::Admin { addr, message };
    let call = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| err(format!("connect: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| err(e.to_string()))?;
        let driver = tokio::spawn(conn);
        let req = Request::get(path)
            .header("host", addr.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|e| err(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| err(e.to_string()))?;
        if resp.status() == hyper::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(err(format!("HTTP {}", resp.status())));
        }
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| err(e.to_string()))?;
        driver.abort();
        serde_json::from_slice(&body.to_bytes())
            .map(Some)
            .map_err(|e| err(format!("bad JSON: {e}")))
    };
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .map_err(|_| err("timed out".into()))?
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
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

/// All services, one line each.
pub fn overview(api: &Value) -> String {
    let mut rows = vec![[
        "SERVICE",
        "LISTEN",
        "MODE",
        "BALANCE",
        "UP/BACKENDS",
        "ACTIVE",
        "QUEUED",
        "SWAPS",
        "PANIC",
    ]
    .map(String::from)
    .to_vec()];
    for svc in api["services"].as_array().into_iter().flatten() {
        let backends = svc["backends"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let up = backends
            .iter()
            .filter(|b| matches!(b["state"].as_str(), Some("up" | "slow_start")))
            .count();
        rows.push(vec![
            s(&svc["name"]),
            s(&svc["listen"]),
            s(&svc["mode"]),
            s(&svc["balance"]),
            format!("{up}/{}", backends.len()),
            s(&svc["active_connections"]),
            s(&svc["queued"]),
            s(&svc["swaps"]),
            if svc["panic"].as_bool() == Some(true) {
                "PANIC".into()
            } else {
                "-".into()
            },
        ]);
    }
    table(&rows)
}

/// Registered services, one line each.
pub fn registered(list: &Value) -> String {
    let mut rows = vec![["REGISTERED", "STATE", "MAINTENANCE", "ZNODE", "CHECKS"]
        .map(String::from)
        .to_vec()];
    for r in list.as_array().into_iter().flatten() {
        let checks: Vec<String> = r["checks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let state = if c["up"].as_bool() == Some(true) {
                    "up"
                } else {
                    "down"
                };
                match c["last_error"].as_str() {
                    Some(e) => format!("{}: {state} ({e})", s(&c["kind"])),
                    None => format!("{}: {state}", s(&c["kind"])),
                }
            })
            .collect();
        rows.push(vec![
            s(&r["name"]),
            if r["up"].as_bool() == Some(true) {
                "up".into()
            } else {
                "down".into()
            },
            if r["maintenance"].as_bool() == Some(true) {
                "yes".into()
            } else {
                "-".into()
            },
            s(&r["znode"]),
            checks.join("; "),
        ]);
    }
    table(&rows)
}

/// One service, one line per backend.
pub fn detail(api: &Value, service: &str) -> Result<String, StatusError> {
    let svc = api["services"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == service)
        .ok_or_else(|| StatusError::NoSuchService(service.to_string()))?;
    let mut out = format!(
        "{} on {} ({}, {}), backends from {}, {} swaps, {} active, {} queued{}\n\n",
        s(&svc["name"]),
        s(&svc["listen"]),
        s(&svc["mode"]),
        s(&svc["balance"]),
        s(&svc["discovery"]),
        s(&svc["swaps"]),
        s(&svc["active_connections"]),
        s(&svc["queued"]),
        if svc["panic"].as_bool() == Some(true) {
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
    ]
    .map(String::from)
    .to_vec()];
    for b in svc["backends"].as_array().into_iter().flatten() {
        let check = &b["last_check"];
        let last = if check.is_null() {
            "-".to_string()
        } else {
            format!(
                "{}: {}",
                if check["passed"].as_bool() == Some(true) {
                    "pass"
                } else {
                    "FAIL"
                },
                s(&check["detail"])
            )
        };
        rows.push(vec![
            s(&b["address"]),
            s(&b["state"]),
            s(&b["weight"]),
            s(&b["effective_weight_percent"]),
            s(&b["origin"]),
            s(&b["active"]),
            s(&b["connections_total"]),
            s(&b["connect_failures_total"]),
            last,
        ]);
    }
    out.push_str(&table(&rows));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        serde_json::json!({"services": [{
        "name": "web", "listen": "127.0.0.1:4001", "mode": "tcp", "balance": "round_robin", "swaps": 2,
        "active_connections": 1, "queued": 0, "panic": false,
        "backends": [
            {"address": "10.0.0.1:80", "state": "up", "weight": 1, "effective_weight_percent": 100, "origin": "static",
             "active": 1, "connections_total": 5, "connect_failures_total": 0, "last_check": null},
            {"address": "10.0.0.2:80", "state": "down", "weight": 1, "effective_weight_percent": 0, "origin": "static",
             "active": 0, "connections_total": 3, "connect_failures_total": 2,
             "last_check": {"passed": false, "detail": "connect: refused", "age_seconds": 1.0}}
        ]}]})
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
        assert!(matches!(
            detail(&sample(), "nope"),
            Err(StatusError::NoSuchService(_))
        ));
    }
}
