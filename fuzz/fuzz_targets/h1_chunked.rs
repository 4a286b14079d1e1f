//! The chunked-body decoder of backend responses: fed in random splits it gives the same body,
//! trailers, verdict and leftover bytes as fed whole; it never yields more body than it read; and a
//! decoded body re-encoded the way sinew writes chunks to clients decodes to the same body and trailers.
#![no_main]

mod split;

use bytes::BytesMut;
use hyper::header::HeaderMap;
use libfuzzer_sys::fuzz_target;
use sinew::proxy::wire::{chunk_size, last_chunk, Chunked, Step};
use split::{expand, Splits};

/// How a decode ended.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// The body ended; these bytes followed it.
    End(Vec<u8>),
    /// More bytes were needed.
    More,
    /// The body broke the rules.
    Error,
}

/// What a decode gave.
#[derive(Debug, PartialEq)]
struct Decoded {
    body: Vec<u8>,
    trailers: Option<HeaderMap>,
    verdict: Verdict,
}

/// Steps the decoder over what `buf` holds; `Some` once it has ended or failed.
fn drain(dec: &mut Chunked, buf: &mut BytesMut, out: &mut Decoded) -> Option<Verdict> {
    loop {
        match dec.step(buf) {
            Ok(Step::Data(d)) => {
                assert!(!d.is_empty(), "an empty data step");
                out.body.extend_from_slice(&d);
            }
            Ok(Step::Trailers(t)) => {
                assert!(out.trailers.is_none(), "trailers twice");
                out.trailers = Some(t);
            }
            Ok(Step::End) => return Some(Verdict::End(buf.to_vec())),
            Ok(Step::More) => return None,
            Err(_) => return Some(Verdict::Error),
        }
    }
}

/// Decodes `raw` fed in pieces of the given lengths (the rest at once when they run out).
fn decode(raw: &[u8], mut piece: impl FnMut() -> usize) -> Decoded {
    let mut out = Decoded {
        body: Vec::new(),
        trailers: None,
        verdict: Verdict::More,
    };
    let (mut dec, mut buf, mut fed) = (Chunked::default(), BytesMut::new(), 0);
    while fed < raw.len() {
        let next = (fed + piece()).min(raw.len());
        buf.extend_from_slice(&raw[fed..next]);
        fed = next;
        if let Some(verdict) = drain(&mut dec, &mut buf, &mut out) {
            out.verdict = match verdict {
                Verdict::End(mut rest) => {
                    rest.extend_from_slice(&raw[fed..]);
                    Verdict::End(rest)
                }
                other => other,
            };
            return out;
        }
    }
    out
}

fuzz_target!(|input: &[u8]| {
    let Some((&[seed, max], rest)) = input.split_first_chunk::<2>() else {
        return;
    };
    let raw = expand(rest);
    let whole = decode(&raw, || raw.len());
    let mut splits = Splits::new(seed);
    let max = usize::from(max % 16) + 1;
    let pieces = decode(&raw, || splits.next(max));
    assert_eq!(whole, pieces, "fed whole and in pieces of at most {max}");
    let bytewise = decode(&raw, || 1);
    assert_eq!(whole, bytewise, "fed whole and byte by byte");

    assert!(whole.body.len() <= raw.len(), "more body than input");
    let Verdict::End(rest) = &whole.verdict else {
        return;
    };
    let consumed = raw.len() - rest.len();
    assert!(
        whole.body.len() + 5 <= consumed,
        "a body of {} from {consumed} bytes",
        whole.body.len()
    );
    assert_eq!(&raw[consumed..], &rest[..]);

    // Re-encoded as sinew writes chunks to a client, in the pieces the decoder gave.
    let mut encoded = Vec::new();
    if !whole.body.is_empty() {
        chunk_size(whole.body.len(), &mut encoded);
        encoded.extend_from_slice(&whole.body);
        encoded.extend_from_slice(b"\r\n");
    }
    last_chunk(whole.trailers.as_ref(), &mut encoded);
    let again = decode(&encoded, || encoded.len());
    assert_eq!(again.body, whole.body, "re-encoded body");
    assert_eq!(
        again.trailers.unwrap_or_default(),
        whole.trailers.unwrap_or_default(),
        "re-encoded trailers"
    );
    assert_eq!(
        again.verdict,
        Verdict::End(Vec::new()),
        "re-encoded verdict"
    );
});
