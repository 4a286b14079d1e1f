//! Quantiles of a bucketed histogram, computed as Prometheus' `histogram_quantile` does: find the
//! bucket that holds the rank, then interpolate linearly within it, so the page and a dashboard
//! over the same buckets agree.

/// The `q` quantile (0 < q < 1) of observations counted per bucket: `counts[i]` observations fell in
/// (`bounds[i-1]`, `bounds[i]`] (the first bucket starts at 0), and the last count is above every bound.
/// A rank in that last bucket gives the highest bound, as Prometheus does. `None` without observations.
pub fn quantile(q: f64, bounds: &[f64], counts: &[u64]) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, &count) in counts.iter().enumerate() {
        let through = below + count;
        if through as f64 >= rank && count > 0 {
            let Some(&end) = bounds.get(i) else {
                return bounds.last().copied();
            };
            let start = if i == 0 { 0.0 } else { bounds[i - 1] };
            return Some(start + (end - start) * (rank - below as f64) / count as f64);
        }
        below = through;
    }
    bounds.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: [f64; 4] = [0.001, 0.0025, 0.005, 0.01];

    #[test]
    fn quantiles_interpolate_within_the_bucket_that_holds_the_rank() {
        // (q, counts per bucket incl. above every bound, expected), worked by hand:
        let cases: [(f64, [u64; 5], Option<f64>); 8] = [
            // rank 2 of 4, all in (0, 1ms]: 0 + 1ms × 2/4.
            (0.5, [4, 0, 0, 0, 0], Some(0.0005)),
            // rank 10 of 20: the end of (1ms, 2.5ms], where the 10th observation is.
            (0.5, [0, 10, 0, 10, 0], Some(0.0025)),
            // rank 19.8 of 20: 9.8 into the 10 of (5ms, 10ms]: 5ms + 5ms × 0.98.
            (0.99, [0, 10, 0, 10, 0], Some(0.0099)),
            // rank 5 of 10, empty buckets skipped: 2.5 + 2.5 × (5-4)/2 in (2.5ms, 5ms].
            (0.5, [4, 0, 2, 4, 0], Some(0.00375)),
            // A rank above every bound gives the highest bound.
            (0.99, [1, 0, 0, 0, 9], Some(0.01)),
            (0.5, [0, 0, 0, 0, 3], Some(0.01)),
            // No observations: no quantile, not 0.
            (0.5, [0; 5], None),
            (1.5, [1, 0, 0, 0, 0], None),
        ];
        for (q, counts, want) in cases {
            let got = quantile(q, &BOUNDS, &counts);
            match (got, want) {
                (Some(g), Some(w)) => {
                    assert!((g - w).abs() < 1e-12, "q={q} {counts:?}: {g} != {w}")
                }
                _ => assert_eq!(got, want, "q={q} {counts:?}"),
            }
        }
    }
}
