//! Body framing end to end through sinew's own HTTP/1 path, as a backend and a client each see it.
//! Requests: a head the own path serves (not 400, not handed to hyper's server) reaches the backend,
//! with its hop-by-hop fields removed, framed with the same body. Responses: a backend's head, cleaned
//! and written to the client, is framed for the client as sinew sends its body (length, chunks, close
//! or none), and the connection state the client reads is the one sinew keeps.
#![no_main]

use bytes::BytesMut;
use hyper::{Method, Version};
use libfuzzer_sys::fuzz_target;
use sinew::proxy::wire::{
    encode_request, encode_response, parse_request, parse_response, strip_hop_by_hop, Delimit,
    Framing, HeadError, Outgoing, Parsed,
};

/// Largest body the own path takes in memory.
const MAX_BODY: usize = 64 * 1024;

fn request(raw: &[u8]) {
    let mut buf = BytesMut::from(raw);
    let Ok(Parsed::Request(mut req)) = parse_request(&mut buf, 100, MAX_BODY) else {
        return;
    };
    let Some(body) = buf.get(..req.body_len) else {
        return;
    };
    strip_hop_by_hop(&mut req.parts.headers, false);
    let length = (!body.is_empty()
        && !req
            .parts
            .headers
            .contains_key(hyper::header::CONTENT_LENGTH))
    .then_some(body.len());
    let mut out = Vec::new();
    encode_request(&req.parts, &req.parts.uri.to_string(), length, &mut out);
    out.extend_from_slice(body);

    // The backend's view of what sinew sent.
    let mut sent = BytesMut::from(&out[..]);
    let backend = parse_request(&mut sent, 101, MAX_BODY);
    let Ok(Parsed::Request(seen)) = backend else {
        panic!(
            "sent a request the own path would not serve: {}",
            String::from_utf8_lossy(&out)
        );
    };
    assert_eq!(seen.body_len, body.len(), "body length the backend sees");
    assert_eq!(&sent[..], body, "body the backend sees");
    assert_eq!(seen.parts.method, req.parts.method);
}

fn response(how: u8, raw: &[u8]) {
    let head_request = how & 2 != 0;
    let method = if head_request {
        Method::HEAD
    } else {
        Method::GET
    };
    let version = if how & 4 != 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let mut buf = BytesMut::from(raw);
    let Ok(Some(mut head)) = parse_response(&mut buf, &method) else {
        return;
    };
    if head.status.is_informational() {
        return;
    }
    strip_hop_by_hop(&mut head.headers, false);
    // What the backend's body says of its own length (its size hint).
    let size = match head.framing {
        Framing::Empty => Some(0),
        Framing::Length(n) => Some(n),
        Framing::Chunked | Framing::Close => None,
    };
    let outgoing = Outgoing {
        status: head.status,
        headers: &head.headers,
        size,
    };
    let mut keep_alive = how & 8 != 0;
    let mut out = Vec::new();
    let delimit = encode_response(&outgoing, version, head_request, &mut keep_alive, &mut out);
    match (head.framing, delimit) {
        (_, Delimit::None) => assert!(
            head_request
                || head.status == hyper::StatusCode::NO_CONTENT
                || head.status == hyper::StatusCode::NOT_MODIFIED
        ),
        (Framing::Empty, Delimit::Length(0)) => {}
        (Framing::Length(n), Delimit::Length(m)) => assert_eq!(n, m, "length passed on"),
        (Framing::Chunked | Framing::Close, Delimit::Chunked) => {
            assert_eq!(version, Version::HTTP_11)
        }
        (Framing::Chunked | Framing::Close, Delimit::Close) => {
            assert_eq!(version, Version::HTTP_10)
        }
        (framing, delimit) => panic!("{framing:?} from the backend sent as {delimit:?}"),
    }

    // The client's view of the head sinew wrote.
    let mut written = BytesMut::from(&out[..]);
    let client = parse_response(&mut written, &method);
    // sinew adds up to three fields (date, length or chunked, connection) to a backend's head, which
    // may have had as many as a reader takes: past that limit, the reader's refusal is expected.
    let fields = out.windows(2).filter(|w| w == b"\r\n").count() - 2;
    if matches!(client, Err(HeadError::TooLarge)) && fields > 100 {
        return;
    }
    let Ok(Some(seen)) = client else {
        panic!(
            "wrote a head a client cannot read: {client:?}\n{}",
            String::from_utf8_lossy(&out)
        );
    };
    assert!(written.is_empty());
    assert_eq!(seen.status, head.status);
    let expected = match delimit {
        Delimit::None | Delimit::Length(0) => Framing::Empty,
        Delimit::Length(n) => Framing::Length(n),
        Delimit::Chunked => Framing::Chunked,
        Delimit::Close => Framing::Close,
    };
    assert_eq!(
        seen.framing,
        expected,
        "\n{}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(
        seen.keep_alive,
        keep_alive,
        "\n{}",
        String::from_utf8_lossy(&out)
    );
}

fuzz_target!(|input: &[u8]| {
    let Some((&how, raw)) = input.split_first() else {
        return;
    };
    if how & 1 == 0 {
        request(raw);
    } else {
        response(how, raw);
    }
});
