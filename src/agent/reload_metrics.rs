//! Reload outcomes as metrics: how many reloads and dry runs passed or were rejected, and whether the
//! last reload applied (Prometheus's own `config_last_reload_successful`, for an alert).

use crate::metrics::Registry;
use prometheus::{IntCounterVec, IntGaugeVec};

/// What was asked: a reload, or a dry run of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// A reload (SIGHUP, `POST /api/reload`, `sinew reload`).
    Reload,
    /// A dry run (`POST /api/reload?dry_run=true`, `sinew reload --dry-run`).
    DryRun,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Reload => "reload",
            Mode::DryRun => "dry_run",
        }
    }
}

/// The reload families; clones share them.
#[derive(Clone)]
pub(super) struct ReloadMetrics {
    reloads: IntCounterVec,
    last_ok: IntGaugeVec,
}

impl ReloadMetrics {
    /// Creates the families in `registry`, every series at 0 and the last reload successful (the
    /// config in force at start loaded).
    pub(super) fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let reloads = registry.counter(
            "sinew_config_reloads_total",
            "Config reloads and dry runs, by mode (reload, dry_run) and result (ok; rejected: the files did not validate or could not be applied, the running config stays).",
            &["mode", "result"],
        )?;
        for mode in [Mode::Reload, Mode::DryRun] {
            for result in ["ok", "rejected"] {
                reloads.with_label_values(&[mode.label(), result]);
            }
        }
        let last_ok = registry.gauge(
            "sinew_config_last_reload_successful",
            "1 when the last reload applied (or none was tried since start), 0 when it was rejected.",
            &[],
        )?;
        last_ok.with_label_values(&[]).set(1);
        Ok(Self { reloads, last_ok })
    }

    /// Counts one reload or dry run.
    pub(super) fn count(&self, mode: Mode, ok: bool) {
        let result = if ok { "ok" } else { "rejected" };
        self.reloads
            .with_label_values(&[mode.label(), result])
            .inc();
        if mode == Mode::Reload {
            self.last_ok.with_label_values(&[]).set(i64::from(ok));
        }
    }
}
