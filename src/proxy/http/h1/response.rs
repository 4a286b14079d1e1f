//! Response heads towards a client from sinew's own HTTP/1 server path, and how their bodies are
//! framed: by the length the response declares or its body knows, else chunked (HTTP/1.1) or by
//! closing the connection (HTTP/1.0), as RFC 9112 section 6 has it.

use super::{date, fields};
use hyper::header::{HeaderMap, CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use hyper::{StatusCode, Version};

/// How the body of a response to a client is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delimit {
    /// No body is sent (HEAD, 1xx, 204, 304).
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunks.
    Chunked,
    /// The connection closes after the body.
    Close,
}

/// A response head to write.
pub struct Outgoing<'a> {
    /// Status code.
    pub status: StatusCode,
    /// Header fields (hop-by-hop ones already removed).
    pub headers: &'a HeaderMap,
    /// The body's exact length, when known.
    pub size: Option<u64>,
}

/// Writes `resp`'s head for a client speaking `version` that sent a HEAD request when `head`;
/// `keep_alive` is whether the connection stays open, and is cleared when the body must end with it.
/// Returns how the body is delimited.
pub fn encode_response(
    resp: &Outgoing<'_>,
    version: Version,
    head: bool,
    keep_alive: &mut bool,
    out: &mut Vec<u8>,
) -> Delimit {
    let status = resp.status;
    let declared = declared_length(resp.headers);
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let delimit = if bodiless || head {
        Delimit::None
    } else if let Some(n) = declared.or(resp.size) {
        Delimit::Length(n)
    } else if version == Version::HTTP_11 {
        Delimit::Chunked
    } else {
        Delimit::Close
    };
    if delimit == Delimit::Close {
        *keep_alive = false;
    }
    out.extend_from_slice(if version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in resp.headers {
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING || name == CONNECTION {
            continue;
        }
        fields::append(out, name.as_str().as_bytes(), value.as_bytes());
    }
    let length = match delimit {
        Delimit::Length(n) => Some(n),
        // A HEAD or 304 response tells the length the body would have.
        Delimit::None if status != StatusCode::NO_CONTENT && !status.is_informational() => declared,
        _ => None,
    };
    if let Some(n) = length {
        fields::append(
            out,
            b"content-length",
            itoa::Buffer::new().format(n).as_bytes(),
        );
    }
    if delimit == Delimit::Chunked {
        fields::append(out, b"transfer-encoding", b"chunked");
    }
    match (version, *keep_alive) {
        (Version::HTTP_10, true) => fields::append(out, b"connection", b"keep-alive"),
        (Version::HTTP_11, false) => fields::append(out, b"connection", b"close"),
        _ => {}
    }
    if !resp.headers.contains_key(DATE) {
        out.extend_from_slice(b"date: ");
        date::append(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    delimit
}

/// The response's `Content-Length`, when it is one number.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(CONTENT_LENGTH).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    value.to_str().ok()?.trim().parse().ok()
}

/// Appends the size line of a chunk of `len` bytes.
pub fn chunk_size(len: usize, out: &mut Vec<u8>) {
    use std::io::Write;
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{len:x}\r\n");
}

/// Appends the last chunk, with `trailers` when the body ended with some.
pub fn last_chunk(trailers: Option<&HeaderMap>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        fields::append(out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn encode(
        status: u16,
        headers: &[(&str, &str)],
        size: Option<u64>,
        version: Version,
        head: bool,
    ) -> (String, Delimit, bool) {
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(
                hyper::header::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map.insert(DATE, HeaderValue::from_static("d"));
        let resp = Outgoing {
            status: StatusCode::from_u16(status).unwrap(),
            headers: &map,
            size,
        };
        let mut keep_alive = true;
        let mut out = Vec::new();
        let delimit = encode_response(&resp, version, head, &mut keep_alive, &mut out);
        (String::from_utf8(out).unwrap(), delimit, keep_alive)
    }

    #[test]
    fn the_length_declared_or_known_frames_the_body() {
        let (text, delimit, ka) = encode(
            200,
            &[("content-length", "3")],
            None,
            Version::HTTP_11,
            false,
        );
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ndate: d\r\ncontent-length: 3\r\n\r\n"
        );
        assert_eq!((delimit, ka), (Delimit::Length(3), true));
        let (text, delimit, _) = encode(503, &[("x-a", "1")], Some(7), Version::HTTP_11, false);
        assert!(
            text.starts_with(
                "HTTP/1.1 503 Service Unavailable\r\nx-a: 1\r\ndate: d\r\ncontent-length: 7\r\n"
            ),
            "{text}"
        );
        assert_eq!(delimit, Delimit::Length(7));
    }

    #[test]
    fn unknown_lengths_are_chunked_or_end_the_connection() {
        let (text, delimit, ka) = encode(200, &[], None, Version::HTTP_11, false);
        assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
        assert_eq!((delimit, ka), (Delimit::Chunked, true));
        let (text, delimit, ka) = encode(200, &[], None, Version::HTTP_10, false);
        assert!(
            text.starts_with("HTTP/1.0 200 OK\r\n") && !text.contains("keep-alive"),
            "{text}"
        );
        assert_eq!((delimit, ka), (Delimit::Close, false));
    }

    #[test]
    fn bodiless_responses_keep_their_declared_length_but_send_none() {
        let (text, delimit, _) = encode(
            200,
            &[("content-length", "9")],
            Some(0),
            Version::HTTP_11,
            true,
        );
        assert!(
            text.contains("content-length: 9\r\n"),
            "HEAD tells the length: {text}"
        );
        assert_eq!(delimit, Delimit::None);
        let (text, delimit, _) = encode(
            204,
            &[("content-length", "0")],
            None,
            Version::HTTP_11,
            false,
        );
        assert!(!text.contains("content-length"), "{text}");
        assert_eq!(delimit, Delimit::None);
        let (_, delimit, _) = encode(304, &[], None, Version::HTTP_11, false);
        assert_eq!(delimit, Delimit::None);
    }

    #[test]
    fn connection_fields_are_sinews_own() {
        let (text, _, _) = encode(
            200,
            &[("connection", "upgrade"), ("transfer-encoding", "gzip")],
            Some(1),
            Version::HTTP_11,
            false,
        );
        assert!(
            !text.contains("upgrade") && !text.contains("gzip"),
            "{text}"
        );
        let mut map = HeaderMap::new();
        map.insert(DATE, HeaderValue::from_static("d"));
        let resp = Outgoing {
            status: StatusCode::OK,
            headers: &map,
            size: Some(0),
        };
        let mut out = Vec::new();
        let mut keep_alive = false;
        encode_response(&resp, Version::HTTP_11, false, &mut keep_alive, &mut out);
        assert!(String::from_utf8_lossy(&out).contains("connection: close\r\n"));
        let mut out = Vec::new();
        let mut keep_alive = true;
        encode_response(&resp, Version::HTTP_10, false, &mut keep_alive, &mut out);
        assert!(String::from_utf8_lossy(&out).contains("connection: keep-alive\r\n"));
    }

    #[test]
    fn chunks_are_hex_sized_and_end_with_trailers() {
        let mut out = Vec::new();
        chunk_size(255, &mut out);
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        last_chunk(Some(&trailers), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ff\r\n0\r\ngrpc-status: 0\r\n\r\n"
        );
    }
}
