//! Rise/fall counting of active checks (HAProxy's and Nerve's semantics): a verdict flips only after
//! `rise` passes or `fall` failures in a row, so one odd result does not move traffic.

/// Rise/fall bookkeeping of one checked thing (a backend, or a registered service's check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckState {
    /// Current verdict.
    pub up: bool,
    passes: u32,
    fails: u32,
}

impl CheckState {
    /// Starts from a verdict.
    pub fn new(up: bool) -> Self {
        Self {
            up,
            passes: 0,
            fails: 0,
        }
    }

    /// Counts one check; the verdict flips after `rise` passes in a row (down) or `fall` failures (up).
    pub fn record(&mut self, passed: bool, rise: u32, fall: u32) {
        match (self.up, passed) {
            (true, true) => self.fails = 0,
            (true, false) => {
                self.fails += 1;
                if self.fails >= fall {
                    *self = Self::new(false);
                }
            }
            (false, false) => self.passes = 0,
            (false, true) => {
                self.passes += 1;
                if self.passes >= rise {
                    *self = Self::new(true);
                }
            }
        }
    }

    /// True while a transition is under way (HAProxy uses `fastinter` then).
    pub fn transitioning(&self) -> bool {
        self.passes > 0 || self.fails > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall() {
        let mut s = CheckState::new(true);
        s.record(false, 2, 3);
        s.record(false, 2, 3);
        assert!(s.up && s.transitioning());
        s.record(true, 2, 3);
        assert!(
            s.up && !s.transitioning(),
            "a pass resets the failure count"
        );
        for _ in 0..3 {
            s.record(false, 2, 3);
        }
        assert!(!s.up);
        s.record(true, 2, 3);
        assert!(!s.up);
        s.record(true, 2, 3);
        assert!(s.up);
    }
}
