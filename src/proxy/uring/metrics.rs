//! What the io_uring engine reports on `/metrics`: the connections it is moving, the HTTP sockets on
//! it, how far its buffer ring has grown, and how often receives found it full and dry (slow readers
//! holding it) and took buffers of their own, summed over the engines started (one per one-thread
//! runtime, or the engine thread). Rendered only once a service has started one.

use crate::metrics::Rendered;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Own buffers counted by engines whose loops have ended.
static RETIRED_OWN: AtomicU64 = AtomicU64::new(0);

/// Drops the engines whose loops ended (their runtime is gone, or their ring failed) from `engines`:
/// they no longer count in the gauges, and their own buffers stay in the counter.
pub(super) fn prune(engines: &mut Vec<Arc<super::Shared>>) {
    engines.retain(|e| {
        let running = !e.stopped.load(Ordering::SeqCst);
        if !running {
            RETIRED_OWN.fetch_add(e.stats.own.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        running
    });
}

/// Counts the engine's loop keeps.
#[derive(Default)]
pub(super) struct Stats {
    /// Connections on the engine now.
    pub(super) connections: AtomicU64,
    /// Sockets of HTTP services on the engine now.
    pub(super) sockets: AtomicU64,
    /// Buffers the ring has provided so far.
    pub(super) buffers: AtomicU64,
    /// Receives that used a buffer of their own.
    pub(super) own: AtomicU64,
}

/// The engine's metric families, for the registry.
pub struct EngineMetrics;

impl Rendered for EngineMetrics {
    fn sweep(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    fn render(&self, out: &mut String) {
        let mut engines = super::STARTED.lock().unwrap_or_else(|e| e.into_inner());
        if engines.is_empty() && RETIRED_OWN.load(Ordering::Relaxed) == 0 {
            return;
        }
        prune(&mut engines);
        let sum = |value: fn(&Stats) -> &AtomicU64| -> u64 {
            engines
                .iter()
                .map(|e| value(&e.stats).load(Ordering::Relaxed))
                .sum()
        };
        let families = [
            (
                "sinew_uring_connections",
                "gauge",
                "TCP connections whose bytes the io_uring engine is moving.",
                sum(|s| &s.connections),
            ),
            (
                "sinew_uring_sockets",
                "gauge",
                "Sockets of HTTP services on the io_uring engine (a client's and a pooled backend connection's count one each).",
                sum(|s| &s.sockets),
            ),
            (
                "sinew_uring_buffers",
                "gauge",
                "Buffers the io_uring engine's ring has provided (it grows on demand up to its size).",
                sum(|s| &s.buffers),
            ),
            (
                "sinew_uring_own_buffers_total",
                "counter",
                "Receives that found the io_uring engine's ring full and empty (slow readers hold it) and used a buffer of their own.",
                sum(|s| &s.own) + RETIRED_OWN.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, value) in families {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            );
        }
    }
}
