//! The io_uring copy engine (`tcp_fastpath: io_uring`): once a TCP connection's backend is connected,
//! its task hands both sockets to an engine that runs one ring and moves their bytes with receives into
//! provided buffers and sends straight from them, each loop pass submitting what the last one's
//! completions asked for. On a one-thread runtime the engine is a task on that thread (`local`: no
//! hand-over between threads, the ring's descriptor waits in tokio's epoll beside the sockets); on a
//! runtime of several threads it is one thread of its own for the process, which waits for the next
//! completions in the same `io_uring_enter` that submits. Everything before (accept, admission, pick,
//! queue, connect and retries, PROXY header, first bytes) and around (idle timeout, shutdown, drain,
//! metrics, connection log) stays with the connection's task on tokio, which waits for the engine's
//! answer and cancels the copy when the connection must end early.
//!
//! The ring is built on first use. Where the kernel or its settings refuse io_uring, the services that
//! asked for it run the copy loop instead, said once in the log and by the `sinew_tcp_fastpath` gauge.

mod bufring;
mod engine;
mod local;
mod metrics;
mod recv;
mod ring;
mod socket;

pub use bufring::{BufRing, GROUP};
pub use metrics::EngineMetrics;
pub use ring::build as build_ring;
pub use socket::{NothingSent, RingStream};

use super::io::Activity;
use crate::metrics::backend::Counter;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Submission entries of the engine's ring.
const ENTRIES: u32 = 4096;
/// Provided buffers at most (a power of two): a direction moving bytes holds at most two; past these,
/// receives take buffers of their own.
const BUFFERS: u16 = 512;
/// Buffers provided at start, and added each time a receive finds none left.
const BUFFERS_STEP: u16 = 32;
/// Bytes per provided buffer, as the copy loop's: 16 MiB for the whole ring, held only as far as it has
/// grown.
const BUFFER_SIZE: usize = 32 * 1024;

/// The process's engine thread, started on first use by a runtime of several threads.
static ENGINE: OnceLock<io::Result<Engine>> = OnceLock::new();

/// What every engine started reports, for `/metrics`.
static STARTED: Mutex<Vec<Arc<Shared>>> = Mutex::new(Vec::new());

/// The engine for connections of the calling task, started on first use, or why it could not start:
/// on a one-thread runtime, that thread's own engine (started again if the runtime it ran on ended);
/// elsewhere the process's engine thread.
pub fn engine() -> io::Result<&'static Engine> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::CurrentThread) {
        return local::engine();
    }
    match ENGINE.get_or_init(Engine::start) {
        Ok(engine) => Ok(engine),
        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
    }
}

/// The engine a service's sockets go on, if it asked for io_uring (`fastpath`) and this thread's
/// engine runs on its runtime (`threads: 1`); else they stay on tokio's reactor.
pub fn local_for(fastpath: crate::config::TcpFastpath) -> Option<&'static Engine> {
    if fastpath != crate::config::TcpFastpath::IoUring {
        return None;
    }
    engine().ok().filter(|e| e.running() && e.is_local())
}

/// A connection handed to the engine: its sockets, what it reports to, and where its end is told.
struct Start {
    /// The task's name for the connection, for cancels.
    key: u64,
    /// The client's and the backend's socket.
    fds: [OwnedFd; 2],
    /// Bytes moved, shared with the task.
    progress: Arc<Progress>,
    /// The connection's end: `Ok` once both directions reached their end, else the errno that ended it.
    done: oneshot::Sender<Result<(), i32>>,
}

/// What a task asks of the engine.
enum Command {
    /// Copy both ways between these sockets until both ends are done.
    Start(Box<Start>),
    /// End the copy of this key now (the task is gone: timeout or shutdown).
    Cancel(u64),
    /// Take this stream socket over (a `RingStream`'s).
    Open(Box<engine::Stream>),
    /// Look at the stream socket of this key: its handle wrote, read, or went.
    Kick(u64),
}

/// How tasks wake an engine's loop for the commands they queued.
enum Wake {
    /// An eventfd the ring reads (the engine thread waits in `io_uring_enter`).
    Eventfd(OwnedFd),
    /// The engine task's wake-up (the engine runs on the tasks' own thread).
    Notify(tokio::sync::Notify),
}

/// What the tasks and the engine's loop share.
struct Shared {
    /// Commands not yet taken.
    queue: Mutex<Vec<Command>>,
    /// Woken when the queue goes from untaken to having commands.
    wake: Wake,
    /// Commands are waiting and the descriptor was written for them.
    pending: AtomicBool,
    /// The loop ended (its ring failed, or the runtime it ran on): connections run the copy loop
    /// instead.
    stopped: AtomicBool,
    /// The loop ended because its ring failed (not because its runtime did): not started again.
    failed: AtomicBool,
    /// What the loop reports: connections, buffers provided, own buffers taken.
    stats: metrics::Stats,
}

impl Shared {
    /// Nothing queued yet, woken by `wake`.
    fn new(wake: Wake) -> Arc<Shared> {
        Arc::new(Shared {
            queue: Mutex::new(Vec::new()),
            wake,
            pending: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            stats: metrics::Stats::default(),
        })
    }

    /// The queue (a panic elsewhere while holding it cannot leave it inconsistent: pushes and takes
    /// only).
    fn lock(&self) -> MutexGuard<'_, Vec<Command>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What an engine's loop runs on, built on the thread that will submit to the ring (its setup flags
/// tie the ring to that thread).
struct Parts {
    /// The provided buffers, registered with `ring`. Never freed: the kernel may write into them
    /// until the ring is torn down, which closing its descriptor does not wait for.
    bufs: std::mem::ManuallyDrop<BufRing>,
    /// The ring.
    ring: io_uring::IoUring,
    /// The ring's setup flags.
    flags: &'static str,
    /// How receives are issued.
    receives: recv::Receives,
}

impl Parts {
    /// Builds the buffers and the ring: for the engine thread (`DEFER_TASKRUN`) on that thread, or for
    /// a runtime's thread disabled until that thread enables it; counts the buffers into `shared`.
    fn build(for_thread: bool, shared: &Shared) -> io::Result<Parts> {
        let mut bufs = BufRing::new(BUFFERS, BUFFER_SIZE, BUFFERS_STEP)?;
        let (ring, flags) = if for_thread {
            build_ring(ENTRIES, true)?
        } else {
            ring::build_disabled(ENTRIES)?
        };
        bufs.register(&ring)?;
        let provided = u64::from(bufs.provided());
        shared.stats.buffers.store(provided, Ordering::Relaxed);
        Ok(Parts {
            bufs: std::mem::ManuallyDrop::new(bufs),
            ring,
            flags,
            receives: recv::probe(),
        })
    }
}

/// Marks the engine stopped when its thread ends (however it ends), and drops what is queued.
struct Stopped(Arc<Shared>);

impl Drop for Stopped {
    fn drop(&mut self) {
        self.0.stopped.store(true, Ordering::SeqCst);
        drop(std::mem::take(&mut *self.0.lock()));
    }
}

/// The handle tasks use to hand connections to the engine's thread.
pub struct Engine {
    /// The queue and wake-up descriptor.
    shared: Arc<Shared>,
    /// Keys of connections handed over.
    next_key: AtomicU64,
}

impl Engine {
    /// Builds the ring and buffers and starts the loop on its own thread.
    fn start() -> io::Result<Engine> {
        let wake = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC)?;
        let shared = Shared::new(Wake::Eventfd(wake));
        let (ready, started) = std::sync::mpsc::channel();
        let theirs = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("sinew-uring".into())
            .spawn(move || {
                let Parts {
                    mut bufs,
                    ring,
                    flags,
                    receives,
                } = match Parts::build(true, &theirs) {
                    Ok(parts) => parts,
                    Err(e) => return drop(ready.send(Err(e))),
                };
                let _ = ready.send(Ok((flags, receives)));
                // However the loop ends, new connections stop coming and queued ones are answered.
                let _stopped = Stopped(Arc::clone(&theirs));
                let error = engine::Loop::new(&ring, &mut bufs, receives, Arc::clone(&theirs)).run();
                theirs.failed.store(true, Ordering::SeqCst);
                tracing::error!(error = %error, "the io_uring engine stopped; io_uring services run the copy loop");
            })?;
        let (flags, receives) = started.recv().map_err(|_| {
            io::Error::other("the io_uring thread ended before its ring was built")
        })??;
        Ok(Engine::started(shared, flags, receives, "thread"))
    }

    /// The handle of an engine whose loop runs, said in the log and counted in `/metrics`.
    fn started(
        shared: Arc<Shared>,
        flags: &'static str,
        receives: recv::Receives,
        runs_on: &'static str,
    ) -> Engine {
        tracing::info!(
            flags,
            receives = receives.name(),
            runs_on,
            buffers = BUFFERS,
            buffer_size = BUFFER_SIZE,
            "io_uring engine started"
        );
        let mut engines = STARTED.lock().unwrap_or_else(|e| e.into_inner());
        metrics::prune(&mut engines);
        engines.push(Arc::clone(&shared));
        drop(engines);
        Engine {
            shared,
            next_key: AtomicU64::new(0),
        }
    }

    /// False once the loop has ended: new connections take the copy loop.
    pub fn running(&self) -> bool {
        !self.shared.stopped.load(Ordering::SeqCst)
    }

    /// True if the loop ended because its ring failed.
    fn failed(&self) -> bool {
        self.shared.failed.load(Ordering::SeqCst)
    }

    /// A key not given out before.
    fn key(&self) -> u64 {
        self.next_key.fetch_add(1, Ordering::Relaxed)
    }

    /// True when the engine runs on the calling task's thread, as a task of its runtime.
    pub fn is_local(&self) -> bool {
        matches!(self.shared.wake, Wake::Notify(_))
    }

    /// Queues a command and wakes the loop if it is not woken already. Once the loop has ended, the
    /// command is dropped instead: a copy is answered with an error and its sockets closed.
    fn send(&self, command: Command) {
        self.shared.lock().push(command);
        if self.shared.stopped.load(Ordering::SeqCst) {
            drop(std::mem::take(&mut *self.shared.lock()));
            return;
        }
        if !self.shared.pending.swap(true, Ordering::SeqCst) {
            match &self.shared.wake {
                // The counter cannot overflow here: the loop reads it back to zero on every wake.
                Wake::Eventfd(fd) => drop(rustix::io::write(fd, &1u64.to_ne_bytes())),
                Wake::Notify(notify) => notify.notify_one(),
            }
        }
    }

    /// Copies both ways between `client` and `backend` until both directions reached their end (a
    /// half-close is passed on), then closes both; `progress` counts the bytes as they move. Dropping
    /// the future ends the copy and closes the sockets.
    pub async fn copy(
        &self,
        client: OwnedFd,
        backend: OwnedFd,
        progress: Arc<Progress>,
    ) -> io::Result<()> {
        let key = self.key();
        let (done, answer) = oneshot::channel();
        self.send(Command::Start(Box::new(Start {
            key,
            fds: [client, backend],
            progress,
            done,
        })));
        let mut cancel = CancelOnDrop {
            engine: self,
            key: Some(key),
        };
        let answer = answer.await;
        cancel.key = None;
        match answer {
            Ok(Ok(())) => Ok(()),
            Ok(Err(errno)) => Err(io::Error::from_raw_os_error(errno)),
            Err(_) => Err(io::Error::other("the io_uring engine stopped")),
        }
    }
}

/// Cancels a copy whose task stopped waiting for it.
struct CancelOnDrop<'e> {
    /// The engine.
    engine: &'e Engine,
    /// The copy's key, until it has answered.
    key: Option<u64>,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.engine.send(Command::Cancel(key));
        }
    }
}

/// Bytes a connection on the engine has moved, and when it last moved any.
pub struct Progress {
    /// Marked on every receive and send.
    activity: Arc<Activity>,
    /// Bytes received from the client and from the backend.
    copied: [AtomicU64; 2],
    /// Metrics the bytes from each side count into.
    counters: [Option<Arc<Counter>>; 2],
}

impl Progress {
    /// Counts into `from_client` and `from_backend`, marking `activity`.
    pub fn new(
        activity: Arc<Activity>,
        from_client: Option<Arc<Counter>>,
        from_backend: Option<Arc<Counter>>,
    ) -> Arc<Self> {
        Arc::new(Progress {
            activity,
            copied: [AtomicU64::new(0), AtomicU64::new(0)],
            counters: [from_client, from_backend],
        })
    }

    /// Bytes received from the client so far.
    pub fn from_client(&self) -> u64 {
        self.copied[0].load(Ordering::Relaxed)
    }

    /// Bytes received from the backend so far.
    pub fn from_backend(&self) -> u64 {
        self.copied[1].load(Ordering::Relaxed)
    }

    /// `n` bytes arrived from side `side` (0 the client, 1 the backend) at `now`.
    fn received(&self, side: usize, n: u64, now: Instant) {
        self.copied[side].fetch_add(n, Ordering::Relaxed);
        if let Some(c) = &self.counters[side] {
            c.inc_by(n);
        }
        self.activity.touch_at(now);
    }

    /// Bytes moved at `now`.
    fn touch(&self, now: Instant) {
        self.activity.touch_at(now);
    }
}

#[cfg(test)]
mod tests;
