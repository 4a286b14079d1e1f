//! Supervision of background tasks (discovery sources, health checkers, registration): a task that
//! panics is logged, counted and started again after a growing pause, so a bug in one of them never
//! stops routing, which runs in other tasks and keeps the last known backends.
//!
//! A task can also get stuck without panicking (a request that never returns, a lock never released).
//! Routing does not notice either, but an operator must: a task marks each unit of work it starts
//! ([`Busy::start`]) with a generous limit, and a watchdog logs and counts a unit that outlives it.
//! Waiting for the next event is not work, so an idle task is never taken for a stuck one.

use crate::metrics::Registry;
use prometheus::{IntCounter, IntCounterVec};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// First pause before a restart; doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// Longest pause before a restart.
const MAX_PAUSE: Duration = Duration::from_secs(10);

/// The families of background tasks that panicked or stalled, by kind of task; clones share them.
#[derive(Clone)]
pub struct TaskMetrics {
    panics: IntCounterVec,
    stalls: IntCounterVec,
}

impl TaskMetrics {
    /// Creates the task families in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            panics: registry.counter(
                "sinew_task_panics_total",
                "Background tasks (discovery, checks, registration) that panicked and were restarted.",
                &["task"],
            )?,
            stalls: registry.counter(
                "sinew_task_stalls_total",
                "Units of work of a background task (discovery, registration) that ran past their limit: a stuck task.",
                &["task"],
            )?,
        })
    }

    /// The panic counter of a kind of background task.
    pub fn panics(&self, task: &str) -> IntCounter {
        self.panics.with_label_values(&[task])
    }

    /// The stall counter of a kind of background task.
    pub fn stalls(&self, task: &str) -> IntCounter {
        self.stalls.with_label_values(&[task])
    }
}

/// Runs `make()` on `tasks`, starting it again whenever it panics; a task that returns is done.
pub fn spawn<F, Fut>(tasks: &TaskTracker, name: String, panics: IntCounter, make: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tasks.spawn(async move {
        let mut pause = FIRST_PAUSE;
        loop {
            match tokio::spawn(make()).await {
                Err(e) if e.is_panic() => {
                    panics.inc();
                    tracing::error!(task = %name, pause = ?pause, "background task panicked; restarting it (routing is unaffected)");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                }
                _ => return,
            }
        }
    });
}

/// The shortest limit of a unit of work: below it, a busy machine would look like a stuck task.
const MIN_STALL: Duration = Duration::from_secs(2);
/// How often the watchdog looks.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// A task's unit of work in progress (its start and limit), shared with the task's watchdog.
#[derive(Clone, Default)]
pub struct Busy(Arc<Mutex<Option<(Instant, Duration)>>>);

/// A unit of work in progress; it ends when dropped.
pub struct Working<'a>(&'a Busy);

impl Busy {
    /// Marks the start of a unit of work that should end within `limit` (at least two seconds).
    pub fn start(&self, limit: Duration) -> Working<'_> {
        *self.lock() = Some((Instant::now(), limit.max(MIN_STALL)));
        Working(self)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Instant, Duration)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The start of the unit of work in progress and how long it has run, when past its limit.
    fn overdue(&self) -> Option<(Instant, Duration)> {
        let (start, limit) = (*self.lock())?;
        let ran = start.elapsed();
        (ran > limit).then_some((start, ran))
    }
}

impl Drop for Working<'_> {
    fn drop(&mut self) {
        *self.0.lock() = None;
    }
}

/// Watches `busy` until `stop`: a unit of work that outlives its limit is logged and counted, once.
pub fn watchdog(
    tasks: &TaskTracker,
    name: String,
    busy: Busy,
    stalls: IntCounter,
    stop: CancellationToken,
) {
    tasks.spawn(async move {
        let mut reported = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(WATCH_EVERY) => {}
            }
            if let Some((start, ran)) = busy.overdue() {
                if reported != Some(start) {
                    reported = Some(start);
                    stalls.inc();
                    tracing::error!(task = %name, stuck_for = ?ran, "background task stuck in the middle of its work; routing goes on with the last known state");
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_is_restarted_and_counted() {
        let tasks = TaskTracker::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let panics = IntCounter::new("p", "p").unwrap();
        let r = Arc::clone(&runs);
        spawn(&tasks, "flaky".into(), panics.clone(), move || {
            let r = Arc::clone(&r);
            async move {
                if r.fetch_add(1, Ordering::Relaxed) < 2 {
                    panic!("injected failure");
                }
            }
        });
        tasks.close();
        tasks.wait().await;
        assert_eq!(
            runs.load(Ordering::Relaxed),
            3,
            "two panics, then a clean run"
        );
        assert_eq!(panics.get(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_unit_of_work_past_its_limit_is_counted_once_and_waiting_never() {
        let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
        let (busy, stalls) = (Busy::default(), IntCounter::new("s", "s").unwrap());
        watchdog(
            &tasks,
            "t".into(),
            busy.clone(),
            stalls.clone(),
            stop.clone(),
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(stalls.get(), 0, "an idle task is not stuck");
        {
            let _work = busy.start(Duration::from_secs(3));
            tokio::time::sleep(Duration::from_millis(2900)).await;
            assert_eq!(stalls.get(), 0, "within its limit");
            tokio::time::sleep(Duration::from_secs(30)).await;
            assert_eq!(stalls.get(), 1, "past it, counted once");
        }
        let _next = busy.start(Duration::ZERO);
        tokio::time::sleep(Duration::from_millis(2600)).await;
        assert_eq!(
            stalls.get(),
            2,
            "the next stuck unit, with the two-second floor"
        );
        stop.cancel();
        tasks.close();
        tasks.wait().await;
    }
}
