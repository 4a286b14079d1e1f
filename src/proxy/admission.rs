//! A client connection's admission slot: taken at accept, moved into the connection's task, given
//! back when the task ends however it ends (a panic included), as mini-redis does with its semaphore
//! permit. The service's `active` gauge is both the count shown in `/metrics` and what
//! `max_client_connections` is checked against, so a slot that leaked would be a connection refused
//! forever.

use crate::metrics::ServiceMetrics;
use prometheus::IntGauge;

/// One open client connection of a service; dropping it gives the place back.
pub struct Slot {
    active: IntGauge,
}

impl Slot {
    /// A slot for a new connection, unless `max` connections of the service are open already.
    pub fn take(metrics: &ServiceMetrics, max: Option<u32>) -> Option<Self> {
        let active = &metrics.active;
        if max.is_some_and(|max| active.get() >= i64::from(max)) {
            return None;
        }
        active.inc();
        Some(Self {
            active: active.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.active.dec();
    }
}

/// Runs a connection's task holding its slot.
pub async fn holding<F: std::future::Future<Output = ()>>(slot: Slot, task: F) {
    let _slot = slot;
    task.await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn slots_stop_at_the_limit_and_come_back_when_dropped() {
        let metrics = Metrics::new().unwrap().service("web");
        let a = Slot::take(&metrics, Some(2)).unwrap();
        let _b = Slot::take(&metrics, Some(2)).unwrap();
        assert!(Slot::take(&metrics, Some(2)).is_none(), "the limit holds");
        assert_eq!(metrics.active.get(), 2);
        drop(a);
        assert!(Slot::take(&metrics, Some(2)).is_some(), "room again");
        assert!(Slot::take(&metrics, None).is_some(), "no limit");
    }

    #[tokio::test]
    async fn a_task_that_panics_gives_its_slot_back() {
        let metrics = Metrics::new().unwrap().service("web");
        let slot = Slot::take(&metrics, Some(1)).unwrap();
        let task = tokio::spawn(holding(slot, async {
            tokio::task::yield_now().await;
            panic!("a connection task panics");
        }));
        assert!(task.await.unwrap_err().is_panic());
        assert_eq!(metrics.active.get(), 0);
        assert!(Slot::take(&metrics, Some(1)).is_some());
    }
}
