//! Power of two choices (Mitzenmacher): draw two backends at random (by weight) and take the one with the
//! lower cost, here peak-EWMA latency × (in-flight + 1) / weight, as linkerd2-proxy does. O(1) per pick,
//! and it steers away from slow or overloaded backends without global coordination.

use super::random::Random;

/// Two-choice selection over a fixed list of weights.
pub struct P2c {
    weights: Vec<u32>,
    random: Random,
}

impl P2c {
    /// Prepares selection for `weights` (weight 0 is never picked).
    pub fn new(weights: &[u32]) -> Self {
        Self {
            weights: weights.to_vec(),
            random: Random::new(weights),
        }
    }

    /// Picks the cheaper of two weighted-random candidates not in `skip`; `cost(i)` is the raw cost.
    pub fn pick(&self, skip: &[usize], cost: impl Fn(usize) -> f64) -> Option<usize> {
        let a = self.random.pick(skip)?;
        let mut skip_a = skip.to_vec();
        skip_a.push(a);
        let Some(b) = self.random.pick(&skip_a) else {
            return Some(a);
        };
        let score = |i: usize| cost(i) / f64::from(self.weights[i].max(1));
        Some(if score(b) < score(a) { b } else { a })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::ewma::PeakEwma;
    use crate::balance::health::now_ms;
    use std::time::Duration;

    #[test]
    fn prefers_the_cheaper_backend() {
        let p = P2c::new(&[1, 1, 1]);
        let costs = [1.0, 1.0, 100.0];
        let mut counts = [0usize; 3];
        for _ in 0..3000 {
            counts[p.pick(&[], |i| costs[i]).unwrap()] += 1;
        }
        // The expensive one wins only when drawn twice, which two distinct draws never do.
        assert_eq!(counts[2], 0, "{counts:?}");
        assert!(counts[0] > 1200 && counts[1] > 1200, "{counts:?}");
    }

    #[test]
    fn single_candidate_and_skip() {
        let p = P2c::new(&[0, 1]);
        assert_eq!(p.pick(&[], |_| 1.0), Some(1));
        assert_eq!(p.pick(&[1], |_| 1.0), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_backend_slow_once_takes_traffic_again_within_a_few_decay_periods() {
        let decay = Duration::from_secs(10);
        let p = P2c::new(&[1, 1]);
        let rtts = [PeakEwma::new(decay), PeakEwma::new(decay)];
        // Backend 0 answered one request in 1 s; from now on both answer in 10 ms.
        rtts[0].observe(Duration::from_secs(1));
        let mut picks = [0u32; 8];
        // One request every 100 ms for eight decay periods, counted per period for backend 0.
        for step in 0..800 {
            tokio::time::advance(Duration::from_millis(100)).await;
            let now = now_ms();
            let i = p.pick(&[], |i| rtts[i].estimate(now)).unwrap();
            rtts[i].observe(Duration::from_millis(10));
            if i == 0 {
                picks[step / 100] += 1;
            }
        }
        // 1 s decays below 10 ms after ln(100) = 4.6 periods.
        assert_eq!(picks[..4], [0; 4], "avoided while its estimate is higher");
        assert!(
            picks[4] + picks[5] > 0,
            "tried again within six periods: {picks:?}"
        );
        assert!(
            picks[6] >= 30 && picks[7] >= 30,
            "then it takes its share again: {picks:?}"
        );
    }
}
