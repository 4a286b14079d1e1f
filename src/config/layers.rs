//! Layering config files: sinew's own file beside a Synapse config and/or a Nerve config, merged into
//! one [`Config`].
//!
//! The native file gives the agent's settings (admin, shutdown grace, state and output files) and may
//! add services of its own; the Synapse file's services run beside them; the Nerve file gives the
//! registration. Nothing is overridden silently: a service or HTTP frontend name or a listen address
//! that two files define, or a top-level setting (`state_file`, `file_output`, `register`, `threads`) that two files give, is an
//! error naming both files, so the operator decides which file keeps it.

use super::{addr, register::Register, Config};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Why the files cannot be combined.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// A service (or HTTP frontend) of the same name in two files.
    #[error("{name} is defined in {} and in {}; remove it from one", first.display(), second.display())]
    Service {
        /// `services.NAME` or `http_frontends.NAME`.
        name: String,
        /// The file read first (the native one).
        first: PathBuf,
        /// The other file.
        second: PathBuf,
    },
    /// Two listeners of two files on the same address (or overlapping ones).
    #[error("{second} overlaps {first}; give one of them another port")]
    Address {
        /// The listener of the first file: `ADDR of OWNER in FILE`.
        first: String,
        /// The listener of the second file, likewise.
        second: String,
    },
    /// A top-level setting given by two files.
    #[error("`{setting}` is given by {} and by {}; keep it in one of them", first.display(), second.display())]
    Setting {
        /// The native name of the setting.
        setting: &'static str,
        /// The native file.
        first: PathBuf,
        /// The other file.
        second: PathBuf,
    },
}

/// A config read from one file, with the file it came from.
#[derive(Debug)]
pub struct Layer<'a> {
    /// The file.
    pub file: &'a Path,
    /// What it holds, already validated on its own.
    pub config: Config,
}

/// Adds `other`'s services and top-level settings to `base` (the native file, or an empty config
/// standing for none), refusing anything both give.
pub fn merge(base: &mut Layer<'_>, other: Layer<'_>) -> Result<(), LayerError> {
    let setting = |setting| LayerError::Setting {
        setting,
        first: base.file.to_path_buf(),
        second: other.file.to_path_buf(),
    };
    let ours = &mut base.config;
    let theirs = other.config;
    if ours.state_file.is_some() && theirs.state_file.is_some() {
        return Err(setting("state_file"));
    }
    if ours.file_output.is_some() && theirs.file_output.is_some() {
        return Err(setting("file_output"));
    }
    if ours.register.is_some() && theirs.register.is_some() {
        return Err(setting("register"));
    }
    if ours.threads.is_some() && theirs.threads.is_some() {
        return Err(setting("threads"));
    }
    if ours.locality.is_some() && theirs.locality.is_some() {
        return Err(setting("locality"));
    }
    let twice = |section: &str, name: &str| LayerError::Service {
        name: format!("{section}.{name}"),
        first: base.file.to_path_buf(),
        second: other.file.to_path_buf(),
    };
    if let Some(name) = theirs
        .services
        .keys()
        .find(|n| ours.services.contains_key(*n))
    {
        return Err(twice("services", name));
    }
    if let Some(name) = theirs
        .http_frontends
        .keys()
        .find(|n| ours.http_frontends.contains_key(*n))
    {
        return Err(twice("http_frontends", name));
    }
    let mine = listeners(ours);
    for (addr, owner) in listeners(&theirs).into_iter().filter(|(_, o)| o != "admin") {
        if let Some((a, o)) = mine.iter().find(|(a, _)| addr::overlaps(*a, addr)) {
            return Err(LayerError::Address {
                first: format!("{a} of {o} in {}", base.file.display()),
                second: format!("{addr} of {owner} in {}", other.file.display()),
            });
        }
    }
    ours.state_file = ours.state_file.take().or(theirs.state_file);
    ours.file_output = ours.file_output.take().or(theirs.file_output);
    ours.register = ours.register.take().or(theirs.register);
    ours.threads = ours.threads.or(theirs.threads);
    ours.locality = ours.locality.take().or(theirs.locality);
    ours.services_explicit |= theirs.services_explicit;
    ours.services.extend(theirs.services);
    ours.http_frontends.extend(theirs.http_frontends);
    Ok(())
}

/// Every listener of a config, with the section that owns it.
fn listeners(config: &Config) -> Vec<(SocketAddr, String)> {
    let services = config
        .services
        .iter()
        .filter_map(|(n, s)| Some((s.listen?, format!("services.{n}"))));
    let frontends = config
        .http_frontends
        .iter()
        .map(|(n, f)| (f.listen, format!("http_frontends.{n}")));
    std::iter::once((config.admin.listen, "admin".to_string()))
        .chain(services)
        .chain(frontends)
        .collect()
}

/// Adds a Nerve file's registration to `base`, refusing a `register` section there too.
pub fn merge_register(
    base: &mut Layer<'_>,
    nerve: &Path,
    register: Register,
) -> Result<(), LayerError> {
    let config = Config {
        register: Some(register),
        ..Config::default()
    };
    merge(
        base,
        Layer {
            file: nerve,
            config,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load::tests::parse;

    fn layer<'a>(file: &'a str, yaml: &str) -> Layer<'a> {
        Layer {
            file: Path::new(file),
            config: parse(yaml).unwrap(),
        }
    }

    #[test]
    fn services_of_both_files_run_together_and_settings_come_from_whichever_gives_them() {
        let mut base = layer(
            "sinew.yaml",
            "admin: { listen: 127.0.0.1:9000, token: t }\nservices:\n  own: { listen: 127.0.0.1:4001, backends: [127.0.0.1:1] }\n",
        );
        let other = layer(
            "synapse.json",
            "state_file: { path: /var/s.json }\nservices:\n  web: { listen: 127.0.0.1:4002, backends: [127.0.0.1:2] }\n",
        );
        merge(&mut base, other).unwrap();
        let c = base.config;
        assert_eq!(c.services.keys().collect::<Vec<_>>(), ["own", "web"]);
        assert_eq!(c.admin.token.as_deref(), Some("t"));
        assert_eq!(c.state_file.unwrap().path, Path::new("/var/s.json"));
        assert!(c.services_explicit);
    }

    #[test]
    fn a_native_file_of_agent_settings_only_takes_the_other_files_services() {
        let mut base = layer("sinew.yaml", "admin: { listen: 127.0.0.1:9000 }\n");
        assert!(base.config.services.is_empty());
        let other = layer(
            "synapse.json",
            "services:\n  web: { listen: 127.0.0.1:4002, backends: [127.0.0.1:2] }\n",
        );
        merge(&mut base, other).unwrap();
        assert_eq!(base.config.services.len(), 1);
        assert_eq!(base.config.admin.listen.port(), 9000);
    }

    #[test]
    fn a_service_in_both_files_is_an_error_naming_both() {
        let mut base = layer(
            "sinew.yaml",
            "services:\n  web: { listen: 127.0.0.1:4001, backends: [127.0.0.1:1] }\n",
        );
        let other = layer(
            "synapse.json",
            "services:\n  web: { listen: 127.0.0.1:4002, backends: [127.0.0.1:2] }\n",
        );
        let e = merge(&mut base, other).unwrap_err().to_string();
        assert_eq!(
            e,
            "services.web is defined in sinew.yaml and in synapse.json; remove it from one"
        );
    }

    #[test]
    fn an_address_in_both_files_is_an_error_naming_both_files_and_listeners() {
        let mut base = layer(
            "sinew.yaml",
            "admin: { listen: 127.0.0.1:9000 }\nservices:\n  own: { listen: 127.0.0.1:4001, backends: [127.0.0.1:1] }\n",
        );
        let other = layer(
            "synapse.json",
            "services:\n  web: { listen: 0.0.0.0:4001, backends: [127.0.0.1:2] }\n",
        );
        let e = merge(&mut base, other).unwrap_err().to_string();
        assert!(e.contains("0.0.0.0:4001 of services.web in synapse.json overlaps 127.0.0.1:4001 of services.own in sinew.yaml"), "{e}");
        let other = layer(
            "synapse.json",
            "services:\n  web: { listen: 127.0.0.1:9000, backends: [127.0.0.1:2] }\n",
        );
        let e = merge(&mut base, other).unwrap_err().to_string();
        assert!(e.contains("of admin in sinew.yaml"), "{e}");
    }

    #[test]
    fn an_http_frontend_in_both_files_or_on_another_files_port_is_an_error_and_portless_services_merge(
    ) {
        let front = |listen: &str| {
            format!("services:\n  api: {{ mode: http, backends: [127.0.0.1:1] }}\nhttp_frontends:\n  f: {{ listen: {listen}, default_service: api }}\n")
        };
        let mut base = layer("sinew.yaml", &front("127.0.0.1:8080"));
        let other = layer(
            "synapse.json",
            "services:\n  web: { mode: http, backends: [127.0.0.1:2] }\nhttp_frontends:\n  f: { listen: 127.0.0.1:8081, default_service: web }\n",
        );
        let e = merge(&mut base, other).unwrap_err().to_string();
        assert!(
            e.starts_with("http_frontends.f is defined in sinew.yaml and in synapse.json"),
            "{e}"
        );
        let other = layer(
            "synapse.json",
            "services:\n  web: { listen: 127.0.0.1:8080, backends: [127.0.0.1:2] }\n",
        );
        let e = merge(&mut base, other).unwrap_err().to_string();
        assert!(
            e.contains("127.0.0.1:8080 of http_frontends.f in sinew.yaml"),
            "{e}"
        );
        let other = layer(
            "synapse.json",
            "services:\n  web: { mode: http, backends: [127.0.0.1:2] }\nhttp_frontends:\n  g: { listen: 127.0.0.1:8081, default_service: web }\n",
        );
        merge(&mut base, other).unwrap();
        assert_eq!(base.config.http_frontends.len(), 2);
        assert_eq!(base.config.services.len(), 2);
    }

    #[test]
    fn a_setting_in_both_files_is_an_error_naming_both() {
        for (setting, yaml) in [
            ("state_file", "state_file: { path: /s }\n"),
            ("file_output", "file_output: { directory: /o }\n"),
            ("register", "register: { services: {} }\n"),
            ("threads", "threads: 2\n"),
        ] {
            let mut base = layer("sinew.yaml", yaml);
            let e = merge(&mut base, layer("other.json", yaml))
                .unwrap_err()
                .to_string();
            assert_eq!(
                e,
                format!(
                    "`{setting}` is given by sinew.yaml and by other.json; keep it in one of them"
                )
            );
        }
        let mut base = layer("sinew.yaml", "register: { services: {} }\n");
        let e = merge_register(&mut base, Path::new("nerve.json"), Register::default());
        assert!(e
            .unwrap_err()
            .to_string()
            .contains("`register` is given by sinew.yaml and by nerve.json"));
    }
}
