//! Distinct tries (HAProxy's `retries` with `option redispatch`): a request or connection that fails on
//! one backend goes to another, trying at most `1 + retries` backends, each one not tried yet while
//! any is left.

use super::{BackendSet, Balancer, Pick, Unavailable};

/// The backends one request or connection has tried, and how many it may try.
pub struct Tries {
    /// Set indices of the backends tried, in order.
    tried: Vec<usize>,
    /// Most tries: the first one plus the retries.
    most: usize,
}

impl Tries {
    /// Nothing tried yet; at most `1 + retries` tries.
    pub fn new(retries: u32) -> Self {
        Self {
            tried: Vec::new(),
            most: (retries as usize).saturating_add(1),
        }
    }

    /// How many tries were made, which is also the number of the next one (0 for the first).
    pub fn made(&self) -> u32 {
        self.tried.len() as u32
    }

    /// True while another try is allowed.
    pub fn left(&self) -> bool {
        self.tried.len() < self.most
    }

    /// Picks from `set` a backend not tried yet, waiting in the service's queue while every usable one
    /// is at `max_connections`.
    pub async fn pick(
        &self,
        balancer: &Balancer,
        set: &BackendSet,
        key: Option<u64>,
    ) -> Result<Pick, Unavailable> {
        balancer.pick_queued(set, &self.tried, key).await
    }

    /// Counts a try on `pick`'s backend.
    pub fn record(&mut self, pick: &Pick) {
        self.tried.push(pick.index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::BalanceMetrics;
    use crate::balance::{Backend, Origin};
    use crate::config::Algorithm;
    use crate::metrics::Registry;
    use std::collections::HashSet;
    use std::sync::Arc;

    fn balancer(backends: u16) -> Balancer {
        let b = Balancer::new(
            "tries",
            Algorithm::RoundRobin,
            Arc::new(BalanceMetrics::register(&Registry::new()).unwrap()),
        );
        b.update(
            (1..=backends)
                .map(|port| Backend::new("127.0.0.1", port, 1, Origin::Static))
                .collect(),
        );
        b
    }

    #[tokio::test]
    async fn tries_are_counted_and_bounded() {
        // (retries, backends, tries made, why picking stopped before the tries ran out)
        let table: &[(u32, u16, u32, Option<Unavailable>)] = &[
            (0, 3, 1, None),
            (2, 3, 3, None),
            (2, 5, 3, None),
            (5, 3, 3, Some(Unavailable::NoBackend)),
            (1, 0, 0, Some(Unavailable::NoBackend)),
        ];
        for &(retries, backends, made, ended_by) in table {
            let b = balancer(backends);
            let set = b.current();
            let mut tries = Tries::new(retries);
            let mut keys = HashSet::new();
            let mut ended = None;
            while tries.left() {
                assert_eq!(tries.made() as usize, keys.len());
                match tries.pick(&b, &set, None).await {
                    Ok(pick) => {
                        tries.record(&pick);
                        assert!(
                            keys.insert(pick.entry.key.clone()),
                            "{retries}/{backends}: {} picked twice",
                            pick.entry.key
                        );
                    }
                    Err(why) => {
                        ended = Some(why);
                        break;
                    }
                }
            }
            assert_eq!(tries.made(), made, "{retries} retries, {backends} backends");
            assert_eq!(ended, ended_by, "{retries} retries, {backends} backends");
        }
    }
}
