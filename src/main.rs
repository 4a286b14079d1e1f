//! The `sinew` command line.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use sinew::agent::Agent;
use sinew::config::Config;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// mimalloc: fewer CPU cycles per request than the system allocator on the proxy's hot paths.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// sinew: service discovery and local load balancing (Nerve + Synapse + HAProxy in one binary).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter (tracing env-filter syntax), e.g. `info` or `sinew=debug`; RUST_LOG also works.
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// Where the config comes from: sinew's own file or an unmodified Synapse config.
#[derive(clap::Args)]
struct Source {
    /// sinew config file (YAML, or JSON when it ends in .json).
    #[arg(long, short, conflicts_with = "synapse_config")]
    config: Option<PathBuf>,
    /// Synapse config file (JSON, or YAML), translated into sinew's model.
    #[arg(long)]
    synapse_config: Option<PathBuf>,
    /// Nerve config file (nerve.conf.json): this host's services to check and register; alone or
    /// beside --config / --synapse-config.
    #[arg(long)]
    nerve_config: Option<PathBuf>,
}

impl Source {
    /// Loads the config; a Synapse config's warnings are logged once.
    fn load(&self) -> anyhow::Result<Config> {
        use sinew::config::synapse::Level;
        self.load_reporting(|w| match w.level {
            Level::Info => tracing::info!("{w}"),
            Level::Warn => tracing::warn!("{w}"),
            Level::Error => tracing::error!("{w}"),
        })
    }

    fn load_reporting(
        &self,
        mut warn: impl FnMut(&sinew::config::synapse::Warning),
    ) -> anyhow::Result<Config> {
        let mut config = match (&self.config, &self.synapse_config, &self.nerve_config) {
            (Some(path), _, _) => Config::load(path)?,
            (None, Some(path), _) => {
                let t = sinew::config::synapse::load(path)?;
                for w in &t.warnings {
                    warn(w);
                }
                t.config
            }
            (None, None, Some(_)) => Config::default(),
            (None, None, None) => {
                anyhow::bail!("give --config, --synapse-config or --nerve-config")
            }
        };
        if let Some(path) = &self.nerve_config {
            let t = sinew::config::nerve::load(path)?;
            for message in t.warnings {
                warn(&sinew::config::synapse::Warning {
                    level: sinew::config::synapse::Level::Warn,
                    message,
                });
            }
            config.register = Some(t.register);
            config.validate(path)?;
        }
        Ok(config)
    }

    fn path(&self) -> &std::path::Path {
        self.config
            .as_deref()
            .or(self.synapse_config.as_deref())
            .or(self.nerve_config.as_deref())
            .unwrap_or(std::path::Path::new("-"))
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent.
    Run {
        #[command(flatten)]
        source: Source,
        /// Take the listening sockets over from the sinew serving this upgrade socket (its
        /// admin.upgrade_socket); it stops accepting and drains once this one serves.
        #[arg(long, value_name = "PATH")]
        takeover: Option<PathBuf>,
    },
    /// Validate a config file and exit; for a Synapse config, print the native config it maps to.
    Check {
        #[command(flatten)]
        source: Source,
    },
    /// Show every service (or one, in detail) from a running sinew's admin API.
    Status {
        /// The admin server's address.
        #[arg(long, default_value = "127.0.0.1:3210")]
        admin: SocketAddr,
        /// Print the raw JSON of /api/services.
        #[arg(long)]
        json: bool,
        /// Show this service's backends.
        service: Option<String>,
    },
    /// Start three demo HTTP backends and sinew in front of them.
    Demo {
        /// Where the demo service listens.
        #[arg(long, default_value = "127.0.0.1:4000")]
        listen: SocketAddr,
        /// Where the admin server listens.
        #[arg(long, default_value = "127.0.0.1:3210")]
        admin: SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format, cli.log_level.as_deref());
    let result = match cli.command {
        Command::Check { source } => check(&source),
        Command::Run { source, takeover } => {
            // Before the runtime's threads start: this edits the environment.
            let activated = sinew::systemd::listen_fds();
            runtime().and_then(|rt| rt.block_on(run(source, takeover, activated)))
        }
        Command::Status {
            admin,
            json,
            service,
        } => runtime().and_then(|rt| rt.block_on(status(admin, json, service))),
        Command::Demo { listen, admin } => {
            runtime().and_then(|rt| rt.block_on(demo(listen, admin)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sinew: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    // A task woken by another waits its turn instead of running next: the requests read in one pass
    // of the scheduler reach their backends together (`.cargo/config.toml` sets `tokio_unstable`;
    // README, Performance).
    #[cfg(tokio_unstable)]
    builder.disable_lifo_slot();
    builder.build().context("cannot start the runtime")
}

fn check(source: &Source) -> anyhow::Result<()> {
    use sinew::config::synapse::Level;
    let config = source.load_reporting(|w| match w.level {
        Level::Info => eprintln!("note: {w}"),
        Level::Warn => eprintln!("warning: {w}"),
        Level::Error => eprintln!("error: {w}"),
    })?;
    if source.config.is_none() {
        print!("{}", sinew::config::synapse::to_yaml(&config)?);
    } else {
        println!(
            "{}: ok ({} services)",
            source.path().display(),
            config.services.len()
        );
    }
    Ok(())
}

async fn run(
    source: Source,
    takeover: Option<PathBuf>,
    activated: Vec<(std::os::fd::OwnedFd, Option<String>)>,
) -> anyhow::Result<()> {
    let config = source.load()?;
    match sinew::fdlimit::raise() {
        Ok((before, after)) if before < after => {
            tracing::info!(before, after, "open-file limit raised to the hard limit")
        }
        Ok((_, limit)) => tracing::debug!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let mut grace = config.shutdown_grace;
    let upgrade_socket = config.admin.upgrade_socket.clone();
    let took_over = takeover.is_some();
    let agent = match takeover {
        Some(path) => {
            if config.admin.upgrade_socket.is_none() {
                tracing::warn!(
                    "admin.upgrade_socket is not set: this process cannot be upgraded the same way"
                );
            }
            let (inherited, predecessor) = sinew::upgrade::take_over(&path).await?;
            let agent = Agent::start_with(config, inherited, true).await?;
            if let Err(e) = predecessor.ready().await {
                tracing::warn!(error = %e, "cannot tell the old process to stop accepting; both serve until it stops");
            }
            agent
        }
        None => {
            let mut inherited = sinew::upgrade::Inherited::default();
            for (fd, name) in activated {
                inherited.adopt(fd, name.as_deref())?;
            }
            if !inherited.is_empty() {
                tracing::info!(sockets = inherited.len(), "listening sockets from systemd");
            }
            Agent::start_with(config, inherited, false).await?
        }
    };
    // Parsing and validating the config peaks above what the running agent keeps: give it back.
    release_freed_memory();
    match sinew::systemd::ready(took_over) {
        Ok(true) => tracing::info!("systemd notified: ready"),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "cannot notify systemd"),
    }
    let mut requests = agent.take_reload_requests();
    let mut handover = agent.take_handover();
    let mut successor = None;
    let mut signals = Signals::new()?;
    let handed_over = loop {
        tokio::select! {
            stop = signals.next() => match stop {
                Signal::Stop => break false,
                Signal::Upgrade if successor.is_some() => {
                    tracing::warn!("SIGUSR2 ignored: a successor is already starting");
                }
                Signal::Upgrade => successor = start_successor(upgrade_socket.as_deref()),
                Signal::Reload => {
                    if let Ok((g, _)) = reload(&agent, &source).await {
                        grace = g;
                    }
                }
            },
            Some(reply) = recv(&mut requests) => {
                let outcome = reload(&agent, &source).await;
                if let Ok((g, _)) = &outcome {
                    grace = *g;
                }
                let _ = reply.send(outcome.map(|(_, summary)| summary));
            }
            () = handed(&mut handover) => break true,
            status = exited(&mut successor) => {
                tracing::error!(status = %status, "the successor exited before it took over; this process keeps serving");
            }
        }
    };
    if handed_over {
        agent.hand_over(grace).await;
    } else {
        agent.shutdown(grace).await;
    }
    Ok(())
}

/// Starts this binary again with `--takeover` (SIGUSR2), as a child so that it stays in this service.
fn start_successor(path: Option<&std::path::Path>) -> Option<tokio::process::Child> {
    let Some(path) = path else {
        tracing::warn!("SIGUSR2 ignored: admin.upgrade_socket is not set");
        return None;
    };
    let (program, args) = sinew::upgrade::successor::command(std::env::args_os(), path)?;
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
async fn exited(child: &mut Option<tokio::process::Child>) -> String {
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
async fn handed(rx: &mut Option<tokio::sync::oneshot::Receiver<()>>) {
    if let Some(r) = rx {
        if r.await.is_ok() {
            return;
        }
        // The upgrade socket is gone (stopping): a finished receiver must not be polled again.
        *rx = None;
    }
    std::future::pending().await
}

/// Re-reads the config file and applies it; a broken file or a failed bind keeps the running config.
async fn reload(agent: &Agent, source: &Source) -> Result<(std::time::Duration, String), String> {
    let loaded = source.load();
    // Parsing peaks at tens of times the file's size; give that back now rather than keep it.
    release_freed_memory();
    let config = match loaded {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "reload rejected; the running config stays");
            return Err(e.to_string());
        }
    };
    let grace = config.shutdown_grace;
    match agent.reload(config).await {
        Ok(summary) => Ok((grace, summary.to_string())),
        Err(e) => {
            tracing::error!(error = %e, "reload failed; the running config stays");
            Err(e.to_string())
        }
    }
}

unsafe extern "C" {
    /// mimalloc's collection: frees what threads left behind and returns free pages to the OS.
    fn mi_collect(force: bool);
}

/// Returns memory freed since the last collection to the OS: mimalloc otherwise returns it only as
/// later allocations pass by, which after a rejected reload may be never (17 MB grew to 127 MB).
fn release_freed_memory() {
    // SAFETY: mi_collect takes no pointers and may be called from any thread at any time; the global
    // allocator above is mimalloc, so the symbol is linked in.
    unsafe { mi_collect(true) }
}

async fn recv<T>(rx: &mut Option<tokio::sync::mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn status(admin: SocketAddr, json: bool, service: Option<String>) -> anyhow::Result<()> {
    let api = sinew::status::fetch(admin).await?;
    let registered = sinew::status::fetch_registered(admin).await?;
    let out = match (json, service) {
        (true, _) => serde_json::to_string_pretty(
            &serde_json::json!({"services": api.services, "registered": registered}),
        )?,
        (false, Some(name)) => sinew::status::detail(&api, &name)?,
        (false, None) => {
            let mut out = sinew::status::overview(&api);
            if let Some(list) = registered.filter(|l| !l.is_empty()) {
                out.push('\n');
                out.push_str(&sinew::status::registered(&list));
            }
            out
        }
    };
    println!("{}", out.trim_end());
    Ok(())
}

async fn demo(listen: SocketAddr, admin: SocketAddr) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let agent = sinew::demo::start(listen, admin, stop.clone()).await?;
    wait_for_signal().await?;
    agent.shutdown(std::time::Duration::from_secs(2)).await;
    stop.cancel();
    Ok(())
}

/// Waits for SIGTERM or SIGINT.
async fn wait_for_signal() -> anyhow::Result<()> {
    let mut signals = Signals::new()?;
    while signals.next().await != Signal::Stop {}
    Ok(())
}

/// What a signal asks for.
#[derive(PartialEq, Eq)]
enum Signal {
    /// SIGTERM or SIGINT: drain and exit.
    Stop,
    /// SIGHUP: reload the config.
    Reload,
    /// SIGUSR2: start a successor that takes the listening sockets over (binary upgrade).
    Upgrade,
}

/// The process signals sinew handles.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?,
            usr2: signal(SignalKind::user_defined2())
                .context("cannot install the SIGUSR2 handler")?,
        })
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => { tracing::info!("SIGTERM received"); Signal::Stop }
            _ = self.int.recv() => { tracing::info!("SIGINT received"); Signal::Stop }
            _ = self.hup.recv() => { tracing::info!("SIGHUP received: reloading"); Signal::Reload }
            _ = self.usr2.recv() => { tracing::info!("SIGUSR2 received: starting a successor"); Signal::Upgrade }
        }
    }
}

fn init_logs(format: LogFormat, level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(l) => EnvFilter::new(l),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
