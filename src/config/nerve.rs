//! Nerve configs (`nerve.conf.json`), translated into sinew's registration model: `instance_id`,
//! `services` (or `service_conf_dir`, one JSON file per service) with `host`, `port`, `zk_hosts`,
//! `zk_path`, `check_interval`, `checks`, `weight`, `labels`, `haproxy_server_options`.

use super::register::{Check, CheckKind, Register, Registration};
use super::{Level, Warning};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a Nerve config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NerveError {
    /// A file could not be read.
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is not JSON, or a value is wrong.
    #[error("{}: {message}", file.display())]
    Invalid {
        /// The file.
        file: PathBuf,
        /// What is wrong, naming the field.
        message: String,
    },
}

/// A translated Nerve config and what could not be carried over.
#[derive(Debug)]
pub struct Translation {
    /// The registration model.
    pub register: Register,
    /// One per service or setting left out; a service that is not registered is at error level.
    pub warnings: Vec<Warning>,
}

fn read_text(path: &Path) -> Result<String, NerveError> {
    super::text::read(path).map_err(|source| NerveError::Read {
        file: path.to_path_buf(),
        source,
    })
}

fn parse_json(text: &str, path: &Path) -> Result<Value, NerveError> {
    super::text::check(text).map_err(|e| NerveError::Invalid {
        file: path.to_path_buf(),
        message: e.to_string(),
    })?;
    // Strict: a service (or any key) given twice is an error naming both lines, not "the last wins".
    serde_json::from_str::<super::unique::StrictValue>(text)
        .map(|v| v.0)
        .map_err(|e| {
            let message = e.to_string();
            let both = super::unique::lines(text, &message, e.line(), true);
            NerveError::Invalid {
                file: path.to_path_buf(),
                message: match both {
                    Some(b) => format!("{} {b}", super::load::strip_location(&message)),
                    None => message,
                },
            }
        })
}

fn read(path: &Path) -> Result<Value, NerveError> {
    parse_json(&read_text(path)?, path)
}

/// Loads and translates a Nerve config.
pub fn load(path: &Path) -> Result<Translation, NerveError> {
    parse(&read_text(path)?, path)
}

/// Translates the text of a Nerve config; `path` names it in errors. A `service_conf_dir` it names is
/// read from disk.
pub fn parse(text: &str, path: &Path) -> Result<Translation, NerveError> {
    let root = parse_json(text, path)?;
    let invalid = |message: String| NerveError::Invalid {
        file: path.to_path_buf(),
        message,
    };
    let mut services: Vec<(String, Value)> = match root.get("services") {
        Some(Value::Object(m)) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err(invalid("`services` must be a hash".into())),
    };
    if let Some(dir) = root.get("service_conf_dir").and_then(Value::as_str) {
        let dir = super::paths::resolve(super::paths::base_of(path), Path::new(dir));
        let entries = std::fs::read_dir(&dir).map_err(|source| NerveError::Read {
            file: dir.clone(),
            source,
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("json"))
            .collect();
        files.sort();
        for f in files {
            let name = f
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            services.push((name, read(&f)?));
        }
    }
    let warn = |message: String| Warning {
        level: Level::Warn,
        message,
    };
    let mut warnings: Vec<Warning> = super::nerve_keys::top(&root)
        .into_iter()
        .map(warn)
        .collect();
    // Nerve stops a service's watcher after this many failed reports in a row; sinew never gives up.
    const GIVE_UP: &str = "max_repeated_report_failures: sinew keeps retrying a failed report and \
                           reconnects its ZooKeeper session; it never stops registering the service";
    if root.get("max_repeated_report_failures").is_some() {
        warnings.push(warn(GIVE_UP.to_string()));
    }
    let mut out = BTreeMap::new();
    for (name, svc) in services {
        warnings.extend(
            super::nerve_keys::service(&name, &svc)
                .into_iter()
                .map(warn),
        );
        if svc.get("max_repeated_report_failures").is_some() {
            warnings.push(warn(format!("services.{name}.{GIVE_UP}")));
        }
        match service(&svc) {
            Ok(r) => {
                out.insert(name, r);
            }
            Err(Skip::Invalid(m)) => return Err(invalid(format!("services.{name}.{m}"))),
            Err(Skip::Unsupported(m)) => warnings.push(Warning {
                level: Level::Error,
                message: format!("services.{name}: {m}; the service is not registered"),
            }),
        }
    }
    let register = Register {
        instance_id: root
            .get("instance_id")
            .and_then(Value::as_str)
            .map(String::from),
        drain: Duration::from_secs(2),
        services: out,
    };
    register.validate().map_err(|e| invalid(e.to_string()))?;
    Ok(Translation { register, warnings })
}

enum Skip {
    Invalid(String),
    Unsupported(String),
}

/// Nerve's seconds (a JSON number); beyond what a Duration holds becomes `Duration::MAX`, which
/// validation then rejects with the field's name.
fn seconds(v: Option<&Value>, default: Duration) -> Duration {
    v.and_then(Value::as_f64)
        .filter(|s| *s > 0.0 && s.is_finite())
        .map(|s| Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX))
        .unwrap_or(default)
}

/// An http check's `headers`: a hash of names to string values.
fn headers(v: Option<&Value>) -> Result<BTreeMap<String, String>, Skip> {
    let bad = |m: String| Skip::Invalid(format!("checks.headers: {m}"));
    match v {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(bad(format!("{k}: {other} is not a string"))),
            })
            .collect(),
        Some(other) => Err(bad(format!("{other} is not a hash of names to values"))),
    }
}

fn service(svc: &Value) -> Result<Registration, Skip> {
    if let Some(kind) = svc.get("reporter_type").and_then(Value::as_str) {
        if kind != "zookeeper" {
            return Err(Skip::Unsupported(format!(
                "reporter_type {kind:?} is not supported"
            )));
        }
    }
    let host = svc
        .get("host")
        .and_then(Value::as_str)
        .ok_or_else(|| Skip::Invalid("host: missing".into()))?;
    let port = svc
        .get("port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| Skip::Invalid("port: missing or not 1-65535".into()))?;
    let zk_hosts = svc
        .get("zk_hosts")
        .and_then(Value::as_array)
        .map(|h| {
            h.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let zk_path = svc
        .get("zk_path")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut checks = Vec::new();
    for c in svc
        .get("checks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let kind = match c.get("type").and_then(Value::as_str) {
            Some("tcp") => CheckKind::Tcp,
            Some("http") => CheckKind::Http,
            Some("redis") => CheckKind::Redis,
            Some("rabbitmq") => CheckKind::Rabbitmq,
            Some(other) => {
                return Err(Skip::Unsupported(format!(
                    "check type {other:?} is not supported yet"
                )))
            }
            None => return Err(Skip::Invalid("checks: a check without a type".into())),
        };
        let n = |k: &str| {
            c.get(k)
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
        };
        let s = |k: &str| c.get(k).and_then(Value::as_str).map(String::from);
        checks.push(Check {
            kind,
            timeout: seconds(c.get("timeout"), Duration::from_millis(100)),
            rise: n("rise").unwrap_or(1).max(1),
            fall: n("fall").unwrap_or(1).max(1),
            host: s("host"),
            port: n("port").and_then(|p| u16::try_from(p).ok()),
            uri: s("uri"),
            expect: s("expect"),
            command: Vec::new(),
            key: s("key"),
            password: s("password"),
            username: s("username"),
            vhost: s("vhost"),
            db: n("db"),
            headers: headers(c.get("headers"))?,
            connect_timeout: c
                .get("open_timeout")
                .map(|t| seconds(Some(t), Duration::from_millis(200))),
            // Nerve's http check counts every 2xx and 3xx status as healthy.
            accept_redirects: kind == CheckKind::Http,
        });
    }
    let weight = match svc.get("weight") {
        Some(Value::Number(w)) => w.as_u64().and_then(|w| u32::try_from(w).ok()),
        Some(Value::String(w)) => w.parse().ok(),
        _ => None,
    };
    let labels = svc.get("labels").and_then(Value::as_object).map(|m| {
        m.iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str()
                        .map(String::from)
                        .unwrap_or_else(|| v.to_string()),
                )
            })
            .collect()
    });
    Ok(Registration {
        host: host.to_string(),
        port,
        zk_hosts,
        zk_path,
        session_timeout: Duration::from_secs(10),
        check_interval: seconds(svc.get("check_interval"), Duration::from_millis(500)),
        weight,
        labels,
        haproxy_server_options: svc
            .get("haproxy_server_options")
            .and_then(Value::as_str)
            .map(String::from),
        checks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rabbitmq_check_keeps_its_credentials_and_vhost() {
        let dir = std::env::temp_dir().join(format!("sinew-nerve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("rabbitmq.json");
        std::fs::write(
            &file,
            r#"{"services": {"events": {"host": "10.0.0.5", "port": 5672, "zk_hosts": ["zk:2181"],
                "zk_path": "/nerve/events", "checks": [{"type": "rabbitmq", "username": "nerve",
                "password": "s3cret", "vhost": "prod", "timeout": 0.5}]}}}"#,
        )
        .unwrap();
        let t = load(&file).unwrap();
        assert!(t.warnings.is_empty(), "{:?}", t.warnings);
        let check = &t.register.services["events"].checks[0];
        assert_eq!(check.kind, CheckKind::Rabbitmq);
        assert_eq!(check.username.as_deref(), Some("nerve"));
        assert_eq!(check.password.as_deref(), Some("s3cret"));
        assert_eq!(check.vhost.as_deref(), Some("prod"));
        assert_eq!(check.timeout, Duration::from_millis(500));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn http_check_headers_and_open_timeout_are_kept_and_report_failures_warned_about() {
        let t = parse(
            r#"{"max_repeated_report_failures": 5, "services": {"web": {"host": "10.0.0.5", "port": 80,
                "zk_hosts": ["zk:2181"], "zk_path": "/nerve/web", "max_repeated_report_failures": 3,
                "checks": [{"type": "http", "uri": "/health", "open_timeout": 0.5,
                            "headers": {"Host": "api.example.com", "X-Check": "nerve"}}]}}}"#,
            Path::new("nerve.json"),
        )
        .unwrap();
        let check = &t.register.services["web"].checks[0];
        assert_eq!(check.headers["Host"], "api.example.com");
        assert_eq!(check.headers["X-Check"], "nerve");
        assert_eq!(check.connect_timeout, Some(Duration::from_millis(500)));
        assert_eq!(t.warnings.len(), 2, "{:?}", t.warnings);
        assert!(t.warnings[1]
            .message
            .starts_with("services.web.max_repeated_report_failures"));
        for (headers, says) in [
            (r#"{"X-N": 1}"#, "checks.headers: X-N: 1 is not a string"),
            (r#"["Host: a"]"#, "checks.headers"),
            (r#"{"Bad Name": "x"}"#, "checks[0].headers"),
        ] {
            let e = parse(
                &format!(
                    r#"{{"services": {{"web": {{"host": "h", "port": 80, "zk_hosts": ["zk:2181"], "zk_path": "/n",
                        "checks": [{{"type": "http", "uri": "/", "headers": {headers}}}]}}}}}}"#
                ),
                Path::new("nerve.json"),
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains("nerve.json") && e.contains(says), "{e}");
        }
    }
}
