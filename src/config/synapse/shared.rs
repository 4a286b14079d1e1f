//! Synapse's shared frontend gathered from the whole config: the top-level `haproxy.shared_frontend`
//! lines, then each service's, read by [`frontend::SharedFrontend`] into one native HTTP frontend.

use super::{frontend, lines, SynapseError, Warnings};
use crate::config::{HttpFrontend, Level, Mode, ServiceConfig};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// The shared HTTP frontend of the top-level `haproxy.shared_frontend` lines and then each service's
/// (`shared`: name, backend name, lines), routing to the translated services `out`.
pub(super) fn shared_frontend(
    file: &Path,
    top: &Value,
    shared: &[(String, String, Vec<String>)],
    out: &BTreeMap<String, ServiceConfig>,
    w: &mut Warnings,
) -> Result<BTreeMap<String, HttpFrontend>, SynapseError> {
    let field = "haproxy.shared_frontend";
    let top_lines = top.get("shared_frontend").map(|v| lines(Some(v)));
    let in_service = |name: &str, message: String| SynapseError::Invalid {
        file: file.to_path_buf(),
        service: name.to_string(),
        field: field.into(),
        message,
    };
    let Some(top_lines) = top_lines else {
        return match shared.iter().find(|(_, _, l)| !l.is_empty()) {
            Some((name, _, _)) => Err(in_service(
                name,
                "the top-level haproxy.shared_frontend (with its bind line) is missing".into(),
            )),
            None => Ok(BTreeMap::new()),
        };
    };
    let backend = |b: &str| {
        shared
            .iter()
            .find(|(name, backend, _)| backend == b && out.contains_key(name))
            .map(|(name, _, _)| name.clone())
    };
    let mut f = frontend::SharedFrontend::default();
    for line in &top_lines {
        f.line(line, &backend).map_err(|e| SynapseError::Top {
            file: file.to_path_buf(),
            field: field.into(),
            message: format!("{line:?}: {e}"),
        })?;
    }
    for (name, _, lines) in shared {
        for line in lines {
            f.line(line, &backend)
                .map_err(|e| in_service(name, format!("{line:?}: {e}")))?;
        }
    }
    for directive in f.ignored.drain(..) {
        w.push(
            Level::Warn,
            format!(
                "{field}: `{directive}` lines are not supported on the shared frontend, ignored"
            ),
        );
    }
    let frontend = f.finish().map_err(|e| SynapseError::Top {
        file: file.to_path_buf(),
        field: field.into(),
        message: e,
    })?;
    let targets = frontend.routes.iter().map(|r| &r.service);
    for name in targets.chain(frontend.default_service.as_ref()) {
        if out.get(name).is_some_and(|s| s.mode != Mode::Http) {
            return Err(in_service(
                name,
                "routed by the shared frontend, so it needs `mode http` in its haproxy backend or listen lines".into(),
            ));
        }
    }
    Ok(BTreeMap::from([("shared-frontend".to_string(), frontend)]))
}

/// The backend names that a `use_backend` or `default_backend` line of the shared frontend (top level
/// or any service's) names.
pub(super) fn named_backends(
    top: &Value,
    shared: &[(String, String, Vec<String>)],
) -> std::collections::BTreeSet<String> {
    let top_lines = lines(top.get("shared_frontend"));
    let all = top_lines
        .iter()
        .chain(shared.iter().flat_map(|(_, _, l)| l));
    all.filter_map(|line| {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("use_backend" | "default_backend"), Some(b)) => Some(b.to_string()),
            _ => None,
        }
    })
    .collect()
}
