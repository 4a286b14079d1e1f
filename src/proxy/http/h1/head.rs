//! HTTP/1.1 message heads towards a backend: the request head sinew writes, and the response head it
//! reads, with how the response body is framed (RFC 9112 section 6).

use super::fields::{self, Span};
use crate::proxy::http::headers::connection_has;
use bytes::{Bytes, BytesMut};
use hyper::header::{HeaderMap, CONTENT_LENGTH, TRANSFER_ENCODING};
use hyper::http::request::Parts;
use hyper::{Method, StatusCode, Version};

/// Most header fields read in one response head, as in hyper's client.
const MAX_HEADERS: usize = 100;

/// A response head the backend sent that sinew cannot pass on.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    /// Not HTTP/1.x syntax (httparse's reason).
    #[error("malformed response head: {0}")]
    Syntax(httparse::Error),
    /// A header name or value outside what HTTP allows.
    #[error("invalid response header {0:?}")]
    Header(String),
    /// A `Content-Length` that is not one decimal number.
    #[error("invalid Content-Length in response")]
    Length,
    /// More than [`MAX_HEADERS`] header fields, or a head larger than the limit.
    #[error("response head too large")]
    TooLarge,
    /// `101 Switching Protocols` to a request that asked for no upgrade.
    #[error("unrequested protocol switch")]
    Switch,
}

/// How the body of a response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304, `Content-Length: 0`).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the backend closes the connection.
    Close,
}

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    /// Status code.
    pub status: StatusCode,
    /// Header fields as received (hop-by-hop ones included: the caller strips them).
    pub headers: HeaderMap,
    /// How the body is delimited.
    pub framing: Framing,
    /// The connection may carry another request once the body has been read.
    pub keep_alive: bool,
}

/// Writes the head of `parts` for a backend into `out`: request line with `path`, the header fields
/// as they are (the caller has cleaned them), and `Content-Length: length` when given.
pub fn encode_request(parts: &Parts, path: &str, length: Option<usize>, out: &mut Vec<u8>) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        fields::append(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if let Some(n) = length {
        fields::append(
            out,
            b"content-length",
            itoa::Buffer::new().format(n).as_bytes(),
        );
    }
    out.extend_from_slice(b"\r\n");
}

/// Parses a response head at the start of `buf`, taking it out of `buf` when complete; `None` when
/// more bytes are needed (the caller bounds how many). `method` is the request's (a HEAD response has
/// no body).
pub fn parse_response(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, HeadError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut fields);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(e) => return Err(HeadError::Syntax(e)),
    };
    let code = resp.code.unwrap_or(0);
    let status =
        StatusCode::from_u16(code).map_err(|_| HeadError::Syntax(httparse::Error::Status))?;
    let version = match resp.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut spans = [Span::default(); MAX_HEADERS];
    let count = fields::record(buf, resp.headers, &mut spans);
    let raw: Bytes = buf.split_to(len).freeze();
    let mut headers = fields::header_map(&raw, &spans[..count]).map_err(HeadError::Header)?;
    let framing = framing(status, method, &headers)?;
    let mut keep_alive = framing != Framing::Close && keeps_alive(version, &headers);
    if headers.contains_key(TRANSFER_ENCODING) {
        // The body is framed by Transfer-Encoding: a Content-Length beside it is not passed on, and a
        // message framed both ways (or chunked in HTTP/1.0) is suspect, so its connection ends with it
        // (RFC 9112 sections 6.1 and 6.3).
        if headers.remove(CONTENT_LENGTH).is_some() || version == Version::HTTP_10 {
            keep_alive = false;
        }
    }
    Ok(Some(Head {
        status,
        headers,
        framing,
        keep_alive,
    }))
}

/// RFC 9112 section 6.3, for a response to `method`.
fn framing(status: StatusCode, method: &Method, headers: &HeaderMap) -> Result<Framing, HeadError> {
    if *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        // Chunked must be the last coding; anything else runs until the connection closes.
        let last = headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .rfind(|t| !t.is_empty());
        return Ok(match last {
            Some(t) if t.eq_ignore_ascii_case("chunked") => Framing::Chunked,
            _ => Framing::Close,
        });
    }
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        // Repeated fields, or one list, must all carry the same number.
        for part in value.to_str().map_err(|_| HeadError::Length)?.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HeadError::Length);
            }
            let n: u64 = part.parse().map_err(|_| HeadError::Length)?;
            if length.is_some_and(|l| l != n) {
                return Err(HeadError::Length);
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
        None => Framing::Close,
    })
}

/// HTTP/1.1 keeps the connection unless told `close`; HTTP/1.0 only when told `keep-alive`.
pub(super) fn keeps_alive(version: Version, headers: &HeaderMap) -> bool {
    match version {
        Version::HTTP_10 => connection_has(headers, "keep-alive"),
        _ => !connection_has(headers, "close"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn parse(raw: &str, method: Method) -> Result<Option<Head>, HeadError> {
        let mut buf = BytesMut::from(raw);
        parse_response(&mut buf, &method)
    }

    fn framing_of(raw: &str) -> Framing {
        parse(raw, Method::GET).unwrap().unwrap().framing
    }

    #[test]
    fn a_complete_head_is_taken_out_of_the_buffer() {
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: b\r\n\r\nok\n");
        let head = parse_response(&mut buf, &Method::GET).unwrap().unwrap();
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.headers["x-a"], "b");
        assert_eq!(head.framing, Framing::Length(3));
        assert!(head.keep_alive);
        assert_eq!(&buf[..], b"ok\n");
    }

    #[test]
    fn empty_values_and_obsolete_folding_do_not_confuse_the_offsets() {
        let head = parse(
            "HTTP/1.1 200 OK\r\nX-Empty:\r\nX-Space: \r\nX-B: b\r\n\r\n",
            Method::GET,
        );
        let head = head.unwrap().unwrap();
        assert_eq!(head.headers["x-empty"], "");
        assert_eq!(head.headers["x-space"], "");
        assert_eq!(head.headers["x-b"], "b");
        // Folded lines are rejected by httparse by default: an error, not a panic.
        let _ = parse("HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\n\r\n", Method::GET);
    }

    #[test]
    fn mutated_and_random_heads_never_panic() {
        let valid = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\nConnection: close\r\nX-A: b\r\n\r\nok\n";
        let mut rng = fastrand::Rng::with_seed(8);
        for round in 0..20_000 {
            let mut input = if round % 4 == 0 {
                (0..rng.usize(0..96))
                    .map(|_| rng.u8(..))
                    .collect::<Vec<u8>>()
            } else {
                valid.to_vec()
            };
            let edits = rng.usize(0..6);
            super::super::mutate(&mut rng, &mut input, edits, b"\r\n:, \t\x00\xff0123456789");
            for method in [Method::GET, Method::HEAD] {
                let mut buf = BytesMut::from(&input[..]);
                let _ = parse_response(&mut buf, &method);
            }
        }
    }

    #[test]
    fn a_partial_head_waits_for_more() {
        assert!(parse("HTTP/1.1 200 OK\r\nContent-Le", Method::GET)
            .unwrap()
            .is_none());
    }

    #[test]
    fn framing_follows_rfc_9112() {
        assert_eq!(
            framing_of("HTTP/1.1 204 No Content\r\n\r\n"),
            Framing::Empty
        );
        assert_eq!(
            framing_of("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n"),
            Framing::Empty
        );
        assert_eq!(
            framing_of("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            Framing::Empty
        );
        assert_eq!(
            framing_of(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 4\r\n\r\n"
            ),
            Framing::Chunked
        );
        assert_eq!(
            framing_of("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Framing::Close
        );
        assert_eq!(framing_of("HTTP/1.1 200 OK\r\n\r\n"), Framing::Close);
        assert_eq!(
            framing_of("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n"),
            Framing::Length(5)
        );
        let head = parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", Method::HEAD);
        assert_eq!(head.unwrap().unwrap().framing, Framing::Empty);
    }

    #[test]
    fn bad_lengths_and_heads_are_errors() {
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "SMTP ready\r\n\r\n",
        ] {
            assert!(parse(raw, Method::GET).is_err(), "{raw:?}");
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let raw = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
        assert!(matches!(parse(&raw, Method::GET), Err(HeadError::TooLarge)));
    }

    #[test]
    fn transfer_encoding_wins_over_content_length_and_ends_the_connection() {
        let raw = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n";
        let head = parse(raw, Method::GET).unwrap().unwrap();
        assert_eq!(head.framing, Framing::Chunked);
        assert!(!head.headers.contains_key(CONTENT_LENGTH), "not passed on");
        assert!(!head.keep_alive);
        let raw = "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(!parse(raw, Method::GET).unwrap().unwrap().keep_alive);
        let raw = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(parse(raw, Method::GET).unwrap().unwrap().keep_alive);
    }

    #[test]
    fn keep_alive_by_version_and_connection() {
        let ka = |raw: &str| parse(raw, Method::GET).unwrap().unwrap().keep_alive;
        assert!(!ka(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n"
        ));
        assert!(!ka("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n"));
        assert!(ka(
            "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\n"
        ));
        assert!(!ka("HTTP/1.1 200 OK\r\n\r\n"));
    }

    #[test]
    fn the_request_head_is_written_as_given() {
        let (mut parts, ()) = hyper::Request::post("http://x/ignored")
            .header("host", "b:1")
            .header("content-length", "2")
            .body(())
            .unwrap()
            .into_parts();
        parts.headers.append("x-a", HeaderValue::from_static("1"));
        let mut out = Vec::new();
        encode_request(&parts, "/p?q=1", None, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /p?q=1 HTTP/1.1\r\nhost: b:1\r\ncontent-length: 2\r\nx-a: 1\r\n\r\n"
        );
        parts.headers.remove("content-length");
        let mut out = Vec::new();
        encode_request(&parts, "/", Some(1907), &mut out);
        assert!(String::from_utf8(out)
            .unwrap()
            .ends_with("x-a: 1\r\ncontent-length: 1907\r\n\r\n"));
    }
}
