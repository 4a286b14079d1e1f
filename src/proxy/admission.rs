//! A client connection's admission slot: taken at accept, moved into the connection's task, given
//! back when the task ends however it ends (a panic included), as mini-redis does with its semaphore
//! permit. The service's `active` gauge is both the count shown in `/metrics` and what
//! `max_client_connections` is checked against, so a slot that leaked would be a connection refused
//! forever.

use super::ServiceMetrics;
use prometheus::IntGauge;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

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

pin_project_lite::pin_project! {
    /// A connection's task holding its slot, which goes when the task does.
    ///
    /// A plain struct, not an `async fn`: an async fn that awaits a future passed to it keeps that
    /// future twice in its state (the argument and the awaited value), which doubled what every
    /// idle HTTP connection holds (about 4 KiB more per connection).
    pub struct Holding<F> {
        #[pin]
        task: F,
        slot: Slot,
    }
}

impl<F: Future<Output = ()>> Future for Holding<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.project().task.poll(cx)
    }
}

/// Runs a connection's task holding its slot.
pub fn holding<F: Future<Output = ()>>(slot: Slot, task: F) -> Holding<F> {
    Holding { task, slot }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Registry;
    use crate::proxy::ProxyMetrics;

    #[test]
    fn holding_a_slot_adds_only_the_slot_to_the_task() {
        let metrics = ProxyMetrics::register(&Registry::new())
            .unwrap()
            .service("web");
        let task = async {
            let big = [0u8; 4096];
            tokio::task::yield_now().await;
            std::hint::black_box(big);
        };
        let alone = std::mem::size_of_val(&task);
        let held = holding(Slot::take(&metrics, None).unwrap(), task);
        assert!(
            std::mem::size_of_val(&held) <= alone + 64,
            "{} bytes held for a task of {alone}",
            std::mem::size_of_val(&held)
        );
    }

    #[test]
    fn slots_stop_at_the_limit_and_come_back_when_dropped() {
        let metrics = ProxyMetrics::register(&Registry::new())
            .unwrap()
            .service("web");
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
        let metrics = ProxyMetrics::register(&Registry::new())
            .unwrap()
            .service("web");
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
