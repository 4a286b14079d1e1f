//! The running process's side: offer the listeners on the upgrade socket and learn when a successor
//! serves. One handover at a time; one that fails or times out leaves this process serving as before.

use super::wire::{self, Message, Reader};
use super::{Listeners, UpgradeError};
use crate::metrics::Registry;
use prometheus::{IntCounter, IntCounterVec};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// How long a successor has to say hello and take the sockets.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a successor has to start serving once it holds the sockets.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The handover family: listening sockets offered to a successor, by outcome; clones share it.
#[derive(Clone)]
pub struct HandoverMetrics {
    handovers: IntCounterVec,
}

impl HandoverMetrics {
    /// Creates the handover family in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            handovers: registry.counter(
                "sinew_upgrade_handovers_total",
                "Listening sockets offered to a successor process, by outcome (handed_over, aborted, refused).",
                &["outcome"],
            )?,
        })
    }

    /// The counter of handovers that ended with `outcome` (handed_over, aborted, refused).
    pub fn handovers(&self, outcome: &str) -> IntCounter {
        self.handovers.with_label_values(&[outcome])
    }
}

/// The upgrade socket of a running process.
pub struct Offer {
    listener: UnixListener,
    path: PathBuf,
    /// Device and inode of the socket file, so that only our own file is removed on exit.
    identity: (u64, u64),
    /// The file's owner: the user this process runs as.
    uid: u32,
}

enum Outcome {
    HandedOver,
    Refused(String),
}

impl Offer {
    /// Creates the upgrade socket at `path`, readable by this user only. A stale file is replaced; a
    /// file a live sinew still serves is an error unless `replace` (this process is taking over from it).
    pub fn bind(path: &Path, replace: bool) -> Result<Self, UpgradeError> {
        let err = |error| UpgradeError::Bind {
            path: path.to_path_buf(),
            error,
        };
        if std::fs::symlink_metadata(path).is_ok() {
            if !replace && std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(UpgradeError::InUse {
                    path: path.to_path_buf(),
                });
            }
            std::fs::remove_file(path).map_err(err)?;
        }
        let socket = std::os::unix::net::UnixListener::bind(path).map_err(err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
        let meta = std::fs::metadata(path).map_err(err)?;
        socket.set_nonblocking(true).map_err(err)?;
        Ok(Self {
            listener: UnixListener::from_std(socket).map_err(err)?,
            path: path.to_path_buf(),
            identity: (meta.dev(), meta.ino()),
            uid: meta.uid(),
        })
    }

    /// Offers `listeners` to whoever connects, until a successor reports that it serves (then `handed`
    /// fires) or `stop`. The socket file is removed on the way out unless a successor replaced it.
    pub async fn answer_successors(
        self,
        listeners: Listeners,
        handed: oneshot::Sender<()>,
        metrics: HandoverMetrics,
        stop: CancellationToken,
    ) {
        tracing::info!(path = %self.path.display(), "offering the listening sockets to a successor");
        loop {
            let stream = tokio::select! {
                _ = stop.cancelled() => break,
                r = self.listener.accept() => match r {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "upgrade socket accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
            };
            let outcome = tokio::select! {
                _ = stop.cancelled() => break,
                r = self.hand_over(&stream, &listeners) => r,
            };
            match outcome {
                Ok(Outcome::HandedOver) => {
                    metrics.handovers("handed_over").inc();
                    tracing::info!("the new process serves: this one stops accepting and drains");
                    let _ = handed.send(());
                    break;
                }
                Ok(Outcome::Refused(reason)) => {
                    metrics.handovers("refused").inc();
                    tracing::warn!(%reason, "handover refused");
                }
                Err(e) => {
                    metrics.handovers("aborted").inc();
                    tracing::warn!(error = %e, "handover aborted; this process keeps serving");
                }
            }
        }
        self.remove();
    }

    async fn hand_over(
        &self,
        stream: &UnixStream,
        listeners: &Listeners,
    ) -> Result<Outcome, UpgradeError> {
        let peer = stream.peer_cred()?.uid();
        if peer != self.uid && peer != 0 {
            let reason = format!("uid {peer} may not take over a process of uid {}", self.uid);
            return refuse(stream, reason).await;
        }
        let mut reader = Reader::default();
        match within(HELLO_TIMEOUT, reader.next(stream)).await? {
            Some(Message::Hello { version }) if version == wire::VERSION => {}
            Some(Message::Hello { version }) => {
                let reason = format!(
                    "this sinew speaks upgrade protocol {}, the new one {version}",
                    wire::VERSION
                );
                return refuse(stream, reason).await;
            }
            other => {
                return Err(UpgradeError::Frame(format!(
                    "expected hello, got {other:?}"
                )));
            }
        }
        let offered = listeners.offer()?;
        within(HELLO_TIMEOUT, async {
            for o in &offered {
                let msg = Message::Listener {
                    owner: o.owner.clone(),
                    configured: o.configured,
                    bound: o.bound,
                };
                wire::send(stream, &msg, Some(o.fd.as_fd())).await?;
            }
            wire::send(stream, &Message::Done, None).await
        })
        .await?;
        tracing::info!(
            sockets = offered.len(),
            "listening sockets sent; waiting for the new process to serve"
        );
        drop(offered);
        match within(READY_TIMEOUT, reader.next(stream)).await? {
            Some(Message::Ready) => Ok(Outcome::HandedOver),
            None => Err(UpgradeError::Frame(
                "the new process went away before it served".into(),
            )),
            Some(other) => Err(UpgradeError::Frame(format!(
                "expected ready, got {other:?}"
            ))),
        }
    }

    /// Removes the socket file if it is still ours (a successor binds its own at the same path).
    fn remove(&self) {
        let ours = std::fs::metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.identity);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

async fn refuse(stream: &UnixStream, reason: String) -> Result<Outcome, UpgradeError> {
    let msg = Message::Refused {
        reason: reason.clone(),
    };
    within(HELLO_TIMEOUT, wire::send(stream, &msg, None)).await?;
    Ok(Outcome::Refused(reason))
}

async fn within<T>(
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, UpgradeError>>,
) -> Result<T, UpgradeError> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| UpgradeError::Timeout(limit))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upgrade::{take_over, Owner};
    use std::sync::Arc;

    fn offer(name: &str) -> (Offer, PathBuf) {
        let dir = std::env::temp_dir().join(format!("sinew-offer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        (Offer::bind(&path, false).unwrap(), path)
    }

    #[tokio::test]
    async fn a_successor_of_another_protocol_version_is_refused() {
        let (offer, path) = offer("version.sock");
        let metrics = HandoverMetrics::register(&Registry::new()).unwrap();
        let (handed, mut handed_rx) = oneshot::channel();
        let stop = CancellationToken::new();
        let task = tokio::spawn(offer.answer_successors(
            Listeners::default(),
            handed,
            metrics.clone(),
            stop.clone(),
        ));
        let stream = UnixStream::connect(&path).await.unwrap();
        wire::send(&stream, &Message::Hello { version: 99 }, None)
            .await
            .unwrap();
        let answer = Reader::default().next(&stream).await.unwrap();
        let Some(Message::Refused { reason }) = answer else {
            panic!("refused: {answer:?}")
        };
        assert!(reason.contains("the new one 99"), "{reason}");
        assert!(handed_rx.try_recv().is_err(), "no handover");
        stop.cancel();
        task.await.unwrap();
        assert_eq!(metrics.handovers("refused").get(), 1);
        assert!(!path.exists(), "the socket file is removed on the way out");
    }

    #[tokio::test]
    async fn a_live_upgrade_socket_is_not_replaced_without_takeover() {
        let (offer, path) = offer("live.sock");
        let err = Offer::bind(&path, false).err().expect("in use");
        assert!(err.to_string().contains("--takeover"), "{err}");
        let successor = Offer::bind(&path, true).unwrap();
        offer.remove();
        assert!(
            path.exists(),
            "the old process leaves the successor's file alone"
        );
        successor.remove();
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn a_successor_receives_the_listeners_and_its_ready_ends_the_offer() {
        let (offer, path) = offer("full.sock");
        let listeners = Listeners::default();
        let web = Arc::new(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
        let configured = web.local_addr().unwrap();
        listeners.insert(Owner::Service("web".into()), configured, &web);
        let metrics = HandoverMetrics::register(&Registry::new()).unwrap();
        let (handed, handed_rx) = oneshot::channel();
        let task = tokio::spawn(offer.answer_successors(
            listeners,
            handed,
            metrics.clone(),
            CancellationToken::new(),
        ));
        let (mut inherited, predecessor) = take_over(&path).await.unwrap();
        assert_eq!(inherited.len(), 1);
        let socket = inherited
            .listen(Owner::Service("web".into()), configured)
            .await
            .unwrap();
        assert_eq!(socket.local_addr().unwrap(), configured);
        predecessor.ready().await.unwrap();
        handed_rx.await.expect("the offer reports the handover");
        task.await.unwrap();
        assert_eq!(metrics.handovers("handed_over").get(), 1);
    }
}
