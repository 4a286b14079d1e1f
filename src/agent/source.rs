//! Where an agent's config comes from: sinew's own file, an unmodified Synapse config, a Nerve config
//! beside either (or alone). A reload reads the same files again.

use crate::config::Config;
use crate::config::{Level, Warning};
use std::path::{Path, PathBuf};

/// The config files an agent is started from, read again on every reload.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// sinew's own config file (YAML, or JSON when it ends in .json).
    pub config: Option<PathBuf>,
    /// A Synapse config file, translated into sinew's model.
    pub synapse_config: Option<PathBuf>,
    /// A Nerve config file: this host's services to check and register.
    pub nerve_config: Option<PathBuf>,
}

/// Why a source could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// No file was given.
    #[error("give --config, --synapse-config or --nerve-config")]
    Empty,
    /// sinew's own file (or the config a Nerve file joins) is not valid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The Synapse config could not be translated.
    #[error(transparent)]
    Synapse(#[from] crate::config::synapse::SynapseError),
    /// The Nerve config could not be translated.
    #[error(transparent)]
    Nerve(#[from] crate::config::nerve::NerveError),
}

impl Source {
    /// Loads the config; a Synapse or Nerve config's warnings are logged.
    pub fn load(&self) -> Result<Config, SourceError> {
        self.load_reporting(|w| match w.level {
            Level::Info => tracing::info!("{w}"),
            Level::Warn => tracing::warn!("{w}"),
            Level::Error => tracing::error!("{w}"),
        })
    }

    /// Loads the config, handing each translation warning to `warn`.
    pub fn load_reporting(&self, mut warn: impl FnMut(&Warning)) -> Result<Config, SourceError> {
        let mut config = match (&self.config, &self.synapse_config, &self.nerve_config) {
            (Some(path), _, _) => Config::load(path)?,
            (None, Some(path), _) => {
                let t = crate::config::synapse::load(path)?;
                for w in &t.warnings {
                    warn(w);
                }
                t.config
            }
            (None, None, Some(_)) => Config::default(),
            (None, None, None) => return Err(SourceError::Empty),
        };
        if let Some(path) = &self.nerve_config {
            let t = crate::config::nerve::load(path)?;
            for message in t.warnings {
                warn(&Warning {
                    level: Level::Warn,
                    message,
                });
            }
            config.register = Some(t.register);
            config.validate(path)?;
        }
        Ok(config)
    }

    /// True when the config is sinew's own file (not translated from Synapse or Nerve).
    pub fn is_native(&self) -> bool {
        self.config.is_some()
    }

    /// The file that names the config in messages.
    pub fn path(&self) -> &Path {
        self.config
            .as_deref()
            .or(self.synapse_config.as_deref())
            .or(self.nerve_config.as_deref())
            .unwrap_or(Path::new("-"))
    }
}
