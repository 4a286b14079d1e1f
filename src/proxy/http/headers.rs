//! Request and response header rules of a proxy: hop-by-hop removal, forwarding headers, idempotency.

use crate::config::HttpOptions;
use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request};
use std::net::{IpAddr, SocketAddr};

/// Headers that describe one connection, not the message (RFC 9110 7.6.1), removed when forwarding.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
];

/// A request header that marks a non-idempotent request as safe to retry (IETF `Idempotency-Key`).
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// True for a request asking to switch protocols (WebSocket and the like).
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == hyper::Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && connection_has(req.headers(), "upgrade")
}

/// True when a `Connection` field of `headers` lists `token` (case-insensitive).
pub fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers and those named in `Connection`; keeps `TE: trailers` (gRPC needs it) and,
/// for upgrades, `Connection: upgrade` + `Upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Most messages carry none of them: one pass over the names instead of a lookup per header.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    let trailers = headers
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    let upgrade_value = headers.get(header::UPGRADE).cloned();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let (true, Some(value)) = (upgrade, upgrade_value) {
        headers.insert(header::UPGRADE, value);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Appends the client to `X-Forwarded-For` (or the configured header) and sets `X-Forwarded-Proto` when
/// absent; nothing for a client in one of the `forwarded_except` networks.
pub fn add_forwarded(headers: &mut HeaderMap, client: SocketAddr, options: &HttpOptions) {
    if options
        .forwarded_except
        .iter()
        .any(|n| n.contains(client.ip()))
    {
        return;
    }
    let xff = &options.forwarded_for_header.0;
    // Built byte by byte (this runs on every request, and `core::fmt` was a visible part of its cost),
    // into a vector of exactly its length, which the value then takes as it is: no copy, no second
    // allocation.
    let ip = IpText::new(client.ip());
    let prev = headers.get(xff).map(HeaderValue::as_bytes);
    let mut value = Vec::with_capacity(prev.map_or(0, |p| p.len() + 2) + ip.as_bytes().len());
    if let Some(prev) = prev {
        value.extend_from_slice(prev);
        value.extend_from_slice(b", ");
    }
    value.extend_from_slice(ip.as_bytes());
    if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(value)) {
        headers.insert(xff.clone(), v);
    }
    headers
        .entry(HeaderName::from_static("x-forwarded-proto"))
        .or_insert(HeaderValue::from_static("http"));
}

/// An address as text, kept on the stack: dotted decimal for IPv4, `Ipv6Addr`'s own form for IPv6.
struct IpText {
    buf: [u8; IpText::MAX],
    len: usize,
}

impl IpText {
    /// Longer than any address's text (an IPv6 address is at most 45 bytes as text).
    const MAX: usize = 48;

    /// `ip` as text.
    fn new(ip: IpAddr) -> Self {
        let mut text = Self {
            buf: [0; Self::MAX],
            len: 0,
        };
        match ip {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        text.push(b'.');
                    }
                    if octet >= 100 {
                        text.push(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        text.push(b'0' + octet / 10 % 10);
                    }
                    text.push(b'0' + octet % 10);
                }
            }
            IpAddr::V6(v6) => {
                let mut rest = &mut text.buf[..];
                // Cannot fail: the buffer is longer than any IPv6 address's text.
                let _ = std::io::Write::write_fmt(&mut rest, format_args!("{v6}"));
                text.len = Self::MAX - rest.len();
            }
        }
        text
    }

    /// Appends one byte (at most 15 for an IPv4 address).
    fn push(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    /// The text.
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Appends `1.1 sinew` to `Via`.
pub fn add_via(headers: &mut HeaderMap) {
    let value = match headers.get(header::VIA).and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, 1.1 sinew"),
        None => "1.1 sinew".to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(header::VIA, v);
    }
}

/// True when repeating the request is safe: idempotent methods, or an `Idempotency-Key` header.
pub fn is_idempotent(method: &Method, headers: &HeaderMap) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    ) || headers.contains_key(IDEMPOTENCY_KEY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::HOST, HeaderValue::from_static("svc"));
        strip_hop_by_hop(&mut h, false);
        assert!(
            h.get("x-secret").is_none()
                && h.get("keep-alive").is_none()
                && h.get(header::CONNECTION).is_none()
        );
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
        assert_eq!(h.get(header::HOST).unwrap(), "svc");
    }

    #[test]
    fn upgrade_headers_survive_for_upgrades() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get(header::UPGRADE).unwrap(), "websocket");
        assert_eq!(h.get(header::CONNECTION).unwrap(), "upgrade");
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        add_forwarded(
            &mut h,
            "127.0.0.1:5000".parse().unwrap(),
            &HttpOptions::default(),
        );
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.0.0.1, 127.0.0.1");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
    }

    #[test]
    fn client_addresses_are_written_as_their_display_form() {
        let mut v4: Vec<IpAddr> = (0..=255u8)
            .map(|o| IpAddr::from([o, o.wrapping_mul(7), 255 - o, o / 3]))
            .collect();
        v4.extend(
            ["0.0.0.0", "255.255.255.255", "10.0.0.1", "100.9.10.99"]
                .map(|a| a.parse::<IpAddr>().unwrap()),
        );
        let v6: [IpAddr; 4] =
            ["::1", "2001:db8::7", "::ffff:192.0.2.1", "fe80::1:2:3:4"].map(|a| a.parse().unwrap());
        for ip in v4.into_iter().chain(v6) {
            assert_eq!(IpText::new(ip).as_bytes(), ip.to_string().as_bytes());
        }
    }

    #[test]
    fn forwarded_header_name_and_excepted_networks() {
        let options: HttpOptions = serde_json::from_str(
            r#"{"forwarded_for_header": "X-Client", "forwarded_except": ["10.0.0.0/8"]}"#,
        )
        .unwrap();
        let mut h = HeaderMap::new();
        add_forwarded(&mut h, "192.0.2.7:5000".parse().unwrap(), &options);
        assert_eq!(h.get("x-client").unwrap(), "192.0.2.7");
        assert!(h.get("x-forwarded-for").is_none());
        let mut h = HeaderMap::new();
        add_forwarded(&mut h, "10.1.2.3:5000".parse().unwrap(), &options);
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn idempotency() {
        assert!(is_idempotent(&Method::PUT, &HeaderMap::new()));
        assert!(!is_idempotent(&Method::POST, &HeaderMap::new()));
        let mut h = HeaderMap::new();
        h.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("k1"));
        assert!(is_idempotent(&Method::POST, &h));
    }
}
