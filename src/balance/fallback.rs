//! What a service serves when discovery reports no backends (Synapse's `default_servers`,
//! `keep_default_servers` and `use_previous_backends`).

use super::backend::{Backend, Origin};
use super::set::BackendSet;

/// The fallback policy of a service.
#[derive(Debug, Clone, Default)]
pub struct Fallback {
    /// Served when discovery has none (origin `Default`).
    pub defaults: Vec<Backend>,
    /// Serve `defaults` always, beside what discovery reports.
    pub keep_defaults: bool,
    /// With no defaults, keep the previous set when discovery reports none.
    pub use_previous: bool,
}

impl Fallback {
    /// Applies the policy to a discovery report; `None` means "keep the current set as it is".
    pub fn apply(
        &self,
        service: &str,
        mut backends: Vec<Backend>,
        current: &BackendSet,
    ) -> Option<Vec<Backend>> {
        if self.keep_defaults {
            backends.extend(self.defaults.iter().cloned());
            return Some(backends);
        }
        if !backends.is_empty() {
            return Some(backends);
        }
        if !self.defaults.is_empty() {
            tracing::warn!(
                service,
                "discovery reports no backends; serving the default servers"
            );
            return Some(self.defaults.clone());
        }
        if !self.use_previous || current.entries().is_empty() {
            return Some(backends);
        }
        if current
            .entries()
            .iter()
            .all(|e| e.backend.origin == Origin::Previous)
        {
            return None;
        }
        tracing::warn!(
            service,
            backends = current.entries().len(),
            "discovery reports no backends; keeping the previous ones"
        );
        Some(
            current
                .entries()
                .iter()
                .map(|e| Backend {
                    origin: Origin::Previous,
                    ..e.backend.clone()
                })
                .collect(),
        )
    }
}
