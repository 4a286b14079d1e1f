//! Per-backend health, shared by every set that holds the backend: the active-check verdict, passive
//! failure counting and ejection, and when the backend last became usable (for slow start).
//!
//! Writers are the health checker and the proxy's failure reports; the pick path never reads these
//! atomics: a change of health rebuilds the set's selection state instead (see `eligible`).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

/// Milliseconds on sinew's monotonic clock (tokio's, so tests can pause it); never 0.
pub fn now_ms() -> u64 {
    base().elapsed().as_millis() as u64
}

/// The instant at which [`now_ms`] reads `ms`, for sleeping until a deadline on that clock.
pub fn instant_at(ms: u64) -> Instant {
    base() + Duration::from_millis(ms)
}

/// The clock's zero, one millisecond before its first reading.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(|| Instant::now() - Duration::from_millis(1))
}

/// The outcome of the last active check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastCheck {
    /// Whether it passed.
    pub passed: bool,
    /// What happened, for operators (e.g. `HTTP 503`, `connect: refused`).
    pub detail: String,
    /// When, on the [`now_ms`] clock.
    pub at_ms: u64,
}

/// Health of one backend.
pub struct BackendHealth {
    checked_up: AtomicBool,
    failures: AtomicU32,
    ejected_until_ms: AtomicU64,
    ejections: AtomicU32,
    usable_since_ms: AtomicU64,
    /// When an event last changed the backend's state (see `changes`).
    changed_ms: AtomicU64,
    last_check_state: AtomicU8,
    last_check: Mutex<Option<LastCheck>>,
}

impl Default for BackendHealth {
    fn default() -> Self {
        Self {
            checked_up: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            usable_since_ms: AtomicU64::new(now_ms()),
            changed_ms: AtomicU64::new(now_ms()),
            last_check_state: AtomicU8::new(0),
            last_check: Mutex::new(None),
        }
    }
}

impl BackendHealth {
    /// The active checks' verdict (up until checks say otherwise).
    pub fn checked_up(&self) -> bool {
        self.checked_up.load(Ordering::Relaxed)
    }

    /// True while an ejection lasts.
    pub fn ejected(&self, now: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now
    }

    /// Milliseconds of ejection left.
    pub fn ejected_for(&self, now: u64) -> u64 {
        self.ejected_until().saturating_sub(now)
    }

    /// When the current or last ejection ends (0 if there never was one).
    pub fn ejected_until(&self) -> u64 {
        self.ejected_until_ms.load(Ordering::Relaxed)
    }

    /// Usable: checked up and not ejected.
    pub fn usable(&self, now: u64) -> bool {
        self.checked_up() && !self.ejected(now)
    }

    /// When the backend last became usable.
    pub fn usable_since(&self) -> u64 {
        self.usable_since_ms.load(Ordering::Relaxed)
    }

    /// Records an active check; returns true when the verdict changed.
    pub fn record_check(&self, up: bool, check: LastCheck) -> bool {
        let changed = self.checked_up.swap(up, Ordering::Relaxed) != up;
        if changed {
            self.mark_changed(now_ms());
        }
        if changed && up {
            self.usable_since_ms.store(now_ms(), Ordering::Relaxed);
        }
        self.last_check_state
            .store(if check.passed { 1 } else { 2 }, Ordering::Relaxed);
        *self.last_check.lock().unwrap_or_else(|p| p.into_inner()) = Some(check);
        changed
    }

    /// The last active check, if any ran.
    pub fn last_check(&self) -> Option<LastCheck> {
        if self.last_check_state.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.last_check
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Ends an ejection early (a passing active check); returns true if one was in force.
    pub fn clear_ejection(&self, now: u64) -> bool {
        let was = self.ejected(now);
        if was {
            self.ejected_until_ms.store(0, Ordering::Relaxed);
            self.usable_since_ms.store(now, Ordering::Relaxed);
            self.mark_changed(now);
        }
        was
    }

    /// Counts a success of real traffic.
    pub fn success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a failure of real traffic; returns the consecutive failures so far.
    pub fn failure(&self) -> u32 {
        self.failures.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Ejects for `base × n` (n = this ejection's number), capped at `max`; returns the length.
    pub fn eject(&self, now: u64, base: Duration, max: Duration) -> Duration {
        let n = self.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let length = base.saturating_mul(n).min(max);
        self.ejected_until_ms
            .store(now + length.as_millis() as u64, Ordering::Relaxed);
        self.usable_since_ms
            .store(now + length.as_millis() as u64, Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
        self.mark_changed(now);
        length
    }

    /// Records that an event (a check verdict, an ejection, joining or leaving the set) changed the
    /// backend's state at `now`.
    pub fn mark_changed(&self, now: u64) {
        self.changed_ms.store(now, Ordering::Relaxed);
    }

    /// When an event last changed the backend's state; changes that come with time alone (an
    /// ejection or a slow start running out) are added when read (see `changes`).
    pub fn changed_at(&self) -> u64 {
        self.changed_ms.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ejections_grow_and_cap() {
        let h = BackendHealth::default();
        let (base, max) = (Duration::from_secs(10), Duration::from_secs(25));
        let now = now_ms();
        assert_eq!(h.eject(now, base, max), Duration::from_secs(10));
        assert!(h.ejected(now) && !h.usable(now));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!h.ejected(now_ms()));
        assert_eq!(h.eject(now_ms(), base, max), Duration::from_secs(20));
        assert_eq!(h.eject(now_ms(), base, max), Duration::from_secs(25));
        assert!(h.clear_ejection(now_ms()));
        assert!(h.usable(now_ms()));
    }
}
