//! Retry budget (Envoy's `retry_budget`): retries in flight may not exceed a share of active requests,
//! with a floor, so that a sick fleet is not stormed by retries.

use std::sync::atomic::{AtomicI64, Ordering};

/// Counts active requests and retries of one service.
pub struct Budget {
    active: AtomicI64,
    retries: AtomicI64,
    percent: f64,
    min_concurrent: i64,
}

/// Holds one unit of a counter until dropped.
pub struct Held<'a>(&'a AtomicI64);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Budget {
    /// A budget of `percent` of active requests, never less than `min_concurrent` retries.
    pub fn new(percent: f64, min_concurrent: u32) -> Self {
        Self {
            active: AtomicI64::new(0),
            retries: AtomicI64::new(0),
            percent,
            min_concurrent: i64::from(min_concurrent),
        }
    }

    /// Counts a request as active for the lifetime of the returned guard.
    pub fn request(&self) -> Held<'_> {
        self.active.fetch_add(1, Ordering::Relaxed);
        Held(&self.active)
    }

    /// Takes a retry slot if the budget allows one now.
    pub fn try_retry(&self) -> Option<Held<'_>> {
        let active = self.active.load(Ordering::Relaxed) as f64;
        let cap = ((active * self.percent / 100.0) as i64).max(self.min_concurrent);
        let taken = self.retries.fetch_add(1, Ordering::Relaxed);
        if taken < cap {
            Some(Held(&self.retries))
        } else {
            self.retries.fetch_sub(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_then_share_of_active_requests() {
        let b = Budget::new(20.0, 2);
        let requests: Vec<_> = (0..20).map(|_| b.request()).collect();
        // 20 % of 20 active requests = 4 retries at once.
        let held: Vec<_> = (0..4)
            .map(|_| b.try_retry().expect("within budget"))
            .collect();
        assert!(b.try_retry().is_none());
        drop(held);
        drop(requests);
        // With nothing active the floor still allows min_concurrent.
        let a = b.try_retry();
        let c = b.try_retry();
        assert!(a.is_some() && c.is_some() && b.try_retry().is_none());
    }
}
