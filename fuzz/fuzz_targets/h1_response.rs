//! Response heads from backends, read by sinew's own HTTP/1 client. The verdict does not depend on how
//! the bytes arrive; a complete head takes exactly its own bytes out of the buffer; its framing is
//! coherent (RFC 9112 section 6.3); and re-serialized, it parses to the same head.
#![no_main]

mod split;

use bytes::BytesMut;
use hyper::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use hyper::Method;
use libfuzzer_sys::fuzz_target;
use sinew::proxy::wire::{parse_response, Framing, Head};
use split::{expand, Splits};

/// Parses `raw` as the response to `method`: `Err` on an error, `Ok(None)` when partial.
fn parse(raw: &[u8], method: &Method) -> (Result<Option<Head>, ()>, BytesMut) {
    let mut buf = BytesMut::from(raw);
    (parse_response(&mut buf, method).map_err(|_| ()), buf)
}

/// Whether the head at the start of `raw` has both `Transfer-Encoding` and `Content-Length`.
fn framed_both_ways(raw: &[u8]) -> bool {
    let mut fields = [httparse::EMPTY_HEADER; 128];
    let mut resp = httparse::Response::new(&mut fields);
    let _ = resp.parse(raw);
    let has = |name: &str| {
        resp.headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case(name))
    };
    has("transfer-encoding") && has("content-length")
}

fuzz_target!(|input: &[u8]| {
    let Some((&[seed, how], rest)) = input.split_first_chunk::<2>() else {
        return;
    };
    let method = if how & 1 == 0 {
        Method::GET
    } else {
        Method::HEAD
    };
    let raw = expand(rest);
    let (whole, buf) = parse(&raw, &method);
    let consumed = raw.len() - buf.len();

    let mut splits = Splits::new(seed);
    let mut cut = 0;
    for _ in 0..4 {
        cut += splits.next(raw.len() / 2 + 1);
        if cut >= raw.len() {
            break;
        }
        let (early, early_buf) = parse(&raw[..cut], &method);
        match (&whole, &early) {
            (Ok(Some(_)), _) if cut < consumed => {
                assert!(
                    matches!(early, Ok(None)),
                    "cut at {cut} of a {consumed}-byte head"
                )
            }
            (_, Ok(None)) | (Err(_), Err(_)) | (Ok(Some(_)), Ok(Some(_))) => {}
            _ => panic!("cut at {cut}: {early:?}, whole: {whole:?}"),
        }
        // A head in error may be taken out: the connection ends with it.
        if matches!(early, Ok(None)) {
            assert_eq!(&early_buf[..], &raw[..cut], "buffer touched at {cut}");
        }
    }

    let head = match whole {
        Ok(Some(head)) => head,
        Ok(None) => {
            assert_eq!(&buf[..], &raw[..], "buffer touched by a partial head");
            return;
        }
        Err(()) => return,
    };
    let chunked = head.headers.contains_key(TRANSFER_ENCODING);
    assert!(
        !(chunked && head.headers.contains_key(CONTENT_LENGTH)),
        "framed both ways"
    );
    match head.framing {
        Framing::Chunked => assert!(chunked),
        Framing::Close => assert!(!head.keep_alive),
        Framing::Length(n) => assert!(n > 0),
        Framing::Empty => {}
    }
    if method == Method::HEAD || head.status.is_informational() {
        assert_eq!(head.framing, Framing::Empty);
    }

    // Re-serialized in the version it came in, and parsed again.
    // httparse skips empty lines before the status line.
    let start = raw
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count();
    let version = if raw[start..].starts_with(b"HTTP/1.0") {
        "1.0"
    } else {
        "1.1"
    };
    let mut out = format!("HTTP/{version} {} x\r\n", head.status.as_str()).into_bytes();
    for (name, value) in &head.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let (again, rest) = parse(&out, &method);
    let Ok(Some(again)) = again else {
        panic!(
            "re-serialized head: {again:?}\n{}",
            String::from_utf8_lossy(&out)
        );
    };
    assert!(rest.is_empty());
    assert_eq!(again.status, head.status);
    assert_eq!(again.headers, head.headers);
    assert_eq!(again.framing, head.framing);
    if !framed_both_ways(&raw) {
        assert_eq!(again.keep_alive, head.keep_alive);
    }
});
