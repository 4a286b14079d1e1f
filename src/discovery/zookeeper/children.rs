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

use super::decode;
use crate::balance::Backend;
use crate::config::{WatchMode, ZookeeperDiscovery};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use zookeeper_client as zk;

/// A one-shot watch waiting to fire.
type Armed = Pin<Box<dyn Future<Output = zk::WatchedEvent> + Send>>;

/// Most reads in one multi-read request.
const MULTI_READ_OPS: usize = 200;
/// A multi-read request is closed once its children's data, by their last known size, adds up to
/// this, so that a reply stays a few hundred KiB.
const MULTI_READ_BYTES: usize = 256 * 1024;
/// The size assumed for a child not read before.
const UNKNOWN_BYTES: usize = 1024;

/// Request kinds, indexes into [`crate::metrics::ZK_REQUEST_KINDS`].
const LIST: usize = 0;
const GET_DATA: usize = 1;
const EXISTS: usize = 2;
const WATCH: usize = 3;
const MULTI_READ: usize = 4;

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

/// What the next re-read must look at, gathered from fired watches.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Dirty {
    /// List the children again (the path appeared or went, its child watch fired, or a reconnection).
    pub list: bool,
    /// Read these children's data (new, or changed).
    pub read: BTreeSet<String>,
    /// These children were deleted.
    pub gone: BTreeSet<String>,
    /// A new session: every watch is gone and every known child is checked.
    pub revalidate: bool,
}

impl Dirty {
    /// Everything: the state of a watcher that has never read, or whose session was replaced.
    pub fn everything() -> Self {
        Self {
            list: true,
            revalidate: true,
            ..Self::default()
        }
    }

    /// Whether there is anything to read.
    pub fn any(&self) -> bool {
        self.list || self.revalidate || !self.read.is_empty() || !self.gone.is_empty()
    }
}

/// A watch that fired.
#[derive(Debug, PartialEq, Eq)]
pub enum Fired {
    /// The child list changed, or the path itself was created or deleted.
    List,
    /// A child was created or its data changed.
    Changed(String),
    /// A child was deleted.
    Gone(String),
    /// The session ended: the session manager brings a new one.
    Session,
}

/// What a re-read found.
pub enum Found {
    /// The backends (by child name), and the server's write time (ms since the epoch) of every child
    /// read because it was new or changed.
    Backends(Vec<Backend>, Vec<i64>),
    /// The path does not exist; the watch reports its creation.
    Missing,
}

/// Requests one re-read made, by kind.
pub type Requests = [u64; 5];

/// How changes reach the watcher.
enum Watches {
    /// One persistent recursive watch on the path, once armed on the current session.
    Recursive(Option<zk::PersistentWatcher>),
    /// A one-shot child watch on the path and a one-shot data watch per child.
    Oneshot {
        list: Option<Armed>,
        data: HashMap<String, Armed>,
    },
}

impl Watches {
    /// No watch armed yet, in `mode`.
    fn new(mode: WatchMode) -> Self {
        match mode {
            WatchMode::Recursive => Self::Recursive(None),
            WatchMode::Oneshot => Self::Oneshot {
                list: None,
                data: HashMap::new(),
            },
        }
    }

    /// Forgets every watch (they belong to a session that is gone), keeping the mode.
    fn clear(&mut self) {
        match self {
            Self::Recursive(watcher) => *watcher = None,
            Self::Oneshot { list, data } => {
                *list = None;
                data.clear();
            }
        }
    }

    /// Whether every event names its node.
    fn recursive(&self) -> bool {
        matches!(self, Self::Recursive(_))
    }

    /// Drops the one-shot data watches of children not in `keep`.
    fn retain_data(&mut self, keep: impl Fn(&str) -> bool) {
        if let Self::Oneshot { data, .. } = self {
            data.retain(|name, _| keep(name));
        }
    }

    /// Keeps `watch` as `name`'s data watch (one-shot mode).
    fn arm_data(&mut self, name: &str, watch: Armed) {
        if let Self::Oneshot { data, .. } = self {
            data.insert(name.to_string(), watch);
        }
    }
}

/// The children of one path, and the watches that report their changes.
pub struct Children {
    known: BTreeMap<String, Child>,
    watches: Watches,
    /// The watched path without a trailing `/` (empty for the root).
    base: String,
}

impl Children {
    /// Nothing known yet about `path`, watched in `mode`.
    pub fn new(mode: WatchMode, path: &str) -> Self {
        Self {
            known: BTreeMap::new(),
            watches: Watches::new(mode),
            base: path.trim_end_matches('/').to_string(),
        }
    }

    /// Reads what `dirty` names, arming the watches it needs; `dirty` is cleared only on success, so a
    /// failed re-read is repeated in full.
    pub async fn refresh(
        &mut self,
        client: &zk::Client,
        config: &ZookeeperDiscovery,
        service: &str,
        dirty: &mut Dirty,
        requests: &mut Requests,
        skipped: &prometheus::IntCounter,
    ) -> Result<Found, zk::Error> {
        if dirty.revalidate {
            // The watches belong to a session that is gone.
            self.watches.clear();
            dirty.list = true;
        }
        // Armed before the listing, so that nothing written after it goes unreported. A listing after
        // a reconnection arms the recursive watch anew: the client does not re-register persistent
        // watches with the server when it reconnects (zookeeper-client 0.11 sends only one-shot
        // watches in its SetWatches), so the old one may be dead.
        self.arm(client, config, service, requests, dirty.list)
            .await?;
        let recursive = self.watches.recursive();
        let mut to_read: BTreeSet<String> = BTreeSet::new();
        let mut to_check: Vec<String> = Vec::new();
        if dirty.list {
            let Some(listed) = self.list(client, &config.path, requests).await? else {
                self.known.clear();
                self.watches.retain_data(|_| false);
                *dirty = Dirty::default();
                return Ok(Found::Missing);
            };
            self.known.retain(|name, _| listed.contains(name));
            self.watches.retain_data(|name| listed.contains(name));
            for name in listed {
                if !self.known.contains_key(&name) {
                    to_read.insert(name);
                } else if dirty.revalidate || recursive {
                    // Persistent watches miss what happened while disconnected: check every child.
                    to_check.push(name);
                }
            }
        } else {
            for name in &dirty.gone {
                self.known.remove(name);
                self.watches.retain_data(|n| n != name);
            }
        }
        // One-shot data watches fire only for known children; an event of the recursive watch may
        // name a new one.
        to_read.extend(
            dirty
                .read
                .iter()
                .filter(|name| recursive || self.known.contains_key(*name))
                .cloned(),
        );
        let mut written = Vec::new();
        if recursive {
            // Checks and reads alike fetch the data, batched: an unchanged child is not decoded again.
            to_check.retain(|name| !to_read.contains(name));
            let names: Vec<String> = to_check.into_iter().chain(to_read).collect();
            let nodes: Vec<(String, usize)> = names
                .iter()
                .map(|name| {
                    let bytes = self.known.get(name).map_or(UNKNOWN_BYTES, |c| c.bytes);
                    (self.child_path(name), bytes)
                })
                .collect();
            let fetched = fetch(client, &nodes, requests).await?;
            for (name, found) in names.iter().zip(fetched) {
                match found {
                    Some((data, stat)) => {
                        written.extend(self.store(name, &data, &stat, config, service, skipped))
                    }
                    // Deleted after the listing or the event (synapse#205): simply gone.
                    None => {
                        self.known.remove(name);
                    }
                }
            }
        } else {
            // Every request is sent when its future is created, so the checks go out back to back.
            let checks: Vec<_> = to_check
                .iter()
                .filter(|name| !to_read.contains(*name))
                .map(|name| (name, client.check_and_watch_stat(&self.child_path(name))))
                .collect();
            requests[EXISTS] += checks.len() as u64;
            for (name, reply) in checks {
                let (stat, watch) = reply.await?;
                match (stat, self.known.get(name)) {
                    (Some(stat), Some(known))
                        if stat.czxid == known.czxid && stat.mzxid == known.mzxid =>
                    {
                        self.watches.arm_data(name, Box::pin(watch.changed()));
                    }
                    (Some(_), _) => {
                        to_read.insert(name.clone());
                    }
                    (None, _) => {
                        self.known.remove(name);
                    }
                }
            }
            let reads: Vec<_> = to_read
                .iter()
                .map(|name| (name, client.get_and_watch_data(&self.child_path(name))))
                .collect();
            requests[GET_DATA] += reads.len() as u64;
            for (name, reply) in reads {
                let (data, stat, watch) = match reply.await {
                    Ok(found) => found,
                    // Deleted between the listing and the read (synapse#205): simply gone.
                    Err(zk::Error::NoNode) => {
                        self.known.remove(name);
                        self.watches.retain_data(|n| n != name);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                self.watches.arm_data(name, Box::pin(watch.changed()));
                written.extend(self.store(name, &data, &stat, config, service, skipped));
            }
        }
        *dirty = Dirty::default();
        let backends = self
            .known
            .values()
            .filter_map(|c| c.backend.clone())
            .collect();
        Ok(Found::Backends(backends, written))
    }

    /// Arms the persistent recursive watch if the mode wants one and none is armed, or anew with
    /// `renew` (the old one is dropped once the new one is armed); a server without persistent
    /// watches (before 3.6) turns the mode to one-shot for good.
    async fn arm(
        &mut self,
        client: &zk::Client,
        config: &ZookeeperDiscovery,
        service: &str,
        requests: &mut Requests,
        renew: bool,
    ) -> Result<(), zk::Error> {
        match self.watches {
            Watches::Recursive(None) => {}
            Watches::Recursive(Some(_)) if renew => {}
            _ => return Ok(()),
        }
        requests[WATCH] += 1;
        match client
            .watch(&config.path, zk::AddWatchMode::PersistentRecursive)
            .await
        {
            Ok(watcher) => self.watches = Watches::Recursive(Some(watcher)),
            Err(zk::Error::Unimplemented) => {
                tracing::warn!(service, zk_path = %config.path, "ZooKeeper has no persistent watches (before 3.6); using one-shot watches");
                self.watches = Watches::new(WatchMode::Oneshot);
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Lists the path's children (arming the one-shot child watch); `None` if the path does not exist.
    async fn list(
        &mut self,
        client: &zk::Client,
        path: &str,
        requests: &mut Requests,
    ) -> Result<Option<BTreeSet<String>>, zk::Error> {
        loop {
            requests[LIST] += 1;
            let Watches::Oneshot { list, .. } = &mut self.watches else {
                // The recursive watch reports the path's creation.
                return match client.list_children(path).await {
                    Ok(names) => Ok(Some(names.into_iter().collect())),
                    Err(zk::Error::NoNode) => Ok(None),
                    Err(e) => Err(e),
                };
            };
            match client.list_and_watch_children(path).await {
                Ok((names, watch)) => {
                    *list = Some(Box::pin(watch.changed()));
                    return Ok(Some(names.into_iter().collect()));
                }
                Err(zk::Error::NoNode) => {
                    requests[EXISTS] += 1;
                    let (stat, watch) = client.check_and_watch_stat(path).await?;
                    if stat.is_none() {
                        *list = Some(Box::pin(watch.changed()));
                        return Ok(None);
                    }
                    // Created while it was being looked at: list again.
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Keeps what child `name` holds now, decoded, unless it is the version already known; the
    /// write time (ms since the epoch) of a new or changed child.
    fn store(
        &mut self,
        name: &str,
        data: &[u8],
        stat: &zk::Stat,
        config: &ZookeeperDiscovery,
        service: &str,
        skipped: &prometheus::IntCounter,
    ) -> Option<i64> {
        if self
            .known
            .get(name)
            .is_some_and(|c| c.czxid == stat.czxid && c.mzxid == stat.mzxid)
        {
            return None;
        }
        let backend = match decode::decode(name, data, &config.decode) {
            Ok(mut backend) => {
                if let Some(port) = config.port_override {
                    backend.port = port;
                }
                Some(backend)
            }
            Err(e) => {
                skipped.inc();
                tracing::warn!(service, zk_path = %config.path, node = %name, error = %e, "skipping malformed znode");
                None
            }
        };
        self.known.insert(
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

    /// The full path of child `name`.
    fn child_path(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }

    /// Resolves with every watch that has fired (every queued event of the recursive watch); the
    /// others stay armed.
    pub fn fired(&mut self) -> impl Future<Output = Vec<Fired>> + '_ {
        std::future::poll_fn(move |cx| {
            let mut fired = Vec::new();
            match &mut self.watches {
                Watches::Recursive(watcher) => poll_recursive(watcher, &self.base, cx, &mut fired),
                Watches::Oneshot { list, data } => poll_oneshot(list, data, cx, &mut fired),
            }
            if fired.is_empty() {
                Poll::Pending
            } else {
                Poll::Ready(fired)
            }
        })
    }
}

/// Reads the data of `nodes` (paths, with their expected sizes), in order, `None` for one that does
/// not exist: one `get_data` for a single node, multi-read requests (ZooKeeper 3.6+, like
/// persistent watches) for more, sent back to back.
async fn fetch(
    client: &zk::Client,
    nodes: &[(String, usize)],
    requests: &mut Requests,
) -> Result<Vec<Option<(Vec<u8>, zk::Stat)>>, zk::Error> {
    if let [(path, _)] = nodes {
        requests[GET_DATA] += 1;
        return match client.get_data(path).await {
            Ok(found) => Ok(vec![Some(found)]),
            Err(zk::Error::NoNode) => Ok(vec![None]),
            Err(e) => Err(e),
        };
    }
    let mut pending = Vec::new();
    let mut reader = client.new_multi_reader();
    let (mut ops, mut bytes) = (0, 0);
    for (i, (path, size)) in nodes.iter().enumerate() {
        reader.add_get_data(path)?;
        ops += 1;
        bytes += size;
        if ops == MULTI_READ_OPS || bytes >= MULTI_READ_BYTES || i + 1 == nodes.len() {
            pending.push((ops, reader.commit()));
            (ops, bytes) = (0, 0);
        }
    }
    requests[MULTI_READ] += pending.len() as u64;
    let mut fetched = Vec::with_capacity(nodes.len());
    for (ops, reply) in pending {
        let results = reply.await?;
        if results.len() != ops {
            return Err(zk::Error::UnexpectedError(format!(
                "multi-read of {ops} nodes answered {} results",
                results.len()
            )));
        }
        for result in results {
            fetched.push(match result {
                zk::MultiReadResult::Data { data, stat } => Some((data, stat)),
                zk::MultiReadResult::Error {
                    err: zk::Error::NoNode,
                } => None,
                zk::MultiReadResult::Error { err } => return Err(err),
                _ => {
                    return Err(zk::Error::UnexpectedError(
                        "multi-read answered something other than data".into(),
                    ))
                }
            });
        }
    }
    Ok(fetched)
}

/// Drains the recursive watch's queued events into `fired`. After the session's terminal event the
/// watcher is dropped: it must not be polled again, and the next session arms a new one.
fn poll_recursive(
    slot: &mut Option<zk::PersistentWatcher>,
    base: &str,
    cx: &mut Context<'_>,
    fired: &mut Vec<Fired>,
) {
    while let Some(watcher) = slot.as_mut() {
        let polled = std::pin::pin!(watcher.changed()).poll(cx);
        let Poll::Ready(event) = polled else {
            return;
        };
        if event.event_type == zk::EventType::Session {
            if event.session_state.is_terminated() {
                *slot = None;
                fired.push(Fired::Session);
            }
            continue;
        }
        if let Some(f) = classify_recursive(event.event_type, &event.path, base) {
            fired.push(f);
        }
    }
}

/// Collects the one-shot watches that fired into `fired`, dropping them.
fn poll_oneshot(
    list: &mut Option<Armed>,
    data: &mut HashMap<String, Armed>,
    cx: &mut Context<'_>,
    fired: &mut Vec<Fired>,
) {
    if let Some(watch) = list.as_mut() {
        if let Poll::Ready(event) = watch.as_mut().poll(cx) {
            *list = None;
            fired.push(classify(event.event_type, None));
        }
    }
    data.retain(|name, watch| match watch.as_mut().poll(cx) {
        Poll::Ready(event) => {
            fired.push(classify(event.event_type, Some(name)));
            false
        }
        Poll::Pending => true,
    });
}

/// What an event of the recursive watch on `base` means; `None` for nodes below the children.
fn classify_recursive(event: zk::EventType, path: &str, base: &str) -> Option<Fired> {
    if path.trim_end_matches('/') == base {
        return Some(Fired::List);
    }
    let name = path.strip_prefix(base)?.strip_prefix('/')?;
    if name.is_empty() || name.contains('/') {
        return None;
    }
    match event {
        zk::EventType::NodeCreated | zk::EventType::NodeDataChanged => {
            Some(Fired::Changed(name.to_string()))
        }
        zk::EventType::NodeDeleted => Some(Fired::Gone(name.to_string())),
        zk::EventType::NodeChildrenChanged | zk::EventType::Session => None,
    }
}

/// What a fired one-shot watch means: `child` is the child whose data watch it was.
fn classify(event: zk::EventType, child: Option<&String>) -> Fired {
    match (event, child) {
        (zk::EventType::Session, _) => Fired::Session,
        (zk::EventType::NodeDeleted, Some(name)) => Fired::Gone(name.clone()),
        (_, Some(name)) => Fired::Changed(name.clone()),
        (_, None) => Fired::List,
    }
}

impl Dirty {
    /// Adds what fired watches ask to be read; the last event about a child decides.
    pub fn absorb(&mut self, fired: Vec<Fired>) {
        for f in fired {
            match f {
                Fired::List => self.list = true,
                Fired::Changed(name) => {
                    self.gone.remove(&name);
                    self.read.insert(name);
                }
                Fired::Gone(name) => {
                    self.read.remove(&name);
                    self.gone.insert(name);
                }
                Fired::Session => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fired_watches_name_what_to_read() {
        let mut d = Dirty::default();
        assert!(!d.any());
        d.absorb(vec![Fired::Changed("b".into()), Fired::Session]);
        assert_eq!(d.read.iter().collect::<Vec<_>>(), ["b"]);
        assert!(!d.list && d.any());
        d.absorb(vec![Fired::List, Fired::Changed("a".into())]);
        assert!(d.list && !d.revalidate);
        assert_eq!(d.read.len(), 2);
        assert!(Dirty::everything().revalidate && Dirty::everything().list);
    }

    #[test]
    fn the_last_event_about_a_child_decides() {
        let mut d = Dirty::default();
        d.absorb(vec![Fired::Changed("a".into()), Fired::Gone("a".into())]);
        assert!(d.read.is_empty());
        assert_eq!(d.gone.iter().collect::<Vec<_>>(), ["a"]);
        d.absorb(vec![Fired::Changed("a".into())]);
        assert!(d.gone.is_empty());
        assert_eq!(d.read.iter().collect::<Vec<_>>(), ["a"]);
        assert!(Dirty {
            gone: BTreeSet::from(["x".to_string()]),
            ..Dirty::default()
        }
        .any());
    }

    #[test]
    fn session_events_are_not_node_changes() {
        let name = "n".to_string();
        assert_eq!(
            classify(zk::EventType::Session, Some(&name)),
            Fired::Session
        );
        assert_eq!(
            classify(zk::EventType::NodeDeleted, Some(&name)),
            Fired::Gone(name.clone())
        );
        assert_eq!(
            classify(zk::EventType::NodeDataChanged, Some(&name)),
            Fired::Changed(name.clone())
        );
        assert_eq!(
            classify(zk::EventType::NodeChildrenChanged, None),
            Fired::List
        );
    }

    #[test]
    fn recursive_events_name_direct_children_only() {
        use zk::EventType::*;
        let base = "/svc/web";
        assert_eq!(
            classify_recursive(NodeCreated, "/svc/web/n1", base),
            Some(Fired::Changed("n1".into()))
        );
        assert_eq!(
            classify_recursive(NodeDataChanged, "/svc/web/n1", base),
            Some(Fired::Changed("n1".into()))
        );
        assert_eq!(
            classify_recursive(NodeDeleted, "/svc/web/n1", base),
            Some(Fired::Gone("n1".into()))
        );
        assert_eq!(
            classify_recursive(NodeCreated, "/svc/web", base),
            Some(Fired::List)
        );
        assert_eq!(
            classify_recursive(NodeDeleted, "/svc/web", base),
            Some(Fired::List)
        );
        assert_eq!(
            classify_recursive(NodeCreated, "/svc/web/n1/deeper", base),
            None
        );
        assert_eq!(classify_recursive(NodeCreated, "/svc/webx/n1", base), None);
        assert_eq!(
            classify_recursive(NodeCreated, "/n1", ""),
            Some(Fired::Changed("n1".into()))
        );
        assert_eq!(classify_recursive(NodeDeleted, "/", ""), Some(Fired::List));
    }
}
