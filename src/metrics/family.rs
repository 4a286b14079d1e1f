//! Registering metric families, and dropping every series of a removed service from them.
//!
//! Families with a `service` label are remembered as they are registered, so removing a service
//! removes its series from all of them, including families added later, without a list to keep up
//! to date. The `sinew_register_*` families are left out: their `service` is a registered service,
//! which lives and goes with the `register` section, not with the proxied one of the same name.

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use std::cell::RefCell;
use std::collections::HashMap;

/// Drops one service's series from a family.
type Forget = Box<dyn Fn(&str) + Send + Sync>;

/// The registry being filled, and the families whose series belong to a proxied service.
pub(super) struct Families {
    registry: Registry,
    per_service: RefCell<Vec<Forget>>,
}

impl Families {
    /// An empty registry.
    pub(super) fn new() -> Self {
        Self {
            registry: Registry::new(),
            per_service: RefCell::default(),
        }
    }

    /// The registry (a handle on the same one).
    pub(super) fn registry(&self) -> Registry {
        self.registry.clone()
    }

    /// The families of proxied services registered so far.
    pub(super) fn take_service_families(&self) -> ServiceFamilies {
        ServiceFamilies(self.per_service.take())
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
        self.registry.register(Box::new(vec.clone()))?;
        if labels.contains(&"service") && !name.starts_with("sinew_register_") {
            let vec = vec.clone();
            self.per_service
                .borrow_mut()
                .push(Box::new(move |service| forget_in(&vec, service)));
        }
        Ok(())
    }
}

/// The families with a `service` label of proxied services.
pub(super) struct ServiceFamilies(Vec<Forget>);

impl ServiceFamilies {
    /// Drops every series of `service`.
    pub(super) fn forget(&self, service: &str) {
        for forget in &self.0 {
            forget(service);
        }
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

/// Registers a counter family.
pub(super) fn counter(
    families: &Families,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    families.add(name, labels, &c)?;
    Ok(c)
}

/// Registers a gauge family.
pub(super) fn gauge(
    families: &Families,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, prometheus::Error> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    families.add(name, labels, &g)?;
    Ok(g)
}

/// Registers a per-service histogram family over `buckets`.
pub(super) fn histogram(
    families: &Families,
    name: &str,
    help: &str,
    buckets: &[f64],
) -> Result<HistogramVec, prometheus::Error> {
    let labels = &["service"];
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )?;
    families.add(name, labels, &h)?;
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_leaves_every_proxied_family_and_no_register_family() {
        let f = Families::new();
        let errors = counter(&f, "sinew_http_errors_total", "h", &["service", "cause"]).unwrap();
        let wait = histogram(&f, "sinew_service_queue_wait_seconds", "h", &[1.0]).unwrap();
        let up = gauge(&f, "sinew_register_up", "h", &["service"]).unwrap();
        let other = gauge(&f, "sinew_task_panics_total", "h", &["task"]).unwrap();
        for cause in ["reset", "timeout"] {
            errors.with_label_values(&["gone", cause]).inc();
        }
        errors.with_label_values(&["kept", "reset"]).inc();
        wait.with_label_values(&["gone"]).observe(0.5);
        up.with_label_values(&["gone"]).set(1);
        other.with_label_values(&["gone"]).set(1);
        f.take_service_families().forget("gone");
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&f.registry().gather())
            .unwrap();
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
