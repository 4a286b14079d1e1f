//! HTTP-mode settings: upstream protocol, header handling and limits, retry conditions and backoff.

use super::duration;
use super::network::Network;
use hyper::header::HeaderName;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::time::Duration;

/// The protocol spoken to backends in HTTP mode.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (h2c), e.g. for gRPC backends.
    Http2,
}

/// Header handling and limits in HTTP mode.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpOptions {
    /// Append the client address to `X-Forwarded-For` and set `X-Forwarded-Proto`.
    pub forwarded_headers: bool,
    /// The header the client address is appended to (HAProxy's `option forwardfor header NAME`).
    pub forwarded_for_header: FieldName,
    /// Clients in these networks get no forwarded headers (HAProxy's `option forwardfor except NET`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub forwarded_except: Vec<Network>,
    /// Add `Via: 1.1 sinew` to requests and responses.
    pub via: bool,
    /// Largest request head accepted from a client, in bytes (beyond it: 431).
    pub max_header_bytes: usize,
    /// Most header fields accepted in a request head (beyond it: 431).
    pub max_headers: usize,
    /// Request bodies up to this size are kept in memory so the request can be retried; larger bodies stream
    /// through and are never retried once sent.
    pub max_retry_body: usize,
    /// Log one line per request (target `sinew::access`).
    pub access_log: bool,
    /// Idle pooled connections kept per backend.
    pub max_idle_per_backend: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            forwarded_headers: true,
            forwarded_for_header: FieldName(HeaderName::from_static("x-forwarded-for")),
            forwarded_except: Vec::new(),
            via: false,
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_retry_body: 64 * 1024,
            access_log: false,
            max_idle_per_backend: 64,
        }
    }
}

/// A header field name, checked at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldName(pub HeaderName);

impl<'de> Deserialize<'de> for FieldName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        HeaderName::from_bytes(s.as_bytes())
            .map(FieldName)
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a header field name")))
    }
}

impl Serialize for FieldName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

/// A condition under which an HTTP request is retried (Envoy's `retry_on`, HAProxy's `retry-on`).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    /// The connection to the backend could not be established (always retried, listed for clarity).
    ConnectFailure,
    /// The backend reset or closed the connection before a response head arrived.
    Reset,
    /// The backend answered 502, 503 or 504.
    GatewayError,
    /// The backend answered any 5xx.
    #[serde(rename = "5xx")]
    ServerError,
    /// The backend answered one of `retriable_status_codes`.
    RetriableStatusCodes,
}

/// Exponential backoff between retries, fully jittered.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Backoff {
    /// Upper bound of the first retry's delay.
    #[serde(with = "duration")]
    pub base: Duration,
    /// Cap of the delay.
    #[serde(with = "duration")]
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(25),
            max: Duration::from_millis(250),
        }
    }
}
