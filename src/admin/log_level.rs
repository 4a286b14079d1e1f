//! `GET /api/log-level` (the log filter in force) and `PUT /api/log-level` (replace it; the body is a
//! filter such as `info,sinew::proxy=debug`).

use super::text;
use crate::log_level::{self, LogLevelError};
use crate::metrics::Registry;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use prometheus::IntCounterVec;
use std::time::Duration;

/// How long the body of a `PUT` may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(5);

/// The family of log filter changes asked through the admin API, by result; clones share it.
#[derive(Clone)]
pub struct LogFilterMetrics {
    changes: IntCounterVec,
}

impl LogFilterMetrics {
    /// Creates the family in `registry`, with both results from the start.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let changes = registry.counter(
            "sinew_admin_log_filter_changes_total",
            "Log filter changes asked through PUT /api/log-level, by result (ok; rejected: the filter did not parse or could not be applied).",
            &["result"],
        )?;
        for result in ["ok", "rejected"] {
            changes.with_label_values(&[result]);
        }
        Ok(Self { changes })
    }

    fn count(&self, ok: bool) {
        let result = if ok { "ok" } else { "rejected" };
        self.changes.with_label_values(&[result]).inc();
    }
}

/// Serves `/api/log-level`.
pub(super) async fn serve(
    req: &mut Request<Incoming>,
    metrics: &LogFilterMetrics,
) -> Response<Full<Bytes>> {
    let outcome = match *req.method() {
        Method::GET | Method::HEAD => log_level::current().map(|f| format!("{f}\n")),
        Method::PUT => {
            let set = match body(req).await {
                Ok(directive) => log_level::set(&directive),
                Err(response) => {
                    metrics.count(false);
                    return response;
                }
            };
            metrics.count(set.is_ok());
            set.map(|(old, new)| format!("log filter: {old} -> {new}\n"))
        }
        _ => {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "use GET (read) or PUT (replace) /api/log-level\n".into(),
            )
        }
    };
    match outcome {
        Ok(body) => text(StatusCode::OK, body),
        Err(e) => {
            let status = match e {
                LogLevelError::Invalid { .. } => StatusCode::BAD_REQUEST,
                LogLevelError::NotInstalled => StatusCode::SERVICE_UNAVAILABLE,
                LogLevelError::Reload(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            text(status, format!("{e}; the log filter is unchanged\n"))
        }
    }
}

/// The request's body as text, up to [`log_level::MAX_DIRECTIVE`] bytes, or the error response.
async fn body(req: &mut Request<Incoming>) -> Result<String, Response<Full<Bytes>>> {
    let bad = |message: String| text(StatusCode::BAD_REQUEST, format!("{message}\n"));
    let limited = Limited::new(req.body_mut(), log_level::MAX_DIRECTIVE);
    let collected = tokio::time::timeout(BODY_TIMEOUT, limited.collect())
        .await
        .map_err(|_| bad("the request body did not arrive in time".into()))?
        .map_err(|e| {
            bad(format!(
                "cannot read the body (at most {} bytes): {e}",
                log_level::MAX_DIRECTIVE
            ))
        })?;
    String::from_utf8(collected.to_bytes().to_vec())
        .map_err(|_| bad("the body is not UTF-8 text".into()))
}
