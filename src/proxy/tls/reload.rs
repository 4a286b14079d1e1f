//! A TLS config that follows its files: the files are checked every second and, when one changed, the
//! config is built again and swapped in; when the new files are unusable the old config stays (the
//! error logged and counted). Open connections keep the config they were made with; new handshakes get
//! the new one. The expiry gauge follows every successful (re)load.

use super::{Loaded, TlsError};
use crate::proxy::TlsMetrics;
use arc_swap::ArcSwap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// How often the files are checked.
const INTERVAL: Duration = Duration::from_secs(1);

/// Builds a config from its files.
type Build<T> = Box<dyn Fn() -> Result<Loaded<T>, TlsError> + Send + Sync>;

/// The current config of one side of a service, and how to build it again.
pub struct Reloading<T> {
    current: ArcSwap<T>,
    files: Vec<PathBuf>,
    side: &'static str,
    build: Build<T>,
    metrics: TlsMetrics,
}

/// What identifies a file's content cheaply: modification time, size and inode (a rename changes it).
type Stamp = Vec<Option<(SystemTime, u64, u64)>>;

impl<T: Send + Sync + 'static> Reloading<T> {
    /// Builds the config now (unusable files are an error here: nothing to fall back on yet).
    pub fn load(
        side: &'static str,
        files: Vec<PathBuf>,
        metrics: TlsMetrics,
        build: Build<T>,
    ) -> Result<Arc<Self>, TlsError> {
        let loaded = build()?;
        let this = Self {
            current: ArcSwap::new(Arc::clone(&loaded.config)),
            files,
            side,
            build,
            metrics,
        };
        this.record_expiry(&loaded);
        Ok(Arc::new(this))
    }

    /// The config new handshakes use.
    pub fn current(&self) -> Arc<T> {
        self.current.load_full()
    }

    fn record_expiry(&self, loaded: &Loaded<T>) {
        for (kind, at) in [("cert", loaded.cert_expiry), ("ca", loaded.ca_expiry)] {
            if let Some(at) = at {
                self.metrics.expiry(self.side, kind, at);
            }
        }
    }

    fn stamp(&self) -> Stamp {
        self.files
            .iter()
            .map(|p| {
                let m = std::fs::metadata(p).ok()?;
                Some((m.modified().ok()?, m.len(), m.ino()))
            })
            .collect()
    }

    /// Watches the files until `stop`, building the config again when one changes.
    pub async fn watch(self: Arc<Self>, service: String, stop: CancellationToken) {
        if self.files.is_empty() {
            return;
        }
        let mut seen = self.stamp();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(INTERVAL) => {}
            }
            let now = self.stamp();
            if now == seen {
                continue;
            }
            seen = now;
            match (self.build)() {
                Ok(loaded) => {
                    self.current.store(Arc::clone(&loaded.config));
                    self.record_expiry(&loaded);
                    tracing::info!(service = %service, side = self.side, "TLS certificates reloaded");
                }
                Err(e) => {
                    self.metrics.reload_failed(self.side);
                    tracing::error!(service = %service, side = self.side, error = %e, "changed TLS files unusable; keeping the current ones");
                }
            }
        }
    }
}
