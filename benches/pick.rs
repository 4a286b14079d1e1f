//! The pick path of each algorithm at 10, 1k and 10k backends, and picks while another thread swaps.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use sinew::balance::{Backend, BalanceMetrics, Balancer, Origin};
use sinew::config::Algorithm;
use sinew::metrics::Registry;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn backends(n: usize) -> Vec<Backend> {
    (0..n)
        .map(|i| {
            Backend::new(
                format!("10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255),
                8080,
                1 + (i % 4) as u32,
                Origin::Static,
            )
        })
        .collect()
}

fn balancer(algorithm: Algorithm, n: usize) -> Balancer {
    let metrics = Arc::new(BalanceMetrics::register(&Registry::new()).expect("metrics"));
    let b = Balancer::new("bench", algorithm, metrics);
    b.update(backends(n));
    b
}

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for algorithm in [
        Algorithm::RoundRobin,
        Algorithm::LeastConn,
        Algorithm::Random,
        Algorithm::P2cEwma,
        Algorithm::Hash,
    ] {
        for n in [10, 1_000, 10_000] {
            let b = balancer(algorithm, n);
            let set = b.current();
            let mut key = 0u64;
            group.bench_with_input(BenchmarkId::new(algorithm.name(), n), &n, |bench, _| {
                bench.iter(|| {
                    key = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    black_box(set.pick_keyed(&[], Some(key)))
                })
            });
        }
    }
    // Every backend busy: least-conn cannot stop early at an idle one and scans the whole set.
    for n in [10, 1_000, 10_000] {
        let b = balancer(Algorithm::LeastConn, n);
        let held: Vec<_> = (0..n).filter_map(|_| b.pick(&[])).collect();
        group.bench_with_input(
            BenchmarkId::new("least_conn_all_busy", n),
            &n,
            |bench, _| bench.iter(|| black_box(b.pick(&[]))),
        );
        drop(held);
    }
    group.finish();
}

fn pick_during_swaps(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick_during_swaps");
    for algorithm in [
        Algorithm::RoundRobin,
        Algorithm::LeastConn,
        Algorithm::P2cEwma,
    ] {
        let b = Arc::new(balancer(algorithm, 100));
        let stop = Arc::new(AtomicBool::new(false));
        // A second picker thread and a swapper thread run while the measured thread picks.
        let picker = {
            let (b, stop) = (Arc::clone(&b), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    black_box(b.pick(&[]));
                }
            })
        };
        let swapper = {
            let (b, stop) = (Arc::clone(&b), Arc::clone(&stop));
            std::thread::spawn(move || {
                let sets = [backends(100), backends(99)];
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    b.update(sets[i % 2].clone());
                    i += 1;
                }
            })
        };
        group.bench_function(algorithm.name(), |bench| {
            bench.iter(|| black_box(b.pick(&[])))
        });
        stop.store(true, Ordering::Relaxed);
        let _ = picker.join();
        let _ = swapper.join();
    }
    group.finish();
}

criterion_group!(benches, pick, pick_during_swaps);
criterion_main!(benches);
