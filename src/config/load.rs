//! Reading a config: the file format, parsing with errors that name the field and line, then validation.

use super::{text, unique, Config, ConfigError};
use serde::Deserialize;
use std::path::Path;

/// The file format, chosen by extension (`.json` is JSON, everything else YAML).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// YAML (which also reads most JSON).
    Yaml,
    /// Strict JSON.
    Json,
}

impl Format {
    /// Picks the format from a file name.
    pub fn of(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("json") => Format::Json,
            _ => Format::Yaml,
        }
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = text::read(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, Format::of(path), path)
    }

    /// Parses and validates config text; `file` is used in error messages.
    pub fn parse(text: &str, format: Format, file: &Path) -> Result<Self, ConfigError> {
        let parse_err = |field: String, message: String, line| ConfigError::Parse {
            file: file.to_path_buf(),
            field: if field.is_empty() || field == "." {
                "(top level)".into()
            } else {
                field
            },
            message,
            line,
        };
        text::check(text).map_err(|e| parse_err(String::new(), e.to_string(), None))?;
        let mut config: Config = match format {
            Format::Yaml => {
                let de = serde_norway::Deserializer::from_str(text);
                serde_path_to_error::deserialize(de).map_err(|e| {
                    let field = e.path().to_string();
                    let inner = e.into_inner();
                    let mut line = inner.location().map(|l| (l.line(), l.column()));
                    let mut message = strip_path(&field, &strip_location(&inner.to_string()));
                    if let Some(both) =
                        line.and_then(|(l, _)| unique::lines(text, &message, l, false))
                    {
                        message = format!("{message} {both}");
                        line = None;
                    }
                    parse_err(field, message, line)
                })?
            }
            Format::Json => {
                let mut de = serde_json::Deserializer::from_str(text);
                serde_path_to_error::deserialize(&mut de).map_err(|e| {
                    let field = e.path().to_string();
                    let inner = e.into_inner();
                    let mut line = Some((inner.line(), inner.column()));
                    let mut message = strip_location(&inner.to_string());
                    if let Some(both) = unique::lines(text, &message, inner.line(), true) {
                        message = format!("{message} {both}");
                        line = None;
                    }
                    parse_err(field, message, line)
                })?
            }
        };
        config.services_explicit = !config.services.is_empty() || names_services(text, format);
        config.resolve_paths(super::paths::base_of(file));
        config.validate(file)?;
        Ok(config)
    }
}

/// True when the document gives `services` a value (`services: {}`), not merely leaves it out or
/// empty (`services:` alone, as a truncated file may end).
fn names_services(text: &str, format: Format) -> bool {
    #[derive(Deserialize)]
    struct Keys {
        services: Option<serde::de::IgnoredAny>,
    }
    let keys: Option<Keys> = match format {
        Format::Yaml => serde_norway::from_str(text).ok(),
        Format::Json => serde_json::from_str(text).ok(),
    };
    keys.is_some_and(|k| k.services.is_some())
}

/// serde_norway prefixes messages with the path of the enclosing mapping; the error already names the field.
fn strip_path(field: &str, message: &str) -> String {
    match message.split_once(": ") {
        Some((head, rest)) if !head.contains(' ') && field.starts_with(head) => rest.to_string(),
        _ => message.to_string(),
    }
}

/// serde_norway appends " at line L column C" to messages; the error type carries it separately.
pub(super) fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::config::DiscoveryConfig;
    use std::time::Duration;

    /// Parses YAML config text as a file called `test.yaml`.
    pub(in crate::config) fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Format::Yaml, Path::new("test.yaml"))
    }

    #[test]
    fn a_section_left_empty_is_its_default() {
        use crate::config::{
            register::Register, AdminConfig, Backoff, HealthCheck, HttpOptions, Outlier, Retries,
            Timeouts,
        };
        fn empty<T: serde::de::DeserializeOwned>() -> T {
            serde_norway::from_str("{}").unwrap()
        }
        assert_eq!(empty::<Config>(), Config::default());
        assert_eq!(empty::<AdminConfig>(), AdminConfig::default());
        assert_eq!(empty::<Timeouts>(), Timeouts::default());
        assert_eq!(empty::<Retries>(), Retries::default());
        assert_eq!(empty::<HttpOptions>(), HttpOptions::default());
        assert_eq!(empty::<Backoff>(), Backoff::default());
        assert_eq!(empty::<HealthCheck>(), HealthCheck::default());
        assert_eq!(empty::<Outlier>(), Outlier::default());
        assert_eq!(empty::<Register>(), Register::default());
    }

    #[test]
    fn issue_example_parses() {
        let c = parse(
            "admin:\n  listen: 127.0.0.1:3210\nservices:\n  web:\n    listen: 127.0.0.1:4001\n    mode: tcp\n    balance: round_robin\n    backends:\n      - 127.0.0.1:8081\n      - { host: 127.0.0.1, port: 8082, weight: 2 }\n    timeouts: { connect: 1s, idle: 5m }\n    retries: { attempts: 2 }\n",
        )
        .unwrap();
        let web = &c.services["web"];
        assert_eq!(web.backends.len(), 2);
        assert_eq!(web.backends[1].weight, 2);
        assert_eq!(web.timeouts.idle, Duration::from_secs(300));
    }

    #[test]
    fn bad_listen_names_field_and_value() {
        let e =
            parse("services:\n  web:\n    listen: 127.0.0.1:99999\n    backends: [127.0.0.1:1]\n")
                .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with(
                "test.yaml: services.web.listen: invalid socket address \"127.0.0.1:99999\""
            ),
            "{msg}"
        );
        assert!(msg.contains("line 3"), "{msg}");
    }

    #[test]
    fn unknown_key_is_an_error() {
        let e = parse("services:\n  web:\n    listen: 127.0.0.1:1\n    backend: []\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `backend`"), "{e}");
    }

    #[test]
    fn json_is_accepted() {
        let c = Config::parse(
            r#"{"services": {"web": {"listen": "127.0.0.1:4001", "discovery": {"file": "/tmp/b.json"}}}}"#,
            Format::Json,
            Path::new("c.json"),
        )
        .unwrap();
        assert_eq!(
            c.services["web"].discovery,
            Some(DiscoveryConfig::File("/tmp/b.json".into()))
        );
    }

    #[test]
    fn a_config_written_out_loads_back_the_same() {
        let c = parse(
            "services:\n  web:\n    listen: 127.0.0.1:4001\n    mode: http\n    balance: hash\n    backends: [127.0.0.1:1, { host: h, port: 2, weight: 3 }]\n    retries: { on: [5xx, reset] }\n    health_check: { type: http, fast_interval: 500ms }\n    outlier: {}\n  zk:\n    listen: 127.0.0.1:4002\n    discovery: { zookeeper: { hosts: [127.0.0.1:2181], path: /x } }\n",
        )
        .unwrap();
        let yaml = serde_norway::to_string(&c).unwrap();
        assert_eq!(parse(&yaml).unwrap(), c, "{yaml}");
    }

    #[test]
    fn an_empty_file_is_an_error_and_services_explicit_records_an_empty_set_on_purpose() {
        for text in ["", "# nothing here\n", "---\n"] {
            let e = parse(text).unwrap_err();
            assert!(
                e.to_string().contains("empty or holds only comments"),
                "{e}"
            );
            let e = Config::parse(text, Format::Json, Path::new("c.json")).unwrap_err();
            assert!(
                e.to_string().contains("empty or holds only comments"),
                "{e}"
            );
        }
        let explicit = |text: &str| parse(text).unwrap().services_explicit;
        assert!(explicit("services: {}\n"));
        assert!(explicit(
            "services:\n  web: { listen: 127.0.0.1:1, backends: [127.0.0.1:2] }\n"
        ));
        assert!(!explicit("admin: { listen: 127.0.0.1:1 }\n"));
        assert!(!explicit("admin: { listen: 127.0.0.1:1 }\nservices:\n"));
        let json = Config::parse(r#"{"services": {}}"#, Format::Json, Path::new("c.json"));
        assert!(json.unwrap().services_explicit);
    }

    #[test]
    fn bad_duration_is_explained() {
        let e = parse("services:\n  web:\n    listen: 127.0.0.1:1\n    backends: [127.0.0.1:1]\n    timeouts: { connect: 5 }\n")
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("services.web.timeouts.connect: invalid duration"),
            "{e}"
        );
    }
}
