//! Supervision of background tasks (discovery sources, health checkers, registration): a task that
//! panics is logged, counted and started again after a growing pause, so a bug in one of them never
//! stops routing, which runs in other tasks and keeps the last known backends.

use prometheus::IntCounter;
use std::future::Future;
use std::time::Duration;
use tokio_util::task::TaskTracker;

/// First pause before a restart; doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// Longest pause before a restart.
const MAX_PAUSE: Duration = Duration::from_secs(10);

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
}
