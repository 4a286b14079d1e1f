//! The handover protocol on the wire: length-prefixed JSON frames over a unix stream socket, each
//! listener's descriptor riding on its own frame as `SCM_RIGHTS`.
//!
//! Linux delivers a descriptor with the first byte of the `sendmsg` that carried it and never lets one
//! `recvmsg` return the descriptors of two sends, so descriptors arrive in the order of their frames:
//! the reader queues them and each `Listener` frame takes the next one.

use super::{Owner, UpgradeError};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, OwnedFd};
use tokio::io::Interest;
use tokio::net::UnixStream;

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;

/// Largest frame body accepted.
const MAX_FRAME: usize = 64 * 1024;

/// Descriptors one read has room for (one is expected; more is a peer that breaks the protocol).
const FDS_PER_READ: usize = 4;

/// One message of the handover.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// New to old: asks for the listeners, in the protocol version the new process speaks.
    Hello {
        /// The new process's protocol version.
        version: u32,
    },
    /// Old to new: one listening socket; its descriptor rides on this frame.
    Listener {
        /// What it serves.
        owner: Owner,
        /// The address in the old process's config (a port may be 0).
        configured: SocketAddr,
        /// The address it is bound to.
        bound: SocketAddr,
    },
    /// Old to new: every listener was sent.
    Done,
    /// Old to new: the old process does not hand over, and why.
    Refused {
        /// Why.
        reason: String,
    },
    /// New to old: the new process serves; the old one stops accepting and drains.
    Ready,
}

/// Sends one frame, with `fd` attached to its first byte when given.
pub async fn send(
    stream: &UnixStream,
    msg: &Message,
    fd: Option<BorrowedFd<'_>>,
) -> Result<(), UpgradeError> {
    let body = serde_json::to_vec(msg).map_err(|e| UpgradeError::Frame(e.to_string()))?;
    let len =
        u32::try_from(body.len()).map_err(|_| UpgradeError::Frame("frame too long".into()))?;
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    let fds: Vec<BorrowedFd<'_>> = fd.into_iter().collect();
    let mut sent = 0;
    while sent < frame.len() {
        let n = stream
            .async_io(Interest::WRITABLE, || {
                let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
                let mut control = SendAncillaryBuffer::new(&mut space);
                // The descriptor goes with the first bytes only; a short send continues without it.
                if sent == 0 && !fds.is_empty() {
                    control.push(SendAncillaryMessage::ScmRights(&fds));
                }
                Ok(rustix::net::sendmsg(
                    stream,
                    &[IoSlice::new(&frame[sent..])],
                    &mut control,
                    SendFlags::NOSIGNAL,
                )?)
            })
            .await?;
        if n == 0 {
            return Err(UpgradeError::Frame("the peer stopped reading".into()));
        }
        sent += n;
    }
    Ok(())
}

/// Reads frames and the descriptors that come with them.
#[derive(Default)]
pub struct Reader {
    buf: Vec<u8>,
    fds: VecDeque<OwnedFd>,
}

impl Reader {
    /// The next message; `None` when the peer closed the connection between frames.
    pub async fn next(&mut self, stream: &UnixStream) -> Result<Option<Message>, UpgradeError> {
        loop {
            if let Some(msg) = self.parse()? {
                return Ok(Some(msg));
            }
            let mut chunk = [0u8; 4096];
            let (n, flags, fds) = stream
                .async_io(Interest::READABLE, || {
                    let mut space =
                        [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_READ))];
                    let mut control = RecvAncillaryBuffer::new(&mut space);
                    let got = rustix::net::recvmsg(
                        stream,
                        &mut [IoSliceMut::new(&mut chunk)],
                        &mut control,
                        RecvFlags::CMSG_CLOEXEC,
                    )?;
                    let mut fds = Vec::new();
                    for m in control.drain() {
                        if let RecvAncillaryMessage::ScmRights(received) = m {
                            fds.extend(received);
                        }
                    }
                    Ok((got.bytes, got.flags, fds))
                })
                .await?;
            self.fds.extend(fds);
            if flags.contains(ReturnFlags::CTRUNC) {
                return Err(UpgradeError::Frame(
                    "more descriptors than one frame carries".into(),
                ));
            }
            if n == 0 {
                return match self.buf.is_empty() {
                    true => Ok(None),
                    false => Err(UpgradeError::Frame(
                        "the connection closed inside a frame".into(),
                    )),
                };
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The descriptor of the last `Listener` frame read.
    pub fn take_fd(&mut self) -> Option<OwnedFd> {
        self.fds.pop_front()
    }

    fn parse(&mut self) -> Result<Option<Message>, UpgradeError> {
        let Some(head) = self.buf.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*head) as usize;
        if len > MAX_FRAME {
            return Err(UpgradeError::Frame(format!(
                "frame of {len} bytes (at most {MAX_FRAME})"
            )));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let msg = serde_json::from_slice(&self.buf[4..4 + len])
            .map_err(|e| UpgradeError::Frame(e.to_string()));
        self.buf.drain(..4 + len);
        msg.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[tokio::test]
    async fn frames_and_descriptors_arrive_in_order() {
        let (a, b) = UnixStream::pair().unwrap();
        let sockets: Vec<std::net::TcpListener> = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        for s in &sockets {
            let addr = s.local_addr().unwrap();
            let msg = Message::Listener {
                owner: Owner::Service(format!("s{}", addr.port())),
                configured: addr,
                bound: addr,
            };
            send(&a, &msg, Some(s.as_fd())).await.unwrap();
        }
        send(&a, &Message::Done, None).await.unwrap();
        drop(a);
        let mut reader = Reader::default();
        for s in &sockets {
            let Some(Message::Listener { bound, .. }) = reader.next(&b).await.unwrap() else {
                panic!("a listener frame")
            };
            let got = std::net::TcpListener::from(reader.take_fd().unwrap());
            assert_eq!(got.local_addr().unwrap(), bound);
            assert_eq!(bound, s.local_addr().unwrap());
        }
        assert_eq!(reader.next(&b).await.unwrap(), Some(Message::Done));
        assert_eq!(reader.next(&b).await.unwrap(), None);
    }

    #[tokio::test]
    async fn oversized_and_truncated_frames_are_errors() {
        let (a, b) = UnixStream::pair().unwrap();
        a.try_write(&u32::MAX.to_be_bytes()).unwrap();
        let err = Reader::default().next(&b).await.unwrap_err();
        assert!(err.to_string().contains("frame of"), "{err}");

        let (a, b) = UnixStream::pair().unwrap();
        a.try_write(&[0, 0, 0, 9, b'{']).unwrap();
        drop(a);
        let err = Reader::default().next(&b).await.unwrap_err();
        assert!(err.to_string().contains("inside a frame"), "{err}");
    }
}
