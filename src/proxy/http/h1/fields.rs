//! Header fields of HTTP/1 heads. A parsed head's fields become a `HeaderMap` whose values are slices
//! of the received bytes: httparse's borrowed fields are recorded as offsets, the head is split off
//! the buffer, and every value shares its bytes (no copy per value). Heads being written get their
//! fields appended one by one.

use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};

/// Most header fields whose offsets are kept on the stack; heads allowed more use the heap.
pub const STACK_FIELDS: usize = 128;

/// Where one field's name and value sit in the head.
#[derive(Debug, Clone, Copy, Default)]
pub struct Span {
    name: (usize, usize),
    value: (usize, usize),
}

/// Records the offsets of `fields` (borrowed from `head`) into `spans`; returns how many.
pub fn record(head: &[u8], fields: &[httparse::Header<'_>], spans: &mut [Span]) -> usize {
    let base = head.as_ptr() as usize;
    for (span, h) in spans.iter_mut().zip(fields) {
        let name = h.name.as_ptr() as usize - base;
        let value = h.value.as_ptr() as usize - base;
        *span = Span {
            name: (name, name + h.name.len()),
            value: (value, value + h.value.len()),
        };
    }
    fields.len().min(spans.len())
}

/// The fields at `spans` of `raw`; on a name or value HTTP does not allow, that field's name.
pub fn header_map(raw: &Bytes, spans: &[Span]) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::with_capacity(spans.len());
    for span in spans {
        let (ns, ne) = span.name;
        let (vs, ve) = span.value;
        let name = HeaderName::from_bytes(&raw[ns..ne])
            .map_err(|_| String::from_utf8_lossy(&raw[ns..ne]).into_owned())?;
        let value =
            HeaderValue::from_maybe_shared(raw.slice(vs..ve)).map_err(|_| name.to_string())?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// Appends one header field (`name: value` and CRLF) to a head being written.
pub fn append(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}
