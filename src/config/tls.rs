//! TLS settings: towards backends (origination, mTLS) and on listeners (termination).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// TLS from sinew to the backends.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsUpstream {
    /// PEM file of the CAs that sign backend certificates; default: the Mozilla root set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Name the backends' certificates must carry; default: the backend's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// PEM certificate chain presented to backends (mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
    /// Verify backend certificates; turning it off is logged as a warning at start.
    #[serde(default = "yes")]
    pub verify: bool,
    /// ALPN protocols offered, e.g. `[h2, http/1.1]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alpn: Vec<String>,
}

/// TLS terminated on the service's listener.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsListen {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CAs of client certificates; when set, clients must present one (mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
}

fn yes() -> bool {
    true
}
