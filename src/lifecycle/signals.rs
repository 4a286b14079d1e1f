//! The process signals sinew acts on.

/// What a signal asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: drain and exit.
    Stop,
    /// SIGHUP: reload the config.
    Reload,
    /// SIGUSR2: start a successor that takes the listening sockets over (binary upgrade).
    Upgrade,
}

/// The process signals sinew handles, installed together.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
}

/// A signal handler that could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("cannot install the {signal} handler: {source}")]
pub struct SignalError {
    /// The signal's name.
    signal: &'static str,
    /// The OS error.
    source: std::io::Error,
}

impl Signals {
    /// Installs the handlers of SIGTERM, SIGINT, SIGHUP and SIGUSR2.
    pub fn new() -> Result<Self, SignalError> {
        use tokio::signal::unix::{signal, SignalKind};
        let install = |kind, name| {
            signal(kind).map_err(|source| SignalError {
                signal: name,
                source,
            })
        };
        Ok(Self {
            term: install(SignalKind::terminate(), "SIGTERM")?,
            int: install(SignalKind::interrupt(), "SIGINT")?,
            hup: install(SignalKind::hangup(), "SIGHUP")?,
            usr2: install(SignalKind::user_defined2(), "SIGUSR2")?,
        })
    }

    /// The next signal, logged.
    pub async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => { tracing::info!("SIGTERM received"); Signal::Stop }
            _ = self.int.recv() => { tracing::info!("SIGINT received"); Signal::Stop }
            _ = self.hup.recv() => { tracing::info!("SIGHUP received: reloading"); Signal::Reload }
            _ = self.usr2.recv() => { tracing::info!("SIGUSR2 received: starting a successor"); Signal::Upgrade }
        }
    }

    /// Waits for SIGTERM or SIGINT.
    pub async fn stop(&mut self) {
        while self.next().await != Signal::Stop {}
    }
}
