//! Weighted random selection: a uniform draw over the cumulative weights, found by binary search.

/// Weighted random selection over a fixed list of weights.
pub struct Random {
    cumulative: Vec<u64>,
}

/// Draws before falling back to a scan when retries have excluded backends.
const DRAWS: usize = 8;

impl Random {
    /// Prepares selection for `weights` (weight 0 is never picked).
    pub fn new(weights: &[u32]) -> Self {
        let mut sum = 0u64;
        let cumulative = weights
            .iter()
            .map(|w| {
                sum += u64::from(*w);
                sum
            })
            .collect();
        Self { cumulative }
    }

    /// Picks a random index with probability proportional to its weight, skipping `skip`.
    pub fn pick(&self, skip: &[usize]) -> Option<usize> {
        let total = *self.cumulative.last()?;
        if total == 0 {
            return None;
        }
        for _ in 0..DRAWS {
            let r = fastrand::u64(..total);
            let i = self.cumulative.partition_point(|c| *c <= r);
            if !skip.contains(&i) {
                return Some(i);
            }
        }
        let mut prev = 0;
        for (i, c) in self.cumulative.iter().enumerate() {
            if *c > prev && !skip.contains(&i) {
                return Some(i);
            }
            prev = *c;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_weights_roughly() {
        let r = Random::new(&[1, 0, 3]);
        let mut c = [0usize; 3];
        for _ in 0..40_000 {
            c[r.pick(&[]).unwrap()] += 1;
        }
        assert_eq!(c[1], 0);
        let ratio = c[2] as f64 / c[0] as f64;
        assert!((2.7..3.3).contains(&ratio), "{c:?}");
    }

    #[test]
    fn skip_and_empty() {
        let r = Random::new(&[1, 1]);
        for _ in 0..50 {
            assert_eq!(r.pick(&[0]), Some(1));
        }
        assert_eq!(r.pick(&[0, 1]), None);
        assert_eq!(Random::new(&[]).pick(&[]), None);
    }
}
