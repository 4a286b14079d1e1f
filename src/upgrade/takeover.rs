//! The new process's side: connect to the running sinew, receive its listeners, and later say `Ready`.

use super::wire::{self, Message, Reader};
use super::{Inherited, UpgradeError};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::UnixStream;

/// How long each step of the exchange may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The process being replaced, waiting to hear that this one serves.
pub struct Predecessor {
    stream: UnixStream,
    path: PathBuf,
}

/// Connects to the upgrade socket at `path` and receives every listening socket of the running sinew.
pub async fn take_over(path: &Path) -> Result<(Inherited, Predecessor), UpgradeError> {
    let stream = match tokio::time::timeout(STEP_TIMEOUT, UnixStream::connect(path)).await {
        Ok(Ok(s)) => s,
        Ok(Err(error)) => {
            return Err(UpgradeError::Connect {
                path: path.to_path_buf(),
                error,
            })
        }
        Err(_) => return Err(UpgradeError::Timeout(STEP_TIMEOUT)),
    };
    step(wire::send(
        &stream,
        &Message::Hello {
            version: wire::VERSION,
        },
        None,
    ))
    .await?;
    let mut reader = Reader::default();
    let mut inherited = Inherited::default();
    loop {
        match step(reader.next(&stream)).await? {
            Some(Message::Listener {
                owner,
                configured,
                bound,
            }) => {
                let fd = reader.take_fd().ok_or_else(|| UpgradeError::Listener {
                    owner: owner.clone(),
                    bound,
                    reason: "announced without a descriptor".into(),
                })?;
                inherited.push(owner, configured, bound, fd)?;
            }
            Some(Message::Done) => break,
            Some(Message::Refused { reason }) => return Err(UpgradeError::Refused(reason)),
            Some(other) => {
                return Err(UpgradeError::Frame(format!("unexpected {other:?}")));
            }
            None => {
                return Err(UpgradeError::Frame(
                    "the running sinew closed the connection before sending every listener".into(),
                ))
            }
        }
    }
    tracing::info!(path = %path.display(), sockets = inherited.len(), "listening sockets received");
    let path = path.to_path_buf();
    Ok((inherited, Predecessor { stream, path }))
}

impl Predecessor {
    /// Tells the old process that this one serves: it stops accepting and drains.
    pub async fn ready(self) -> Result<(), UpgradeError> {
        step(wire::send(&self.stream, &Message::Ready, None)).await?;
        tracing::info!(path = %self.path.display(), "the old process was told to stop accepting");
        Ok(())
    }
}

async fn step<T>(
    f: impl std::future::Future<Output = Result<T, UpgradeError>>,
) -> Result<T, UpgradeError> {
    tokio::time::timeout(STEP_TIMEOUT, f)
        .await
        .map_err(|_| UpgradeError::Timeout(STEP_TIMEOUT))?
}
