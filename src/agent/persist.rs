//! Backend sets written to disk: the state file (Synapse's `state_file_path`), loaded at start so a
//! sinew restarted while discovery is down still routes, and `file_output` (one JSON file per service).
//! Every write is atomic (a temporary file, then a rename); a failed write is logged and retried at the
//! next change, never fatal.

use crate::admin::ServiceInfo;
use crate::balance::{Backend, Origin};
use crate::config::{FileOutput, StateFile};
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// How often sets are compared with what was last written.
const INTERVAL: Duration = Duration::from_secs(1);

#[derive(Serialize, Deserialize)]
struct Entry {
    updated_unix: u64,
    backends: Vec<Stored>,
}

#[derive(Serialize, Deserialize, PartialEq)]
struct Stored {
    host: String,
    port: u16,
    weight: u32,
    #[serde(default)]
    name: String,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Reads the state file: backend sets younger than its ttl, by service. A missing or broken file is
/// logged and yields nothing.
pub fn load(state: &StateFile) -> HashMap<String, Vec<Backend>> {
    let text = match std::fs::read(&state.path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return HashMap::new(),
        Err(e) => {
            tracing::warn!(path = %state.path.display(), error = %e, "cannot read the state file");
            return HashMap::new();
        }
    };
    let entries: BTreeMap<String, Entry> = match serde_json::from_slice(&text) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(path = %state.path.display(), error = %e, "ignoring a malformed state file");
            return HashMap::new();
        }
    };
    let oldest = now_unix().saturating_sub(state.ttl.as_secs());
    entries
        .into_iter()
        .filter(|(_, e)| e.updated_unix >= oldest)
        .map(|(service, e)| {
            let backends = e
                .backends
                .into_iter()
                .filter(|b| b.port != 0 && !b.host.is_empty())
                .map(|b| Backend::new(b.host, b.port, b.weight, Origin::StateFile))
                .collect();
            (service, backends)
        })
        .collect()
}

/// Writes the state file and file output whenever a service's set changes, until `stop`.
pub async fn run(
    services: Arc<ArcSwap<BTreeMap<String, ServiceInfo>>>,
    state: Option<StateFile>,
    output: Option<FileOutput>,
    stop: CancellationToken,
) {
    let mut written: BTreeMap<String, Vec<Stored>> = BTreeMap::new();
    let mut updated: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(INTERVAL) => {}
        }
        let current: BTreeMap<String, Vec<Stored>> = services
            .load()
            .iter()
            .map(|(name, info)| {
                let set = info.balancer.current();
                let stored = set
                    .entries()
                    .iter()
                    .map(|e| Stored {
                        host: e.backend.host.clone(),
                        port: e.backend.port,
                        weight: e.backend.weight,
                        name: e.backend.origin.to_string(),
                    })
                    .collect();
                (name.clone(), stored)
            })
            .collect();
        if current == written {
            continue;
        }
        let now = now_unix();
        for (name, set) in &current {
            if written.get(name) != Some(set) {
                updated.insert(name.clone(), now);
                if let Some(out) = &output {
                    let file = out.directory.join(format!("{name}.json"));
                    write(&file, &serde_json::to_vec_pretty(set).unwrap_or_default());
                }
            }
        }
        if let Some(state) = &state {
            let entries: BTreeMap<&String, Entry> = current
                .iter()
                .map(|(name, set)| {
                    let backends = set
                        .iter()
                        .map(|b| Stored {
                            host: b.host.clone(),
                            port: b.port,
                            weight: b.weight,
                            name: b.name.clone(),
                        })
                        .collect();
                    (
                        name,
                        Entry {
                            updated_unix: updated.get(name).copied().unwrap_or(now),
                            backends,
                        },
                    )
                })
                .collect();
            write(
                &state.path,
                &serde_json::to_vec_pretty(&entries).unwrap_or_default(),
            );
        }
        written = current;
    }
}

/// Writes `bytes` to `path` atomically; failures are logged.
fn write(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    let result = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "cannot write backends to disk; will retry on the next change");
    }
}
