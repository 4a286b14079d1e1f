//! The PROXY protocol (HAProxy's `doc/proxy-protocol.txt`), versions 1 (text) and 2 (binary): the
//! header a proxy writes first on a connection to say whose connection it is.
//!
//! sinew writes it towards backends (`send_proxy`, HAProxy's `send-proxy` / `send-proxy-v2`) and reads
//! it on listeners (`accept_proxy`, HAProxy's `accept-proxy`); health checks send a `LOCAL` header.
//! The codec is pure ([`encode`], [`decode`]); [`read_header`] takes a header off an accepted socket,
//! [`write_header`] puts one on a new connection.

mod decode;
mod encode;
mod read;

pub use decode::{decode, Decoded};
pub use encode::encode;
pub use read::read_header;

pub use crate::config::SendProxy as Version;
use std::net::SocketAddr;

/// Longest version 1 header, CRLF included (the spec's `PROXY UNKNOWN` line with two IPv6 addresses).
pub const V1_MAX: usize = 107;
/// The 12 bytes every version 2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest version 2 header sinew reads (signature, fixed part and TLVs): a larger one is refused.
pub const V2_MAX: usize = 4096;

/// The two ends of a proxied connection, as a header carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// The client.
    pub source: SocketAddr,
    /// The address the client connected to.
    pub destination: SocketAddr,
}

/// What a header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A proxied connection between these addresses.
    Proxy(Addresses),
    /// The connection's own addresses stand: v2 `LOCAL` (a proxy's health check), v1 `UNKNOWN`, or an
    /// address family other than TCP over IPv4 or IPv6.
    Local,
}

/// Why a header could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyProtocolError {
    /// The connection does not start with a PROXY protocol signature.
    #[error("no PROXY protocol header: the connection starts with neither \"PROXY \" nor the v2 signature")]
    Missing,
    /// A version 1 line is wrong.
    #[error("malformed PROXY v1 header: {0}")]
    V1(&'static str),
    /// A version 2 header is wrong.
    #[error("malformed PROXY v2 header: {0}")]
    V2(&'static str),
    /// The header is longer than sinew reads.
    #[error("PROXY header longer than {0} bytes")]
    TooLong(usize),
    /// The client closed before the header was complete.
    #[error("connection closed before the PROXY header was complete")]
    Truncated,
    /// The header did not arrive in time.
    #[error("no complete PROXY header within {0:?}")]
    Timeout(std::time::Duration),
    /// Reading the socket failed.
    #[error("reading the PROXY header: {0}")]
    Io(String),
}

impl ProxyProtocolError {
    /// The `cause` label of `sinew_proxy_protocol_errors_total`.
    pub fn cause(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::V1(_) | Self::V2(_) => "malformed",
            Self::TooLong(_) => "too_long",
            Self::Truncated => "truncated",
            Self::Timeout(_) => "timeout",
            Self::Io(_) => "io",
        }
    }
}

/// Writes `header` in `version` on `stream` (a new connection, before anything else is sent on it).
pub async fn write_header<W>(
    stream: &mut W,
    version: Version,
    header: Header,
) -> std::io::Result<()>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let mut out = Vec::with_capacity(64);
    encode(version, header, &mut out);
    stream.write_all(&out).await
}
