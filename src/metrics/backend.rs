//! Per-backend series: plain atomics kept in the state of the module that owns the backend, rendered
//! straight into the text format (see [`Rendered`]).
//!
//! The series live as long as their owner: [`BackendSeries`] holds them weakly, so a backend that no
//! set, draining entry or connection holds any more (its service removed or rebuilt by a reload)
//! leaves `/metrics` with it. A backend that left its service's set and has no connection left is not
//! shown either, even while its entry waits to be pruned.

use super::registry::Rendered;
use super::LATENCY_BUCKETS;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// HTTP status classes, as `code` label values.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// A monotonic counter.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.inc_by(1);
    }

    /// Adds `n`.
    pub fn inc_by(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The count so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Subtracts one.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// The value now.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A histogram of durations over [`LATENCY_BUCKETS`].
#[derive(Default)]
pub struct Latency {
    /// Observations per bucket (not cumulative); the last one is above every bound.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// Sum of the observations, in nanoseconds.
    sum_nanos: AtomicU64,
}

impl Latency {
    /// Records a duration of `seconds`.
    pub fn observe(&self, seconds: f64) {
        let i = LATENCY_BUCKETS.partition_point(|b| *b < seconds);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add((seconds.max(0.0) * 1e9) as u64, Ordering::Relaxed);
    }

    /// Observations per bucket so far (not cumulative); the last one is above every bound.
    pub fn counts(&self) -> [u64; LATENCY_BUCKETS.len() + 1] {
        std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed))
    }
}

/// What the per-backend families read of one backend: its series, and the connections in flight
/// that its owner counts.
pub trait BackendSource: Send + Sync + 'static {
    /// A backend's state with fresh series; with the HTTP response series when `http`.
    fn new(http: bool) -> Self;

    /// Its series.
    fn metrics(&self) -> &BackendMetrics;

    /// Connections open (or being opened) to the backend now.
    fn active(&self) -> i64;
}

/// The series of one backend (`sinew_backend_connections_active` is read from its owner, see
/// [`BackendSource`]).
#[derive(Default)]
pub struct BackendMetrics {
    /// Connections opened to the backend.
    pub connections: Counter,
    /// Bytes sent to the backend.
    pub sent: Arc<Counter>,
    /// Bytes received from the backend.
    pub received: Arc<Counter>,
    /// Failed connection attempts.
    pub connect_failures: Counter,
    /// HTTP response series; only HTTP-mode services have them (a TCP backend's would stay empty).
    pub http: Option<BackendHttpMetrics>,
    /// 1 when the backend gets new traffic (weight > 0, healthy, not ejected, or panic mode).
    pub usable: Gauge,
    /// Outlier ejections.
    pub ejections: Counter,
    /// Failed active health checks.
    pub check_failures: Counter,
    /// Active health checks this host could not run (out of descriptors, memory or ports).
    pub check_skips: Counter,
    /// Set while the backend is out of its service's current set (removed, maybe draining).
    departed: AtomicBool,
}

impl BackendMetrics {
    /// Series for a backend, with the HTTP response series when `http`.
    pub fn new(http: bool) -> Self {
        Self {
            http: http.then(BackendHttpMetrics::default),
            ..Self::default()
        }
    }

    /// Marks the backend as in its service's current set (`true`) or out of it; out of it, it is not
    /// usable, and its series leave `/metrics` once no connection to it is left.
    pub fn set_member(&self, member: bool) {
        if !member {
            self.usable.set(0);
        }
        self.departed.store(!member, Ordering::Relaxed);
    }

    /// True while the series belong in `/metrics`: in the set, or still serving `active` connections.
    fn shown(&self, active: i64) -> bool {
        !self.departed.load(Ordering::Relaxed) || active > 0
    }
}

/// The HTTP response series of one backend.
#[derive(Default)]
pub struct BackendHttpMetrics {
    /// HTTP responses by status class (1xx..5xx).
    pub responses: [Counter; 5],
    /// HTTP time from sending a request to receiving the response head.
    pub response_seconds: Latency,
}

impl BackendHttpMetrics {
    /// The response counter of a status code's class (codes outside 100-599 count as 5xx).
    pub fn response_class(&self, code: u16) -> &Counter {
        let class = usize::from(code / 100).clamp(1, 5) - 1;
        &self.responses[class]
    }
}

/// The backends whose series `/metrics` shows, by service and backend; held weakly, so they go with
/// their last owner. A backend known by its labels gets the same state back, whoever asks (a service
/// rebuilt by a reload shares its backends' state with the generation that drains).
pub struct BackendSeries<T> {
    live: Mutex<BTreeMap<(String, String), Weak<T>>>,
}

impl<T> Default for BackendSeries<T> {
    fn default() -> Self {
        Self {
            live: Mutex::default(),
        }
    }
}

/// One backend's values as the plain families read them: its series and its active connections.
type Sample<'a> = (&'a BackendMetrics, i64);

/// A family of plain (one value per backend) series: name, type, help, and how to read the value.
type Plain = (&'static str, &'static str, &'static str, fn(Sample) -> i64);

/// Every plain per-backend family, in rendering order.
const PLAIN: [Plain; 9] = [
    ("sinew_backend_connections_total", "counter", "Connections opened to a backend.", |(m, _)| {
        m.connections.get() as i64
    }),
    ("sinew_backend_connections_active", "gauge", "Connections open to a backend now.", |(_, active)| {
        active
    }),
    ("sinew_backend_sent_bytes_total", "counter", "Bytes sent to a backend.", |(m, _)| {
        m.sent.get() as i64
    }),
    ("sinew_backend_received_bytes_total", "counter", "Bytes received from a backend.", |(m, _)| {
        m.received.get() as i64
    }),
    (
        "sinew_backend_connect_failures_total",
        "counter",
        "Failed connection attempts to a backend (refused, unreachable or timed out).",
        |(m, _)| m.connect_failures.get() as i64,
    ),
    (
        "sinew_backend_up",
        "gauge",
        "1 when the backend gets new traffic: weight above 0, passing health checks and not ejected (or panic mode).",
        |(m, _)| m.usable.get(),
    ),
    ("sinew_backend_ejections_total", "counter", "Outlier ejections of a backend.", |(m, _)| {
        m.ejections.get() as i64
    }),
    (
        "sinew_backend_health_check_failures_total",
        "counter",
        "Failed active health checks of a backend.",
        |(m, _)| m.check_failures.get() as i64,
    ),
    (
        "sinew_backend_health_checks_skipped_total",
        "counter",
        "Active health checks of a backend not run because this host was out of descriptors, memory or ports; they count toward neither rise nor fall.",
        |(m, _)| m.check_skips.get() as i64,
    ),
];

impl<T: BackendSource> BackendSeries<T> {
    /// The state of `backend` of `service`, created on first use; the same while it stays.
    pub fn get(&self, service: &str, backend: &str, http: bool) -> Arc<T> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let key = (service.to_string(), backend.to_string());
        match live.get(&key).and_then(Weak::upgrade) {
            Some(m) if m.metrics().http.is_some() == http => m,
            _ => {
                let m = Arc::new(T::new(http));
                live.insert(key, Arc::downgrade(&m));
                m
            }
        }
    }

    /// Drops the series of a backend that has left the set and drained.
    pub fn forget(&self, service: &str, backend: &str) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.remove(&(service.to_string(), backend.to_string()));
    }
}

impl<T: BackendSource> Rendered for BackendSeries<T> {
    fn sweep(&self) -> Vec<(String, String)> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<(String, String)> = live
            .iter()
            .filter(|(_, m)| m.strong_count() == 0)
            .map(|(key, _)| key.clone())
            .collect();
        for key in &gone {
            live.remove(key);
        }
        gone
    }

    fn render(&self, out: &mut String) {
        let rows: Vec<Row<T>> = {
            let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            live.iter()
                .filter_map(|((service, backend), m)| {
                    let m = m.upgrade().filter(|m| m.metrics().shown(m.active()))?;
                    Some(Row::new(service, backend, m))
                })
                .collect()
        };
        if rows.is_empty() {
            return;
        }
        for (name, kind, help, value) in PLAIN {
            header(out, name, kind, help);
            for row in &rows {
                let sample = (row.state.metrics(), row.state.active());
                let _ = writeln!(out, "{name}{{{}}} {}", row.labels, value(sample));
            }
        }
        let http: Vec<(&Row<T>, &BackendHttpMetrics)> = rows
            .iter()
            .filter_map(|row| Some((row, row.state.metrics().http.as_ref()?)))
            .collect();
        if http.is_empty() {
            return;
        }
        let name = "sinew_backend_http_responses_total";
        header(
            out,
            name,
            "counter",
            "HTTP responses received from a backend, by status class.",
        );
        for (row, m) in &http {
            let (backend, service) = (&row.backend, &row.service);
            for (class, c) in CLASSES.iter().zip(&m.responses) {
                let _ = writeln!(
                    out,
                    "{name}{{backend=\"{backend}\",code=\"{class}\",service=\"{service}\"}} {}",
                    c.get()
                );
            }
        }
        let name = "sinew_backend_http_response_duration_seconds";
        header(
            out,
            name,
            "histogram",
            "Time from sending a request to a backend to receiving its response head.",
        );
        for (row, m) in http {
            let (l, h) = (&row.labels, &m.response_seconds);
            let mut cumulative = 0;
            for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&h.buckets) {
                cumulative += bucket.load(Ordering::Relaxed);
                let _ = writeln!(out, "{name}_bucket{{{l},le=\"{bound}\"}} {cumulative}");
            }
            cumulative += h.buckets[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
            let sum = h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(out, "{name}_bucket{{{l},le=\"+Inf\"}} {cumulative}");
            let _ = writeln!(out, "{name}_sum{{{l}}} {sum}");
            let _ = writeln!(out, "{name}_count{{{l}}} {cumulative}");
        }
    }
}

/// One backend as rendered: its label values escaped once.
struct Row<T> {
    backend: String,
    service: String,
    /// `backend="...",service="..."`.
    labels: String,
    state: Arc<T>,
}

impl<T> Row<T> {
    fn new(service: &str, backend: &str, state: Arc<T>) -> Self {
        let (backend, service) = (escape(backend).into_owned(), escape(service).into_owned());
        let labels = format!("backend=\"{backend}\",service=\"{service}\"");
        Self {
            backend,
            service,
            labels,
            state,
        }
    }
}

/// Writes a family's `HELP` and `TYPE` lines.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value escaped for the text format (backslash, double quote, newline).
fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return value.into();
    }
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend's state as its owner would keep it: series and an active-connection count.
    struct Probe {
        metrics: BackendMetrics,
        active: Gauge,
    }

    impl BackendSource for Probe {
        fn new(http: bool) -> Self {
            Self {
                metrics: BackendMetrics::new(http),
                active: Gauge::default(),
            }
        }

        fn metrics(&self) -> &BackendMetrics {
            &self.metrics
        }

        fn active(&self) -> i64 {
            self.active.get()
        }
    }

    #[test]
    fn series_render_in_the_text_format_and_go_when_forgotten() {
        let series = BackendSeries::<Probe>::default();
        let m = series.get("web", "10.0.0.1:80", true);
        m.metrics.connections.inc();
        m.active.inc();
        m.metrics.sent.inc_by(300);
        let http = m.metrics.http.as_ref().unwrap();
        http.response_class(204).inc();
        http.response_class(999).inc();
        http.response_seconds.observe(0.002);
        http.response_seconds.observe(100.0);
        assert!(Arc::ptr_eq(&m, &series.get("web", "10.0.0.1:80", true)));
        let _tcp = series.get("tcp", "a\"b\\c:1", false);
        let mut out = String::new();
        series.render(&mut out);
        let l = r#"backend="10.0.0.1:80",service="web""#;
        for line in [
            format!("sinew_backend_connections_total{{{l}}} 1"),
            format!("sinew_backend_connections_active{{{l}}} 1"),
            format!("sinew_backend_sent_bytes_total{{{l}}} 300"),
            r#"sinew_backend_http_responses_total{backend="10.0.0.1:80",code="2xx",service="web"} 1"#.into(),
            r#"sinew_backend_http_responses_total{backend="10.0.0.1:80",code="5xx",service="web"} 1"#.into(),
            format!("sinew_backend_http_response_duration_seconds_bucket{{{l},le=\"0.001\"}} 0"),
            format!("sinew_backend_http_response_duration_seconds_bucket{{{l},le=\"0.0025\"}} 1"),
            format!("sinew_backend_http_response_duration_seconds_bucket{{{l},le=\"30\"}} 1"),
            format!("sinew_backend_http_response_duration_seconds_bucket{{{l},le=\"+Inf\"}} 2"),
            format!("sinew_backend_http_response_duration_seconds_sum{{{l}}} 100.002"),
            format!("sinew_backend_http_response_duration_seconds_count{{{l}}} 2"),
            r#"sinew_backend_up{backend="a\"b\\c:1",service="tcp"} 0"#.into(),
        ] {
            assert!(out.lines().any(|x| x == line), "{line} not in\n{out}");
        }
        assert_eq!(out.matches("# TYPE sinew_backend_up gauge").count(), 1);
        // The TCP backend has no HTTP series.
        assert!(!out.contains(r#"code="2xx",service="tcp""#));
        series.forget("web", "10.0.0.1:80");
        series.forget("tcp", "a\"b\\c:1");
        let mut out = String::new();
        series.render(&mut out);
        assert!(out.is_empty(), "{out}");
    }

    fn rendered(series: &BackendSeries<Probe>) -> String {
        let mut out = String::new();
        series.render(&mut out);
        out
    }

    #[test]
    fn series_go_with_their_last_owner() {
        let series = BackendSeries::<Probe>::default();
        let first = series.get("web", "10.0.0.1:80", false);
        let second = series.get("web", "10.0.0.1:80", false);
        assert!(Arc::ptr_eq(&first, &second), "one series per backend");
        first.metrics.usable.set(1);
        drop(first);
        assert!(rendered(&series)
            .contains(r#"sinew_backend_up{backend="10.0.0.1:80",service="web"} 1"#));
        assert!(series.sweep().is_empty(), "still held");
        drop(second);
        assert!(rendered(&series).is_empty(), "{}", rendered(&series));
        assert_eq!(
            series.sweep(),
            [("web".to_string(), "10.0.0.1:80".to_string())]
        );
        assert!(series.sweep().is_empty());
    }

    #[test]
    fn a_departed_backend_shows_while_it_drains_and_not_after() {
        let series = BackendSeries::<Probe>::default();
        let m = series.get("web", "10.0.0.1:80", false);
        m.metrics.usable.set(1);
        m.active.inc();
        m.metrics.set_member(false);
        let out = rendered(&series);
        assert!(
            out.contains(r#"sinew_backend_up{backend="10.0.0.1:80",service="web"} 0"#),
            "{out}"
        );
        assert!(
            out.contains(
                r#"sinew_backend_connections_active{backend="10.0.0.1:80",service="web"} 1"#
            ),
            "{out}"
        );
        m.active.dec();
        assert!(
            rendered(&series).is_empty(),
            "drained: {}",
            rendered(&series)
        );
        // Back in the set before its entry was pruned: shown again, counts kept.
        m.metrics.connections.inc();
        m.metrics.set_member(true);
        assert!(rendered(&series)
            .contains(r#"sinew_backend_connections_total{backend="10.0.0.1:80",service="web"} 1"#));
    }
}
