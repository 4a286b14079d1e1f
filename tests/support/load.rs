//! A bounded load loop: a few client tasks repeat one request until told to stop, or until a count or
//! time limit, and count what succeeded, what failed, and which backend answered.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Pause between two requests of one client task, so a load leaves CPU to the system under test.
const PACE: Duration = Duration::from_millis(2);

/// What a load counted.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Requests that succeeded.
    pub ok: usize,
    /// Requests that failed.
    pub failed: usize,
    /// Successes per reply (the answering backend's name).
    pub replies: BTreeMap<String, usize>,
    /// The first few failures, for the assertion message.
    pub errors: Vec<String>,
    /// The load hit its count or time limit before it was stopped (so it did not cover the whole fault).
    pub exhausted: bool,
}

impl Tally {
    /// Successes answered by `reply`.
    pub fn from(&self, reply: &str) -> usize {
        self.replies.get(reply).copied().unwrap_or(0)
    }

    /// Asserts no failure, at least `min_ok` successes, and that the load ran until it was stopped.
    pub fn assert_clean(&self, min_ok: usize, what: &str) {
        assert_eq!(
            self.failed, 0,
            "{what}: failures {:?} ({self:?})",
            self.errors
        );
        assert!(self.ok >= min_ok, "{what}: only {} successes", self.ok);
        assert!(
            !self.exhausted,
            "{what}: the load ended before the fault did"
        );
    }
}

#[derive(Default)]
struct Counts {
    ok: AtomicUsize,
    failed: AtomicUsize,
    started: AtomicUsize,
    exhausted: AtomicBool,
    replies: Mutex<BTreeMap<String, usize>>,
    errors: Mutex<Vec<String>>,
}

/// A running load.
pub struct Load {
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `clients` tasks repeating `op` (which returns the reply or an error) until [`Load::finish`],
    /// `max_requests` in all, or `max_time`.
    pub fn start<F, Fut>(clients: usize, max_requests: usize, max_time: Duration, op: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, String>> + Send,
    {
        let (counts, stop) = (
            Arc::new(Counts::default()),
            Arc::new(AtomicBool::new(false)),
        );
        let op = Arc::new(op);
        let deadline = tokio::time::Instant::now() + max_time;
        let workers = (0..clients)
            .map(|_| {
                let (counts, stop, op) = (Arc::clone(&counts), Arc::clone(&stop), Arc::clone(&op));
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        if counts.started.fetch_add(1, Ordering::Relaxed) >= max_requests
                            || tokio::time::Instant::now() >= deadline
                        {
                            counts.exhausted.store(true, Ordering::Relaxed);
                            return;
                        }
                        match op().await {
                            Ok(reply) => {
                                counts.ok.fetch_add(1, Ordering::Relaxed);
                                *counts.replies.lock().unwrap().entry(reply).or_default() += 1;
                            }
                            Err(e) => {
                                counts.failed.fetch_add(1, Ordering::Relaxed);
                                let mut errors = counts.errors.lock().unwrap();
                                if errors.len() < 10 {
                                    errors.push(e);
                                }
                            }
                        }
                        tokio::time::sleep(PACE).await;
                    }
                })
            })
            .collect();
        Self {
            counts,
            stop,
            workers,
        }
    }

    /// The counts so far.
    pub fn tally(&self) -> Tally {
        let c = &self.counts;
        Tally {
            ok: c.ok.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            replies: c.replies.lock().unwrap().clone(),
            errors: c.errors.lock().unwrap().clone(),
            exhausted: c.exhausted.load(Ordering::Relaxed),
        }
    }

    /// Waits until `n` more requests have succeeded (or failed) than now; panics after `within`.
    pub async fn wait_for(&self, n: usize, within: Duration) {
        let count = |c: &Counts| c.ok.load(Ordering::Relaxed) + c.failed.load(Ordering::Relaxed);
        let target = count(&self.counts) + n;
        let deadline = tokio::time::Instant::now() + within;
        while count(&self.counts) < target {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the load made no progress: {:?}",
                self.tally()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the clients, waits for their last requests, and returns the counts.
    pub async fn finish(mut self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        for w in std::mem::take(&mut self.workers) {
            w.await.expect("load client");
        }
        self.tally()
    }
}

/// One HTTP/1.1 GET on a new connection (`Connection: close`): the body (trimmed) of a 200, else an error.
pub async fn http_get_once(addr: SocketAddr, path: &str) -> Result<String, String> {
    let exchange = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: chaos\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok::<_, String>(String::from_utf8_lossy(&buf).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "no answer within 10 s".to_string())??;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200") {
        Ok(body.trim().to_string())
    } else {
        Err(head.lines().next().unwrap_or("empty reply").to_string())
    }
}
