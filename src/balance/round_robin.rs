//! Smooth weighted round-robin as a precomputed schedule.
//!
//! The schedule is built once per backend set with stride scheduling (each backend advances by
//! `1/weight`; the smallest virtual time goes next), which interleaves heavy and light backends the way
//! nginx's smooth weighted round-robin does (`a a b a` rather than `a a a b`) but costs O(log n) per slot
//! to build and O(1) per pick: a pick is one atomic increment and an index.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The largest schedule built; heavier weight sums are scaled down (ratios kept within rounding).
const MAX_SLOTS: u64 = 1 << 16;

/// A round-robin schedule over entry indices.
pub struct RoundRobin {
    slots: Vec<u32>,
    next: AtomicUsize,
}

impl RoundRobin {
    /// Builds the schedule for `weights` (index = entry index; weight 0 is never scheduled).
    pub fn new(weights: &[u32]) -> Self {
        let weights = reduce(weights);
        let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        let mut slots = Vec::with_capacity(total as usize);
        // Virtual finish times in units of 1/lcm; a u128 numerator avoids rounding drift.
        let mut heap: BinaryHeap<Reverse<(u128, u32)>> = weights
            .iter()
            .enumerate()
            .filter(|(_, w)| **w > 0)
            .map(|(i, w)| Reverse((stride(*w) / 2, i as u32)))
            .collect();
        while (slots.len() as u64) < total {
            let Some(Reverse((time, i))) = heap.pop() else {
                break;
            };
            slots.push(i);
            heap.push(Reverse((time + stride(weights[i as usize]), i)));
        }
        // Start each new set at a random slot so frequent swaps do not favour the first backend.
        let start = if slots.is_empty() {
            0
        } else {
            fastrand::usize(..slots.len())
        };
        Self {
            slots,
            next: AtomicUsize::new(start),
        }
    }

    /// Picks the next index not in `skip`, or `None` when every scheduled index is skipped.
    ///
    /// A first attempt takes the next slot of the shared rotation. A retry (non-empty `skip`) scans from
    /// a random slot instead, so it does not consume the rotation: otherwise a dead backend followed by a
    /// live one would be every connection's first attempt.
    pub fn pick(&self, skip: &[usize]) -> Option<usize> {
        let len = self.slots.len();
        if len == 0 {
            return None;
        }
        if skip.is_empty() {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            return Some(self.slots[n % len] as usize);
        }
        let start = fastrand::usize(..len);
        (0..len)
            .map(|k| self.slots[(start + k) % len] as usize)
            .find(|i| !skip.contains(i))
    }
}

fn stride(weight: u32) -> u128 {
    // 2^64 / weight: an exact-enough common scale for weights up to 2^16.
    (1u128 << 64) / u128::from(weight)
}

/// Divides weights by their gcd and scales them so the schedule stays within `MAX_SLOTS`.
fn reduce(weights: &[u32]) -> Vec<u32> {
    let g = weights.iter().copied().filter(|w| *w > 0).fold(0, gcd);
    if g == 0 {
        return weights.to_vec();
    }
    let mut out: Vec<u32> = weights.iter().map(|w| w / g).collect();
    let total: u64 = out.iter().map(|w| u64::from(*w)).sum();
    let cap = MAX_SLOTS.max(out.iter().filter(|w| **w > 0).count() as u64);
    if total > cap {
        for w in out.iter_mut().filter(|w| **w > 0) {
            *w = ((u64::from(*w) * cap / total) as u32).max(1);
        }
    }
    out
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(rr: &RoundRobin, n: usize, picks: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for _ in 0..picks {
            c[rr.pick(&[]).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn respects_weights_exactly_over_a_cycle() {
        let rr = RoundRobin::new(&[1, 2, 3]);
        assert_eq!(counts(&rr, 3, 600), vec![100, 200, 300]);
    }

    #[test]
    fn interleaves_smoothly() {
        // 4:4:2 must alternate (a b c a b a b c a b), never send two in a row to one backend.
        let rr = RoundRobin::new(&[4, 4, 2]);
        let seq: Vec<usize> = (0..20).map(|_| rr.pick(&[]).unwrap()).collect();
        assert!(seq.windows(2).all(|w| w[0] != w[1]), "{seq:?}");
    }

    #[test]
    fn zero_weight_never_picked_and_skip_respected() {
        let rr = RoundRobin::new(&[0, 1, 1]);
        let c = counts(&rr, 3, 100);
        assert_eq!(c[0], 0);
        for _ in 0..10 {
            assert_eq!(rr.pick(&[1]), Some(2));
        }
        assert_eq!(rr.pick(&[1, 2]), None);
        assert_eq!(RoundRobin::new(&[0, 0]).pick(&[]), None);
    }

    #[test]
    fn huge_weight_sums_are_scaled() {
        let weights: Vec<u32> = (0..10_000).map(|i| 1 + (i % 256)).collect();
        let rr = RoundRobin::new(&weights);
        assert!(rr.slots.len() as u64 <= MAX_SLOTS + 10_000);
        assert_eq!(
            rr.slots
                .iter()
                .collect::<std::collections::HashSet<_>>()
                .len(),
            10_000
        );
    }
}
