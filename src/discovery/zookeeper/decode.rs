//! Znode data to backends: Nerve's JSON and Finagle ServerSet JSON, as Synapse's decoders read them.

use crate::balance::{Backend, Origin};
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

/// Decodes one znode named `node` into a backend.
pub fn decode(node: &str, data: &[u8], how: &Decode) -> Result<Backend, DecodeError> {
    if data.len() > MAX_DATA {
        return Err(DecodeError::TooLarge(data.len()));
    }
    let v: Value = serde_json::from_slice(data).map_err(|e| DecodeError::NotJson(e.to_string()))?;
    if !v.is_object() {
        return Err(DecodeError::NotJson(
            "a JSON value that is not an object".into(),
        ));
    }
    let (host, port, weight) = match how.method {
        DecodeMethod::Nerve => (host(&v, "host")?, port(&v, "port")?, weight(&v)?),
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
            (
                host(endpoint, "host")?,
                port(endpoint, "port")?,
                DEFAULT_WEIGHT,
            )
        }
    };
    Ok(Backend {
        host,
        port,
        weight,
        origin: Origin::Zookeeper(node.to_string()),
    })
}

fn host(v: &Value, field: &str) -> Result<String, DecodeError> {
    match v.get(field).and_then(Value::as_str) {
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

fn weight(v: &Value) -> Result<u32, DecodeError> {
    match v.get("weight") {
        None | Some(Value::Null) => Ok(DEFAULT_WEIGHT),
        Some(Value::Number(n)) => n
            .as_u64()
            .filter(|w| *w <= u64::from(MAX_WEIGHT))
            .map(|w| w as u32)
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

    #[test]
    fn nerve_json() {
        let b = decode(
            "i-1_0000000001",
            br#"{"host":"10.0.0.1","port":8080,"name":"i-1","weight":3,"labels":{"az":"a"},"haproxy_server_options":"backup"}"#,
            &nerve(),
        )
        .unwrap();
        assert_eq!((b.host.as_str(), b.port, b.weight), ("10.0.0.1", 8080, 3));
        assert_eq!(b.origin, Origin::Zookeeper("i-1_0000000001".into()));
        assert_eq!(
            decode("n", br#"{"host":"h","port":"81"}"#, &nerve())
                .unwrap()
                .port,
            81
        );
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
        )
        .unwrap();
        assert_eq!(main.port, 9090);
        let admin = Decode {
            method: DecodeMethod::Serverset,
            endpoint_name: Some("admin".into()),
        };
        assert_eq!(decode("member_1", data, &admin).unwrap().port, 9991);
        let dead = br#"{"serviceEndpoint":{"host":"h","port":1},"status":"DEAD"}"#;
        assert!(decode(
            "m",
            dead,
            &Decode {
                method: DecodeMethod::Serverset,
                endpoint_name: None
            }
        )
        .is_err());
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
            br#"{"host":"h","port":80,"weight":-1}"#,
            br#"{"host":"h","port":80,"weight":"heavy"}"#,
            b"",
        ] {
            assert!(
                decode("n", bad, &nerve()).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let huge = vec![b' '; MAX_DATA + 1];
        assert_eq!(
            decode("n", &huge, &nerve()),
            Err(DecodeError::TooLarge(MAX_DATA + 1))
        );
    }
}
