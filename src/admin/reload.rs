//! `POST /api/reload?dry_run=true`: what a reload would change, with nothing applied.

use super::{reload, text, AdminState, RELOAD_TIMEOUT};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use std::sync::Arc;

/// Serves `POST /api/reload`: a reload, or a dry run when the query asks for one; 400 for a query it
/// does not understand.
pub(super) async fn serve(state: &AdminState, query: Option<&str>) -> Response<Full<Bytes>> {
    match dry_run(query) {
        Ok(true) => dry(state).await,
        Ok(false) => reload(state).await,
        Err(message) => text(StatusCode::BAD_REQUEST, message),
    }
}

/// Whether the query asks for a dry run (`dry_run`, `dry_run=true|1|false|0`), or why it is refused.
fn dry_run(query: Option<&str>) -> Result<bool, String> {
    let mut dry = false;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, "true"));
        dry = match (key, value) {
            ("dry_run", "true" | "1") => true,
            ("dry_run", "false" | "0") => false,
            _ => {
                return Err(format!(
                    "unknown reload parameter {pair:?}: the only one is dry_run=true|false\n"
                ))
            }
        };
    }
    Ok(dry)
}

/// Reads and validates the config files and answers how they differ from the running config; 400
/// with the error when a reload would reject them. Nothing is applied either way.
async fn dry(state: &AdminState) -> Response<Full<Bytes>> {
    let Some(reloader) = &state.reload else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "reload is not available: sinew was not started from a config file\n".into(),
        );
    };
    let running = tokio::spawn(Arc::clone(reloader).dry_run());
    match tokio::time::timeout(RELOAD_TIMEOUT, running).await {
        Ok(Ok(Ok(changes))) => text(
            StatusCode::OK,
            format!("dry run: the files are valid; nothing applied\n{changes}"),
        ),
        Ok(Ok(Err(error))) => text(
            StatusCode::BAD_REQUEST,
            format!("dry run: a reload would be rejected; nothing applied: {error}\n"),
        ),
        _ => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "dry run did not complete\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_asks_for_a_dry_run_or_is_refused() {
        for (query, dry) in [
            (None, false),
            (Some(""), false),
            (Some("dry_run=true"), true),
            (Some("dry_run"), true),
            (Some("dry_run=1"), true),
            (Some("dry_run=false"), false),
        ] {
            assert_eq!(dry_run(query).ok(), Some(dry), "{query:?}");
        }
        for bad in ["dry_run=yes", "dryrun=true", "dry_run=true&force=1"] {
            let refused = dry_run(Some(bad)).expect_err(bad);
            assert!(refused.contains("unknown reload parameter"), "{refused}");
        }
    }
}
