//! Least connections: the backend with the fewest active connections relative to its weight.
//!
//! Loads are read from the per-backend counters that survive swaps, so a backend that stays in the set
//! keeps its count. Ties rotate, so an idle service still spreads new connections round-robin.
//! The scan is O(n) but stops at the first idle backend, which is the common case.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Least-connections selection over a fixed list of weights.
pub struct LeastConn {
    weights: Vec<u32>,
    rotate: AtomicUsize,
}

impl LeastConn {
    /// Prepares selection for `weights` (weight 0 is never picked).
    pub fn new(weights: &[u32]) -> Self {
        Self {
            weights: weights.to_vec(),
            rotate: AtomicUsize::new(0),
        }
    }

    /// Picks the index minimising `load(i) / weight(i)`, skipping `skip`.
    pub fn pick(&self, skip: &[usize], load: impl Fn(usize) -> u64) -> Option<usize> {
        let n = self.weights.len();
        if n == 0 {
            return None;
        }
        let start = self.rotate.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<(usize, u64, u64)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            let w = u64::from(self.weights[i]);
            if w == 0 || skip.contains(&i) {
                continue;
            }
            let l = load(i);
            if l == 0 {
                // Nothing beats an idle backend, and the rotating start spreads ties: stop scanning.
                return Some(i);
            }
            // l/w < bl/bw  <=>  l*bw < bl*w, exact in integers.
            match best {
                Some((_, bl, bw))
                    if u128::from(l) * u128::from(bw) >= u128::from(bl) * u128::from(w) => {}
                _ => best = Some((i, l, w)),
            }
        }
        best.map(|(i, _, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_least_loaded_relative_to_weight() {
        let lc = LeastConn::new(&[1, 2, 1]);
        let loads = [3u64, 4, 3];
        // 3/1, 4/2 = 2, 3/1: the weighted one wins.
        assert_eq!(lc.pick(&[], |i| loads[i]), Some(1));
        assert_eq!(lc.pick(&[1], |i| loads[i]).map(|i| i != 1), Some(true));
    }

    #[test]
    fn ties_rotate() {
        let lc = LeastConn::new(&[1, 1, 1]);
        let picks: Vec<usize> = (0..3).map(|_| lc.pick(&[], |_| 0).unwrap()).collect();
        let mut sorted = picks.clone();
        sorted.sort();
        assert_eq!(sorted, vec![0, 1, 2]);
    }

    #[test]
    fn zero_weight_and_all_skipped() {
        let lc = LeastConn::new(&[0, 1]);
        assert_eq!(lc.pick(&[], |_| 0), Some(1));
        assert_eq!(lc.pick(&[1], |_| 0), None);
    }
}
