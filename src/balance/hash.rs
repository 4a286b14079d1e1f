//! Consistent hashing on a ring (Karger et al.; "ketama"): each backend owns points on a 64-bit ring in
//! proportion to its weight, and a key goes to the first point at or after its hash. Adding or removing
//! one backend moves only about 1/n of the keys.

/// Ring points per unit of effective weight (effective weights are already scaled by 100).
const POINTS_PER_WEIGHT: u64 = 1;
/// Most points on a ring; heavier sets get proportionally fewer points per backend.
const MAX_POINTS: u64 = 160_000;

/// A hash ring over entry indices.
pub struct Ring {
    points: Vec<(u64, u32)>,
}

impl Ring {
    /// Builds the ring; `keys[i]` identifies entry `i` (its `host:port`), so placement is stable.
    pub fn new(weights: &[u32], keys: &[&str]) -> Self {
        let total: u64 = weights
            .iter()
            .map(|w| u64::from(*w) * POINTS_PER_WEIGHT)
            .sum();
        let scale = if total > MAX_POINTS {
            MAX_POINTS as f64 / total as f64
        } else {
            1.0
        };
        let mut points = Vec::with_capacity(total.min(MAX_POINTS) as usize + weights.len());
        for (i, (w, key)) in weights.iter().zip(keys).enumerate() {
            if *w == 0 {
                continue;
            }
            let n = ((f64::from(*w) * POINTS_PER_WEIGHT as f64 * scale) as u64).max(1);
            for p in 0..n {
                points.push((hash_parts(key.as_bytes(), p), i as u32));
            }
        }
        points.sort_unstable();
        Self { points }
    }

    /// The owner of `key`, skipping `skip` (the next distinct owner clockwise).
    pub fn pick(&self, key: u64, skip: &[usize]) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let start = self.points.partition_point(|(h, _)| *h < key);
        let len = self.points.len();
        (0..len)
            .map(|k| self.points[(start + k) % len].1 as usize)
            .find(|i| !skip.contains(i))
    }
}

/// A 64-bit hash (FNV-1a with a murmur3 finalizer) of bytes; the same on every host.
pub fn hash(bytes: &[u8]) -> u64 {
    fmix(fnv(bytes, 0xcbf2_9ce4_8422_2325))
}

fn hash_parts(bytes: &[u8], n: u64) -> u64 {
    fmix(fnv(&n.to_le_bytes(), fnv(bytes, 0xcbf2_9ce4_8422_2325)))
}

fn fnv(bytes: &[u8], mut h: u64) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn fmix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owners(ring: &Ring, keys: &[&str], n: u64) -> Vec<&'static str> {
        let _ = keys;
        (0..n)
            .map(|k| ["a", "b", "c", "d", "e"][ring.pick(hash(&k.to_le_bytes()), &[]).unwrap()])
            .collect()
    }

    #[test]
    fn adding_a_backend_moves_about_one_nth_of_keys() {
        let four = Ring::new(&[100; 4], &["a", "b", "c", "d"]);
        let five = Ring::new(&[100; 5], &["a", "b", "c", "d", "e"]);
        let before = owners(&four, &[], 10_000);
        let after = owners(&five, &[], 10_000);
        let moved = before.iter().zip(&after).filter(|(x, y)| x != y).count();
        assert!(
            after.iter().zip(&before).all(|(x, y)| x == y || *x == "e"),
            "keys only move to the new backend"
        );
        assert!(
            (1_200..2_800).contains(&moved),
            "about 1/5 of keys move: {moved}"
        );
    }

    #[test]
    fn weights_and_skip() {
        let ring = Ring::new(&[100, 300], &["a", "b"]);
        let b = (0..10_000u64)
            .filter(|k| ring.pick(hash(&k.to_le_bytes()), &[]) == Some(1))
            .count();
        assert!((6_500..8_500).contains(&b), "{b}");
        assert_eq!(ring.pick(42, &[1]), Some(0));
        assert_eq!(ring.pick(42, &[0, 1]), None);
    }
}
