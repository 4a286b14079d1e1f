//! Znode data to backends: Nerve's JSON and Finagle ServerSet JSON, as Synapse's decoders read them.
//!
//! Of Nerve's JSON, sinew reads `host`, `port`, `weight` (unless told to ignore it, as Synapse does
//! without `use_nerve_weights`), `labels`, `haproxy_server_options` (see [`server_options`]) and
//! `name`, Nerve's instance id, which `file_output` writes as Synapse does.

use super::server_options::{self, Ignored};
use crate::balance::{Backend, Labels, Origin};
use crate::config::{Decode, DecodeMethod, DEFAULT_WEIGHT, MAX_WEIGHT};
use serde_json::Value;

/// Largest znode data accepted (ZooKeeper's own default limit is 1 MiB).
pub const MAX_DATA: usize = 1 << 20;

/// Why a znode was skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The data is larger than [`MAX_DATA`].
    #[error("{0} bytes of data is more than the 1 MiB accepted")]
    TooLarge(usize),
    /// Not a JSON object.
    #[error("not a JSON object: {0}")]
    NotJson(String),
    /// A required field is missing or has the wrong type.
    #[error("{0}")]
    Field(String),
}

/// A decoded znode: its backend, and what in it was left out (to be counted and warned about).
#[derive(Debug, PartialEq)]
pub struct Decoded {
    /// The backend.
    pub backend: Backend,
    /// Options and fields left out, in order.
    pub ignored: Vec<Ignored>,
}

/// Decodes one znode named `node` into a backend; with `use_weights` false its `weight` field is
/// ignored (a `weight` in its `haproxy_server_options` still counts, as in Synapse).
pub fn decode(
    node: &str,
    data: &[u8],
    how: &Decode,
    use_weights: bool,
) -> Result<Decoded, DecodeError> {
    if data.len() > MAX_DATA {
        return Err(DecodeError::TooLarge(data.len()));
    }
    let v: Value = serde_json::from_slice(data).map_err(|e| DecodeError::NotJson(e.to_string()))?;
    if !v.is_object() {
        return Err(DecodeError::NotJson(
            "a JSON value that is not an object".into(),
        ));
    }
    let origin = Origin::Zookeeper(node.to_string());
    match how.method {
        DecodeMethod::Nerve => nerve(&v, origin, use_weights),
        DecodeMethod::Serverset => {
            let endpoint = match &how.endpoint_name {
                Some(name) => v
                    .get("additionalEndpoints")
                    .and_then(|e| e.get(name))
                    .ok_or_else(|| DecodeError::Field(format!("no additionalEndpoints.{name}")))?,
                None => v
                    .get("serviceEndpoint")
                    .ok_or_else(|| DecodeError::Field("no serviceEndpoint".into()))?,
            };
            if let Some(status) = v.get("status").and_then(Value::as_str) {
                if status != "ALIVE" {
                    return Err(DecodeError::Field(format!("status is {status}, not ALIVE")));
                }
            }
            let backend = Backend::new(
                host(endpoint, "host")?,
                port(endpoint, "port")?,
                DEFAULT_WEIGHT,
                origin,
            );
            Ok(Decoded {
                backend,
                ignored: Vec::new(),
            })
        }
    }
}

/// Nerve's JSON: the znode's `weight` wins over a `weight` in its server options (Synapse with
/// `use_nerve_weights`), which wins over the default.
fn nerve(v: &Value, origin: Origin, use_weights: bool) -> Result<Decoded, DecodeError> {
    let (host, port) = (host(v, "host")?, port(v, "port")?);
    let znode_weight = if use_weights { weight(v)? } else { None };
    let mut ignored = Vec::new();
    let mut written = None;
    let parsed = match v.get("haproxy_server_options") {
        None | Some(Value::Null) => server_options::Parsed::default(),
        Some(Value::String(line)) => {
            written = Some(line.clone());
            server_options::parse(line)
        }
        Some(other) => {
            ignored.push(Ignored::Field(format!(
                "haproxy_server_options {other} is not a string, ignored"
            )));
            server_options::Parsed::default()
        }
    };
    ignored.extend(parsed.ignored);
    let mut backend = Backend::new(
        host,
        port,
        znode_weight.or(parsed.weight).unwrap_or(DEFAULT_WEIGHT),
        origin,
    );
    backend.options = parsed.options;
    backend.server_options = written;
    backend.labels = labels(v.get("labels"), &mut ignored);
    backend.name = v.get("name").and_then(Value::as_str).map(str::to_string);
    Ok(Decoded { backend, ignored })
}

/// Nerve's `labels`: a hash of strings (numbers and booleans are taken as written).
fn labels(v: Option<&Value>, ignored: &mut Vec<Ignored>) -> Labels {
    let map = match v {
        None | Some(Value::Null) => return Labels::new(),
        Some(Value::Object(map)) => map,
        Some(other) => {
            ignored.push(Ignored::Field(format!(
                "labels {other} is not a hash, ignored"
            )));
            return Labels::new();
        }
    };
    map.iter()
        .filter_map(|(k, v)| match v {
            Value::String(s) => Some((k.clone(), s.clone())),
            Value::Number(_) | Value::Bool(_) => Some((k.clone(), v.to_string())),
            other => {
                ignored.push(Ignored::Field(format!(
                    "labels.{k}: {other} is not a string, ignored"
                )));
                None
            }
        })
        .collect()
}

fn host(v: &Value, field: &str) -> Result<String, DecodeError> {
    match v.get(field).and_then(Value::as_str) {
        // A socket path means nothing on another host: Unix sockets are for static and file backends.
        Some(h) if crate::config::is_unix(h.trim()) => Err(DecodeError::Field(format!(
            "`{field}` {h:?} is a Unix socket, which only names a socket on the registering host; a znode needs a host and port"
        ))),
        Some(h) if !h.trim().is_empty() => Ok(h.trim().to_string()),
        _ => Err(DecodeError::Field(format!(
            "`{field}` missing or not a non-empty string"
        ))),
    }
}

fn port(v: &Value, field: &str) -> Result<u16, DecodeError> {
    let n = match v.get(field) {
        Some(Value::Number(n)) => n.as_u64(),
        // Some registrars write the port as a string.
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    n.and_then(|n| u16::try_from(n).ok())
        .filter(|p| *p != 0)
        .ok_or_else(|| DecodeError::Field(format!("`{field}` missing or not a port 1-65535")))
}

fn weight(v: &Value) -> Result<Option<u32>, DecodeError> {
    match v.get("weight") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .filter(|w| *w <= u64::from(MAX_WEIGHT))
            .map(|w| Some(w as u32))
            .ok_or_else(|| DecodeError::Field(format!("`weight` {n} is not 0-{MAX_WEIGHT}"))),
        Some(other) => Err(DecodeError::Field(format!(
            "`weight` {other} is not a number"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nerve() -> Decode {
        Decode::default()
    }

    fn backend(data: &[u8], use_weights: bool) -> Decoded {
        decode("n", data, &nerve(), use_weights).unwrap()
    }

    #[test]
    fn nerve_json() {
        let d = decode(
            "i-1_0000000001",
            br#"{"host":"10.0.0.1","port":8080,"name":"i-1","weight":3,"labels":{"az":"a","rack":7},"haproxy_server_options":"backup maxconn 2"}"#,
            &nerve(),
            true,
        )
        .unwrap();
        let b = d.backend;
        assert_eq!((b.host.as_str(), b.port, b.weight), ("10.0.0.1", 8080, 3));
        assert_eq!(b.origin, Origin::Zookeeper("i-1_0000000001".into()));
        assert_eq!(
            b.options,
            crate::balance::ServerOptions {
                backup: true,
                disabled: false,
                max_connections: Some(2),
                send_proxy: None,
            }
        );
        let labels: Vec<(&str, &str)> = b
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(labels, [("az", "a"), ("rack", "7")]);
        assert_eq!(b.name.as_deref(), Some("i-1"));
        assert_eq!(b.server_options.as_deref(), Some("backup maxconn 2"));
        assert!(d.ignored.is_empty());
        assert_eq!(
            backend(br#"{"host":"h","port":"81"}"#, true).backend.port,
            81
        );
    }

    #[test]
    fn the_znode_weight_wins_over_server_options_unless_ignored() {
        // (data, use_weights, weight)
        let table: [(&[u8], bool, u32); 6] = [
            (br#"{"host":"h","port":1,"weight":4}"#, true, 4),
            (br#"{"host":"h","port":1,"weight":4}"#, false, 1),
            (
                br#"{"host":"h","port":1,"weight":4,"haproxy_server_options":"weight 9"}"#,
                true,
                4,
            ),
            (
                br#"{"host":"h","port":1,"weight":4,"haproxy_server_options":"weight 9"}"#,
                false,
                9,
            ),
            (
                br#"{"host":"h","port":1,"haproxy_server_options":"weight 9"}"#,
                true,
                9,
            ),
            // Not read at all without use_weights, so not refused either (as Synapse).
            (br#"{"host":"h","port":1,"weight":"heavy"}"#, false, 1),
        ];
        for (data, use_weights, weight) in table {
            assert_eq!(
                backend(data, use_weights).backend.weight,
                weight,
                "{} use_weights={use_weights}",
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn odd_options_and_labels_are_ignored_not_fatal() {
        let d = backend(
            br#"{"host":"h","port":1,"haproxy_server_options":"check inter 2s weight x disabled","labels":{"az":"a","deep":{"x":1}}}"#,
            true,
        );
        assert!(d.backend.options.disabled);
        assert_eq!(d.backend.weight, 1);
        assert_eq!(d.backend.labels.len(), 1);
        let keys: Vec<&str> = d.ignored.iter().map(Ignored::key).collect();
        assert_eq!(keys.len(), 4, "{:?}", d.ignored);
        assert_eq!(&keys[..3], ["check", "inter", "weight"]);
        assert!(keys[3].contains("labels.deep"), "{keys:?}");
        for data in [
            &br#"{"host":"h","port":1,"haproxy_server_options":["backup"]}"#[..],
            br#"{"host":"h","port":1,"labels":["az"]}"#,
        ] {
            let d = backend(data, true);
            assert_eq!(d.ignored.len(), 1, "{}", String::from_utf8_lossy(data));
            assert!(!d.backend.options.backup);
        }
    }

    #[test]
    fn serverset_json() {
        let data = br#"{"serviceEndpoint":{"host":"10.0.0.2","port":9090},"additionalEndpoints":{"admin":{"host":"10.0.0.2","port":9991}},"shard":0,"status":"ALIVE"}"#;
        let main = decode(
            "member_1",
            data,
            &Decode {
                method: DecodeMethod::Serverset,
                endpoint_name: None,
            },
            true,
        )
        .unwrap();
        assert_eq!(main.backend.port, 9090);
        let admin = Decode {
            method: DecodeMethod::Serverset,
            endpoint_name: Some("admin".into()),
        };
        assert_eq!(
            decode("member_1", data, &admin, true).unwrap().backend.port,
            9991
        );
        let dead = br#"{"serviceEndpoint":{"host":"h","port":1},"status":"DEAD"}"#;
        assert!(decode(
            "m",
            dead,
            &Decode {
                method: DecodeMethod::Serverset,
                endpoint_name: None
            },
            true
        )
        .is_err());
    }

    #[test]
    fn a_unix_socket_in_a_znode_is_refused_by_name() {
        let data = br#"{"host":"unix:/run/app.sock","port":80}"#;
        let e = decode("n", data, &nerve(), true).unwrap_err().to_string();
        assert!(e.contains("\"unix:/run/app.sock\" is a Unix socket"), "{e}");
    }

    #[test]
    fn malformed_data_is_an_error_not_a_panic() {
        for bad in [
            &b"not json"[..],
            b"[1,2]",
            br#"{"port":80}"#,
            br#"{"host":"h"}"#,
            br#"{"host":"h","port":0}"#,
            br#"{"host":"h","port":70000}"#,
            br#"{"host":"","port":80}"#,
            br#"{"host":"unix:/run/app.sock","port":80}"#,
            br#"{"host":"h","port":80,"weight":-1}"#,
            br#"{"host":"h","port":80,"weight":"heavy"}"#,
            b"",
        ] {
            assert!(
                decode("n", bad, &nerve(), true).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let huge = vec![b' '; MAX_DATA + 1];
        assert_eq!(
            decode("n", &huge, &nerve(), true),
            Err(DecodeError::TooLarge(MAX_DATA + 1))
        );
    }
}
