//! What a backend is called beyond its address, as metric labels: Nerve's instance `name` (a `name`
//! label on every per-backend series) and its labels (`label_<key>` on `sinew_backend_info`, so a
//! query can join them with `* on(service,backend) group_left(label_az) sinew_backend_info`).

use super::backend::escape;
use std::collections::BTreeMap;
use std::fmt::Write;

/// A backend's name and labels, escaped and sanitised for the text format once, when they change.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// The instance name, escaped; empty when there is none.
    name: String,
    /// `,label_<key>="<value>"` for each label, label names sanitised and unique.
    labels: String,
}

impl Identity {
    /// The identity of a backend called `name` (if anything) with `labels`. Label keys become
    /// `label_<key>` with every character Prometheus does not allow in a label name replaced by `_`;
    /// when two keys sanitise to the same name, the first (in key order) is kept.
    pub fn new(name: Option<&str>, labels: &BTreeMap<String, String>) -> Self {
        let mut seen: Vec<String> = Vec::with_capacity(labels.len());
        let mut out = String::new();
        for (key, value) in labels {
            let label = label_name(key);
            if seen.contains(&label) {
                continue;
            }
            let _ = write!(out, ",{label}=\"{}\"", escape(value));
            seen.push(label);
        }
        Self {
            name: escape(name.unwrap_or_default()).into_owned(),
            labels: out,
        }
    }

    /// The `name` label value, escaped.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `label_<key>="<value>"` pairs, each preceded by a comma.
    pub fn labels(&self) -> &str {
        &self.labels
    }
}

/// `label_<key>`, with each character outside `[a-zA-Z0-9_]` replaced by `_`.
fn label_name(key: &str) -> String {
    let mut name = String::with_capacity("label_".len() + key.len());
    name.push_str("label_");
    name.extend(key.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_keys_become_valid_unique_label_names() {
        let labels: BTreeMap<String, String> = [
            ("az", "us-east-1a"),
            ("k8s.io/zone", "b\"1"),
            ("k8s_io_zone", "dropped: same name as the one before"),
            ("1st", "x"),
            ("ünï", "y"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let id = Identity::new(Some("web-1"), &labels);
        assert_eq!(id.name(), "web-1");
        assert_eq!(
            id.labels(),
            r#",label_1st="x",label_az="us-east-1a",label_k8s_io_zone="b\"1",label_ünï="y""#
                .replace("ünï", "_n_")
        );
        let none = Identity::new(None, &BTreeMap::new());
        assert_eq!((none.name(), none.labels()), ("", ""));
    }
}
