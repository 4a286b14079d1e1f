//! `GET /api/config`: the running config (every file merged, Synapse and Nerve translated) as JSON,
//! credentials redacted.
//!
//! It is a read, but it shows the whole topology and the check settings, so it is guarded like a
//! state-changing request: the token when `admin.token` is set, and without one a `Host` of localhost
//! or an IP address and no foreign `Origin`, so a rebound web page cannot read it.

use super::{text, AdminState};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};

/// The endpoint's path.
pub(super) const PATH: &str = "/api/config";

/// Serves `GET /api/config`.
pub(super) fn serve(state: &AdminState) -> Response<Full<Bytes>> {
    let config = state.config.load();
    let body = crate::config::redact::to_json(&config)
        .and_then(|json| serde_json::to_string_pretty(&json));
    match body {
        Ok(body) => {
            let mut r = text(StatusCode::OK, body);
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot serialise the running config: {e}\n"),
        ),
    }
}
