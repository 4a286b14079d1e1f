//! At most one warning per second per source (a service, the admin listener), so a failure under load
//! does not flood the log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A once-per-second gate that counts what it suppressed.
#[derive(Default)]
pub struct RateLimited {
    last_second: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimited {
    /// Returns `Some(suppressed since last time)` when a line may be logged now, `None` otherwise.
    pub fn allow(&self) -> Option<u64> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let last = self.last_second.load(Ordering::Relaxed);
        if now != last
            && self
                .last_second
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_one_per_second() {
        let r = RateLimited::default();
        assert_eq!(r.allow(), Some(0));
        assert_eq!(r.allow(), None);
        assert_eq!(r.allow(), None);
    }
}
