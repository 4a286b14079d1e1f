//! Runtime control of single backends, HAProxy's `set server ... state|weight` over the admin API:
//! `POST /api/services/{service}/backends/{address}/drain|disable|enable`,
//! `PUT /api/services/{service}/backends/{address}/weight/{n}`, and `GET /api/overrides` listing the
//! overrides in force. The address is `host:port` as `/api/services` shows it (percent-encoded where
//! it must be, e.g. IPv6 brackets), or the backend's discovered name.

use super::{text, AdminState};
use crate::balance::{Action, Outcome, OverrideError, OverrideView};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Response, StatusCode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The document `GET /api/overrides` serves.
#[derive(Debug, Serialize, Deserialize)]
pub struct OverridesJson {
    /// The overrides in force, by service (services without any left out).
    pub services: BTreeMap<String, Vec<OverrideView>>,
}

/// `GET /api/overrides`.
pub(super) fn list(state: &AdminState) -> Response<Full<Bytes>> {
    let services = state
        .services
        .load()
        .iter()
        .map(|(name, info)| (name.clone(), info.balancer.overrides()))
        .filter(|(_, list)| !list.is_empty())
        .collect();
    let body = serde_json::to_string_pretty(&OverridesJson { services })
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    let mut r = text(StatusCode::OK, body);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// A request under `/api/services/`: `rest` is the path after that prefix.
pub(super) fn control(state: &AdminState, method: &Method, rest: &str) -> Response<Full<Bytes>> {
    const USAGE: &str = "use POST /api/services/SERVICE/backends/ADDR/drain|disable|enable or PUT /api/services/SERVICE/backends/ADDR/weight/N\n";
    let parts: Vec<&str> = rest.split('/').collect();
    let (service, address, verb, arg) = match parts.as_slice() {
        [s, "backends", a, v] => (*s, *a, *v, None),
        [s, "backends", a, v, n] => (*s, *a, *v, Some(*n)),
        _ => return text(StatusCode::NOT_FOUND, USAGE.into()),
    };
    let (Some(service), Some(address)) = (decode(service), decode(address)) else {
        return text(
            StatusCode::BAD_REQUEST,
            "bad percent-encoding in the path\n".into(),
        );
    };
    let action = match (verb, arg) {
        ("drain", None) => Action::Drain,
        ("disable", None) => Action::Disable,
        ("enable", None) => Action::Enable,
        ("weight", Some(n)) => match Action::weight(n) {
            Ok(a) => a,
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
        },
        _ => return text(StatusCode::NOT_FOUND, USAGE.into()),
    };
    let allowed = match action {
        Action::Weight(_) => Method::PUT,
        _ => Method::POST,
    };
    if method != allowed {
        return text(StatusCode::METHOD_NOT_ALLOWED, USAGE.into());
    }
    let Some(info) = state.services.load().get(&service).cloned() else {
        let known: Vec<String> = state.services.load().keys().cloned().collect();
        return text(
            StatusCode::NOT_FOUND,
            format!(
                "no service named {service:?} (services: {})\n",
                known.join(", ")
            ),
        );
    };
    match info.balancer.control(&address, action) {
        Ok(outcome) => text(StatusCode::OK, answer(&service, action, &outcome)),
        Err(e @ OverrideError::Weight(_)) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
        Err(e @ OverrideError::Ambiguous { .. }) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
        Err(e @ OverrideError::NoSuchBackend { .. }) => {
            text(StatusCode::NOT_FOUND, format!("{e}\n"))
        }
    }
}

/// The answer to an action: what is in force now, and what happens to open connections.
fn answer(service: &str, action: Action, o: &Outcome) -> String {
    let now = match (o.now.admin_state, o.now.weight) {
        (None, None) => "no override: discovered weight and state".to_string(),
        (state, weight) => {
            let mut parts = Vec::new();
            if let Some(s) = state {
                parts.push(s.name().to_string());
            }
            if let Some(w) = weight {
                parts.push(format!("weight {w}"));
            }
            parts.join(", ")
        }
    };
    let open = match action {
        Action::Drain | Action::Disable => {
            format!("; no new connections or requests, {} open finish", o.active)
        }
        _ => String::new(),
    };
    let absent = if o.in_set {
        ""
    } else if o.now.is_empty() {
        " (not in the backend set now)"
    } else {
        " (not in the backend set now: the override is kept and applies when it returns)"
    };
    format!("{service} {}: {now}{open}{absent}\n", o.address)
}

/// Percent-decodes one path segment; `None` when it is malformed or not UTF-8.
fn decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::{AdminState as State, Override};

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(decode("%5B%3A%3A1%5D%3A80").as_deref(), Some("[::1]:80"));
        assert_eq!(decode("10.0.0.1:80").as_deref(), Some("10.0.0.1:80"));
        assert_eq!(decode("%zz"), None);
        assert_eq!(decode("%4"), None);
        assert_eq!(decode("%FF"), None, "not UTF-8");
    }

    #[test]
    fn the_answer_says_what_is_in_force_and_what_finishes() {
        let o = |admin_state, weight, in_set| Outcome {
            address: "10.0.0.1:80".into(),
            now: Override {
                admin_state,
                weight,
            },
            in_set,
            active: 2,
        };
        assert_eq!(
            answer("web", Action::Drain, &o(Some(State::Drain), None, true)),
            "web 10.0.0.1:80: drain; no new connections or requests, 2 open finish\n"
        );
        assert_eq!(
            answer("web", Action::Weight(5), &o(Some(State::Disable), Some(5), false)),
            "web 10.0.0.1:80: disable, weight 5 (not in the backend set now: the override is kept and applies when it returns)\n"
        );
        assert_eq!(
            answer("web", Action::Enable, &o(None, None, true)),
            "web 10.0.0.1:80: no override: discovered weight and state\n"
        );
    }
}
