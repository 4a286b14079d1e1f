//! The config as JSON with its credentials replaced by `"<redacted>"`: what `GET /api/config` shows and
//! what a reload's diff prints.
//!
//! Credentials are recognised by where they sit, not field by field, so a new field named like one is
//! covered: any `token` or `password` (`admin.token`, a redis or rabbitmq check's password) and the
//! values of request header fields that carry credentials (`Authorization`, `Cookie`, API keys). File
//! paths (TLS keys, CA files) are not secrets and are shown.

use super::Config;
use serde_json::Value;

/// What a credential is replaced by.
pub const REDACTED: &str = "<redacted>";

/// Keys whose values are credentials wherever they appear.
const SECRET_KEYS: &[&str] = &["token", "password"];

/// Parts of a header field name that mark its value as a credential.
const SECRET_HEADER_PARTS: &[&str] = &["auth", "cookie", "token", "secret", "key", "password"];

/// The config as JSON, credentials redacted.
pub fn to_json(config: &Config) -> Result<Value, serde_json::Error> {
    let mut value = serde_json::to_value(config)?;
    redact(&mut value, &mut Vec::new());
    Ok(value)
}

/// True when the value reached through `path` (object keys from the root) is a credential.
pub fn is_secret(path: &[&str]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let last = last.to_ascii_lowercase();
    if SECRET_KEYS.contains(&last.as_str()) {
        return true;
    }
    parents.last() == Some(&"headers") && SECRET_HEADER_PARTS.iter().any(|p| last.contains(p))
}

/// Replaces every credential under `value` (found at `path`) by [`REDACTED`]; an unset one stays null.
fn redact(value: &mut Value, path: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                path.push(key.clone());
                let keys: Vec<&str> = path.iter().map(String::as_str).collect();
                if is_secret(&keys) && !v.is_null() {
                    *v = Value::String(REDACTED.into());
                } else {
                    redact(v, path);
                }
                path.pop();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact(v, path)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Format;
    use std::path::Path;

    #[test]
    fn tokens_passwords_and_credential_headers_are_redacted_and_the_rest_is_kept() {
        let yaml = r#"
admin: { listen: 127.0.0.1:3210, token: admin-s3cret }
services:
  web:
    listen: 127.0.0.1:4001
    backends: [10.0.0.1:80]
    tls_listen: { cert: /etc/sinew/web.crt, key: /etc/sinew/web.key }
register:
  services:
    cache:
      host: 10.0.0.9
      port: 6379
      zk_hosts: [zk1:2181]
      zk_path: /services/cache
      checks:
        - { type: redis, password: redis-s3cret }
        - { type: http, uri: /health, headers: { Authorization: Bearer hdr-s3cret, X-Api-Key: key-s3cret, Accept: text/plain } }
"#;
        let config = Config::parse(yaml, Format::Yaml, Path::new("t.yaml")).unwrap();
        let json = to_json(&config).unwrap();
        let text = json.to_string();
        for secret in ["admin-s3cret", "redis-s3cret", "hdr-s3cret", "key-s3cret"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert_eq!(json["admin"]["token"], REDACTED);
        let checks = &json["register"]["services"]["cache"]["checks"];
        assert_eq!(checks[0]["password"], REDACTED);
        assert_eq!(checks[1]["headers"]["Authorization"], REDACTED);
        assert_eq!(checks[1]["headers"]["Accept"], "text/plain");
        assert_eq!(
            json["services"]["web"]["tls_listen"]["key"],
            "/etc/sinew/web.key"
        );
        assert_eq!(json["services"]["web"]["listen"], "127.0.0.1:4001");
    }

    #[test]
    fn secrets_are_recognised_by_their_place() {
        assert!(is_secret(&["admin", "token"]));
        assert!(is_secret(&[
            "register", "services", "x", "checks", "password"
        ]));
        assert!(is_secret(&["checks", "headers", "Cookie"]));
        assert!(!is_secret(&["checks", "headers", "Accept"]));
        assert!(!is_secret(&["services", "web", "tls_listen", "key"]));
        assert!(!is_secret(&[]));
    }
}
