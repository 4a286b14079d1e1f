//! The one-shot watch mode (any ZooKeeper): a child watch on the path and a data watch per child,
//! re-armed by each read. A listing reads only names not seen before and forgets names now gone; on a
//! new session every known child is checked with `exists`, and only those whose version changed are
//! read again.

use super::{Dirty, Known, PathContents, WatchEvent};
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use zookeeper_client as zk;

/// A one-shot watch waiting to fire.
type Armed = Pin<Box<dyn Future<Output = zk::WatchedEvent> + Send>>;

/// The armed one-shot watches.
#[derive(Default)]
pub(super) struct Oneshot {
    /// The child watch on the path (or the `exists` watch while the path is missing).
    list: Option<Armed>,
    /// The data watch of each known child.
    data: HashMap<String, Armed>,
}

impl Oneshot {
    /// Collects the watches that fired into `fired`, dropping them.
    pub(super) fn poll(&mut self, cx: &mut Context<'_>, fired: &mut Vec<WatchEvent>) {
        if let Some(watch) = self.list.as_mut() {
            if let Poll::Ready(event) = watch.as_mut().poll(cx) {
                self.list = None;
                fired.push(classify(event.event_type, None));
            }
        }
        self.data
            .retain(|name, watch| match watch.as_mut().poll(cx) {
                Poll::Ready(event) => {
                    fired.push(classify(event.event_type, Some(name)));
                    false
                }
                Poll::Pending => true,
            });
    }
}

impl Known {
    /// One re-read in one-shot mode: a listing (when `dirty.list`) reads new children, and on a new
    /// session checks every known one; fired data watches name the children to read or drop.
    pub(super) async fn refresh_oneshot(
        &mut self,
        client: &zk::Client,
        watches: &mut Oneshot,
        dirty: &Dirty,
    ) -> Result<PathContents, zk::Error> {
        let mut to_read: BTreeSet<String> = BTreeSet::new();
        let mut to_check: Vec<String> = Vec::new();
        if dirty.list {
            let Some(listed) = self.list_oneshot(client, watches).await? else {
                self.by_name.clear();
                watches.data.clear();
                return Ok(PathContents::Missing);
            };
            self.by_name.retain(|name, _| listed.contains(name));
            watches.data.retain(|name, _| listed.contains(name));
            for name in listed {
                if !self.by_name.contains_key(&name) {
                    to_read.insert(name);
                } else if dirty.revalidate {
                    to_check.push(name);
                }
            }
        } else {
            for name in &dirty.gone {
                self.by_name.remove(name);
                watches.data.remove(name);
            }
        }
        // One-shot data watches fire only for known children.
        to_read.extend(
            dirty
                .read
                .iter()
                .filter(|name| self.by_name.contains_key(*name))
                .cloned(),
        );
        // Every request is sent when its future is created, so the checks go out back to back.
        let checks: Vec<_> = to_check
            .iter()
            .filter(|name| !to_read.contains(*name))
            .map(|name| (name, client.check_and_watch_stat(&self.child_path(name))))
            .collect();
        self.requests.exists += checks.len() as u64;
        for (name, reply) in checks {
            let (stat, watch) = reply.await?;
            match (stat, self.by_name.get(name)) {
                (Some(stat), Some(known))
                    if stat.czxid == known.czxid && stat.mzxid == known.mzxid =>
                {
                    watches.data.insert(name.clone(), Box::pin(watch.changed()));
                }
                (Some(_), _) => {
                    to_read.insert(name.clone());
                }
                (None, _) => {
                    self.by_name.remove(name);
                }
            }
        }
        let reads: Vec<_> = to_read
            .iter()
            .map(|name| (name, client.get_and_watch_data(&self.child_path(name))))
            .collect();
        self.requests.get_data += reads.len() as u64;
        let mut written = Vec::new();
        for (name, reply) in reads {
            let (data, stat, watch) = match reply.await {
                Ok(found) => found,
                // Deleted between the listing and the read (synapse#205): simply gone.
                Err(zk::Error::NoNode) => {
                    self.by_name.remove(name);
                    watches.data.remove(name);
                    continue;
                }
                Err(e) => return Err(e),
            };
            watches.data.insert(name.clone(), Box::pin(watch.changed()));
            written.extend(self.store(name, &data, &stat));
        }
        Ok(self.found(written))
    }

    /// Lists the path's children, arming the child watch; `None` if the path does not exist (an
    /// `exists` watch then reports its creation).
    async fn list_oneshot(
        &mut self,
        client: &zk::Client,
        watches: &mut Oneshot,
    ) -> Result<Option<BTreeSet<String>>, zk::Error> {
        let path = &self.config.path;
        loop {
            self.requests.list += 1;
            match client.list_and_watch_children(path).await {
                Ok((names, watch)) => {
                    watches.list = Some(Box::pin(watch.changed()));
                    return Ok(Some(names.into_iter().collect()));
                }
                Err(zk::Error::NoNode) => {
                    self.requests.exists += 1;
                    let (stat, watch) = client.check_and_watch_stat(path).await?;
                    if stat.is_none() {
                        watches.list = Some(Box::pin(watch.changed()));
                        return Ok(None);
                    }
                    // Created while it was being looked at: list again.
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// What a fired one-shot watch means: `child` is the child whose data watch it was.
fn classify(event: zk::EventType, child: Option<&String>) -> WatchEvent {
    match (event, child) {
        (zk::EventType::Session, _) => WatchEvent::Session,
        (zk::EventType::NodeDeleted, Some(name)) => WatchEvent::Gone(name.clone()),
        (_, Some(name)) => WatchEvent::Changed(name.clone()),
        (_, None) => WatchEvent::List,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_events_are_not_node_changes() {
        let name = "n".to_string();
        assert_eq!(
            classify(zk::EventType::Session, Some(&name)),
            WatchEvent::Session
        );
        assert_eq!(
            classify(zk::EventType::NodeDeleted, Some(&name)),
            WatchEvent::Gone(name.clone())
        );
        assert_eq!(
            classify(zk::EventType::NodeDataChanged, Some(&name)),
            WatchEvent::Changed(name.clone())
        );
        assert_eq!(
            classify(zk::EventType::NodeChildrenChanged, None),
            WatchEvent::List
        );
    }
}
