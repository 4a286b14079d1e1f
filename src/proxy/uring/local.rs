//! An engine on the calling thread's one-thread runtime: its loop is a task beside the connections'
//! tasks, so handing a connection over and answering its task wake no other thread, and the ring's
//! descriptor waits in tokio's epoll beside the sockets (readable when completions wait).

use super::engine::Loop;
use super::{Engine, Parts, Shared, Stopped, Wake};
use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Completions handled before the loop lets the thread's other tasks run.
const PASS_BUDGET: usize = 1024;

thread_local! {
    /// This thread's engine once started, or why it could not start.
    static LOCAL: RefCell<Option<Result<&'static Engine, (io::ErrorKind, String)>>> =
        const { RefCell::new(None) };
}

/// This thread's engine: started on first use, and again once the runtime whose task ran its loop
/// has ended. A refusal (no io_uring here) is kept and answered again; an engine whose ring failed is
/// kept too, stopped, so its connections take the copy loop.
pub(super) fn engine() -> io::Result<&'static Engine> {
    LOCAL.with(|local| {
        let mut local = local.borrow_mut();
        match &*local {
            Some(Ok(engine)) if engine.running() || engine.failed() => return Ok(*engine),
            Some(Err((kind, error))) => return Err(io::Error::new(*kind, error.clone())),
            _ => {}
        }
        // One handle per runtime that starts an engine on this thread (a process has one).
        let started = start().map(|engine| &*Box::leak(Box::new(engine)));
        *local = Some(match &started {
            Ok(engine) => Ok(*engine),
            Err(e) => Err((e.kind(), e.to_string())),
        });
        started
    })
}

/// Builds the ring (disabled until the loop's task enables it on the runtime's thread) and spawns the
/// loop on this thread's runtime.
fn start() -> io::Result<Engine> {
    let shared = Shared::new(Wake::Notify(tokio::sync::Notify::new()));
    let parts = Parts::build(false, &shared)?;
    let fd = RingFd(parts.ring.as_raw_fd());
    // SAFETY: the ring's descriptor stays open while `ready` lives: both go into one `Driver`, which
    // drops `ready` first.
    let ready = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
        .map_err(io::Error::from)?;
    let (flags, receives) = (parts.flags, parts.receives);
    // However the task ends, even unpolled, new connections stop coming and queued ones are answered.
    let stopped = Stopped(Arc::clone(&shared));
    tokio::spawn(drive(Driver {
        ready,
        parts,
        _stopped: stopped,
    }));
    Ok(Engine::started(shared, flags, receives, "runtime"))
}

/// The ring's descriptor, as tokio's epoll watches it.
struct RingFd(RawFd);

impl AsRawFd for RingFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// What the loop's task owns, dropped in this order: the descriptor out of epoll, then the ring, then
/// the engine marked stopped.
struct Driver {
    /// The ring's descriptor in tokio's epoll.
    ready: AsyncFd<RingFd>,
    /// The ring and its buffers.
    parts: Parts,
    /// Marks the engine stopped.
    _stopped: Stopped,
}

/// The loop as a task: each pass takes the tasks' commands, submits, and handles the completions
/// waiting; with nothing to do it waits for the ring's descriptor or a command. It ends if the ring
/// fails, or when the runtime drops it; either way every connection on it is ended (the loop's drop)
/// before the ring goes.
async fn drive(mut driver: Driver) {
    let shared = Arc::clone(&driver._stopped.0);
    let Wake::Notify(notify) = &shared.wake else {
        return;
    };
    let Parts {
        ring,
        bufs,
        receives,
        ..
    } = &mut driver.parts;
    // The submitting thread is this one, which the ring's `SINGLE_ISSUER` ties it to from here on.
    if let Err(error) = ring.submitter().register_enable_rings() {
        shared.failed.store(true, Ordering::SeqCst);
        tracing::error!(error = %error, "the io_uring engine could not start; io_uring services run the copy loop");
        return;
    }
    let mut lp = Loop::new(ring, bufs, *receives, Arc::clone(&shared));
    let mut completions = Vec::with_capacity(1024);
    let mut handled = 0;
    let error = loop {
        if shared.pending.load(Ordering::SeqCst) {
            lp.commands();
        }
        match lp.submit() {
            Ok(pushed) if pushed > 0 || lp.owes_enter() => {
                if let Err(e) = lp.enter(0) {
                    break e;
                }
            }
            Ok(_) => {}
            Err(e) => break e,
        }
        let n = lp.reap(&mut completions);
        if n > 0 {
            handled += n;
            if handled >= PASS_BUDGET {
                handled = 0;
                tokio::task::yield_now().await;
            }
            continue;
        }
        handled = 0;
        if lp.submitting() || lp.owes_enter() {
            // The kernel took nothing this pass (busy): the thread's other tasks run first.
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            biased;
            () = notify.notified() => {}
            readable = driver.ready.readable() => match readable {
                // Cleared before the next pass reaps: a completion after this marks it again.
                Ok(mut guard) => guard.clear_ready(),
                Err(e) => break e,
            },
        }
    };
    shared.failed.store(true, Ordering::SeqCst);
    tracing::error!(error = %error, "the io_uring engine stopped; io_uring services run the copy loop");
}
