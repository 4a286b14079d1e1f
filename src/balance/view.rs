//! Read-only views of a balancer for the admin API.

use super::changes::last_change;
use super::health::now_ms;
use super::overrides::Override;
use super::set::Entry;
use crate::metrics::backend::BackendMetrics;
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
    /// Seconds since a backend of the service last changed state or the set's membership changed;
    /// `null` before discovery first gave it backends.
    #[serde(default)]
    pub last_change_seconds: Option<f64>,
    /// Requests per second, error ratio and latency over the last minute (filled by the admin API).
    #[serde(default)]
    pub traffic: Option<TrafficView>,
    /// The last five minutes, oldest first, one point per sampling interval (filled by the admin API).
    #[serde(default)]
    pub history: Vec<HistoryPoint>,
    /// Zone-aware routing: this host's place and the current split (absent when the service does not
    /// route by locality).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<LocalityView>,
    /// Backends in the set, then draining ones.
    pub backends: Vec<BackendView>,
}

/// A service's zone-aware routing as it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalityView {
    /// This host's zone.
    pub zone: String,
    /// This host's region, when known.
    pub region: Option<String>,
    /// False while the set balances as a whole (panic mode, or nothing usable in any locality).
    pub active: bool,
    /// Percent of new picks sent to this host's zone.
    pub local_percent: f64,
    /// Percent sent to other zones of this host's region.
    pub region_percent: f64,
    /// Percent sent anywhere else.
    pub remote_percent: f64,
}

/// Fills in the locality of the set's `backends` (the first `set.entries().len()`, in set order)
/// and describes the set's split under `settings`.
pub fn locality(
    settings: &super::locality::Settings,
    set: &super::BackendSet,
    backends: &mut [BackendView],
) -> LocalityView {
    for (b, e) in backends.iter_mut().zip(set.entries()) {
        b.locality = Some(Cow::Borrowed(settings.tier(&e.backend).name()));
        b.zone = settings.zone_of(&e.backend).map(str::to_string);
    }
    let split = set.locality().and_then(|t| t.split());
    let [local, region, remote] = split
        .unwrap_or_default()
        .map(|s| (s * 1000.0).round() / 10.0);
    LocalityView {
        zone: settings.zone().to_string(),
        region: settings.region().map(str::to_string),
        active: split.is_some(),
        local_percent: local,
        region_percent: region,
        remote_percent: remote,
    }
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

/// Traffic over a recent window: rates, errors and response-time quantiles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TrafficView {
    /// The window, in seconds (shorter while sinew has not run that long).
    pub window_seconds: f64,
    /// Requests (HTTP) or connections (TCP) per second.
    pub rps: f64,
    /// HTTP: the share of responses that were 5xx; TCP: the share of connection attempts that failed.
    pub error_ratio: f64,
    /// Median response time in milliseconds (HTTP; `null` without responses).
    pub p50_ms: Option<f64>,
    /// 99th percentile response time in milliseconds (HTTP; `null` without responses).
    pub p99_ms: Option<f64>,
}

/// One sampling interval of the in-process history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryPoint {
    /// Seconds before now at which the interval ended.
    pub age_seconds: f64,
    /// Requests (HTTP) or connections (TCP) per second over the interval.
    pub rps: f64,
    /// Error ratio over the interval (see [`TrafficView::error_ratio`]).
    pub error_ratio: f64,
    /// 99th percentile response time over the interval, in milliseconds (HTTP with responses).
    pub p99_ms: Option<f64>,
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
    /// With locality routing: `local`, `region` or `remote` relative to this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<Cow<'static, str>>,
    /// With locality routing: its zone label, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Where it came from.
    pub origin: Option<String>,
    /// Connections (TCP) or in-flight requests (HTTP) now.
    pub active: i64,
    /// Connections opened so far.
    pub connections_total: u64,
    /// Failed connection attempts so far.
    pub connect_failures_total: u64,
    /// Requests served so far: HTTP responses received (`sinew_backend_http_responses_total`), or
    /// connections opened for TCP.
    #[serde(default)]
    pub requests_total: u64,
    /// Seconds since the backend last changed state.
    #[serde(default)]
    pub last_change_seconds: f64,
    /// Requests per second, error ratio and latency over the last minute (filled by the admin API).
    #[serde(default)]
    pub traffic: Option<TrafficView>,
    /// The last five minutes, oldest first, one point per sampling interval (filled by the admin API).
    #[serde(default)]
    pub history: Vec<HistoryPoint>,
    /// Seconds of ejection left.
    pub ejected_seconds: Option<f64>,
    /// The last active check.
    pub last_check: Option<CheckView>,
}

impl BackendView {
    /// Describes an entry; `effective` is its weight in the current set, `None` when it left the set;
    /// `slow_start_ms` is the service's slow start; `admin` is an operator's override of it.
    pub fn new(
        entry: &Entry,
        effective: Option<u32>,
        slow_start_ms: u64,
        admin: Option<&Override>,
    ) -> Self {
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
            locality: None,
            zone: None,
            origin: in_set.then(|| entry.backend.origin.to_string()),
            active: entry.stats.load.get(),
            connections_total: entry.stats.metrics.connections.get(),
            connect_failures_total: entry.stats.metrics.connect_failures.get(),
            requests_total: requests_total(&entry.stats.metrics),
            last_change_seconds: seconds_since(last_change(h, slow_start_ms, now), now),
            traffic: None,
            history: Vec::new(),
            ejected_seconds: h.ejected(now).then(|| h.ejected_for(now) as f64 / 1000.0),
            last_check: h.last_check().map(|c| CheckView {
                passed: c.passed,
                detail: c.detail,
                age_seconds: seconds_since(c.at_ms, now),
            }),
        }
    }
}

/// Seconds since the service last changed: the newest of its last membership change (`changed_ms`)
/// and its backends' own changes; `None` while it never had backends.
pub fn service_last_change(changed_ms: Option<u64>, backends: &[BackendView]) -> Option<f64> {
    let membership = changed_ms.map(|t| seconds_since(t, now_ms()));
    backends
        .iter()
        .map(|b| b.last_change_seconds)
        .chain(membership)
        .reduce(f64::min)
}

/// Seconds from `then` to `now`, both on the [`now_ms`] clock.
pub fn seconds_since(then: u64, now: u64) -> f64 {
    now.saturating_sub(then) as f64 / 1000.0
}

/// Requests a backend served: HTTP responses by every status class, or connections for TCP.
pub fn requests_total(m: &BackendMetrics) -> u64 {
    match &m.http {
        Some(http) => http.responses.iter().map(|c| c.get()).sum(),
        None => m.connections.get(),
    }
}
