//! The pure part of DNS discovery: what each host name last resolved to, and the backends a list of
//! named backends stands for.
//!
//! A name that fails to resolve (an error, a timeout, or an answer with no address) keeps its last good
//! answer, so a resolver outage never empties a service. Only a name that has never resolved adds
//! nothing.

use crate::balance::Backend;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

/// Why one lookup gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupFailure {
    /// The resolver failed (unknown name, no server reachable, ...).
    #[error("lookup failed: {0}")]
    Error(String),
    /// The resolver did not answer in time.
    #[error("lookup timed out")]
    Timeout,
    /// The name exists but has no address.
    #[error("no address")]
    Empty,
}

impl LookupFailure {
    /// The metric's `reason` label.
    pub fn reason(&self) -> &'static str {
        match self {
            LookupFailure::Error(_) => "error",
            LookupFailure::Timeout => "timeout",
            LookupFailure::Empty => "empty",
        }
    }
}

/// What recording a lookup changed, for the logs: a failure is logged once per streak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Streak {
    /// Nothing to log: still good, or still failing.
    Same,
    /// The name began to fail.
    Began,
    /// The name resolves again after failing.
    Ended,
}

/// The last good answer of every name in use, and which of them fail now.
#[derive(Debug, Default)]
pub struct Answers {
    good: HashMap<String, Vec<IpAddr>>,
    failing: HashSet<String>,
}

impl Answers {
    /// Records one lookup of `host`: a good answer replaces the last one, a failure keeps it.
    pub fn record(&mut self, host: &str, result: Result<Vec<IpAddr>, LookupFailure>) -> Streak {
        match result {
            Ok(mut addrs) if !addrs.is_empty() => {
                addrs.sort_unstable();
                addrs.dedup();
                self.good.insert(host.to_string(), addrs);
                if self.failing.remove(host) {
                    Streak::Ended
                } else {
                    Streak::Same
                }
            }
            _ if self.failing.insert(host.to_string()) => Streak::Began,
            _ => Streak::Same,
        }
    }

    /// Forgets every name not in `hosts`, so a name that leaves and comes back starts afresh.
    pub fn retain(&mut self, hosts: &HashSet<&str>) {
        self.good.retain(|h, _| hosts.contains(h.as_str()));
        self.failing.retain(|h| hosts.contains(h.as_str()));
    }

    /// The backends `wanted` stands for: each host name replaced by one backend per address of its last
    /// good answer (host = the address; port, weight and origin as wanted), IP addresses as they are.
    /// `None` while the set would be empty only because names have not resolved yet: a source that
    /// cannot read keeps quiet rather than report an empty set.
    pub fn backends(&self, wanted: &[Backend]) -> Option<Vec<Backend>> {
        let mut out = Vec::with_capacity(wanted.len());
        let mut unresolved = false;
        for b in wanted {
            if is_ip(&b.host) {
                out.push(b.clone());
                continue;
            }
            match self.good.get(&b.host) {
                Some(addrs) => out.extend(addrs.iter().map(|a| Backend {
                    host: a.to_string(),
                    ..b.clone()
                })),
                None => unresolved = true,
            }
        }
        (!out.is_empty() || !unresolved).then_some(out)
    }
}

/// True when `host` is an IP address, used as it is (as Synapse does).
pub fn is_ip(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok()
}

/// The distinct host names of `wanted` that need a lookup, in order.
pub fn names(wanted: &[Backend]) -> Vec<&str> {
    let mut seen = HashSet::new();
    wanted
        .iter()
        .map(|b| b.host.as_str())
        .filter(|h| !is_ip(h) && seen.insert(*h))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::Origin;

    fn named(host: &str, port: u16) -> Backend {
        Backend::new(host, port, 2, Origin::Dns(host.into()))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn hosts(set: &[Backend]) -> Vec<(String, u16)> {
        set.iter().map(|b| (b.host.clone(), b.port)).collect()
    }

    #[test]
    fn one_backend_per_address_sorted_and_deduplicated() {
        let mut a = Answers::default();
        a.record(
            "db",
            Ok(vec![
                ip("10.0.0.2"),
                ip("::1"),
                ip("10.0.0.1"),
                ip("10.0.0.2"),
            ]),
        );
        let set = a
            .backends(&[named("db", 5432), named("10.9.9.9", 80)])
            .unwrap();
        assert_eq!(
            hosts(&set),
            vec![
                ("10.0.0.1".into(), 5432),
                ("10.0.0.2".into(), 5432),
                ("::1".into(), 5432),
                ("10.9.9.9".into(), 80)
            ]
        );
        assert!(set
            .iter()
            .all(|b| b.weight == 2 && matches!(&b.origin, Origin::Dns(_))));
        assert_eq!(set[0].origin, Origin::Dns("db".into()));
        assert_eq!(set[2].key(), "[::1]:5432");
    }

    #[test]
    fn a_failure_keeps_the_last_good_answer_and_is_logged_once_per_streak() {
        let mut a = Answers::default();
        assert_eq!(a.record("db", Ok(vec![ip("10.0.0.1")])), Streak::Same);
        let failures = [
            LookupFailure::Error("Name or service not known".into()),
            LookupFailure::Timeout,
            LookupFailure::Empty,
        ];
        let streak: Vec<Streak> = failures
            .iter()
            .map(|f| a.record("db", Err(f.clone())))
            .collect();
        assert_eq!(streak, vec![Streak::Began, Streak::Same, Streak::Same]);
        assert_eq!(
            a.record("db", Ok(vec![])),
            Streak::Same,
            "empty is a failure"
        );
        assert_eq!(
            hosts(&a.backends(&[named("db", 1)]).unwrap()),
            vec![("10.0.0.1".into(), 1)]
        );
        assert_eq!(a.record("db", Ok(vec![ip("10.0.0.3")])), Streak::Ended);
        assert_eq!(
            hosts(&a.backends(&[named("db", 1)]).unwrap()),
            vec![("10.0.0.3".into(), 1)]
        );
    }

    #[test]
    fn names_never_resolved_keep_quiet_unless_others_serve() {
        let mut a = Answers::default();
        a.record("gone", Err(LookupFailure::Timeout));
        assert_eq!(a.backends(&[named("gone", 1)]), None);
        a.record("up", Ok(vec![ip("10.0.0.1")]));
        let set = a.backends(&[named("gone", 1), named("up", 2)]).unwrap();
        assert_eq!(hosts(&set), vec![("10.0.0.1".into(), 2)]);
        assert_eq!(
            a.backends(&[]),
            Some(vec![]),
            "no names is a real empty set"
        );
    }

    #[test]
    fn retain_forgets_names_no_longer_wanted() {
        let mut a = Answers::default();
        a.record("old", Ok(vec![ip("10.0.0.1")]));
        a.record("bad", Err(LookupFailure::Empty));
        a.retain(&HashSet::from(["new"]));
        assert_eq!(a.backends(&[named("old", 1)]), None);
        assert_eq!(a.record("bad", Err(LookupFailure::Empty)), Streak::Began);
    }

    #[test]
    fn names_are_the_distinct_host_names() {
        let wanted = [
            named("a", 1),
            named("127.0.0.1", 1),
            named("a", 2),
            named("b", 1),
            named("::1", 1),
        ];
        assert_eq!(names(&wanted), vec!["a", "b"]);
    }
}
