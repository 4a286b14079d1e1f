//! The split's arithmetic, table-driven, and picks counted through real sets of every algorithm.

use super::*;
use crate::balance::health::{now_ms, LastCheck};
use crate::balance::{BalanceMetrics, Balancer, Origin, Policy};
use std::time::Duration;

fn cap(usable: u64, total: u64, backends: usize) -> Capacity {
    Capacity {
        usable,
        total,
        backends,
    }
}

#[test]
fn the_split_follows_envoys_priority_load() {
    let full = cap(200, 200, 2);
    let half = cap(100, 200, 1);
    let none = cap(0, 200, 0);
    let empty = Capacity::default();
    for (tiers, min, want) in [
        ([full, full, full], 1, Some([1.0, 0.0, 0.0])),
        ([half, full, full], 1, Some([0.7, 0.3, 0.0])),
        ([half, half, full], 1, Some([0.7, 0.3, 0.0])),
        ([half, empty, full], 1, Some([0.7, 0.0, 0.3])),
        (
            [cap(50, 200, 1), cap(50, 200, 1), full],
            1,
            Some([0.35, 0.35, 0.3]),
        ),
        ([none, full, full], 1, Some([0.0, 1.0, 0.0])),
        ([none, none, full], 1, Some([0.0, 0.0, 1.0])),
        ([half, none, none], 1, Some([1.0, 0.0, 0.0])),
        // Healths short of 1 together: each gets its part of their sum.
        (
            [cap(50, 200, 1), empty, cap(50, 200, 1)],
            1,
            Some([0.5, 0.0, 0.5]),
        ),
        // Too few usable local backends: the zone spills entirely.
        ([half, full, full], 2, Some([0.0, 1.0, 0.0])),
        ([full, full, full], 3, Some([0.0, 1.0, 0.0])),
        ([none, none, none], 1, None),
        ([empty, empty, empty], 1, None),
    ] {
        let got = split(&tiers, 1.4, min).map(|s| s.map(|x| (x * 1000.0).round() / 1000.0));
        assert_eq!(got, want, "{tiers:?} min {min}");
    }
    assert_eq!(split(&[half, full, empty], 1.0, 1), Some([0.5, 0.5, 0.0]));
    assert_eq!(split(&[half, full, empty], 2.0, 1), Some([1.0, 0.0, 0.0]));
}

fn backend(port: u16, zone: Option<&str>, region: Option<&str>) -> Backend {
    let mut b = Backend::new("127.0.0.1", port, 1, Origin::Static);
    if let Some(z) = zone {
        b.labels.insert("az".into(), z.into());
    }
    if let Some(r) = region {
        b.labels.insert("region".into(), r.into());
    }
    b
}

fn host() -> HostLocality {
    HostLocality {
        zone: "a".into(),
        region: Some("r".into()),
    }
}

fn balancer(
    algorithm: Algorithm,
    routing: LocalityRouting,
) -> (Balancer, crate::metrics::Registry) {
    let registry = crate::metrics::Registry::new();
    let metrics = Arc::new(BalanceMetrics::register(&registry).unwrap());
    let settings = Settings::new(Some(&host()), Some(&routing), &metrics, "svc");
    let b = Balancer::new("svc", algorithm, metrics)
        .with_policy(Policy {
            panic_threshold: 0,
            slow_start: Duration::ZERO,
            max_connections: None,
        })
        .with_locality(settings);
    (b, registry)
}

fn mark(b: &Balancer, port: u16, up: bool) {
    let set = b.current();
    let e = set
        .entries()
        .iter()
        .find(|e| e.backend.port == port)
        .unwrap();
    let check = LastCheck {
        passed: up,
        detail: String::new(),
        at_ms: now_ms(),
    };
    e.health.record_check(up, check);
    b.refresh();
}

/// Picks `n` times (hash: with `n` different keys) and counts picks by port.
fn picks(b: &Balancer, algorithm: Algorithm, n: u64) -> std::collections::BTreeMap<u16, u64> {
    let mut out = std::collections::BTreeMap::new();
    for k in 0..n {
        let key =
            (algorithm == Algorithm::Hash).then(|| crate::balance::hash::hash(&k.to_le_bytes()));
        let pick = b.current().pick_keyed(&[], key).unwrap();
        *out.entry(pick.entry.backend.port).or_default() += 1;
    }
    out
}

const ALGORITHMS: [Algorithm; 5] = [
    Algorithm::RoundRobin,
    Algorithm::LeastConn,
    Algorithm::Random,
    Algorithm::P2cEwma,
    Algorithm::Hash,
];

// Paused: the clock must not tick between backends' creation, or P2C's unsampled estimates (decayed
// from their creation time) differ and the oldest backend wins every comparison.
#[tokio::test(start_paused = true)]
async fn every_algorithm_picks_within_the_drawn_locality() {
    for algorithm in ALGORITHMS {
        let (b, registry) = balancer(algorithm, LocalityRouting::default());
        b.update(vec![
            backend(1, Some("a"), Some("r")),
            backend(2, Some("a"), Some("r")),
            backend(3, Some("b"), Some("r")),
            backend(4, Some("c"), Some("elsewhere")),
            backend(5, None, Some("r")),
        ]);
        let all = picks(&b, algorithm, 1000);
        assert_eq!(
            all.keys().copied().collect::<Vec<_>>(),
            [1, 2],
            "{algorithm:?}: all local while healthy"
        );
        mark(&b, 1, false);
        let n = 4000;
        let spread = picks(&b, algorithm, n);
        let local = spread.get(&2).copied().unwrap_or(0);
        let region = spread.get(&3).copied().unwrap_or(0);
        // The draw sequence (and a hash of distinct keys) holds 70/30 closely; random-ish algorithms
        // only choose within a tier, so the bound is tight for all.
        let tolerance = if algorithm == Algorithm::Hash {
            n / 25
        } else {
            2
        };
        assert!(
            local.abs_diff(n * 7 / 10) <= tolerance,
            "{algorithm:?}: {spread:?}"
        );
        assert_eq!(
            local + region,
            n,
            "{algorithm:?}: nothing remote while the region has room: {spread:?}"
        );
        let text = registry.render();
        for (tier, count) in [("local", 1000 + local), ("region", region), ("remote", 0)] {
            let line = format!("sinew_service_locality_requests_total{{locality=\"{tier}\",service=\"svc\"}} {count}");
            assert!(text.contains(&line), "{algorithm:?}: {line}\n{text}");
        }
        mark(&b, 2, false);
        mark(&b, 3, false);
        let remote = picks(&b, algorithm, 200);
        assert_eq!(
            remote.keys().copied().collect::<Vec<_>>(),
            [4, 5],
            "{algorithm:?}: all remote, unlabelled too"
        );
        mark(&b, 1, true);
        mark(&b, 2, true);
        assert_eq!(
            picks(&b, algorithm, 200)
                .keys()
                .copied()
                .collect::<Vec<_>>(),
            [1, 2],
            "{algorithm:?}: back local"
        );
    }
}

#[test]
fn counters_start_at_zero_and_the_view_shows_the_split() {
    let (b, registry) = balancer(Algorithm::RoundRobin, LocalityRouting::default());
    let text = registry.render();
    for tier in ["local", "region", "remote"] {
        let line = format!(
            "sinew_service_locality_requests_total{{locality=\"{tier}\",service=\"svc\"}} 0"
        );
        assert!(text.contains(&line), "{line}\n{text}");
    }
    b.update(vec![
        backend(1, Some("a"), None),
        backend(2, Some("a"), None),
        backend(3, Some("b"), Some("r")),
        backend(4, None, None),
    ]);
    mark(&b, 1, false);
    let v = b.view();
    let l = v.locality.unwrap();
    assert_eq!(
        (l.zone.as_str(), l.region.as_deref(), l.active),
        ("a", Some("r"), true)
    );
    assert_eq!(
        (l.local_percent, l.region_percent, l.remote_percent),
        (70.0, 30.0, 0.0)
    );
    let seen: Vec<(Option<&str>, Option<&str>)> = v
        .backends
        .iter()
        .map(|x| (x.locality.as_deref(), x.zone.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            (Some("local"), Some("a")),
            (Some("local"), Some("a")),
            (Some("region"), Some("b")),
            (Some("remote"), None)
        ]
    );
}

#[test]
fn without_routing_nothing_changes_and_the_view_says_nothing() {
    let registry = crate::metrics::Registry::new();
    let metrics = Arc::new(BalanceMetrics::register(&registry).unwrap());
    let off = LocalityRouting {
        enabled: false,
        ..Default::default()
    };
    let settings = Settings::new(Some(&host()), Some(&off), &metrics, "svc");
    assert!(settings.is_none(), "enabled: false");
    let b = Balancer::new("svc", Algorithm::RoundRobin, metrics).with_locality(settings);
    b.update(vec![
        backend(1, Some("a"), None),
        backend(2, Some("b"), None),
    ]);
    assert!(b.current().locality().is_none());
    assert_eq!(
        picks(&b, Algorithm::RoundRobin, 100)
            .values()
            .copied()
            .collect::<Vec<_>>(),
        [50, 50]
    );
    assert!(b.view().locality.is_none());
    assert!(!registry
        .render()
        .contains("sinew_service_locality_requests_total"));
}

#[test]
fn drain_and_panic_count_in_usable_and_a_custom_zone_label_is_read() {
    let routing = LocalityRouting {
        zone_label: Some("zone".into()),
        ..Default::default()
    };
    let (b, _registry) = balancer(Algorithm::RoundRobin, routing);
    let zoned = |port, zone: &str| {
        let mut x = Backend::new("127.0.0.1", port, 1, Origin::Static);
        x.labels.insert("zone".into(), zone.into());
        x.labels.insert("az".into(), "ignored".into());
        x
    };
    b.update(vec![zoned(1, "a"), zoned(2, "a"), zoned(3, "z")]);
    assert_eq!(b.view().locality.unwrap().local_percent, 100.0);
    // A drained local backend: still capacity, no longer usable.
    let set = b.current();
    let weights = Weights {
        weights: vec![0, 100, 100],
        panic: false,
    };
    let metrics = BalanceMetrics::register(&crate::metrics::Registry::new()).unwrap();
    let routing = LocalityRouting {
        zone_label: Some("zone".into()),
        ..Default::default()
    };
    let settings = Settings::new(Some(&host()), Some(&routing), &metrics, "svc").unwrap();
    let tiers = Tiers::build(
        &settings,
        Algorithm::RoundRobin,
        set.entries(),
        &weights,
        &Default::default(),
    );
    assert_eq!(tiers.split().map(|s| (s[0] * 100.0).round()), Some(70.0));
    let panic = Weights {
        weights: vec![100, 100, 100],
        panic: true,
    };
    let tiers = Tiers::build(
        &settings,
        Algorithm::RoundRobin,
        set.entries(),
        &panic,
        &Default::default(),
    );
    assert_eq!(tiers.split(), None, "panic balances over the whole set");
    assert_eq!(tiers.tier(2), Tier::Remote, "zone z, no region");
}

#[tokio::test(start_paused = true)]
async fn slow_start_counts_as_partial_capacity() {
    let registry = crate::metrics::Registry::new();
    let metrics = Arc::new(BalanceMetrics::register(&registry).unwrap());
    let routing = LocalityRouting::default();
    let settings = Settings::new(Some(&host()), Some(&routing), &metrics, "svc");
    let b = Balancer::new("svc", Algorithm::RoundRobin, metrics)
        .with_policy(Policy {
            panic_threshold: 0,
            slow_start: Duration::from_secs(10),
            max_connections: None,
        })
        .with_locality(settings);
    b.update(vec![backend(2, Some("b"), Some("r"))]);
    tokio::time::advance(Duration::from_secs(20)).await;
    b.refresh();
    b.update(vec![
        backend(1, Some("a"), Some("r")),
        backend(2, Some("b"), Some("r")),
    ]);
    let local = || b.view().locality.unwrap().local_percent;
    assert_eq!(local(), 14.0, "the 10 % floor x 1.4");
    tokio::time::advance(Duration::from_secs(5)).await;
    b.refresh();
    assert_eq!(local(), 70.0, "half-way x 1.4");
    tokio::time::advance(Duration::from_secs(5)).await;
    b.refresh();
    assert_eq!(local(), 100.0);
}

#[test]
fn a_tier_with_every_backend_skipped_passes_the_pick_on() {
    let (b, _registry) = balancer(Algorithm::LeastConn, LocalityRouting::default());
    b.update(vec![
        backend(1, Some("a"), Some("r")),
        backend(2, Some("b"), Some("r")),
    ]);
    let set = b.current();
    for _ in 0..10 {
        assert_eq!(set.pick(&[0]).unwrap().entry.backend.port, 2);
    }
    assert!(set.pick(&[0, 1]).is_none());
}
