//! Backend sets written to disk: the state file (Synapse's `state_file_path`), loaded at start so a
//! sinew restarted while discovery is down still routes, and `file_output` (one `SERVICE.json` per
//! service, as Synapse's file output writes it). Every write is atomic (a temporary file, then a
//! rename); a failed write is logged and retried at the next change, never fatal.

use crate::admin::ServiceInfo;
use crate::balance::{Backend, Labels, Origin};
use crate::config::{FileOutput, StateFile};
use crate::discovery::zookeeper::server_options;
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// How often sets are compared with what was last written.
const INTERVAL: Duration = Duration::from_secs(1);

/// The state file format this version writes: from 1 on, a backend's `name` is Nerve's instance name
/// (before, it was sinew's origin of the backend and is not restored).
const FORMAT: u32 = 1;

/// Why backends cannot be written to disk.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// The `file_output` directory does not exist and cannot be created.
    #[error("file_output.directory {}: cannot create it: {source}", path.display())]
    Directory {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Creates the `file_output` directory and its parents when missing.
pub fn create_directory(output: &FileOutput) -> Result<(), PersistError> {
    std::fs::create_dir_all(&output.directory).map_err(|source| PersistError::Directory {
        path: output.directory.clone(),
        source,
    })
}

#[derive(Serialize, Deserialize)]
struct Entry {
    #[serde(default)]
    format: u32,
    updated_unix: u64,
    backends: Vec<Stored>,
}

/// One backend as Synapse's file output writes it (its keys, absent ones left out), which is also
/// what the state file keeps.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
struct Stored {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    host: String,
    port: u16,
    weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    haproxy_server_options: Option<String>,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    labels: Labels,
}

impl Stored {
    fn of(b: &Backend) -> Self {
        Self {
            name: b.name.clone(),
            host: b.host.clone(),
            port: b.port,
            weight: b.weight,
            haproxy_server_options: b.server_options.clone(),
            labels: b.labels.clone(),
        }
    }

    /// The backend restored from the state file, its server options read again.
    fn restore(self, format: u32) -> Backend {
        let mut b = Backend::new(self.host, self.port, self.weight, Origin::StateFile);
        if let Some(line) = &self.haproxy_server_options {
            b.options = server_options::parse(line).options;
        }
        b.server_options = self.haproxy_server_options;
        b.labels = self.labels;
        b.name = self.name.filter(|_| format >= FORMAT);
        b
    }
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
            let format = e.format;
            let backends = e
                .backends
                .into_iter()
                .filter(|b| (b.port != 0 && !b.host.is_empty()) || crate::config::is_unix(&b.host))
                .map(|b| b.restore(format))
                .collect();
            (service, backends)
        })
        .collect()
}

/// Writes the state file and file output at start and whenever a service's set changes, until
/// `stop`; removes the file output of services no longer configured.
pub async fn run(
    services: Arc<ArcSwap<BTreeMap<String, ServiceInfo>>>,
    state: Option<StateFile>,
    output: Option<FileOutput>,
    stop: CancellationToken,
) {
    let mut written: BTreeMap<String, Vec<Stored>> = BTreeMap::new();
    let mut updated: BTreeMap<String, u64> = BTreeMap::new();
    let mut cleaned: Option<BTreeSet<String>> = None;
    loop {
        let current: BTreeMap<String, Vec<Stored>> = services
            .load()
            .iter()
            .map(|(name, info)| {
                let set = info.balancer.current();
                let stored = set
                    .entries()
                    .iter()
                    .map(|e| Stored::of(&e.backend))
                    .collect();
                (name.clone(), stored)
            })
            .collect();
        if let Some(out) = &output {
            let names: BTreeSet<String> = current.keys().cloned().collect();
            if cleaned.as_ref() != Some(&names) {
                clean(&out.directory, &names);
                cleaned = Some(names);
            }
        }
        if current != written {
            let now = now_unix();
            for (name, set) in &current {
                if written.get(name) != Some(set) {
                    updated.insert(name.clone(), now);
                    if let Some(out) = &output {
                        let file = out.directory.join(format!("{name}.json"));
                        write_if_changed(
                            &file,
                            &serde_json::to_vec_pretty(set).unwrap_or_default(),
                        );
                    }
                }
            }
            if let Some(state) = &state {
                let entries: BTreeMap<&String, Entry> = current
                    .iter()
                    .map(|(name, set)| {
                        let entry = Entry {
                            format: FORMAT,
                            updated_unix: updated.get(name).copied().unwrap_or(now),
                            backends: set.clone(),
                        };
                        (name, entry)
                    })
                    .collect();
                let bytes = serde_json::to_vec_pretty(&entries).unwrap_or_default();
                write(&state.path, &bytes);
            }
            written = current;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(INTERVAL) => {}
        }
    }
}

/// Removes the `.json` files in `dir` of services not in `names`, as Synapse's file output does.
fn clean(dir: &Path, names: &BTreeSet<String>) {
    let listing = match std::fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(directory = %dir.display(), error = %e, "cannot list the file_output directory");
            return;
        }
    };
    for file in listing.flatten() {
        let name = file.file_name();
        let Some(service) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        if service.starts_with('.') || names.contains(service) {
            continue;
        }
        match std::fs::remove_file(file.path()) {
            Ok(()) => {
                tracing::info!(file = %file.path().display(), "removed the file_output of a service no longer configured")
            }
            Err(e) => {
                tracing::warn!(file = %file.path().display(), error = %e, "cannot remove a stale file_output file")
            }
        }
    }
}

/// Writes `bytes` to `path` unless it holds them already, so a process watching the file sees a change
/// only when the backends changed.
fn write_if_changed(path: &Path, bytes: &[u8]) {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return;
    }
    write(path, bytes);
}

/// Writes `bytes` to `path` atomically (through `.NAME.tmp` beside it); failures are logged.
fn write(path: &Path, bytes: &[u8]) {
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file}.tmp"));
    let result = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "cannot write backends to disk; will retry on the next change");
    }
}
