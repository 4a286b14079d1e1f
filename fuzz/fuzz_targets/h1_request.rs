//! Request heads from clients on sinew's own HTTP/1 server path. The verdict (serve here, hand the
//! connection to hyper's server, or answer 400) does not depend on how the bytes arrive; a served head
//! takes exactly its own bytes out of the buffer, carries a body framed as RFC 9112 section 6.3 says,
//! and re-serialized as sinew writes it to a backend parses to the same request.
#![no_main]

mod split;

use bytes::BytesMut;
use hyper::header::{HeaderMap, CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING, UPGRADE};
use hyper::{Method, Version};
use libfuzzer_sys::fuzz_target;
use sinew::proxy::wire::{encode_request, parse_request, Parsed, Request};
use split::{expand, Splits};

/// The verdict's kind, for comparing prefixes.
#[derive(Debug, PartialEq)]
enum Kind {
    Partial,
    Request,
    Elsewhere,
    Error,
}

fn parse(raw: &[u8], max_fields: usize, max_body: usize) -> (Kind, Option<Request>, BytesMut) {
    let mut buf = BytesMut::from(raw);
    let (kind, req) = match parse_request(&mut buf, max_fields, max_body) {
        Ok(Parsed::Partial) => (Kind::Partial, None),
        Ok(Parsed::Request(req)) => (Kind::Request, Some(req)),
        Ok(Parsed::Elsewhere) => (Kind::Elsewhere, None),
        Err(_) => (Kind::Error, None),
    };
    (kind, req, buf)
}

/// The body length RFC 9112 section 6.3 gives a request the own path may serve: no
/// `Transfer-Encoding`, and one `Content-Length` that is a decimal number (or none: no body).
fn rfc_body_len(headers: &HeaderMap) -> Option<u128> {
    assert!(
        !headers.contains_key(TRANSFER_ENCODING),
        "chunked served here"
    );
    let mut values = headers.get_all(CONTENT_LENGTH).iter();
    let Some(value) = values.next() else {
        return Some(0);
    };
    assert!(
        values.next().is_none(),
        "two Content-Length fields served here"
    );
    let text = value.as_bytes().trim_ascii();
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    text.iter().try_fold(0u128, |n, d| {
        n.checked_mul(10)?.checked_add(u128::from(d - b'0'))
    })
}

fuzz_target!(|input: &[u8]| {
    let Some((&[seed, fields, body], rest)) = input.split_first_chunk::<3>() else {
        return;
    };
    // Field limits on both sides of the stack storage (128 fields).
    let max_fields = usize::from(fields % 160) + 1;
    let max_body = usize::from(body) * 4;
    let raw = expand(rest);
    let (kind, req, buf) = parse(&raw, max_fields, max_body);

    // A verdict never changes when more bytes come; a served head is partial until its last byte.
    let mut splits = Splits::new(seed);
    let mut cut = 0;
    for _ in 0..4 {
        cut += splits.next(raw.len() / 2 + 1);
        if cut >= raw.len() {
            break;
        }
        let (early, _, early_buf) = parse(&raw[..cut], max_fields, max_body);
        match &req {
            Some(req) if cut < req.head_len => assert_eq!(early, Kind::Partial, "cut at {cut}"),
            _ => assert!(
                early == Kind::Partial || early == kind,
                "{early:?} at {cut}, {kind:?} whole"
            ),
        }
        // A head that is answered 400 may be taken out: the connection ends with it.
        if early == Kind::Partial || early == Kind::Elsewhere {
            assert_eq!(&early_buf[..], &raw[..cut], "buffer touched at {cut}");
        }
    }

    let Some(req) = req else {
        if kind != Kind::Error {
            assert_eq!(&buf[..], &raw[..], "buffer touched without a request");
        }
        return;
    };
    assert_eq!(&buf[..], &raw[req.head_len..], "the head alone is taken");
    assert!(req.body_len <= max_body);
    assert!(req.parts.headers.len() <= max_fields);
    assert_eq!(
        rfc_body_len(&req.parts.headers),
        Some(req.body_len as u128),
        "body length"
    );
    for name in [UPGRADE, EXPECT] {
        assert!(!req.parts.headers.contains_key(&name), "{name} served here");
    }
    assert_ne!(req.parts.method, Method::CONNECT);

    // Re-serialized as sinew writes a request head to a backend, and parsed again.
    let mut out = Vec::new();
    encode_request(&req.parts, &req.parts.uri.to_string(), None, &mut out);
    let (again_kind, again, rest) = parse(&out, max_fields, max_body);
    let Some(again) = again else {
        panic!(
            "re-serialized head: {again_kind:?}\n{}",
            String::from_utf8_lossy(&out)
        );
    };
    assert!(rest.is_empty());
    assert_eq!(again.parts.method, req.parts.method);
    assert_eq!(again.parts.uri, req.parts.uri);
    assert_eq!(again.parts.headers, req.parts.headers);
    assert_eq!(again.body_len, req.body_len);
    if req.parts.version == Version::HTTP_11 {
        assert_eq!(again.keep_alive, req.keep_alive);
    }
});
