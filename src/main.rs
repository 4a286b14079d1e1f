//! The `sinew` command line.

use clap::{Parser, Subcommand, ValueEnum};
use sinew::endpoint::Endpoint;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// mimalloc: fewer CPU cycles per request than the system allocator on the proxy's hot paths.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Arena memory committed as it is used (`sinew::memory::commit_on_demand`), set from a constructor
/// that runs before the allocator's own (prioritised `.init_array` entries run before plain ones):
/// mimalloc reserves its first arena while it starts, before `main`.
#[used]
#[link_section = ".init_array.00100"]
static COMMIT_ON_DEMAND: extern "C" fn() = {
    extern "C" fn commit_on_demand() {
        sinew::memory::commit_on_demand();
    }
    commit_on_demand
};

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

/// Where the config comes from: sinew's own file, an unmodified Synapse config, a Nerve config, or
/// several of them together.
#[derive(clap::Args)]
struct Source {
    /// sinew config file (YAML, or JSON when it ends in .json); beside --synapse-config or
    /// --nerve-config it gives the agent's settings and may add services.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Synapse config file (JSON, or YAML), translated into sinew's model; alone or beside --config.
    #[arg(long)]
    synapse_config: Option<PathBuf>,
    /// Nerve config file (nerve.conf.json): this host's services to check and register; alone or
    /// beside --config / --synapse-config.
    #[arg(long)]
    nerve_config: Option<PathBuf>,
    /// The admin server's address (ip:port, [ipv6]:port or host:port), in place of the config's
    /// admin.listen.
    #[arg(long, value_name = "ADDR")]
    admin: Option<Endpoint>,
}

impl From<Source> for sinew::agent::Source {
    fn from(args: Source) -> Self {
        Self {
            config: args.config,
            synapse_config: args.synapse_config,
            nerve_config: args.nerve_config,
            admin: args.admin.map(|a| a.first()),
        }
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
        /// Fail when anything is ignored, unsupported or skipped (each is named on stderr); without
        /// it, only a skipped service fails the check.
        #[arg(long)]
        strict: bool,
    },
    /// Show every service (or one, in detail) from a running sinew's admin API.
    Status {
        /// The admin server's address (ip:port, [ipv6]:port or host:port).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:3210")]
        admin: Endpoint,
        /// Print the raw JSON of /api/services (with SERVICE: that service's entry only).
        #[arg(long)]
        json: bool,
        /// Show this service's backends (with --json: print only this service).
        service: Option<String>,
    },
    /// Print a shell completion script (e.g. `sinew completions bash > /etc/bash_completion.d/sinew`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `sinew man | man -l -`.
    Man {
        /// Write sinew.1 and one page per subcommand (sinew-run.1, ...) into this directory instead
        /// (created if missing).
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Show the log filter of a running sinew, or replace it (until its next restart).
    LogLevel {
        #[command(flatten)]
        admin: sinew::control::AdminArgs,
        /// The new filter (tracing env-filter syntax), e.g. `info,sinew::proxy=debug`.
        filter: Option<String>,
    },
    /// Reload a running sinew's config files (as SIGHUP does), or show what a reload would change.
    Reload {
        #[command(flatten)]
        admin: sinew::control::AdminArgs,
        /// Read and validate the files and print the difference from the running config; apply nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Drain, disable, enable or reweight one backend of a running sinew, or list the overrides.
    Backend(sinew::control::backend::BackendArgs),
    /// Start three demo HTTP backends and sinew in front of them.
    Demo {
        /// Where the demo service listens.
        #[arg(long, default_value = "127.0.0.1:4000")]
        listen: SocketAddr,
        /// Where the admin server listens (ip:port, [ipv6]:port or host:port).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:3210")]
        admin: Endpoint,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = matches!(cli.log_format, LogFormat::Json);
    if let Err(e) = init_logs(cli.log_format, cli.log_level.as_deref()) {
        eprintln!("sinew: {e}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Check { source, strict } => check(&source.into(), strict),
        Command::Run { source, takeover } => {
            let launch = sinew::lifecycle::Launch {
                source: source.into(),
                takeover,
                // Before the runtime's threads start: this edits the environment.
                activated: sinew::systemd::listen_fds(),
            };
            sinew::lifecycle::start(launch).map_err(anyhow::Error::from)
        }
        Command::Status {
            admin,
            json,
            service,
        } => runtime().and_then(|rt| rt.block_on(status(admin, json, service))),
        Command::Completions { shell } => completions(shell),
        Command::Man { out_dir } => man(out_dir),
        Command::LogLevel { admin, filter } => runtime().and_then(|rt| {
            let (method, body) = match filter {
                Some(f) => (hyper::Method::PUT, Some(f)),
                None => (hyper::Method::GET, None),
            };
            rt.block_on(control(&admin, method, "/api/log-level", body))
        }),
        Command::Reload { admin, dry_run } => runtime().and_then(|rt| {
            let path = if dry_run {
                "/api/reload?dry_run=true"
            } else {
                "/api/reload"
            };
            rt.block_on(control(&admin, hyper::Method::POST, path, None))
        }),
        Command::Backend(args) => runtime()
            .and_then(|rt| Ok(rt.block_on(sinew::control::backend::run(args))?))
            .map(|out| print!("{out}")),
        Command::Demo { listen, admin } => {
            runtime().and_then(|rt| rt.block_on(demo(listen, admin.first())))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A shipper reading JSON lines gets the reason as one too.
        Err(e) if json => {
            tracing::error!(error = format!("{e:#}"), "sinew exits");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("sinew: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(sinew::lifecycle::runtime(None)?)
}

fn check(source: &sinew::agent::Source, strict: bool) -> anyhow::Result<()> {
    use sinew::config::Level;
    let config = sinew::agent::check(source, strict, |w| match w.level {
        Level::Info => eprintln!("note: {w}"),
        Level::Warn => eprintln!("warning: {w}"),
        Level::Error => eprintln!("error: {w}"),
    })?;
    if source.synapse_config.is_some() {
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

async fn status(admin: Endpoint, json: bool, service: Option<String>) -> anyhow::Result<()> {
    let admin = admin.reachable().await;
    let api = sinew::status::fetch(admin).await?;
    let registered = sinew::status::fetch_registered(admin).await?;
    let out = match (json, service) {
        (true, service) => sinew::status::json(api, registered, service.as_deref())?,
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
    Ok(sinew::status::print(out.trim_end())?)
}

/// One admin API request for `sinew log-level` and `sinew reload`: its answer printed.
async fn control(
    admin: &sinew::control::AdminArgs,
    method: hyper::Method,
    path: &str,
    body: Option<String>,
) -> anyhow::Result<()> {
    let answer = sinew::control::call(admin, method, path, body).await?;
    println!("{}", answer.trim_end());
    Ok(())
}

async fn demo(listen: SocketAddr, admin: SocketAddr) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let agent = sinew::demo::start(listen, admin, stop.clone()).await?;
    sinew::lifecycle::Signals::new()?.stop().await;
    agent.shutdown(std::time::Duration::from_secs(2)).await;
    stop.cancel();
    Ok(())
}

/// Writes `shell`'s completion script for every subcommand and flag to stdout.
fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    use clap::CommandFactory;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "sinew", &mut script);
    print_quietly(&script)
}

/// Writes the man page to stdout, or every page (one per subcommand too) into `out_dir`.
fn man(out_dir: Option<PathBuf>) -> anyhow::Result<()> {
    use anyhow::Context;
    use clap::CommandFactory;
    let command = Cli::command();
    match out_dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command).render(&mut page)?;
            print_quietly(&page)
        }
        Some(dir) => std::fs::create_dir_all(&dir)
            .and_then(|()| clap_mangen::generate_to(command, &dir))
            .with_context(|| format!("writing man pages into {}", dir.display())),
    }
}

/// Installs the log subscriber; a `--log-level` or `RUST_LOG` that does not parse is an error.
fn init_logs(format: LogFormat, level: Option<&str>) -> anyhow::Result<()> {
    use sinew::log_level::parse;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    // The operator's filter is checked alone, so an error quotes only what they wrote; the default
    // directives are added after.
    let checked = |spec: &str, from: &str| -> anyhow::Result<_> {
        parse(spec).map_err(|e| anyhow::anyhow!("{from}: {e}"))?;
        Ok(parse(&sinew::logging::with_defaults(spec))?)
    };
    let filter = match (level, std::env::var("RUST_LOG")) {
        (Some(l), _) => checked(l, "--log-level")?,
        (None, Ok(env)) if !env.trim().is_empty() => checked(&env, "RUST_LOG")?,
        (None, _) => checked("info", "the default filter")?,
    };
    // The filter is reloadable: `PUT /api/log-level` replaces it while sinew runs.
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    sinew::log_level::install(handle);
    // Colour codes only for a person at a terminal, never into a file or a journal.
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => sinew::logging::json_layer(std::io::stderr).boxed(),
    };
    tracing_subscriber::registry().with(filter).with(fmt).init();
    Ok(())
}

/// Writes `bytes` to stdout; a reader that closed the pipe early (`| head`) is not an error.
fn print_quietly(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
