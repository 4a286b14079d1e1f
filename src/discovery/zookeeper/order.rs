//! The order a service's discovered backends are handed over in (Synapse's `backend_order`): it
//! decides which `backup` is first, the one that serves while no other backend is usable.

use crate::balance::Backend;
use crate::config::Order;
use std::hash::{DefaultHasher, Hash, Hasher};

/// Puts `backends`, given in ascending znode-name order, in `order`; `shuffle` places each backend
/// by a hash of `seed` and its address, so the order is the same for the same seed and a backend
/// coming or going does not move the others.
pub fn arrange(backends: &mut [Backend], order: Order, seed: u64) {
    match order {
        Order::Asc => {}
        Order::Desc => backends.reverse(),
        Order::Shuffle => backends.sort_by_cached_key(|b| {
            let mut h = DefaultHasher::new();
            (seed, &b.host, b.port).hash(&mut h);
            h.finish()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::Origin;

    fn backends(ports: &[u16]) -> Vec<Backend> {
        ports
            .iter()
            .map(|p| Backend::new("10.0.0.1", *p, 1, Origin::Static))
            .collect()
    }

    fn ports(b: &[Backend]) -> Vec<u16> {
        b.iter().map(|b| b.port).collect()
    }

    #[test]
    fn asc_keeps_desc_reverses() {
        let mut b = backends(&[1, 2, 3]);
        arrange(&mut b, Order::Asc, 0);
        assert_eq!(ports(&b), [1, 2, 3]);
        arrange(&mut b, Order::Desc, 0);
        assert_eq!(ports(&b), [3, 2, 1]);
    }

    #[test]
    fn shuffle_is_fixed_per_seed_and_differs_between_seeds() {
        let all: Vec<u16> = (1..=20).collect();
        let shuffled = |seed: u64, from: &[u16]| {
            let mut b = backends(from);
            arrange(&mut b, Order::Shuffle, seed);
            ports(&b)
        };
        assert_eq!(shuffled(7, &all), shuffled(7, &all));
        assert_ne!(
            shuffled(7, &all),
            all,
            "20 backends keep their order by chance 1 in 20!"
        );
        let firsts: std::collections::HashSet<u16> =
            (0..50).map(|seed| shuffled(seed, &all)[0]).collect();
        assert!(
            firsts.len() > 5,
            "seeds pick different first backends: {firsts:?}"
        );
        let mut fewer = shuffled(7, &all);
        fewer.retain(|p| *p != 4);
        let without: Vec<u16> = all.iter().copied().filter(|p| *p != 4).collect();
        assert_eq!(
            shuffled(7, &without),
            fewer,
            "a backend leaving moves no other"
        );
    }
}
