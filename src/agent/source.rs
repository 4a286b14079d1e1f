//! Where an agent's config comes from: sinew's own file, an unmodified Synapse config and a Nerve
//! config, alone or together (the native file then gives the agent's settings). A reload reads the same
//! files again.

use crate::config::layers::{self, Layer};
use crate::config::Config;
use crate::config::{Level, Warning};
use std::net::SocketAddr;
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
    /// The admin server's address, in place of the config's `admin.listen` (`--admin`).
    pub admin: Option<SocketAddr>,
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
    /// The files cannot be combined: both define the same service, address or setting.
    #[error(transparent)]
    Layers(#[from] crate::config::layers::LayerError),
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

    /// Loads the config, handing each translation warning to `warn`: every file given, each validated
    /// on its own, then merged (see [`crate::config::layers`]) and validated as a whole.
    pub fn load_reporting(&self, mut warn: impl FnMut(&Warning)) -> Result<Config, SourceError> {
        let (native, synapse, nerve) = (&self.config, &self.synapse_config, &self.nerve_config);
        if native.is_none() && synapse.is_none() && nerve.is_none() {
            return Err(SourceError::Empty);
        }
        let mut base = match native {
            Some(path) => Layer {
                file: path,
                config: Config::load(path)?,
            },
            None => Layer {
                file: self.path(),
                config: Config::default(),
            },
        };
        if let Some(path) = synapse {
            let t = crate::config::synapse::load(path)?;
            for w in &t.warnings {
                warn(w);
            }
            match native {
                Some(_) => layers::merge(
                    &mut base,
                    Layer {
                        file: path,
                        config: t.config,
                    },
                )?,
                None => base.config = t.config,
            }
        }
        if let Some(path) = nerve {
            let t = crate::config::nerve::load(path)?;
            for w in &t.warnings {
                warn(w);
            }
            layers::merge_register(&mut base, path, t.register)?;
        }
        let mut config = base.config;
        if let Some(addr) = self.admin {
            config.admin.listen = addr;
        }
        config.validate(self.path())?;
        Ok(config)
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
