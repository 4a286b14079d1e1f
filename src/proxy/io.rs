//! Byte counting and idle tracking for proxied streams.

use crate::metrics::backend::Counter;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// When a connection last moved a byte, in milliseconds since it opened.
pub struct Activity {
    opened: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    /// Starts tracking now.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        self.touch_at(Instant::now());
    }

    /// Marks the connection active at `now` (read once by a caller marking many).
    pub fn touch_at(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.opened).as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once no byte has moved for `idle`.
    pub async fn idle(&self, idle: Duration) {
        loop {
            let last = self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A stream whose reads are counted into a metric, and whose reads and writes mark the connection active.
pub struct Metered<S> {
    inner: S,
    read_bytes: Option<Arc<Counter>>,
    activity: Arc<Activity>,
    read: u64,
}

impl<S> Metered<S> {
    /// Wraps `inner`, counting bytes read from it into `read_bytes` when given.
    pub fn new(inner: S, read_bytes: Option<Arc<Counter>>, activity: Arc<Activity>) -> Self {
        Self {
            inner,
            read_bytes,
            activity,
            read: 0,
        }
    }

    /// Bytes read from the stream so far.
    pub fn read(&self) -> u64 {
        self.read
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.read += n as u64;
            if let Some(c) = &this.read_bytes {
                c.inc_by(n as u64);
            }
            this.activity.touch();
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A stream that can wait for bytes to read without a buffer to read them into, so a connection waiting
/// between requests holds no read buffer.
pub trait WaitReadable {
    /// Ready once a read would not wait (bytes, EOF or an error), or at once when the stream cannot
    /// tell; it may be ready with nothing to read, like any readiness.
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl WaitReadable for TcpStream {
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_read_ready(cx)
    }
}

/// A TLS session may hold decrypted bytes, or records already read, that the socket's readiness does
/// not show: it reads into a buffer as it always did.
impl<S> WaitReadable for tokio_rustls::server::TlsStream<S> {
    fn poll_readable(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl<S: WaitReadable> WaitReadable for Metered<S> {
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_readable(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_fires_only_after_quiet_period() {
        let a = Activity::new();
        let watch = {
            let a = Arc::clone(&a);
            tokio::spawn(async move { a.idle(Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_secs(6)).await;
        a.touch();
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(
            !watch.is_finished(),
            "activity at 6s must push the deadline to 16s"
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(watch.is_finished());
    }
}
