//! Peak-EWMA latency of a backend (as in linkerd2-proxy and tower's `PeakEwma`, after Finagle): an
//! exponentially weighted moving average that jumps straight up to a slower sample and decays with time.
//!
//! The decay is computed when the estimate is read, toward zero, so a backend that gets no samples
//! still changes: one that was slow once and then lost every comparison looks cheap again after a few
//! decay periods, gets tried, and its fresh samples say what it is worth now. Reading stores nothing,
//! so the pick path stays free of writes to shared state.

use super::health::now_ms;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The estimate a backend starts with, before any sample.
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// The decay time constant when none is configured (the service config's `ewma_decay` default).
pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);

/// A backend's latency estimate, shared across swaps.
pub struct PeakEwma {
    /// Estimate in nanoseconds as of `at_ms`, as f64 bits.
    estimate: AtomicU64,
    /// When it was last updated, on the health clock.
    at_ms: AtomicU64,
    /// Decay time constant in milliseconds (> 0).
    decay_ms: f64,
}

impl PeakEwma {
    /// Starts at [`DEFAULT_RTT`], decaying with time constant `decay` (clamped to at least 1 ms).
    pub fn new(decay: Duration) -> Self {
        Self {
            estimate: AtomicU64::new((DEFAULT_RTT.as_nanos() as f64).to_bits()),
            at_ms: AtomicU64::new(now_ms()),
            decay_ms: (decay.as_millis() as f64).max(1.0),
        }
    }

    /// The estimate in nanoseconds at `now` (on the health clock): the stored one decayed toward zero
    /// for the time since it was stored.
    pub fn estimate(&self, now: u64) -> f64 {
        let stored = f64::from_bits(self.estimate.load(Ordering::Relaxed));
        stored * self.weight(now, self.at_ms.load(Ordering::Relaxed))
    }

    /// How much of an estimate stored at `at` is left at `now`.
    fn weight(&self, now: u64, at: u64) -> f64 {
        (-(now.saturating_sub(at) as f64) / self.decay_ms).exp()
    }

    /// Folds in one latency sample: one slower than the decayed estimate is taken at once, a faster one
    /// pulls the estimate toward it, the more the longer since the last sample. Concurrent updates may
    /// lose one another's sample, which an estimate can afford; the hot path stays free of locks.
    pub fn observe(&self, rtt: Duration) {
        let sample = rtt.as_nanos() as f64;
        let now = now_ms();
        let w = self.weight(now, self.at_ms.swap(now, Ordering::Relaxed));
        let decayed = f64::from_bits(self.estimate.load(Ordering::Relaxed)) * w;
        let next = if sample > decayed {
            sample
        } else {
            decayed * w + sample * (1.0 - w)
        };
        self.estimate.store(next.to_bits(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn jumps_up_and_decays_on_read() {
        let e = PeakEwma::new(Duration::from_secs(10));
        e.observe(Duration::from_millis(500));
        assert_eq!(
            e.estimate(now_ms()),
            500e6,
            "a slower sample is taken at once"
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        let idle = e.estimate(now_ms());
        let expected = 500e6 * (-1.0f64).exp();
        assert!(
            (idle - expected).abs() < 1e3,
            "one decay period with no sample: {idle}"
        );
        tokio::time::advance(Duration::from_secs(40)).await;
        assert!(
            e.estimate(now_ms()) < 5e6,
            "five periods on, it looks cheaper than a 10 ms backend: {}",
            e.estimate(now_ms())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn faster_samples_pull_it_down_and_never_up() {
        let e = PeakEwma::new(Duration::from_secs(10));
        e.observe(Duration::from_millis(500));
        tokio::time::advance(Duration::from_secs(10)).await;
        let before = e.estimate(now_ms());
        e.observe(Duration::from_millis(10));
        let after = e.estimate(now_ms());
        assert!(after < before && after > 10e6, "{before} -> {after}");
        tokio::time::advance(Duration::from_secs(60)).await;
        e.observe(Duration::from_millis(10));
        assert_eq!(
            e.estimate(now_ms()),
            10e6,
            "a sample above the decayed estimate is taken"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_decay_period_sets_the_pace() {
        let (fast, slow) = (
            PeakEwma::new(Duration::from_secs(1)),
            PeakEwma::new(Duration::from_secs(100)),
        );
        fast.observe(Duration::from_secs(1));
        slow.observe(Duration::from_secs(1));
        tokio::time::advance(Duration::from_secs(5)).await;
        let now = now_ms();
        assert!(fast.estimate(now) < 0.01e9, "{}", fast.estimate(now));
        assert!(slow.estimate(now) > 0.9e9, "{}", slow.estimate(now));
    }
}
