//! The agent's one metrics registry: every module registers its families here, and `/metrics` renders
//! them all.
//!
//! Two kinds of family register here. Families of the `prometheus` crate, created through
//! [`Registry::counter`], [`Registry::gauge`] and [`Registry::histogram`], hold a child per series.
//! [`Rendered`] families keep their series as plain atomics in their owner's state and write the text
//! format themselves: an agent may hold tens of thousands of backends, and a prometheus child per
//! backend series costs several hundred bytes (its own copy of the description and label pairs) and a
//! protobuf copy at every scrape, where a plain atomic costs itself.
//!
//! Families with a `service` label are remembered as they are registered, so removing a service
//! removes its series from all of them, including families added later, without a list to keep up
//! to date. The `sinew_register_*` families are left out: their `service` is a registered service,
//! which lives and goes with the `register` section, not with the proxied one of the same name.
//! Families labelled exactly `service` and `backend` are remembered the same way, so a backend that
//! leaves takes its series with it.

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Drops one service's series from a family.
type ForgetService = Box<dyn Fn(&str) + Send + Sync>;

/// Drops one backend's series (service, backend) from a family.
type ForgetBackend = Box<dyn Fn(&str, &str) + Send + Sync>;

/// Families that keep their own series and write the text format themselves.
pub trait Rendered: Send + Sync {
    /// Drops the series nothing holds any more, returning the (service, backend) labels that went,
    /// so that the registry's families labelled by backend drop theirs too.
    fn sweep(&self) -> Vec<(String, String)>;

    /// Appends every family in the Prometheus text format (families without series are left out).
    fn render(&self, out: &mut String);
}

/// The registry `/metrics` renders; a cheap handle, every clone is the same registry.
#[derive(Clone, Default)]
pub struct Registry(Arc<Inner>);

#[derive(Default)]
struct Inner {
    families: prometheus::Registry,
    per_service: Mutex<Vec<ForgetService>>,
    per_backend: Mutex<Vec<ForgetBackend>>,
    rendered: Mutex<Vec<Arc<dyn Rendered>>>,
}

/// Locks a list; a panic while holding it cannot leave a list of closures inconsistent.
fn lock<T>(list: &Mutex<T>) -> MutexGuard<'_, T> {
    list.lock().unwrap_or_else(|p| p.into_inner())
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the standard `process_*` families (resident memory, CPU seconds, open and maximum
    /// file descriptors, start time), read from /proc at each scrape.
    pub fn process(&self) -> Result<(), prometheus::Error> {
        let collector = prometheus::process_collector::ProcessCollector::for_self();
        self.0.families.register(Box::new(collector))
    }

    /// Registers a counter family.
    pub fn counter(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntCounterVec, prometheus::Error> {
        let c = IntCounterVec::new(Opts::new(name, help), labels)?;
        self.add(name, labels, &c)?;
        Ok(c)
    }

    /// Registers a gauge family.
    pub fn gauge(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntGaugeVec, prometheus::Error> {
        let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
        self.add(name, labels, &g)?;
        Ok(g)
    }

    /// Registers a per-service histogram family over `buckets`.
    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
    ) -> Result<HistogramVec, prometheus::Error> {
        let labels = &["service"];
        let h = HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
            labels,
        )?;
        self.add(name, labels, &h)?;
        Ok(h)
    }

    /// Registers families that render themselves; they are written after the others.
    pub fn register_rendered(&self, rendered: Arc<dyn Rendered>) {
        lock(&self.0.rendered).push(rendered);
    }

    fn add<T>(
        &self,
        name: &str,
        labels: &[&str],
        vec: &MetricVec<T>,
    ) -> Result<(), prometheus::Error>
    where
        T: MetricVecBuilder + 'static,
        MetricVec<T>: Send + Sync,
    {
        self.0.families.register(Box::new(vec.clone()))?;
        if labels.contains(&"service") && !name.starts_with("sinew_register_") {
            let vec = vec.clone();
            lock(&self.0.per_service).push(Box::new(move |service| forget_in(&vec, service)));
        }
        if labels == ["service", "backend"] {
            let vec = vec.clone();
            lock(&self.0.per_backend).push(Box::new(move |service, backend| {
                // Removing a series that was never created is not an error worth reporting.
                let _ = vec.remove_label_values(&[service, backend]);
            }));
        }
        Ok(())
    }

    /// Drops every series of a proxied service that a reload removed.
    pub fn forget_service(&self, service: &str) {
        for forget in lock(&self.0.per_service).iter() {
            forget(service);
        }
    }

    /// Drops the series of a backend that has left its service's set and drained, from every family
    /// labelled by service and backend.
    pub fn forget_backend(&self, service: &str, backend: &str) {
        for forget in lock(&self.0.per_backend).iter() {
            forget(service, backend);
        }
    }

    /// Renders every family in the Prometheus text format.
    pub fn render(&self) -> String {
        let rendered: Vec<Arc<dyn Rendered>> = lock(&self.0.rendered).clone();
        for families in &rendered {
            for (service, backend) in families.sweep() {
                self.forget_backend(&service, &backend);
            }
        }
        let mut out = String::new();
        let families = self.0.families.gather();
        if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&families, &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        for families in &rendered {
            families.render(&mut out);
        }
        out
    }
}

/// Drops the series of `vec` whose `service` label is `service`, whatever their other labels.
fn forget_in<T: MetricVecBuilder>(vec: &MetricVec<T>, service: &str) {
    for family in vec.collect() {
        for metric in family.get_metric() {
            let labels: HashMap<&str, &str> = metric
                .get_label()
                .iter()
                .map(|l| (l.get_name(), l.get_value()))
                .collect();
            if labels.get("service") == Some(&service) {
                // It was just listed; a concurrent removal is the only way to miss it.
                let _ = vec.remove(&labels);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_leaves_every_proxied_family_and_no_register_family() {
        let f = Registry::new();
        let errors = f
            .counter("sinew_http_errors_total", "h", &["service", "cause"])
            .unwrap();
        let wait = f
            .histogram("sinew_service_queue_wait_seconds", "h", &[1.0])
            .unwrap();
        let up = f.gauge("sinew_register_up", "h", &["service"]).unwrap();
        let other = f.gauge("sinew_task_panics_total", "h", &["task"]).unwrap();
        for cause in ["reset", "timeout"] {
            errors.with_label_values(&["gone", cause]).inc();
        }
        errors.with_label_values(&["kept", "reset"]).inc();
        wait.with_label_values(&["gone"]).observe(0.5);
        up.with_label_values(&["gone"]).set(1);
        other.with_label_values(&["gone"]).set(1);
        f.forget_service("gone");
        let text = f.render();
        assert!(
            text.contains(r#"sinew_register_up{service="gone"} 1"#),
            "{text}"
        );
        assert_eq!(text.matches(r#"service="gone""#).count(), 1, "{text}");
        assert!(
            text.contains(r#"sinew_http_errors_total{cause="reset",service="kept"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"sinew_task_panics_total{task="gone"} 1"#),
            "{text}"
        );
    }
}
