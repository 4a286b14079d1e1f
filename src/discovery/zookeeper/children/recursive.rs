//! The recursive watch mode: one persistent recursive watch on the path (ZooKeeper 3.6+), whose every
//! event names its node. A re-read lists only after a reconnection (fetching every known child's data
//! then, since events may have been lost), and fetches data in multi-read batches.

use super::{Children, Dirty, Known, PathContents, Requests, WatchEvent, Watches};
use crate::config::WatchMode;
use std::collections::BTreeSet;
use std::future::Future;
use std::task::{Context, Poll};
use zookeeper_client as zk;

/// Most reads in one multi-read request.
const MULTI_READ_OPS: usize = 200;
/// A multi-read request is closed once its children's data, by their last known size, adds up to
/// this, so that a reply stays a few hundred KiB.
const MULTI_READ_BYTES: usize = 256 * 1024;
/// The size assumed for a child not read before.
const UNKNOWN_BYTES: usize = 1024;

impl Children {
    /// Arms the persistent recursive watch if the mode wants one and none is armed, or anew with
    /// `renew` (the old one is dropped once the new one is armed); a server without persistent
    /// watches (before 3.6) turns the mode to one-shot for good.
    pub(super) async fn arm(&mut self, client: &zk::Client, renew: bool) -> Result<(), zk::Error> {
        match self.watches {
            Watches::Recursive(None) => {}
            Watches::Recursive(Some(_)) if renew => {}
            _ => return Ok(()),
        }
        let known = &mut self.known;
        known.requests.watch += 1;
        match client
            .watch(&known.config.path, zk::AddWatchMode::PersistentRecursive)
            .await
        {
            Ok(watcher) => self.watches = Watches::Recursive(Some(watcher)),
            Err(zk::Error::Unimplemented) => {
                tracing::warn!(service = %known.service, zk_path = %known.config.path, "ZooKeeper has no persistent watches (before 3.6); using one-shot watches");
                self.watches = Watches::new(WatchMode::Oneshot);
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

impl Known {
    /// One re-read in recursive mode: a listing (when `dirty.list`) reads new children and checks every
    /// known one, since persistent watches miss what happened while disconnected; events name the
    /// children to read or drop.
    pub(super) async fn refresh_recursive(
        &mut self,
        client: &zk::Client,
        dirty: &Dirty,
    ) -> Result<PathContents, zk::Error> {
        let mut to_read: BTreeSet<String> = BTreeSet::new();
        let mut to_check: Vec<String> = Vec::new();
        if dirty.list {
            let Some(listed) = self.list_recursive(client).await? else {
                self.by_name.clear();
                return Ok(PathContents::Missing);
            };
            self.by_name.retain(|name, _| listed.contains(name));
            for name in listed {
                if self.by_name.contains_key(&name) {
                    to_check.push(name);
                } else {
                    to_read.insert(name);
                }
            }
        } else {
            for name in &dirty.gone {
                self.by_name.remove(name);
            }
        }
        // An event of the recursive watch may name a child not known yet.
        to_read.extend(dirty.read.iter().cloned());
        // Checks and reads alike fetch the data, batched: an unchanged child is not decoded again.
        to_check.retain(|name| !to_read.contains(name));
        let names: Vec<String> = to_check.into_iter().chain(to_read).collect();
        let nodes: Vec<(String, usize)> = names
            .iter()
            .map(|name| {
                let bytes = self.by_name.get(name).map_or(UNKNOWN_BYTES, |c| c.bytes);
                (self.child_path(name), bytes)
            })
            .collect();
        let fetched = fetch(client, &nodes, &mut self.requests).await?;
        let mut written = Vec::new();
        for (name, found) in names.iter().zip(fetched) {
            match found {
                Some((data, stat)) => written.extend(self.store(name, &data, &stat)),
                // Deleted after the listing or the event (synapse#205): simply gone.
                None => {
                    self.by_name.remove(name);
                }
            }
        }
        Ok(self.found(written))
    }

    /// Lists the path's children; `None` if the path does not exist (the recursive watch reports its
    /// creation).
    async fn list_recursive(
        &mut self,
        client: &zk::Client,
    ) -> Result<Option<BTreeSet<String>>, zk::Error> {
        self.requests.list += 1;
        match client.list_children(&self.config.path).await {
            Ok(names) => Ok(Some(names.into_iter().collect())),
            Err(zk::Error::NoNode) => Ok(None),
            Err(e) => Err(e),
        }
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
        requests.get_data += 1;
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
    requests.multi_read += pending.len() as u64;
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
pub(super) fn poll(
    slot: &mut Option<zk::PersistentWatcher>,
    base: &str,
    cx: &mut Context<'_>,
    fired: &mut Vec<WatchEvent>,
) {
    while let Some(watcher) = slot.as_mut() {
        let polled = std::pin::pin!(watcher.changed()).poll(cx);
        let Poll::Ready(event) = polled else {
            return;
        };
        if event.event_type == zk::EventType::Session {
            if event.session_state.is_terminated() {
                *slot = None;
                fired.push(WatchEvent::Session);
            }
            continue;
        }
        if let Some(f) = classify_recursive(event.event_type, &event.path, base) {
            fired.push(f);
        }
    }
}

/// What an event of the recursive watch on `base` means; `None` for nodes below the children.
fn classify_recursive(event: zk::EventType, path: &str, base: &str) -> Option<WatchEvent> {
    if path.trim_end_matches('/') == base {
        return Some(WatchEvent::List);
    }
    let name = path.strip_prefix(base)?.strip_prefix('/')?;
    if name.is_empty() || name.contains('/') {
        return None;
    }
    match event {
        zk::EventType::NodeCreated | zk::EventType::NodeDataChanged => {
            Some(WatchEvent::Changed(name.to_string()))
        }
        zk::EventType::NodeDeleted => Some(WatchEvent::Gone(name.to_string())),
        zk::EventType::NodeChildrenChanged | zk::EventType::Session => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recursive_events_name_direct_children_only() {
        use zk::EventType::*;
        let base = "/svc/web";
        assert_eq!(
            classify_recursive(NodeCreated, "/svc/web/n1", base),
            Some(WatchEvent::Changed("n1".into()))
        );
        assert_eq!(
            classify_recursive(NodeDataChanged, "/svc/web/n1", base),
            Some(WatchEvent::Changed("n1".into()))
        );
        assert_eq!(
            classify_recursive(NodeDeleted, "/svc/web/n1", base),
            Some(WatchEvent::Gone("n1".into()))
        );
        assert_eq!(
            classify_recursive(NodeCreated, "/svc/web", base),
            Some(WatchEvent::List)
        );
        assert_eq!(
            classify_recursive(NodeDeleted, "/svc/web", base),
            Some(WatchEvent::List)
        );
        assert_eq!(
            classify_recursive(NodeCreated, "/svc/web/n1/deeper", base),
            None
        );
        assert_eq!(classify_recursive(NodeCreated, "/svc/webx/n1", base), None);
        assert_eq!(
            classify_recursive(NodeCreated, "/n1", ""),
            Some(WatchEvent::Changed("n1".into()))
        );
        assert_eq!(
            classify_recursive(NodeDeleted, "/", ""),
            Some(WatchEvent::List)
        );
    }
}
