//! The children of a watched path as last read: decoded by name and version, so that a change costs
//! ZooKeeper only what changed.
//!
//! Changes are learnt in one of two ways ([`WatchMode`]). With one persistent recursive watch on the
//! path (ZooKeeper 3.6+), every event names its node: a new or rewritten child is read once, a deleted
//! one is dropped without a request, and the listing is never fetched again while the connection
//! holds. With one-shot watches (any ZooKeeper), a child watch on the path and a data watch per child
//! are re-armed by each read: a listing reads only names not seen before and forgets names now gone.
//!
//! Events of a persistent watch may be lost while the connection is down (the server does not replay
//! them), and every watch dies with its session. So after a reconnection the recursive mode lists
//! again and fetches every known child's data in multi-read batches (a few requests for hundreds of
//! children; multi-read, like persistent watches, is ZooKeeper 3.6+); one-shot watches are re-armed by
//! the server, which fires those that missed a change, so a listing suffices there. On a new session
//! the one-shot mode checks every known child with `exists`. Either way only children whose version
//! changed are decoded again.

mod dirty;
mod oneshot;
mod recursive;
mod requests;

pub use dirty::{Dirty, WatchEvent};
pub use requests::Requests;

use super::decode;
use super::server_options::Ignored;
use crate::balance::Backend;
use crate::config::{WatchMode, ZookeeperDiscovery};
use oneshot::Oneshot;
use prometheus::IntCounter;
use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::task::Poll;
use zookeeper_client as zk;

/// Most options and fields of one service warned about as left out; beyond, they are only counted.
const MAX_WARNED: usize = 64;

/// One child as last read.
struct Child {
    /// Creation zxid: a node deleted and created again under the same name differs here.
    czxid: i64,
    /// Zxid of the last data change.
    mzxid: i64,
    /// Size of its data.
    bytes: usize,
    /// The decoded backend; `None` for a malformed node (skipped).
    backend: Option<Backend>,
}

/// What a re-read found.
pub enum PathContents {
    /// The backends (by child name), and the server's write time (ms since the epoch) of every child
    /// read because it was new or changed.
    Backends(Vec<Backend>, Vec<i64>),
    /// The path does not exist; the watch reports its creation.
    Missing,
}

/// How changes reach the watcher.
enum Watches {
    /// One persistent recursive watch on the path, once armed on the current session.
    Recursive(Option<zk::PersistentWatcher>),
    /// A one-shot child watch on the path and a one-shot data watch per child.
    Oneshot(Oneshot),
}

impl Watches {
    /// No watch armed yet, in `mode`.
    fn new(mode: WatchMode) -> Self {
        match mode {
            WatchMode::Recursive => Self::Recursive(None),
            WatchMode::Oneshot => Self::Oneshot(Oneshot::default()),
        }
    }

    /// Forgets every watch (they belong to a session that is gone), keeping the mode.
    fn clear(&mut self) {
        match self {
            Self::Recursive(watcher) => *watcher = None,
            Self::Oneshot(watches) => *watches = Oneshot::default(),
        }
    }
}

/// What the watcher knows of the path's children, and what reading them needs.
struct Known {
    /// Each child as last read, by name.
    by_name: BTreeMap<String, Child>,
    /// The watched path without a trailing `/` (empty for the root).
    base: String,
    /// Where to read and how to decode.
    config: ZookeeperDiscovery,
    /// The service, for logs.
    service: String,
    /// Counts malformed children.
    skipped: IntCounter,
    /// Counts server options and fields of children left out.
    ignored: IntCounter,
    /// What has been warned about as left out, by option or field: each is warned about once.
    warned: HashSet<String>,
    /// Seed of the `shuffle` order.
    seed: u64,
    /// Requests made since they were last taken.
    requests: Requests,
}

/// The children of one path, and the watches that report their changes.
pub struct Children {
    known: Known,
    watches: Watches,
}

impl Children {
    /// Nothing known yet about `config.path`, watched in `config.watch` mode; malformed children of
    /// `service` are counted on `skipped`, options and fields left out of a child on `ignored`.
    pub fn new(
        config: &ZookeeperDiscovery,
        service: &str,
        skipped: IntCounter,
        ignored: IntCounter,
    ) -> Self {
        Self {
            known: Known {
                by_name: BTreeMap::new(),
                base: config.path.trim_end_matches('/').to_string(),
                config: config.clone(),
                service: service.to_string(),
                skipped,
                ignored,
                warned: HashSet::new(),
                seed: config.order_seed.unwrap_or_else(|| fastrand::u64(..)),
                requests: Requests::default(),
            },
            watches: Watches::new(config.watch),
        }
    }

    /// Reads what `dirty` names, arming the watches it needs; `dirty` is cleared only on success, so a
    /// failed re-read is repeated in full.
    pub async fn refresh(
        &mut self,
        client: &zk::Client,
        dirty: &mut Dirty,
    ) -> Result<PathContents, zk::Error> {
        if dirty.revalidate {
            // The watches belong to a session that is gone.
            self.watches.clear();
            dirty.list = true;
        }
        // Armed before the listing, so that nothing written after it goes unreported. A listing after
        // a reconnection arms the recursive watch anew: the client does not re-register persistent
        // watches with the server when it reconnects (zookeeper-client 0.11 sends only one-shot
        // watches in its SetWatches), so the old one may be dead.
        self.arm(client, dirty.list).await?;
        let found = match &mut self.watches {
            Watches::Recursive(_) => self.known.refresh_recursive(client, dirty).await?,
            Watches::Oneshot(watches) => self.known.refresh_oneshot(client, watches, dirty).await?,
        };
        *dirty = Dirty::default();
        Ok(found)
    }

    /// The requests made since the last call, by kind.
    pub fn take_requests(&mut self) -> Requests {
        std::mem::take(&mut self.known.requests)
    }

    /// Resolves with every watch that has fired (every queued event of the recursive watch); the
    /// others stay armed.
    pub fn fired(&mut self) -> impl Future<Output = Vec<WatchEvent>> + '_ {
        std::future::poll_fn(move |cx| {
            let mut fired = Vec::new();
            match &mut self.watches {
                Watches::Recursive(watcher) => {
                    recursive::poll(watcher, &self.known.base, cx, &mut fired)
                }
                Watches::Oneshot(watches) => watches.poll(cx, &mut fired),
            }
            if fired.is_empty() {
                Poll::Pending
            } else {
                Poll::Ready(fired)
            }
        })
    }
}

impl Known {
    /// Keeps what child `name` holds now, decoded, unless it is the version already known; the
    /// write time (ms since the epoch) of a new or changed child.
    fn store(&mut self, name: &str, data: &[u8], stat: &zk::Stat) -> Option<i64> {
        if self
            .by_name
            .get(name)
            .is_some_and(|c| c.czxid == stat.czxid && c.mzxid == stat.mzxid)
        {
            return None;
        }
        let decoded = decode::decode(name, data, &self.config.decode, self.config.use_weights);
        let backend = match decoded {
            Ok(decoded) => {
                self.left_out(name, &decoded.ignored);
                let mut backend = decoded.backend;
                if let Some(port) = self.config.port_override {
                    backend.port = port;
                }
                Some(backend)
            }
            Err(e) => {
                self.skipped.inc();
                tracing::warn!(service = %self.service, zk_path = %self.config.path, node = %name, error = %e, "skipping malformed znode");
                None
            }
        };
        self.by_name.insert(
            name.to_string(),
            Child {
                czxid: stat.czxid,
                mzxid: stat.mzxid,
                bytes: data.len(),
                backend,
            },
        );
        Some(stat.mtime)
    }

    /// Counts what was left out of child `name` and warns about each option or field the first time.
    fn left_out(&mut self, name: &str, ignored: &[Ignored]) {
        for i in ignored {
            self.ignored.inc();
            // Bounded, so that znodes inventing option names cannot grow it without end.
            if self.warned.len() < MAX_WARNED && self.warned.insert(i.key().to_string()) {
                tracing::warn!(service = %self.service, zk_path = %self.config.path, node = %name, "{i} (warned once per service and option)");
            }
        }
    }

    /// The full path of child `name`.
    fn child_path(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }

    /// The backends of every known child that pass the label filters, in the configured order, with
    /// the write times of those just read.
    fn found(&self, written: Vec<i64>) -> PathContents {
        let mut backends: Vec<Backend> = self
            .by_name
            .values()
            .filter_map(|c| c.backend.as_ref())
            .filter(|b| self.config.admits(&b.labels))
            .cloned()
            .collect();
        super::order::arrange(&mut backends, self.config.order, self.seed);
        PathContents::Backends(backends, written)
    }
}
