//! Read-only views of a balancer for the admin API.

use super::health::now_ms;
use super::overrides::Override;
use super::set::Entry;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// What the admin API shows of a service's balancer.
#[derive(Debug, Serialize, Deserialize)]
pub struct ServiceView {
    /// Service name.
    pub name: String,
    /// Algorithm name.
    pub balance: Cow<'static, str>,
    /// Backend-set swaps so far.
    pub swaps: u64,
    /// When discovery last reported (seconds since the Unix epoch).
    pub last_update_unix: Option<f64>,
    /// Client connections open now.
    pub active_connections: i64,
    /// True while the panic threshold overrides health.
    pub panic: bool,
    /// Connections or requests waiting for a backend slot now.
    pub queued: i64,
    /// Backends in the set, then draining ones.
    pub backends: Vec<BackendView>,
}

/// The result of a backend's last active check.
#[derive(Debug, Serialize, Deserialize)]
pub struct CheckView {
    /// Whether it passed.
    pub passed: bool,
    /// What happened.
    pub detail: String,
    /// Seconds ago.
    pub age_seconds: f64,
}

/// What the admin API shows of a backend.
#[derive(Debug, Serialize, Deserialize)]
pub struct BackendView {
    /// `host:port`.
    pub address: String,
    /// Configured weight (absent for draining backends).
    pub weight: Option<u32>,
    /// Share of new traffic relative to the others, in percent of the configured weight (slow start, health).
    pub effective_weight_percent: Option<u32>,
    /// `up`, `slow_start`, `down` (active checks), `ejected` (outlier), `maintenance` (server option
    /// `disabled`, or an operator's `disable`), `drain` (an operator's `drain`), `disabled` (weight 0),
    /// `backup` (a backup on standby) or `draining` (left the set, connections still open).
    pub state: Cow<'static, str>,
    /// An operator's `drain` or `disable` in force (see `sinew backend`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_state: Option<super::AdminState>,
    /// An operator's weight in force in place of `weight`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_override: Option<u32>,
    /// Marked `backup`: serves only while no other backend is usable.
    #[serde(default)]
    pub backup: bool,
    /// Its own connection limit (server option `maxconn`), over the service's `max_connections`.
    #[serde(default)]
    pub max_connections: Option<u32>,
    /// Its labels (Nerve's `labels`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Where it came from.
    pub origin: Option<String>,
    /// Connections (TCP) or in-flight requests (HTTP) now.
    pub active: i64,
    /// Connections opened so far.
    pub connections_total: u64,
    /// Failed connection attempts so far.
    pub connect_failures_total: u64,
    /// Seconds of ejection left.
    pub ejected_seconds: Option<f64>,
    /// The last active check.
    pub last_check: Option<CheckView>,
}

impl BackendView {
    /// Describes an entry; `effective` is its weight in the current set, `None` when it left the set;
    /// `admin` is an operator's override of it.
    pub fn new(entry: &Entry, effective: Option<u32>, admin: Option<&Override>) -> Self {
        let now = now_ms();
        let h = &entry.health;
        let weight = super::eligible::base_weight(entry, admin);
        let base = weight * super::eligible::SCALE;
        let options = &entry.backend.options;
        let admin_state = admin.and_then(|o| o.admin_state);
        let state = match effective {
            None => "draining",
            Some(_) if options.disabled => "maintenance",
            Some(_) if admin_state == Some(super::AdminState::Disable) => "maintenance",
            Some(_) if admin_state == Some(super::AdminState::Drain) => "drain",
            Some(_) if weight == 0 => "disabled",
            Some(_) if !h.checked_up() => "down",
            Some(_) if h.ejected(now) => "ejected",
            Some(0) if options.backup => "backup",
            Some(w) if w < base => "slow_start",
            Some(_) => "up",
        };
        let in_set = effective.is_some();
        Self {
            address: entry.key.clone(),
            weight: in_set.then_some(entry.backend.weight),
            effective_weight_percent: effective.map(|w| (w * 100).checked_div(base).unwrap_or(0)),
            state: Cow::Borrowed(state),
            admin_state,
            weight_override: admin.and_then(|o| o.weight),
            backup: options.backup,
            max_connections: options.max_connections,
            labels: entry.backend.labels.clone(),
            origin: in_set.then(|| entry.backend.origin.to_string()),
            active: entry.stats.load.get(),
            connections_total: entry.stats.metrics.connections.get(),
            connect_failures_total: entry.stats.metrics.connect_failures.get(),
            ejected_seconds: h.ejected(now).then(|| h.ejected_for(now) as f64 / 1000.0),
            last_check: h.last_check().map(|c| CheckView {
                passed: c.passed,
                detail: c.detail,
                age_seconds: now.saturating_sub(c.at_ms) as f64 / 1000.0,
            }),
        }
    }
}
