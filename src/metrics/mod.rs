//! Prometheus metrics: the agent's one [`Registry`], which every module registers its families into
//! and `/metrics` renders, and the plain per-backend series (see [`backend`]). Children are handed
//! out per service and per backend, so hot paths touch only pre-resolved atomics.

pub mod backend;
mod identity;
mod registry;

pub use backend::{BackendCause, BackendMetrics};
pub use registry::{Registry, Rendered};

/// Buckets of response-time histograms, in seconds (1 ms to 10 s).
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Registers the process's build information in `registry`: one series, always 1.
pub fn register_build_info(registry: &Registry) -> Result<(), prometheus::Error> {
    let build = registry.gauge(
        "sinew_build_info",
        "Build information; always 1.",
        &["version"],
    )?;
    build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    Ok(())
}

/// Registers the runtime's worker thread count (the `threads` setting, or one per CPU) in `registry`.
pub fn register_runtime_info(registry: &Registry) -> Result<(), prometheus::Error> {
    let workers = registry.gauge(
        "sinew_runtime_worker_threads",
        "Worker threads of the async runtime serving traffic (`threads`).",
        &[],
    )?;
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        workers
            .with_label_values(&[])
            .set(runtime.metrics().num_workers() as i64);
    }
    Ok(())
}
