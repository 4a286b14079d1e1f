//! Request heads from a client, for sinew's own HTTP/1 server path: parsed in place with header
//! values left in the received bytes. Requests the path leaves to hyper's server (upgrades, CONNECT,
//! `Expect`, `Transfer-Encoding`, bodies larger than it keeps in memory, the HTTP/2 preface) are
//! recognised before anything is taken out of the buffer, so hyper reads them from their first byte.

use super::fields::{self, Span, STACK_FIELDS};
use super::head::keeps_alive;
use bytes::{Bytes, BytesMut};
use hyper::http::request::Parts;
use hyper::{Method, Uri, Version};
use std::mem::MaybeUninit;

/// A request head for the own path, taken out of the buffer.
pub struct Request {
    /// Method, target, version and header fields.
    pub parts: Parts,
    /// Bytes of body after the head (`Content-Length`, or 0).
    pub body_len: usize,
    /// The client may send another request on the connection after this one.
    pub keep_alive: bool,
    /// Bytes of the head.
    pub head_len: usize,
}

/// What the start of the buffer holds. Not boxed: a box would be an allocation per request.
#[allow(clippy::large_enum_variant)]
pub enum Parsed {
    /// Part of a head: more bytes are needed.
    Partial,
    /// A complete head for the own path.
    Request(Request),
    /// A request for hyper's server; the buffer is untouched.
    Elsewhere,
}

/// A request head no server can take.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Not HTTP/1.x syntax (httparse's reason).
    #[error("malformed request head: {0}")]
    Syntax(httparse::Error),
    /// More header fields than `http.max_headers`.
    #[error("too many request header fields")]
    TooManyFields,
    /// A header name or value outside what HTTP allows.
    #[error("invalid request header {0:?}")]
    Header(String),
    /// A method or request target that is not valid.
    #[error("invalid request method or target")]
    Target,
    /// A `Content-Length` that is not one decimal number.
    #[error("invalid Content-Length in request")]
    Length,
}

/// What a scan of the buffer's start found.
enum Scanned {
    /// Part of a head.
    Partial,
    /// A request for hyper's server.
    Elsewhere,
    /// A complete head for the own path.
    Complete(Scan),
}

/// What the scan of a complete head found, as offsets into the buffer.
struct Scan {
    len: usize,
    method: Method,
    target: (usize, usize),
    version: Version,
    fields: usize,
    body_len: usize,
}

/// Parses the request head at the start of `buf` (at most `max_fields` header fields), taking it out
/// when the own path serves it: a body of at most `max_body` bytes framed by `Content-Length`.
pub fn parse_request(
    buf: &mut BytesMut,
    max_fields: usize,
    max_body: usize,
) -> Result<Parsed, RequestError> {
    if buf.starts_with(b"PRI ") {
        return Ok(Parsed::Elsewhere);
    }
    let mut stack = [Span::default(); STACK_FIELDS];
    let mut heap = Vec::new();
    let spans: &mut [Span] = if max_fields <= STACK_FIELDS {
        &mut stack[..max_fields]
    } else {
        heap.resize(max_fields, Span::default());
        &mut heap
    };
    let scanned = if max_fields <= STACK_FIELDS {
        let mut storage = [const { MaybeUninit::uninit() }; STACK_FIELDS];
        scan(buf, &mut storage[..max_fields], spans, max_body)?
    } else {
        let mut storage = Vec::with_capacity(max_fields);
        storage.resize_with(max_fields, MaybeUninit::uninit);
        scan(buf, &mut storage, spans, max_body)?
    };
    let scan = match scanned {
        Scanned::Complete(scan) => scan,
        Scanned::Elsewhere => return Ok(Parsed::Elsewhere),
        Scanned::Partial => return Ok(Parsed::Partial),
    };
    let raw: Bytes = buf.split_to(scan.len).freeze();
    let headers = fields::header_map(&raw, &spans[..scan.fields]).map_err(RequestError::Header)?;
    let uri = Uri::from_maybe_shared(raw.slice(scan.target.0..scan.target.1))
        .map_err(|_| RequestError::Target)?;
    let keep_alive = keeps_alive(scan.version, &headers);
    let (mut parts, ()) = hyper::Request::new(()).into_parts();
    parts.method = scan.method;
    parts.uri = uri;
    parts.version = scan.version;
    parts.headers = headers;
    Ok(Parsed::Request(Request {
        parts,
        body_len: scan.body_len,
        keep_alive,
        head_len: scan.len,
    }))
}

/// Scans `head`.
fn scan<'b>(
    head: &'b [u8],
    storage: &mut [MaybeUninit<httparse::Header<'b>>],
    spans: &mut [Span],
    max_body: usize,
) -> Result<Scanned, RequestError> {
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(head, storage) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Scanned::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(RequestError::TooManyFields),
        Err(e) => return Err(RequestError::Syntax(e)),
    };
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(RequestError::Syntax(httparse::Error::Version));
    };
    let mut lengths = 0;
    let mut body_len = 0;
    for field in req.headers.iter() {
        let name = field.name;
        if ["upgrade", "expect", "transfer-encoding"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
        {
            return Ok(Scanned::Elsewhere);
        }
        if name.eq_ignore_ascii_case("content-length") {
            // A list (`5, 5`) is judged by hyper's server.
            if field.value.contains(&b',') {
                return Ok(Scanned::Elsewhere);
            }
            lengths += 1;
            body_len = decimal(field.value).ok_or(RequestError::Length)?;
        }
    }
    // Repeated lengths are judged by hyper's server, larger bodies stream through it. `PRI` is the
    // HTTP/2 preface's method: after the empty lines httparse skips it must go where it goes without
    // them, so a request's path never depends on blank lines before it.
    if lengths > 1 || body_len > max_body || method == "CONNECT" || method == "PRI" {
        return Ok(Scanned::Elsewhere);
    }
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| RequestError::Target)?;
    let base = head.as_ptr() as usize;
    let start = target.as_ptr() as usize - base;
    let fields = fields::record(head, req.headers, spans);
    Ok(Scanned::Complete(Scan {
        len,
        method,
        target: (start, start + target.len()),
        version: if minor == 0 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        },
        fields,
        body_len,
    }))
}

/// A `Content-Length` value: one decimal number that fits.
fn decimal(value: &[u8]) -> Option<usize> {
    let value = value.trim_ascii();
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = value.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })?;
    usize::try_from(n).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> (Result<Parsed, RequestError>, BytesMut) {
        let mut buf = BytesMut::from(raw);
        (parse_request(&mut buf, 100, 1024), buf)
    }

    fn request(raw: &str) -> (Request, BytesMut) {
        match parse(raw) {
            (Ok(Parsed::Request(r)), rest) => (r, rest),
            (Ok(Parsed::Partial), _) => panic!("partial: {raw:?}"),
            (Ok(Parsed::Elsewhere), _) => panic!("elsewhere: {raw:?}"),
            (Err(e), _) => panic!("{e}: {raw:?}"),
        }
    }

    #[test]
    fn a_complete_head_is_taken_out_with_its_fields() {
        let (req, rest) = request(
            "POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nX-A: 1\r\nX-A: 2\r\n\r\nhiGET",
        );
        assert_eq!(req.parts.method, Method::POST);
        assert_eq!(req.parts.uri, "/a?b=1");
        assert_eq!(req.parts.version, Version::HTTP_11);
        assert_eq!(req.parts.headers["host"], "x");
        assert_eq!(req.parts.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(req.body_len, 2);
        assert!(req.keep_alive);
        assert_eq!(&rest[..], b"hiGET", "the body and what follows stay");
    }

    #[test]
    fn lengths_with_leading_zeros_are_numbers() {
        let (req, _) =
            request("POST / HTTP/1.1\r\nContent-Length: 00000000000000000000005\r\n\r\n");
        assert_eq!(req.body_len, 5);
    }

    #[test]
    fn keep_alive_follows_version_and_connection() {
        let ka = |raw: &str| request(raw).0.keep_alive;
        assert!(!ka("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!ka("GET / HTTP/1.0\r\n\r\n"));
        assert!(ka("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
        assert!(ka("GET / HTTP/1.1\r\nConnection: keep-alive, x-a\r\n\r\n"));
    }

    #[test]
    fn requests_for_hyper_leave_the_buffer_untouched() {
        for raw in [
            "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 4096\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
            "CONNECT x:443 HTTP/1.1\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            let (parsed, rest) = parse(raw);
            assert!(matches!(parsed, Ok(Parsed::Elsewhere)), "{raw:?}");
            assert_eq!(&rest[..], raw.as_bytes());
        }
    }

    #[test]
    fn partial_heads_wait_and_bad_ones_are_errors() {
        assert!(matches!(
            parse("GET / HTTP/1.1\r\nHo").0,
            Ok(Parsed::Partial)
        ));
        for raw in [
            "GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "GET / HTTP/3.0\r\n\r\n",
            "G@T / HTTP/1.1\r\n\r\n",
            "GET /\x7f HTTP/1.1\r\n\r\n",
        ] {
            assert!(parse(raw).0.is_err(), "{raw:?}");
        }
        let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(matches!(parse(&raw).0, Err(RequestError::TooManyFields)));
    }

    #[test]
    fn more_fields_than_the_stack_holds_are_parsed_on_the_heap() {
        let many: String = (0..300).map(|i| format!("X-{i}: v{i}\r\n")).collect();
        let mut buf = BytesMut::from(format!("GET / HTTP/1.1\r\n{many}\r\n").as_str());
        let Ok(Parsed::Request(req)) = parse_request(&mut buf, 400, 0) else {
            panic!("not parsed");
        };
        assert_eq!(req.parts.headers.len(), 300);
        assert_eq!(req.parts.headers["x-299"], "v299");
        assert!(buf.is_empty());
    }

    #[test]
    fn mutated_heads_never_panic() {
        let valid =
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
        let mut rng = fastrand::Rng::with_seed(6);
        for _ in 0..20_000 {
            let mut input = valid.to_vec();
            let edits = rng.usize(1..6);
            super::super::mutate(&mut rng, &mut input, edits, b"\r\n:, \t\x00\xff09");
            let mut buf = BytesMut::from(&input[..]);
            let _ = parse_request(&mut buf, 8, 16);
        }
    }
}
