//! Queueing (HAProxy semantics): with `max_connections` per backend, a pick that finds every usable
//! backend full waits in a bounded FIFO until any backend frees a slot, up to `timeouts.queue`.

use super::set::{BackendSet, Pick};
use prometheus::{Histogram, IntCounter, IntGauge};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Why no backend could be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// No usable backend at all.
    NoBackend,
    /// Every usable backend was full and the queue too.
    QueueFull,
    /// Every usable backend stayed full for the whole queue timeout.
    QueueTimeout,
}

/// The wait queue of one service.
pub struct Queue {
    notify: Notify,
    waiting: AtomicUsize,
    max: usize,
    timeout: Duration,
    metrics: QueueMetrics,
}

/// Queue metric children of one service.
pub struct QueueMetrics {
    /// Waiters now.
    pub depth: IntGauge,
    /// Time spent waiting by those who got a backend.
    pub wait_seconds: Histogram,
    /// Rejected because the queue was full.
    pub full: IntCounter,
    /// Gave up after the queue timeout.
    pub timeouts: IntCounter,
}

impl Queue {
    /// A queue of at most `max` waiters, each waiting at most `timeout`.
    pub fn new(max: usize, timeout: Duration, metrics: QueueMetrics) -> Self {
        Self {
            notify: Notify::new(),
            waiting: AtomicUsize::new(0),
            max,
            timeout,
            metrics,
        }
    }

    /// Waiters now.
    pub fn depth(&self) -> i64 {
        self.metrics.depth.get()
    }

    /// Called when a backend frees a slot: wakes the longest waiter.
    pub fn release(&self) {
        if self.waiting.load(Ordering::Relaxed) > 0 {
            self.notify.notify_one();
        }
    }

    /// Picks from `set`, waiting in the queue while every usable backend is full.
    pub async fn pick(
        &self,
        set: &BackendSet,
        skip: &[usize],
        key: Option<u64>,
    ) -> Result<Pick, Unavailable> {
        if let Some(p) = set.pick_keyed(skip, key) {
            return Ok(p);
        }
        if !set.limited() || !set.any_usable(skip) {
            return Err(Unavailable::NoBackend);
        }
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= self.max {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            self.metrics.full.inc();
            return Err(Unavailable::QueueFull);
        }
        self.metrics.depth.inc();
        let started = Instant::now();
        let deadline = started + self.timeout;
        let result = loop {
            // Register before re-checking, so a slot freed in between is not missed.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(p) = set.pick_keyed(skip, key) {
                break Ok(p);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                self.metrics.timeouts.inc();
                break Err(Unavailable::QueueTimeout);
            }
        };
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        self.metrics.depth.dec();
        if result.is_ok() {
            self.metrics
                .wait_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::BalanceMetrics;
    use crate::balance::{Backend, Balancer, Origin, Policy};
    use crate::config::Algorithm;
    use crate::metrics::Registry;
    use std::sync::Arc;

    fn balancer(max_queue: usize) -> Arc<Balancer> {
        let metrics = BalanceMetrics::register(&Registry::new()).unwrap();
        let b = Balancer::new("q", Algorithm::RoundRobin, Arc::new(metrics))
            .with_policy(Policy {
                max_connections: Some(1),
                ..Policy::default()
            })
            .with_queue(max_queue, Duration::from_secs(5));
        b.update(vec![Backend::new("127.0.0.1", 1, 1, Origin::Static)]);
        Arc::new(b)
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_in_order_and_time_out() {
        let b = balancer(10);
        let set = b.current();
        let held = b.pick_queued(&set, &[], None).await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for n in 0..2 {
            let (b, set, tx) = (Arc::clone(&b), Arc::clone(&set), tx.clone());
            tokio::spawn(async move {
                let got = b.pick_queued(&set, &[], None).await;
                let _ = tx.send((n, got.is_ok()));
                if let Ok(p) = got {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    drop(p);
                }
            });
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(held);
        assert_eq!(
            rx.recv().await,
            Some((0, true)),
            "the first waiter gets the freed slot"
        );
        assert_eq!(
            rx.recv().await,
            Some((1, false)),
            "the second times out while the slot stays taken"
        );
        assert_eq!(b.queue.metrics.timeouts.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_rejects_at_once() {
        let b = balancer(1);
        let set = b.current();
        let _held = b.pick_queued(&set, &[], None).await.unwrap();
        let waiter = {
            let (b, set) = (Arc::clone(&b), Arc::clone(&set));
            tokio::spawn(async move { b.pick_queued(&set, &[], None).await.is_ok() })
        };
        tokio::task::yield_now().await;
        assert_eq!(
            b.pick_queued(&set, &[], None).await.err(),
            Some(Unavailable::QueueFull)
        );
        assert_eq!(b.queue.metrics.full.get(), 1);
        assert!(
            !waiter.await.unwrap(),
            "the queued one times out: the slot is never freed"
        );
    }
}
