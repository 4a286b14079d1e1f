//! Fleet bench: N sinew discovery watchers (each its own ZooKeeper session and balancer, sinew's real
//! discovery code) on a 3-node ZooKeeper ensemble on loopback, one big service, four scenarios:
//! (a) steady churn, (b) a deploy replacing every backend, (c) the leader killed, (d) the whole
//! ensemble restarted (both between two spells of churn: no writes while the ensemble recovers, so
//! the requests counted meanwhile are the fleet's re-reads). Prints, per scenario, write-to-swap delay, ZooKeeper requests per change,
//! how the sessions came back, agents that ever held an empty set, and CPU.
//!
//! With `--at-rest S` it measures instead one `sinew` binary watching S services of 20 backends each,
//! at rest: memory, CPU and ZooKeeper requests.
//!
//! `cargo bench --bench fleet -- --agents 1000` (see `--help`). Needs Debian's `zookeeper` and a JRE.

mod agents;
mod ensemble;
mod rest;
mod writer;

use agents::Fleet;
use clap::Parser;
use ensemble::Ensemble;
use sinew::config::{WatchMode, ZookeeperDiscovery};
use std::time::{Duration, Instant};
use writer::Writer;

/// The allocator of the `sinew` binary, so that the agents cost here what they cost in it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The path of the big service.
const PATH: &str = "/fleet/big/services";

#[derive(Parser)]
#[command(about = "sinew discovery at fleet scale on a local 3-node ZooKeeper ensemble")]
struct Args {
    /// Simulated agents, each with its own ZooKeeper session.
    #[arg(long, default_value_t = 100)]
    agents: usize,
    /// Backends of the big service.
    #[arg(long, default_value_t = 1000)]
    backends: usize,
    /// Replacements per second in the churn of (a), (c) and (d).
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// How long (a), (c) and (d) churn.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    churn: Duration,
    /// How long the deploy of (b) takes to replace every backend.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    deploy: Duration,
    /// Scenarios to run, any of `abcd`.
    #[arg(long, default_value = "abcd")]
    scenarios: String,
    /// Agents started at a time (each batch loads before the next starts).
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Heap of each ZooKeeper server, MiB.
    #[arg(long, default_value_t = 1024)]
    heap_mb: u32,
    /// Coalescing window of the agents.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    coalesce: Duration,
    /// How the agents watch: `recursive` (one persistent recursive watch each) or `oneshot`.
    #[arg(long, default_value = "recursive", value_parser = parse_watch)]
    watch: WatchMode,
    /// Session timeout of the agents.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    session_timeout: Duration,
    /// The whole run stops (and the ensemble with it) after this long.
    #[arg(long, default_value = "40m", value_parser = humantime::parse_duration)]
    limit: Duration,
    /// Instead of the scenarios: one sinew binary watching this many services of
    /// `--rest-backends` backends each, measured at rest.
    #[arg(long)]
    at_rest: Option<usize>,
    /// Backends of each service with `--at-rest`.
    #[arg(long, default_value_t = 20)]
    rest_backends: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Counters at one moment.
struct Snap {
    at: Instant,
    requests: [u64; 5],
    propagation: Vec<(f64, u64)>,
    zk_cpu: f64,
    own_cpu: f64,
}

fn snap(fleet: &Fleet, ensemble: &Ensemble) -> Snap {
    let own = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    Snap {
        at: Instant::now(),
        requests: fleet.requests(),
        propagation: fleet.propagation(),
        zk_cpu: ensemble.cpu_seconds(),
        own_cpu: ensemble::ticks(&own) as f64 / ensemble::CLK_TCK,
    }
}

/// The value below which a share `q` of the observations fall, interpolated within its bucket.
fn quantile(buckets: &[(f64, u64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total == 0 {
        return None;
    }
    let target = q * total as f64;
    let (mut lower, mut below) = (0.0, 0u64);
    for &(upper, count) in buckets {
        if count as f64 >= target {
            if upper.is_infinite() {
                return Some(lower);
            }
            let share = (target - below as f64) / (count - below).max(1) as f64;
            return Some(lower + (upper - lower) * share);
        }
        (lower, below) = (upper, count);
    }
    None
}

/// The upper bound of the bucket holding the largest observation.
fn max_bound(buckets: &[(f64, u64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    (total > 0).then(|| {
        buckets
            .iter()
            .find(|b| b.1 == total)
            .map_or(f64::INFINITY, |b| b.0)
    })
}

/// Seconds, for the report.
fn secs(d: Option<f64>) -> String {
    d.map_or("-".into(), |d| {
        if d.is_infinite() {
            "beyond the last bucket".into()
        } else if d < 1.0 {
            format!("{:.0} ms", d * 1000.0)
        } else {
            format!("{d:.2} s")
        }
    })
}

/// One line of the report.
struct Row {
    name: &'static str,
    changes: usize,
    p50: Option<f64>,
    p99: Option<f64>,
    max: Option<f64>,
    per_change: f64,
    reconnect: String,
    rereads: String,
    converge: f64,
    empty: usize,
    zk_cores: f64,
    own_cores: f64,
    wall: f64,
}

impl Row {
    fn header() -> &'static str {
        "| scenario | changes | propagation p50 | p99 | max (bucket) | ZK requests per change (fleet / per agent) | sessions back after the fault | re-reads after the fault | last agent converged after the last write | agents ever empty | ensemble CPU (cores) | agents' process CPU (cores) | wall |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    }

    fn line(&self, agents: usize) -> String {
        format!(
            "| {} | {} | {} | {} | ≤ {} | {:.0} / {:.2} | {} | {} | {} | {} | {:.2} | {:.2} | {:.0} s |",
            self.name,
            self.changes,
            secs(self.p50),
            secs(self.p99),
            secs(self.max),
            self.per_change,
            self.per_change / agents as f64,
            self.reconnect,
            self.rereads,
            secs(Some(self.converge)),
            self.empty,
            self.zk_cores,
            self.own_cores,
            self.wall
        )
    }
}

fn row(
    name: &'static str,
    fleet: &Fleet,
    before: &Snap,
    after: &Snap,
    changes: usize,
    reconnect: String,
    converge: f64,
) -> Row {
    let hist: Vec<(f64, u64)> = after
        .propagation
        .iter()
        .zip(&before.propagation)
        .map(|(a, b)| (a.0, a.1 - b.1))
        .collect();
    let requests: u64 = after.requests.iter().sum::<u64>() - before.requests.iter().sum::<u64>();
    let wall = (after.at - before.at).as_secs_f64();
    Row {
        name,
        changes,
        p50: quantile(&hist, 0.5),
        p99: quantile(&hist, 0.99),
        max: max_bound(&hist),
        per_change: requests as f64 / changes.max(1) as f64,
        reconnect,
        rereads: "-".into(),
        converge,
        empty: fleet.ever_empty(),
        zk_cores: (after.zk_cpu - before.zk_cpu) / wall,
        own_cores: (after.own_cpu - before.own_cpu) / wall,
        wall,
    }
}

/// Waits until every agent holds the newest backend (at most 2 minutes); seconds waited.
async fn converge(fleet: &Fleet, host: &str) -> f64 {
    let start = Instant::now();
    while fleet.holding(host) < fleet.len() && start.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let holding = fleet.holding(host);
    if holding < fleet.len() {
        eprintln!(
            "only {holding} of {} agents hold the newest backend after 120 s; {}",
            fleet.len(),
            fleet.laggards(host)
        );
    }
    start.elapsed().as_secs_f64()
}

/// How the sessions came back after `fault`: how many, when the first did, and the spread after it.
fn reconnects(fleet: &Fleet, fault: Instant) -> String {
    let back = fleet.sessions_back(fault);
    let mut times: Vec<f64> = back
        .iter()
        .flatten()
        .map(|t| (*t - fault).as_secs_f64())
        .collect();
    if times.is_empty() {
        return format!("0/{}", back.len());
    }
    times.sort_by(f64::total_cmp);
    let first = times[0];
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize] - first;
    format!(
        "{}/{}: first {first:.1} s after; then p50 +{:.2} s, p99 +{:.2} s, last +{:.2} s",
        times.len(),
        back.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    )
}

/// Samples the fleet's re-read requests every 50 ms for `window` after `fault`, and says when they
/// happened: the first one after the fault, then the spread of the rest (no writes meanwhile, so
/// every request is a re-read caused by the fault).
async fn rereads(fleet: &Fleet, fault: Instant, window: Duration) -> String {
    let total = || fleet.requests().iter().sum::<u64>();
    let start = total();
    let mut series = Vec::new();
    while fault.elapsed() < window {
        series.push(((fault.elapsed()).as_secs_f64(), total() - start));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done = series.last().map_or(0, |s| s.1);
    if done == 0 {
        return "no re-reads".into();
    }
    let when = |q: f64| {
        series
            .iter()
            .find(|s| s.1 as f64 >= q * done as f64)
            .map_or(0.0, |s| s.0)
    };
    let first = series.iter().find(|s| s.1 > 0).map_or(0.0, |s| s.0);
    format!(
        "{done} requests: first {first:.1} s after; then 50 % by +{:.2} s, 99 % by +{:.2} s, all by +{:.2} s",
        when(0.5) - first,
        when(0.99) - first,
        when(1.0) - first
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    let limit = args.limit;
    // Leaving early drops the run, and the ensemble's processes with it.
    tokio::select! {
        _ = run(args) => {}
        _ = tokio::signal::ctrl_c() => eprintln!("interrupted"),
        _ = term.recv() => eprintln!("terminated"),
        _ = tokio::time::sleep(limit) => eprintln!("stopped after {limit:?}"),
    }
}

async fn run(args: Args) {
    eprintln!("starting a 3-node ZooKeeper ensemble");
    let mut ens = Ensemble::start(3, args.heap_mb).await;
    let hosts = ens.hosts();
    let mut writer = Writer::connect(&hosts, PATH).await;
    if let Some(services) = args.at_rest {
        println!(
            "{}",
            rest::measure(&writer, &hosts, services, args.rest_backends).await
        );
        return;
    }
    writer.populate(args.backends).await;
    let config = ZookeeperDiscovery {
        session_timeout: args.session_timeout,
        coalesce: args.coalesce,
        watch: args.watch,
        ..ZookeeperDiscovery::new(hosts.clone(), PATH.into())
    };
    eprintln!("starting {} agents, {} at a time", args.agents, args.batch);
    let started = Instant::now();
    let fleet = Fleet::start(args.agents, args.batch, &config, args.backends).await;
    let load = started.elapsed().as_secs_f64();
    let start_requests: u64 = fleet.requests().iter().sum();
    let mut rows = Vec::new();

    if args.scenarios.contains('a') {
        eprintln!("(a) churn: {}/s for {:?}", args.rate, args.churn);
        let before = snap(&fleet, &ens);
        let changes = writer.churn(args.rate, args.churn, usize::MAX).await;
        let conv = converge(&fleet, &writer.newest_host()).await;
        let after = snap(&fleet, &ens);
        rows.push(row(
            "(a) churn",
            &fleet,
            &before,
            &after,
            changes,
            "-".into(),
            conv,
        ));
        eprintln!(
            "{}",
            rows.last().map(|r| r.line(args.agents)).unwrap_or_default()
        );
    }
    if args.scenarios.contains('b') {
        let rate = args.backends as f64 / args.deploy.as_secs_f64();
        eprintln!(
            "(b) deploy: {} replacements in {:?}",
            args.backends, args.deploy
        );
        let before = snap(&fleet, &ens);
        let changes = writer
            .churn(rate, args.deploy + Duration::from_secs(60), args.backends)
            .await;
        let conv = converge(&fleet, &writer.newest_host()).await;
        let after = snap(&fleet, &ens);
        rows.push(row(
            "(b) deploy",
            &fleet,
            &before,
            &after,
            changes,
            "-".into(),
            conv,
        ));
        eprintln!(
            "{}",
            rows.last().map(|r| r.line(args.agents)).unwrap_or_default()
        );
    }
    if args.scenarios.contains('c') {
        eprintln!("(c) leader killed between two spells of churn");
        let before = snap(&fleet, &ens);
        let mut changes = writer.churn(args.rate, args.churn / 2, usize::MAX).await;
        let leader = ens.leader().await.expect("a leader");
        let fault = Instant::now();
        ens.kill(leader);
        let rereads = rereads(&fleet, fault, Duration::from_secs(20)).await;
        let back = reconnects(&fleet, fault);
        ens.respawn(leader, args.heap_mb);
        ens.wait_serving(Duration::from_secs(120)).await;
        changes += writer.churn(args.rate, args.churn / 2, usize::MAX).await;
        let conv = converge(&fleet, &writer.newest_host()).await;
        let after = snap(&fleet, &ens);
        let mut r = row(
            "(c) leader killed",
            &fleet,
            &before,
            &after,
            changes,
            back,
            conv,
        );
        r.rereads = rereads;
        rows.push(r);
        eprintln!(
            "{}",
            rows.last().map(|r| r.line(args.agents)).unwrap_or_default()
        );
    }
    if args.scenarios.contains('d') {
        eprintln!("(d) whole ensemble restarted between two spells of churn");
        let before = snap(&fleet, &ens);
        let mut changes = writer.churn(args.rate, args.churn / 2, usize::MAX).await;
        let fault = Instant::now();
        for i in 0..3 {
            ens.kill(i);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        for i in 0..3 {
            ens.respawn(i, args.heap_mb);
        }
        let rereads = rereads(&fleet, fault, Duration::from_secs(30)).await;
        let back = reconnects(&fleet, fault);
        changes += writer.churn(args.rate, args.churn / 2, usize::MAX).await;
        let conv = converge(&fleet, &writer.newest_host()).await;
        let after = snap(&fleet, &ens);
        let mut r = row(
            "(d) ensemble restarted",
            &fleet,
            &before,
            &after,
            changes,
            back,
            conv,
        );
        r.rereads = rereads;
        rows.push(r);
        eprintln!(
            "{}",
            rows.last().map(|r| r.line(args.agents)).unwrap_or_default()
        );
    }

    println!(
        "\n{} agents, {} backends, coalesce {:?}, session timeout {:?}; start-up: {load:.1} s, {:.0} ZooKeeper requests per agent\n",
        args.agents,
        args.backends,
        args.coalesce,
        args.session_timeout,
        start_requests as f64 / args.agents as f64
    );
    println!("{}", Row::header());
    for r in &rows {
        println!("{}", r.line(args.agents));
    }
    fleet.stop().await;
    drop(writer);
    drop(ens);
}

/// `--watch`: the name of a [`WatchMode`].
fn parse_watch(s: &str) -> Result<WatchMode, String> {
    match s {
        "recursive" => Ok(WatchMode::Recursive),
        "oneshot" => Ok(WatchMode::Oneshot),
        _ => Err(format!("`{s}`: expected recursive or oneshot")),
    }
}
