//! The process around an agent: start it from its config files (taking sockets over from a
//! predecessor or systemd), tell systemd it is ready, then act on signals until it stops: SIGHUP
//! reloads, SIGUSR2 starts a successor (binary upgrade), SIGTERM/SIGINT drain and exit, and a successor
//! that took the sockets over makes this process hand over and exit.

mod signals;

pub use signals::{Signal, SignalError, Signals};

use crate::agent::{Agent, AgentError, Source, SourceError};
use crate::upgrade::{Inherited, UpgradeError};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use tokio::process::Child;
use tokio::sync::oneshot;

/// Why the process could not start.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The config files could not be loaded.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The agent could not start.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// The sockets of the predecessor or of systemd could not be taken.
    #[error(transparent)]
    Upgrade(#[from] UpgradeError),
    /// The signal handlers could not be installed.
    #[error(transparent)]
    Signals(#[from] SignalError),
    /// The async runtime could not be built.
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// How the process is started.
pub struct Launch {
    /// The config files.
    pub source: Source,
    /// The upgrade socket of the process this one replaces (`--takeover`).
    pub takeover: Option<PathBuf>,
    /// Listening sockets passed by systemd, with their names.
    pub activated: Vec<(OwnedFd, Option<String>)>,
}

/// Builds the runtime with `threads` workers (default: the CPUs the process may run on): one thread
/// runs everything on the thread that starts it (tokio's current-thread scheduler, without the
/// work-stealing machinery one worker has no use for), more run tokio's multi-threaded scheduler.
pub fn runtime(
    threads: Option<std::num::NonZeroUsize>,
) -> Result<tokio::runtime::Runtime, LifecycleError> {
    // Unset, tokio reads `TOKIO_WORKER_THREADS`, else takes the CPUs the process may run on.
    let from_env = || {
        std::env::var("TOKIO_WORKER_THREADS")
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let workers = threads
        .or_else(from_env)
        .or_else(|| std::thread::available_parallelism().ok())
        .map_or(1, std::num::NonZeroUsize::get);
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut multi = tokio::runtime::Builder::new_multi_thread();
        if let Some(n) = threads {
            multi.worker_threads(n.get());
        }
        multi
    };
    builder.enable_all();
    builder.build().map_err(LifecycleError::Runtime)
}

/// Loads the config, builds the runtime its `threads` asks for, and runs sinew on it until it is
/// stopped or hands over to a successor.
pub fn start(launch: Launch) -> Result<(), LifecycleError> {
    let config = launch.source.load()?;
    let runtime = runtime(config.threads)?;
    tracing::info!(
        threads = runtime.metrics().num_workers(),
        configured = config.threads.is_some(),
        "runtime worker threads"
    );
    runtime.block_on(run(launch, config))
}

/// Runs sinew from `config` (loaded from `launch.source`) until it is stopped or hands over to a
/// successor.
pub async fn run(launch: Launch, config: crate::config::Config) -> Result<(), LifecycleError> {
    match crate::fdlimit::raise() {
        Ok((before, after)) if before < after => {
            tracing::info!(before, after, "open-file limit raised to the hard limit")
        }
        Ok((_, limit)) => tracing::debug!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let upgrade_socket = config.admin.upgrade_socket.clone();
    let took_over = launch.takeover.is_some();
    let source = Some(launch.source);
    let agent = match launch.takeover {
        Some(path) => {
            if config.admin.upgrade_socket.is_none() {
                tracing::warn!(
                    "admin.upgrade_socket is not set: this process cannot be upgraded the same way"
                );
            }
            let (inherited, predecessor) = crate::upgrade::take_over(&path).await?;
            let agent = Agent::start_with(config, source, inherited, true).await?;
            if let Err(e) = predecessor.ready().await {
                tracing::warn!(error = %e, "cannot tell the old process to stop accepting; both serve until it stops");
            }
            agent
        }
        None => {
            let mut inherited = Inherited::default();
            for (fd, name) in launch.activated {
                inherited.adopt(fd, name.as_deref())?;
            }
            if !inherited.is_empty() {
                tracing::info!(sockets = inherited.len(), "listening sockets from systemd");
            }
            Agent::start_with(config, source, inherited, false).await?
        }
    };
    // Parsing and validating the config peaks above what the running agent keeps: give it back.
    crate::memory::release_freed();
    match crate::systemd::ready(took_over) {
        Ok(true) => tracing::info!("systemd notified: ready"),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "cannot notify systemd"),
    }
    let handed_over = act_on_signals(&agent, upgrade_socket.as_deref()).await?;
    let grace = agent.grace();
    if handed_over {
        agent.hand_over(grace).await;
    } else {
        agent.shutdown(grace).await;
    }
    Ok(())
}

/// Acts on signals until the agent is to stop; true when a successor took the sockets over.
async fn act_on_signals(
    agent: &Agent,
    upgrade_socket: Option<&Path>,
) -> Result<bool, LifecycleError> {
    let mut handover = agent.take_handover();
    let mut successor = None;
    let mut signals = Signals::new()?;
    loop {
        tokio::select! {
            signal = signals.next() => match signal {
                Signal::Stop => return Ok(false),
                Signal::Upgrade if successor.is_some() => {
                    tracing::warn!("SIGUSR2 ignored: a successor is already starting");
                }
                Signal::Upgrade => successor = start_successor(upgrade_socket),
                // A failed reload is logged by the agent; the running config stays.
                Signal::Reload => drop(agent.reload().await),
            },
            () = handed(&mut handover) => return Ok(true),
            status = exited(&mut successor) => {
                tracing::error!(status = %status, "the successor exited before it took over; this process keeps serving");
            }
        }
    }
}

/// Starts this binary again with `--takeover` (SIGUSR2), as a child so that it stays in this service.
fn start_successor(path: Option<&Path>) -> Option<Child> {
    let Some(path) = path else {
        tracing::warn!("SIGUSR2 ignored: admin.upgrade_socket is not set");
        return None;
    };
    let (program, args) = crate::upgrade::successor::command(std::env::args_os(), path)?;
    match tokio::process::Command::new(&program)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .spawn()
    {
        Ok(child) => {
            tracing::info!(pid = child.id(), program = %program.to_string_lossy(), "successor started");
            Some(child)
        }
        Err(e) => {
            tracing::error!(program = %program.to_string_lossy(), error = %e, "cannot start the successor");
            None
        }
    }
}

/// Resolves with the successor's exit status if it ends; never without one.
async fn exited(child: &mut Option<Child>) -> String {
    let Some(c) = child else {
        return std::future::pending().await;
    };
    let status = c.wait().await;
    *child = None;
    match status {
        Ok(s) => s.to_string(),
        Err(e) => e.to_string(),
    }
}

/// Resolves when a successor took the listening sockets over; never without an upgrade socket.
async fn handed(rx: &mut Option<oneshot::Receiver<()>>) {
    if let Some(r) = rx {
        if r.await.is_ok() {
            return;
        }
        // The upgrade socket is gone (stopping): a finished receiver must not be polled again.
        *rx = None;
    }
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroUsize;

    #[test]
    fn the_runtime_has_the_workers_threads_asks_for() {
        use tokio::runtime::RuntimeFlavor::{CurrentThread, MultiThread};
        for (n, flavor) in [(1, CurrentThread), (3, MultiThread)] {
            let rt = runtime(NonZeroUsize::new(n)).unwrap();
            assert_eq!(rt.metrics().num_workers(), n);
            assert_eq!(rt.handle().runtime_flavor(), flavor, "{n} threads");
        }
        let cpus = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        assert_eq!(runtime(None).unwrap().metrics().num_workers(), cpus);
    }
}
