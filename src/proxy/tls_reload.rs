//! A listener certificate that follows its files: checked every second, swapped in when the files
//! change, the old one kept (and the error logged and counted) when the new files are unusable. Open
//! connections are not touched; new handshakes get the new certificate.

use super::tls::{certified_key, TlsError};
use arc_swap::ArcSwap;
use prometheus::IntCounter;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// How often the files are checked.
const INTERVAL: Duration = Duration::from_secs(1);

/// The current certificate of a listener.
#[derive(Debug)]
pub struct ReloadingCert {
    current: ArcSwap<CertifiedKey>,
    cert: PathBuf,
    key: PathBuf,
}

impl ReloadingCert {
    /// Loads the certificate now (an unusable file is an error here: nothing to fall back on yet).
    pub fn load(cert: PathBuf, key: PathBuf) -> Result<Arc<Self>, TlsError> {
        let loaded = certified_key(&cert, &key)?;
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(loaded),
            cert,
            key,
        }))
    }

    fn stamp(&self) -> Option<(SystemTime, SystemTime)> {
        let m = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some((m(&self.cert)?, m(&self.key)?))
    }

    /// Watches the files until `stop`, reloading on change.
    pub async fn watch(
        self: Arc<Self>,
        service: String,
        failures: IntCounter,
        stop: CancellationToken,
    ) {
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
            match certified_key(&self.cert, &self.key) {
                Ok(key) => {
                    self.current.store(Arc::new(key));
                    tracing::info!(service = %service, cert = %self.cert.display(), "listener certificate reloaded");
                }
                Err(e) => {
                    failures.inc();
                    tracing::error!(service = %service, error = %e, "new listener certificate unusable; keeping the current one");
                }
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}
