//! The field-level difference between two configs: what a reload would change (`POST
//! /api/reload?dry_run=true`, `sinew reload --dry-run`) and what a reload did (its log).
//!
//! Both configs are serialised to JSON and walked together, so every field, including ones added
//! later, is covered without code here. Services are reported by name (added, removed, or changed
//! with `field: old -> new` lines); everything else is a top-level change. Values are shown as
//! written in a config (durations as `1s 500ms`, backends as `host:port`), credentials as
//! `<redacted>`.

use super::redact::{is_secret, REDACTED};
use super::{Config, DEFAULT_WEIGHT};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;

/// Why two configs could not be compared.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// A config could not be turned into JSON (a map with keys JSON cannot hold).
    #[error("cannot compare the configs: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// One changed field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Dotted path of the field, relative to its service for service changes (`timeouts.connect`).
    pub field: String,
    /// The value before, as written in a config; `(none)` when it was unset.
    pub old: String,
    /// The value after.
    pub new: String,
}

/// What differs between a running config and a new one.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConfigDiff {
    /// Services only in the new config.
    pub added: Vec<String>,
    /// Services only in the running config.
    pub removed: Vec<String>,
    /// Services in both whose settings differ, with each changed field.
    pub changed: BTreeMap<String, Vec<Change>>,
    /// Changes outside `services` (admin, frontends, registration, ...).
    pub settings: Vec<Change>,
}

/// What an unset value is shown as.
const NONE: &str = "(none)";

/// The difference from `old` (running) to `new`.
pub fn diff(old: &Config, new: &Config) -> Result<ConfigDiff, DiffError> {
    let (mut old, mut new) = (serde_json::to_value(old)?, serde_json::to_value(new)?);
    let (old_services, new_services) = (take_services(&mut old), take_services(&mut new));
    let mut out = ConfigDiff::default();
    walk(&mut Vec::new(), Some(&old), Some(&new), &mut out.settings);
    for (name, before) in &old_services {
        match new_services.get(name) {
            None => out.removed.push(name.clone()),
            Some(after) => {
                let mut changes = Vec::new();
                walk(&mut Vec::new(), Some(before), Some(after), &mut changes);
                if !changes.is_empty() {
                    out.changed.insert(name.clone(), changes);
                }
            }
        }
    }
    out.added = new_services
        .keys()
        .filter(|n| !old_services.contains_key(*n))
        .cloned()
        .collect();
    Ok(out)
}

impl ConfigDiff {
    /// True when the configs are the same.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.settings.is_empty()
    }

    /// One service's changes on one line: `timeouts.connect: 1s -> 2s; discovery.path: /a -> /b`.
    pub fn service_line(changes: &[Change]) -> String {
        changes
            .iter()
            .map(Change::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} -> {}", self.field, self.old, self.new)
    }
}

impl fmt::Display for ConfigDiff {
    /// One line per fact: `service added: api`, `web: timeouts.connect: 1s -> 2s`, `shutdown_grace: 10s -> 5s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return writeln!(f, "no changes");
        }
        for name in &self.added {
            writeln!(f, "service added: {name}")?;
        }
        for name in &self.removed {
            writeln!(f, "service removed: {name}")?;
        }
        for (name, changes) in &self.changed {
            for change in changes {
                writeln!(f, "{name}: {change}")?;
            }
        }
        for change in &self.settings {
            writeln!(f, "{change}")?;
        }
        Ok(())
    }
}

/// Removes and returns the `services` map of a serialised config.
fn take_services(config: &mut Value) -> Map<String, Value> {
    match config.as_object_mut().and_then(|c| c.remove("services")) {
        Some(Value::Object(services)) => services,
        _ => Map::new(),
    }
}

/// Records in `out` every leaf that differs between `old` and `new` (either may be absent), below `path`.
fn walk(path: &mut Vec<String>, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<Change>) {
    let (old, new) = (old.filter(|v| !v.is_null()), new.filter(|v| !v.is_null()));
    if old == new {
        return;
    }
    let keys: Vec<&str> = path.iter().map(String::as_str).collect();
    if is_secret(&keys) {
        let shown = |v: Option<&Value>| v.map_or(NONE, |_| REDACTED).to_string();
        let field = field(path);
        out.push(Change {
            field,
            old: shown(old),
            new: shown(new),
        });
        return;
    }
    let empty = Map::new();
    if let (Some(a), Some(b)) = (section(old, &empty), section(new, &empty)) {
        let mut names: Vec<&String> = a.keys().chain(b.keys()).collect();
        names.sort();
        names.dedup();
        for name in names {
            path.push(name.clone());
            walk(path, a.get(name), b.get(name), out);
            path.pop();
        }
        return;
    }
    match (old, new) {
        // Lists of sections (routes, checks) are compared item by item; lists of values whole.
        (Some(Value::Array(a)), Some(Value::Array(b)))
            if a.len() == b.len()
                && a.iter()
                    .chain(b)
                    .all(|v| section(Some(v), &empty).is_some()) =>
        {
            let last = path.pop().unwrap_or_default();
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                path.push(format!("{last}[{i}]"));
                walk(path, Some(x), Some(y), out);
                path.pop();
            }
            path.push(last);
        }
        _ => out.push(Change {
            field: field(path),
            old: old.map_or_else(|| NONE.to_string(), show),
            new: new.map_or_else(|| NONE.to_string(), show),
        }),
    }
}

/// A value as a section of fields: an object other than a backend, or `empty` when absent (so each of
/// its fields is listed when a whole section appears or goes).
fn section<'a>(
    value: Option<&'a Value>,
    empty: &'a Map<String, Value>,
) -> Option<&'a Map<String, Value>> {
    match value {
        None => Some(empty),
        Some(Value::Object(m)) if !is_backend(m) => Some(m),
        Some(_) => None,
    }
}

/// The dotted field name of `path`; the whole config for an empty one.
fn field(path: &[String]) -> String {
    if path.is_empty() {
        "(config)".into()
    } else {
        path.join(".")
    }
}

/// True for a serialised backend address (`host`, `port` and `weight`).
fn is_backend(map: &Map<String, Value>) -> bool {
    map.contains_key("host") && map.contains_key("port") && map.contains_key("weight")
}

/// A value as an operator writes it: strings bare, backends as `host:port`, lists in brackets.
fn show(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => NONE.into(),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(show).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) if is_backend(map) => backend(map),
        other => other.to_string(),
    }
}

/// A backend as `host:port`, with its weight when not the default and its name when it has one.
fn backend(map: &Map<String, Value>) -> String {
    let host = map.get("host").map(show).unwrap_or_default();
    let port = map.get("port").map(show).unwrap_or_default();
    let mut out = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    if let Some(w) = map
        .get("weight")
        .and_then(Value::as_u64)
        .filter(|w| *w != u64::from(DEFAULT_WEIGHT))
    {
        out.push_str(&format!(" weight {w}"));
    }
    if let Some(name) = map.get("name").filter(|n| !n.is_null()) {
        out.push_str(&format!(" name {}", show(name)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Format;
    use std::path::Path;

    fn config(yaml: &str) -> Config {
        Config::parse(yaml, Format::Yaml, Path::new("t.yaml")).unwrap()
    }

    const BASE: &str = "admin: { listen: 127.0.0.1:3210, token: old-s3cret }
services:
  web:
    listen: 127.0.0.1:4001
    backends: [10.0.0.1:80, 10.0.0.2:80]
    timeouts: { connect: 1s }
  zk:
    listen: 127.0.0.1:4002
    discovery: { zookeeper: { hosts: [zk1:2181], path: /a } }
  gone:
    listen: 127.0.0.1:4003
    backends: [10.0.0.9:80]
";

    #[test]
    fn identical_configs_have_no_difference() {
        let d = diff(&config(BASE), &config(BASE)).unwrap();
        assert!(d.is_empty());
        assert_eq!(d.to_string(), "no changes\n");
    }

    #[test]
    fn services_added_removed_and_changed_are_listed_field_by_field() {
        let new = BASE
            .replace("connect: 1s", "connect: 2s")
            .replace("path: /a", "path: /b")
            .replace("10.0.0.2:80]", "{ host: 10.0.0.3, port: 81, weight: 5 }]")
            .replace(
                "  gone:\n    listen: 127.0.0.1:4003\n    backends: [10.0.0.9:80]\n",
                "  api:\n    listen: 127.0.0.1:4004\n    backends: [10.0.0.5:80]\n",
            );
        let d = diff(&config(BASE), &config(&new)).unwrap();
        assert_eq!(d.added, vec!["api"]);
        assert_eq!(d.removed, vec!["gone"]);
        let text = d.to_string();
        for line in [
            "service added: api",
            "service removed: gone",
            "web: timeouts.connect: 1s -> 2s",
            "web: backends: [10.0.0.1:80, 10.0.0.2:80] -> [10.0.0.1:80, 10.0.0.3:81 weight 5]",
            "zk: discovery.zookeeper.path: /a -> /b",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from:\n{text}"
            );
        }
        assert_eq!(d.changed.len(), 2, "{text}");
        assert!(d.settings.is_empty(), "{text}");
    }

    #[test]
    fn top_level_changes_are_listed_and_credentials_never_shown() {
        let new = format!(
            "shutdown_grace: 5s\n{}",
            BASE.replace("old-s3cret", "new-s3cret")
        );
        let d = diff(&config(BASE), &config(&new)).unwrap();
        let text = d.to_string();
        assert!(text.contains("shutdown_grace: 10s -> 5s"), "{text}");
        assert!(
            text.contains("admin.token: <redacted> -> <redacted>"),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
        let unset = BASE.replace(", token: old-s3cret", "");
        let text = diff(&config(BASE), &config(&unset)).unwrap().to_string();
        assert_eq!(text, "admin.token: <redacted> -> (none)\n");
    }

    #[test]
    fn a_section_that_appears_lists_each_of_its_fields() {
        let new = BASE.replace(
            "    timeouts: { connect: 1s }\n",
            "    timeouts: { connect: 1s }\n    tls_listen: { cert: /c.pem, key: /k.pem }\n",
        );
        let text = diff(&config(BASE), &config(&new)).unwrap().to_string();
        assert!(
            text.contains("web: tls_listen.cert: (none) -> /c.pem"),
            "{text}"
        );
        assert!(
            text.contains("web: tls_listen.key: (none) -> /k.pem"),
            "{text}"
        );
    }
}
