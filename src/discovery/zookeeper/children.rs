//! The children of a watched path as last read: decoded by name and version, each with its armed data
//! watch, so that a change costs ZooKeeper only what changed.
//!
//! A new child is read once; a child whose data watch fires is read again; a listing (after the child
//! watch fires) reads only names not seen before and forgets names that are gone. On a new session
//! every watch is gone, so each known child is re-armed with an `exists` watch whose reply (a `Stat`)
//! tells whether it changed: only the changed ones are read again.

use super::decode;
use crate::balance::Backend;
use crate::config::ZookeeperDiscovery;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use zookeeper_client as zk;

/// A one-shot watch waiting to fire.
type Armed = Pin<Box<dyn Future<Output = zk::WatchedEvent> + Send>>;

/// Request kinds, indexes into [`crate::metrics::ZK_REQUEST_KINDS`].
const LIST: usize = 0;
const GET_DATA: usize = 1;
const EXISTS: usize = 2;

/// One child as last read.
struct Child {
    /// Creation zxid: a node deleted and created again under the same name differs here.
    czxid: i64,
    /// Zxid of the last data change.
    mzxid: i64,
    /// The decoded backend; `None` for a malformed node (skipped).
    backend: Option<Backend>,
}

/// What the next re-read must look at, gathered from fired watches.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Dirty {
    /// List the children again (the child watch fired, the path appeared, or a reconnection).
    pub list: bool,
    /// Read these children's data again (their data watch fired).
    pub children: BTreeSet<String>,
    /// A new session: every watch is gone and every known child is checked.
    pub revalidate: bool,
}

impl Dirty {
    /// Everything: the state of a watcher that has never read, or whose session was replaced.
    pub fn everything() -> Self {
        Self {
            list: true,
            children: BTreeSet::new(),
            revalidate: true,
        }
    }

    /// Whether there is anything to read.
    pub fn any(&self) -> bool {
        self.list || self.revalidate || !self.children.is_empty()
    }
}

/// A watch that fired.
#[derive(Debug, PartialEq, Eq)]
pub enum Fired {
    /// The child list changed, or the missing path was created.
    List,
    /// A child's data changed or the child was deleted.
    Child(String),
    /// The session ended: the session manager brings a new one.
    Session,
}

/// What a re-read found.
pub enum Found {
    /// The backends (by child name), and the server's write time (ms since the epoch) of every child
    /// read because it was new or changed.
    Backends(Vec<Backend>, Vec<i64>),
    /// The path does not exist; its watch fires when it is created.
    Missing,
}

/// Requests one re-read made, by kind.
pub type Requests = [u64; 3];

/// The children of one path, and the watches that report their changes.
#[derive(Default)]
pub struct Children {
    known: BTreeMap<String, Child>,
    list_watch: Option<Armed>,
    data_watches: HashMap<String, Armed>,
}

impl Children {
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
            self.list_watch = None;
            self.data_watches.clear();
            dirty.list = true;
        }
        let mut to_read: BTreeSet<String> = BTreeSet::new();
        let mut to_check: Vec<String> = Vec::new();
        if dirty.list {
            requests[LIST] += 1;
            let names = match client.list_and_watch_children(&config.path).await {
                Ok((names, watch)) => {
                    self.list_watch = Some(Box::pin(watch.changed()));
                    names
                }
                Err(zk::Error::NoNode) => {
                    requests[EXISTS] += 1;
                    let (stat, watch) = client.check_and_watch_stat(&config.path).await?;
                    if stat.is_some() {
                        // Created while it was being looked at: list again.
                        return Box::pin(
                            self.refresh(client, config, service, dirty, requests, skipped),
                        )
                        .await;
                    }
                    self.known.clear();
                    self.data_watches.clear();
                    self.list_watch = Some(Box::pin(watch.changed()));
                    *dirty = Dirty::default();
                    return Ok(Found::Missing);
                }
                Err(e) => return Err(e),
            };
            let listed: BTreeSet<String> = names.into_iter().collect();
            self.known.retain(|name, _| listed.contains(name));
            self.data_watches.retain(|name, _| listed.contains(name));
            for name in listed {
                if !self.known.contains_key(&name) {
                    to_read.insert(name);
                } else if dirty.revalidate {
                    to_check.push(name);
                }
            }
        }
        to_read.extend(
            dirty
                .children
                .iter()
                .filter(|name| self.known.contains_key(*name))
                .cloned(),
        );
        // Every request is sent when its future is created, so the checks go out back to back.
        let base = config.path.trim_end_matches('/');
        let checks: Vec<_> = to_check
            .iter()
            .filter(|name| !to_read.contains(*name))
            .map(|name| (name, client.check_and_watch_stat(&format!("{base}/{name}"))))
            .collect();
        requests[EXISTS] += checks.len() as u64;
        for (name, reply) in checks {
            let (stat, watch) = reply.await?;
            match (stat, self.known.get(name)) {
                (Some(stat), Some(known))
                    if stat.czxid == known.czxid && stat.mzxid == known.mzxid =>
                {
                    self.data_watches
                        .insert(name.clone(), Box::pin(watch.changed()));
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
            .map(|name| (name, client.get_and_watch_data(&format!("{base}/{name}"))))
            .collect();
        requests[GET_DATA] += reads.len() as u64;
        let mut written = Vec::with_capacity(reads.len());
        for (name, reply) in reads {
            let (data, stat, watch) = match reply.await {
                Ok(found) => found,
                // Deleted between the listing and the read (synapse#205): simply gone.
                Err(zk::Error::NoNode) => {
                    self.known.remove(name);
                    self.data_watches.remove(name);
                    continue;
                }
                Err(e) => return Err(e),
            };
            self.data_watches
                .insert(name.clone(), Box::pin(watch.changed()));
            let backend = match decode::decode(name, &data, &config.decode) {
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
            written.push(stat.mtime);
            self.known.insert(
                name.clone(),
                Child {
                    czxid: stat.czxid,
                    mzxid: stat.mzxid,
                    backend,
                },
            );
        }
        *dirty = Dirty::default();
        let backends = self
            .known
            .values()
            .filter_map(|c| c.backend.clone())
            .collect();
        Ok(Found::Backends(backends, written))
    }

    /// Resolves with every watch that has fired; the others stay armed.
    pub fn fired(&mut self) -> impl Future<Output = Vec<Fired>> + '_ {
        std::future::poll_fn(move |cx| {
            let mut fired = Vec::new();
            if let Some(watch) = self.list_watch.as_mut() {
                if let Poll::Ready(event) = watch.as_mut().poll(cx) {
                    self.list_watch = None;
                    fired.push(classify(event.event_type, None));
                }
            }
            self.data_watches
                .retain(|name, watch| match watch.as_mut().poll(cx) {
                    Poll::Ready(event) => {
                        fired.push(classify(event.event_type, Some(name)));
                        false
                    }
                    Poll::Pending => true,
                });
            if fired.is_empty() {
                Poll::Pending
            } else {
                Poll::Ready(fired)
            }
        })
    }
}

/// What a fired watch means: `child` is the child whose data watch it was.
fn classify(event: zk::EventType, child: Option<&String>) -> Fired {
    match (event, child) {
        (zk::EventType::Session, _) => Fired::Session,
        (_, Some(name)) => Fired::Child(name.clone()),
        (_, None) => Fired::List,
    }
}

impl Dirty {
    /// Adds what fired watches ask to be read.
    pub fn absorb(&mut self, fired: Vec<Fired>) {
        for f in fired {
            match f {
                Fired::List => self.list = true,
                Fired::Child(name) => {
                    self.children.insert(name);
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
        d.absorb(vec![Fired::Child("b".into()), Fired::Session]);
        assert_eq!(d.children.iter().collect::<Vec<_>>(), ["b"]);
        assert!(!d.list && d.any());
        d.absorb(vec![Fired::List, Fired::Child("a".into())]);
        assert!(d.list && !d.revalidate);
        assert_eq!(d.children.len(), 2);
        assert!(Dirty::everything().revalidate && Dirty::everything().list);
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
            Fired::Child(name.clone())
        );
        assert_eq!(
            classify(zk::EventType::NodeChildrenChanged, None),
            Fired::List
        );
    }
}
