//! The in-process history behind the status page: every few seconds a task samples each service's
//! backends (their request, error and response-time counters, nothing on the request path), and keeps
//! the last five minutes of per-interval deltas in a fixed-size ring per backend and per service.
//!
//! From the rings come the traffic of the last minute (requests per second, error ratio, p50/p99
//! from the response-time buckets, merged per service) and the points of the page's sparklines.
//! A service's series go when the service does, a backend's when it has left the set and drained
//! (a backend that returns while it still drains keeps its counters, and so its series). Memory is
//! bounded: a series holds [`POINTS`] intervals of 88 bytes, about 5.3 KB, so 100 services of 10
//! backends each (1,100 series) take about 5.8 MB.

use super::quantile::quantile;
use super::ServiceInfo;
use crate::balance::health::now_ms;
use crate::balance::{requests_total, Balancer, HistoryPoint, ServiceView, TrafficView};
use crate::metrics::LATENCY_BUCKETS;
use arc_swap::ArcSwap;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the services are sampled.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// Intervals kept per series: five minutes.
pub const POINTS: usize = 60;

/// The window of the traffic figures, in intervals: one minute.
const MINUTE: usize = 12;

/// Response-time buckets, the last one above every bound.
const BUCKETS: usize = LATENCY_BUCKETS.len() + 1;

/// A backend's counters as read at one sample: cumulative since it started.
#[derive(Clone, Copy, Default, PartialEq, Debug)]
pub struct Counts {
    /// Requests (HTTP responses) or connections (TCP).
    pub requests: u64,
    /// 5xx responses (HTTP) or failed connection attempts (TCP).
    pub errors: u64,
    /// What `errors` is a share of: responses (HTTP) or connection attempts (TCP).
    pub attempts: u64,
    /// Response times per bucket (HTTP; zero for TCP).
    pub buckets: [u64; BUCKETS],
}

impl Counts {
    /// Reads the counters of every backend `balancer` knows (in its set or draining), by address.
    pub fn of(balancer: &Balancer) -> Vec<(String, Counts)> {
        balancer
            .known()
            .iter()
            .map(|e| {
                let m = &e.stats.metrics;
                let counts = match &m.http {
                    Some(h) => Counts {
                        requests: requests_total(m),
                        errors: h.responses[4].get(),
                        attempts: requests_total(m),
                        buckets: h.response_seconds.counts(),
                    },
                    None => Counts {
                        requests: m.connections.get(),
                        errors: m.connect_failures.get(),
                        attempts: m.connections.get() + m.connect_failures.get(),
                        buckets: [0; BUCKETS],
                    },
                };
                (e.key.clone(), counts)
            })
            .collect()
    }
}

/// What happened in one sampling interval.
#[derive(Clone, Copy, Default)]
struct Interval {
    /// When it ended, on the [`now_ms`] clock.
    end_ms: u64,
    /// Its length in seconds.
    seconds: f32,
    requests: u32,
    errors: u32,
    attempts: u32,
    buckets: [u32; BUCKETS],
}

impl Interval {
    /// The change from `before` to `after` over `seconds` (a counter that went back counts 0).
    fn between(before: &Counts, after: &Counts, end_ms: u64, seconds: f32) -> Self {
        let d = |a: u64, b: u64| u32::try_from(b.saturating_sub(a)).unwrap_or(u32::MAX);
        Self {
            end_ms,
            seconds,
            requests: d(before.requests, after.requests),
            errors: d(before.errors, after.errors),
            attempts: d(before.attempts, after.attempts),
            buckets: std::array::from_fn(|i| d(before.buckets[i], after.buckets[i])),
        }
    }

    /// Adds `other`'s counts to this one's.
    fn add(&mut self, other: &Interval) {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        self.attempts = self.attempts.saturating_add(other.attempts);
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a = a.saturating_add(*b);
        }
    }
}

/// The last [`POINTS`] intervals of one series, oldest first.
#[derive(Default)]
struct Ring(VecDeque<Interval>);

impl Ring {
    fn push(&mut self, interval: Interval) {
        if self.0.len() == POINTS {
            self.0.pop_front();
        }
        self.0.push_back(interval);
    }

    /// The traffic of the last minute; `None` before the first interval.
    fn traffic(&self) -> Option<TrafficView> {
        let minute = self.0.iter().rev().take(MINUTE);
        let mut sum = Interval::default();
        let mut seconds = 0.0;
        for i in minute {
            sum.add(i);
            seconds += f64::from(i.seconds);
        }
        (seconds > 0.0).then(|| {
            let buckets = sum.buckets.map(u64::from);
            let ms = |q| quantile(q, &LATENCY_BUCKETS, &buckets).map(|s| s * 1000.0);
            TrafficView {
                window_seconds: seconds,
                rps: f64::from(sum.requests) / seconds,
                error_ratio: ratio(sum.errors, sum.attempts),
                p50_ms: ms(0.5),
                p99_ms: ms(0.99),
            }
        })
    }

    /// Every interval as a point of the sparklines, ages as of `now`.
    fn points(&self, now: u64) -> Vec<HistoryPoint> {
        let buckets = |i: &Interval| i.buckets.map(u64::from);
        self.0
            .iter()
            .map(|i| HistoryPoint {
                age_seconds: now.saturating_sub(i.end_ms) as f64 / 1000.0,
                rps: f64::from(i.requests) / f64::from(i.seconds).max(1e-3),
                error_ratio: ratio(i.errors, i.attempts),
                p99_ms: quantile(0.99, &LATENCY_BUCKETS, &buckets(i)).map(|s| s * 1000.0),
            })
            .collect()
    }
}

/// `part / whole`, 0 when there is no whole.
fn ratio(part: u32, whole: u32) -> f64 {
    if whole == 0 {
        0.0
    } else {
        f64::from(part) / f64::from(whole)
    }
}

/// A backend's ring and the counts it read last.
struct BackendSeries {
    last: Counts,
    ring: Ring,
}

/// A service's ring (its backends' intervals added up) and its backends' series.
#[derive(Default)]
struct ServiceSeries {
    last_ms: Option<u64>,
    total: Ring,
    backends: HashMap<String, BackendSeries>,
}

/// Every service's history, by name.
#[derive(Default)]
pub struct History {
    services: Mutex<HashMap<String, ServiceSeries>>,
}

impl History {
    /// Records one sample of `service` taken at `now`: an interval per backend, and their sum for the
    /// service. The first sample of a service only sets its backends' baselines; a backend that joins
    /// later counts from zero (its series are new, so everything it counted is in the interval). A
    /// backend no longer in `backends` is dropped with its series.
    pub fn record(&self, service: &str, now: u64, backends: Vec<(String, Counts)>) {
        let mut services = self.services.lock().unwrap_or_else(|p| p.into_inner());
        let svc = services.entry(service.to_string()).or_default();
        let previous = svc.last_ms.replace(now);
        let seconds = previous.map(|p| now.saturating_sub(p) as f32 / 1000.0);
        let mut total = Interval {
            end_ms: now,
            seconds: seconds.unwrap_or(0.0),
            ..Interval::default()
        };
        let mut seen = HashMap::with_capacity(backends.len());
        for (key, counts) in backends {
            match (svc.backends.remove(&key), seconds) {
                (Some(mut b), Some(seconds)) => {
                    let interval = Interval::between(&b.last, &counts, now, seconds);
                    total.add(&interval);
                    b.ring.push(interval);
                    b.last = counts;
                    seen.insert(key, b);
                }
                (None, Some(seconds)) => {
                    let interval = Interval::between(&Counts::default(), &counts, now, seconds);
                    total.add(&interval);
                    let mut ring = Ring::default();
                    ring.push(interval);
                    seen.insert(key, BackendSeries { last: counts, ring });
                }
                (_, None) => {
                    let ring = Ring::default();
                    seen.insert(key, BackendSeries { last: counts, ring });
                }
            }
        }
        svc.backends = seen;
        if seconds.is_some() {
            svc.total.push(total);
        }
    }

    /// Drops the series of every service not in `names`.
    pub fn retain(&self, names: &BTreeMap<String, ServiceInfo>) {
        let mut services = self.services.lock().unwrap_or_else(|p| p.into_inner());
        services.retain(|name, _| names.contains_key(name));
    }

    /// Fills the traffic and history of a service's view and of its backends.
    pub fn fill(&self, view: &mut ServiceView) {
        let services = self.services.lock().unwrap_or_else(|p| p.into_inner());
        let Some(svc) = services.get(&view.name) else {
            return;
        };
        let now = now_ms();
        view.traffic = svc.total.traffic();
        view.history = svc.total.points(now);
        for b in &mut view.backends {
            if let Some(series) = svc.backends.get(&b.address) {
                b.traffic = series.ring.traffic();
                b.history = series.ring.points(now);
            }
        }
    }

    /// Samples every service in `services` every [`INTERVAL`] until `stop` fires.
    pub async fn run(
        self: Arc<Self>,
        services: Arc<ArcSwap<BTreeMap<String, ServiceInfo>>>,
        stop: CancellationToken,
    ) {
        sample_loop(&self, &services, &stop).await
    }
}

/// The sampling task of [`History::run`].
async fn sample_loop(
    history: &History,
    services: &ArcSwap<BTreeMap<String, ServiceInfo>>,
    stop: &CancellationToken,
) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let services = services.load();
        let now = now_ms();
        for (name, info) in services.iter() {
            history.record(name, now, Counts::of(&info.balancer));
        }
        history.retain(&services);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::{Backend, BalanceMetrics, Origin};
    use crate::config::{Algorithm, Mode};

    fn balancer(http: bool) -> Arc<Balancer> {
        let registry = crate::metrics::Registry::new();
        let metrics = Arc::new(BalanceMetrics::register(&registry).unwrap());
        let b = Balancer::new("web", Algorithm::RoundRobin, metrics).with_http_metrics(http);
        b.update(vec![
            Backend::new("127.0.0.1", 1, 1, Origin::Static),
            Backend::new("127.0.0.1", 2, 1, Origin::Static),
        ]);
        Arc::new(b)
    }

    /// Serves `n` responses with `code` from backend `i`, each taking `seconds`.
    fn serve(b: &Balancer, i: usize, n: usize, code: u16, seconds: f64) {
        let set = b.current();
        let http = set.entries()[i].stats.metrics.http.as_ref().unwrap();
        for _ in 0..n {
            http.response_class(code).inc();
            http.response_seconds.observe(seconds);
        }
    }

    fn view(history: &History, b: &Balancer) -> ServiceView {
        let mut v = b.view();
        history.fill(&mut v);
        v
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_minute_gives_rates_errors_and_quantiles_merged_per_service() {
        let (b, history) = (balancer(true), History::default());
        // Traffic before the first sample is the baseline, not counted.
        serve(&b, 0, 1000, 200, 5.0);
        history.record("web", now_ms(), Counts::of(&b));
        assert_eq!(view(&history, &b).traffic, None, "no interval yet");
        tokio::time::advance(INTERVAL).await;
        // Backend 0: 40 fast (1-2.5 ms) 2xx; backend 1: 10 slow (5-10 ms) 5xx.
        serve(&b, 0, 40, 200, 0.002);
        serve(&b, 1, 10, 503, 0.008);
        history.record("web", now_ms(), Counts::of(&b));
        let v = view(&history, &b);
        let t = v.traffic.unwrap();
        assert_eq!((t.window_seconds, t.rps, t.error_ratio), (5.0, 10.0, 0.2));
        // 50 responses: rank 25 is 25/40 into (1ms, 2.5ms]: 1 + 1.5 × 0.625 ms.
        assert!(close(t.p50_ms, 1.9375), "{t:?}");
        // rank 49.5 is 9.5/10 into (5ms, 10ms]: 5 + 5 × 0.95 ms.
        assert!(close(t.p99_ms, 9.75), "{t:?}");
        let (b0, b1) = (&v.backends[0], &v.backends[1]);
        let (t0, t1) = (b0.traffic.unwrap(), b1.traffic.unwrap());
        assert_eq!(
            (t0.rps, t0.error_ratio, t1.rps, t1.error_ratio),
            (8.0, 0.0, 2.0, 1.0)
        );
        assert!(close(t1.p50_ms, 7.5), "{t1:?}");
        assert_eq!(v.history.len(), 1);
        assert_eq!((v.history[0].rps, v.history[0].age_seconds), (10.0, 0.0));
        assert_eq!(b0.history.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn tcp_backends_count_connections_and_failed_attempts() {
        let (b, history) = (balancer(false), History::default());
        history.record("web", now_ms(), Counts::of(&b));
        tokio::time::advance(INTERVAL).await;
        let set = b.current();
        let m = &set.entries()[0].stats.metrics;
        for _ in 0..9 {
            m.connections.inc();
        }
        m.connect_failures.inc();
        history.record("web", now_ms(), Counts::of(&b));
        let t = view(&history, &b).traffic.unwrap();
        // 9 connections and 1 failed attempt in 5 s: 1.8 connections a second, 1 in 10 failed.
        assert_eq!((t.rps, t.error_ratio, t.p99_ms), (1.8, 0.1, None));
    }

    #[tokio::test(start_paused = true)]
    async fn five_minutes_are_kept_and_the_traffic_covers_the_last_one() {
        let (b, history) = (balancer(true), History::default());
        history.record("web", now_ms(), Counts::of(&b));
        // 100 intervals: the first 88 with one 5xx each, the last 12 (one minute) with 2xx only.
        for i in 0..100 {
            tokio::time::advance(INTERVAL).await;
            serve(&b, 0, 10, if i < 88 { 500 } else { 200 }, 0.001);
            history.record("web", now_ms(), Counts::of(&b));
        }
        let v = view(&history, &b);
        assert_eq!(v.history.len(), POINTS);
        assert_eq!(v.backends[0].history.len(), POINTS);
        assert_eq!(v.history[0].age_seconds, 295.0, "oldest first");
        assert_eq!(v.history[POINTS - 1].age_seconds, 0.0);
        let t = v.traffic.unwrap();
        assert_eq!((t.window_seconds, t.rps, t.error_ratio), (60.0, 2.0, 0.0));
        assert_eq!(v.history[POINTS - 13].error_ratio, 1.0);
    }

    #[test]
    fn an_interval_takes_the_memory_the_module_doc_says() {
        assert_eq!(std::mem::size_of::<Interval>(), 88);
    }

    #[tokio::test(start_paused = true)]
    async fn series_go_with_their_backend_and_service() {
        let (b, history) = (balancer(true), History::default());
        history.record("web", now_ms(), Counts::of(&b));
        tokio::time::advance(INTERVAL).await;
        history.record("web", now_ms(), Counts::of(&b));
        // Backend 1 leaves with a connection open: it drains, and its series stay meanwhile.
        let held = b.pick(&[]).unwrap();
        let draining = held.entry.key.clone();
        let staying = if draining == "127.0.0.1:1" { 2 } else { 1 };
        b.update(vec![Backend::new("127.0.0.1", staying, 1, Origin::Static)]);
        history.record("web", now_ms(), Counts::of(&b));
        assert!(history.services.lock().unwrap()["web"]
            .backends
            .contains_key(&draining));
        drop(held);
        b.update(vec![Backend::new("127.0.0.1", 2, 1, Origin::Static)]);
        history.record("web", now_ms(), Counts::of(&b));
        {
            let services = history.services.lock().unwrap();
            let keys: Vec<&String> = services["web"].backends.keys().collect();
            assert_eq!(keys, ["127.0.0.1:2"]);
        }
        // A backend that joins a sampled service counts from zero.
        tokio::time::advance(INTERVAL).await;
        b.update(vec![
            Backend::new("127.0.0.1", 2, 1, Origin::Static),
            Backend::new("127.0.0.1", 3, 1, Origin::Static),
        ]);
        serve(&b, 1, 10, 200, 0.001);
        history.record("web", now_ms(), Counts::of(&b));
        let v = view(&history, &b);
        assert_eq!(
            v.backends[1].traffic.unwrap().rps,
            2.0,
            "{:?}",
            v.backends[1]
        );
        assert_eq!(v.history.last().unwrap().rps, 2.0);
        history.retain(&BTreeMap::new());
        assert!(history.services.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_samples_every_interval_until_stopped() {
        let b = balancer(true);
        let info = ServiceInfo {
            listen: None,
            frontends: Vec::new(),
            mode: Mode::Http,
            discovery: "static".into(),
            zookeeper_connected: None,
            balancer: Arc::clone(&b),
        };
        let services = Arc::new(ArcSwap::from_pointee(BTreeMap::from([(
            "web".to_string(),
            info,
        )])));
        let (history, stop) = (Arc::new(History::default()), CancellationToken::new());
        let task = tokio::spawn(Arc::clone(&history).run(services, stop.clone()));
        tokio::time::sleep(Duration::from_millis(1)).await;
        for _ in 0..3 {
            serve(&b, 0, 5, 200, 0.001);
            tokio::time::sleep(INTERVAL).await;
        }
        let v = view(&history, &b);
        assert_eq!(v.history.len(), 3, "{:?}", v.history);
        assert_eq!(v.traffic.unwrap().rps, 1.0);
        stop.cancel();
        task.await.unwrap();
    }
}
