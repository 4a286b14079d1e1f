//! The top-level HAProxy sections Synapse writes verbatim: `extra_sections` (a `listen stats` block's
//! `bind` becomes the admin address) and `global` (`stats socket` points at the admin API).

use super::{lines, SynapseError, Warnings};
use crate::config::Level;
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

/// Reads `haproxy.extra_sections` and `haproxy.global` of `file`; returns the stats `bind` address, if a
/// section gives one. Errors name `haproxy.extra_sections[.TITLE]`.
pub(super) fn read(
    file: &Path,
    top: &Value,
    w: &mut Warnings,
) -> Result<Option<SocketAddr>, SynapseError> {
    let error = |field: String, message: String| SynapseError::Top {
        file: file.to_path_buf(),
        field,
        message,
    };
    for line in lines(top.get("global")) {
        if line.split_whitespace().take(2).eq(["stats", "socket"]) {
            w.push(
                Level::Info,
                format!(
                    "haproxy.global: {:?}: sinew has no stats socket; the admin API (/api/services, \
                     /api/reload, /metrics) answers on the admin address",
                    line.trim()
                ),
            );
        }
    }
    let sections = match top.get("extra_sections") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(error(
                "haproxy.extra_sections".into(),
                "expected a hash of section titles to lists of lines".into(),
            ))
        }
    };
    let mut stats = None;
    for (title, body) in sections {
        let field = format!("haproxy.extra_sections.{title}");
        let body = lines(Some(body));
        let is_stats = title.split_whitespace().next() == Some("listen")
            && body
                .iter()
                .any(|l| l.split_whitespace().next() == Some("stats"));
        if !is_stats {
            w.push(
                Level::Warn,
                format!("{field}: sinew does not run extra HAProxy sections; ignored"),
            );
            continue;
        }
        // HAProxy's older `listen NAME ADDR` form gives the address in the title itself.
        if let Some(addr) = title.split_whitespace().nth(2) {
            let at = bind_addr(addr).ok_or_else(|| {
                error(
                    field.clone(),
                    format!("{addr:?} is not an address such as :3212 or 127.0.0.1:3212"),
                )
            })?;
            stats.get_or_insert(at);
        }
        for line in &body {
            let words: Vec<&str> = line.split_whitespace().collect();
            if let ["bind", addr, rest @ ..] = words.as_slice() {
                let at = bind_addr(addr).ok_or_else(|| {
                    error(
                        field.clone(),
                        format!(
                            "{:?}: {addr:?} is not an address such as :3212 or 127.0.0.1:3212",
                            line.trim()
                        ),
                    )
                })?;
                if !rest.is_empty() {
                    w.push(
                        Level::Warn,
                        format!(
                            "{field}: bind options {:?} ignored for the admin server",
                            rest.join(" ")
                        ),
                    );
                }
                stats.get_or_insert(at);
            }
        }
    }
    Ok(stats)
}

/// HAProxy's `bind` address: `IP:PORT`, or `:PORT` / `*:PORT` for every address.
fn bind_addr(text: &str) -> Option<SocketAddr> {
    let any = |port: &str| {
        port.parse()
            .ok()
            .map(|p| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), p))
    };
    match text.strip_prefix('*').unwrap_or(text).strip_prefix(':') {
        Some(port) => any(port),
        None => text.parse().ok(),
    }
}
