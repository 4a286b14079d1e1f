//! Peak-EWMA latency of a backend (as in linkerd2-proxy and tower's `PeakEwma`): an exponentially
//! weighted moving average that jumps straight up to a slower sample and decays back with time, so a
//! backend that turns slow is avoided at once and trusted again gradually.

use super::health::now_ms;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The estimate a backend starts with, before any sample.
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// Decay time constant.
const DECAY_MS: f64 = 10_000.0;

/// A backend's latency estimate, shared across swaps.
pub struct PeakEwma {
    /// Estimate in nanoseconds, as f64 bits.
    estimate: AtomicU64,
    /// When it was last updated, on the health clock.
    at_ms: AtomicU64,
}

impl Default for PeakEwma {
    fn default() -> Self {
        Self {
            estimate: AtomicU64::new((DEFAULT_RTT.as_nanos() as f64).to_bits()),
            at_ms: AtomicU64::new(now_ms()),
        }
    }
}

impl PeakEwma {
    /// The current estimate in nanoseconds, decayed to now.
    pub fn estimate(&self) -> f64 {
        f64::from_bits(self.estimate.load(Ordering::Relaxed))
    }

    /// Folds in one latency sample. Concurrent updates may lose one another's sample, which an estimate
    /// can afford; the hot path stays free of locks.
    pub fn observe(&self, rtt: Duration) {
        let sample = rtt.as_nanos() as f64;
        let now = now_ms();
        let elapsed = now.saturating_sub(self.at_ms.swap(now, Ordering::Relaxed)) as f64;
        let prev = self.estimate();
        let next = if sample > prev {
            sample
        } else {
            let w = (-elapsed / DECAY_MS).exp();
            prev * w + sample * (1.0 - w)
        };
        self.estimate.store(next.to_bits(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn jumps_up_and_decays_down() {
        let e = PeakEwma::default();
        e.observe(Duration::from_millis(500));
        assert_eq!(e.estimate(), 500e6, "a slower sample is taken at once");
        tokio::time::advance(Duration::from_secs(10)).await;
        e.observe(Duration::from_millis(10));
        let after = e.estimate();
        assert!(after < 500e6 && after > 10e6, "{after}");
        tokio::time::advance(Duration::from_secs(60)).await;
        e.observe(Duration::from_millis(10));
        assert!(e.estimate() < 12e6, "{}", e.estimate());
    }
}
