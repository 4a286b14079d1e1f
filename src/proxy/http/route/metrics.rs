//! The metric families of the shared HTTP frontends: requests by routed service, requests no rule
//! routed, and client connections.

use crate::metrics::Registry;
use prometheus::IntCounterVec;

/// The frontends' families, registered once per agent.
pub struct FrontendMetrics {
    /// Requests routed, by frontend and service.
    pub(super) requests: IntCounterVec,
    /// Requests answered by the frontend itself, by frontend and reason.
    pub(super) unrouted: IntCounterVec,
    /// Client connections accepted, by frontend.
    pub(super) connections: IntCounterVec,
}

impl FrontendMetrics {
    /// Registers the families in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            requests: registry.counter(
                "sinew_frontend_requests_total",
                "Requests a shared HTTP frontend routed, by the service that got them.",
                &["frontend", "service"],
            )?,
            unrouted: registry.counter(
                "sinew_frontend_unrouted_total",
                "Requests a shared HTTP frontend answered itself, by reason (no_match: no rule and no default_service).",
                &["frontend", "reason"],
            )?,
            connections: registry.counter(
                "sinew_frontend_connections_total",
                "Client connections a shared HTTP frontend accepted.",
                &["frontend"],
            )?,
        })
    }
}
