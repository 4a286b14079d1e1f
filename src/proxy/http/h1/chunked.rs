//! Decoding of a `Transfer-Encoding: chunked` response body (RFC 9112 section 7.1), step by step over
//! the bytes received so far.

use bytes::{Bytes, BytesMut};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};

/// Longest chunk-size line accepted (size, extensions, CRLF).
const MAX_SIZE_LINE: usize = 4096;
/// Largest trailer section accepted.
const MAX_TRAILERS: usize = 64 * 1024;

/// A chunked body that breaks the rules.
#[derive(Debug, thiserror::Error)]
#[error("malformed chunked body: {0}")]
pub struct ChunkError(&'static str);

/// What the bytes received so far decode to.
#[derive(Debug)]
pub enum Step {
    /// Body bytes.
    Data(Bytes),
    /// The trailer fields after the last chunk.
    Trailers(HeaderMap),
    /// The body is over.
    End,
    /// More bytes are needed.
    More,
}

/// Where the decoder stands.
#[derive(Debug, Default)]
enum State {
    /// Before a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk, with this many bytes to go.
    Data(u64),
    /// After a chunk's bytes, before its CRLF.
    DataEnd,
    /// After the last chunk, before the trailer section.
    Trailers,
    /// The body is over.
    Done,
}

/// A chunked-body decoder.
#[derive(Debug, Default)]
pub struct Chunked {
    state: State,
    /// How far the buffer has been searched for the end of the current line or trailer section, so
    /// bytes arriving one at a time are not searched again and again.
    scanned: usize,
}

impl Chunked {
    /// Decodes the next step from the front of `buf`, consuming what it decodes.
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Step, ChunkError> {
        loop {
            match self.state {
                State::Size => {
                    let Some(end) = find(buf, b"\r\n", MAX_SIZE_LINE, &mut self.scanned)? else {
                        return Ok(Step::More);
                    };
                    let size = chunk_size(&buf[..end])?;
                    let _ = buf.split_to(end + 2);
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Step::More);
                    }
                    let take = (buf.len() as u64).min(left);
                    self.state = match left - take {
                        0 => State::DataEnd,
                        rest => State::Data(rest),
                    };
                    return Ok(Step::Data(buf.split_to(take as usize).freeze()));
                }
                State::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Step::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ChunkError("chunk not followed by CRLF"));
                    }
                    let _ = buf.split_to(2);
                    self.state = State::Size;
                }
                State::Trailers => {
                    if buf.starts_with(b"\r\n") {
                        let _ = buf.split_to(2);
                        self.state = State::Done;
                        return Ok(Step::End);
                    }
                    let Some(end) = find(buf, b"\r\n\r\n", MAX_TRAILERS, &mut self.scanned)? else {
                        return Ok(Step::More);
                    };
                    let section = buf.split_to(end + 4);
                    self.state = State::Done;
                    return trailers(&section).map(Step::Trailers);
                }
                State::Done => return Ok(Step::End),
            }
        }
    }
}

/// Where `needle` starts in `buf`, or `None` when it may still come; an error once it can no longer
/// start within `limit` bytes. `scanned` carries how far earlier calls searched, and is reset once found.
fn find(
    buf: &[u8],
    needle: &[u8],
    limit: usize,
    scanned: &mut usize,
) -> Result<Option<usize>, ChunkError> {
    let from = scanned.saturating_sub(needle.len() - 1).min(buf.len());
    match buf[from..].windows(needle.len()).position(|w| w == needle) {
        Some(i) if from + i <= limit => {
            *scanned = 0;
            Ok(Some(from + i))
        }
        Some(_) => Err(ChunkError("line too long")),
        // Until `limit + needle.len()` bytes are in, the needle may still start at `limit` (a line
        // as long as allowed whose CRLF is cut by a read): the verdict must not depend on the split.
        None if buf.len() >= limit + needle.len() => Err(ChunkError("line too long")),
        None => {
            *scanned = buf.len();
            Ok(None)
        }
    }
}

/// The size in a chunk-size line: hex digits, then optional whitespace and `;extensions`.
fn chunk_size(line: &[u8]) -> Result<u64, ChunkError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 15 {
        return Err(ChunkError("bad chunk size"));
    }
    let rest = &line[digits..];
    let rest = &rest[rest
        .iter()
        .take_while(|b| **b == b' ' || **b == b'\t')
        .count()..];
    if !rest.is_empty() && rest[0] != b';' {
        return Err(ChunkError("bad chunk size"));
    }
    let hex = std::str::from_utf8(&line[..digits]).map_err(|_| ChunkError("bad chunk size"))?;
    u64::from_str_radix(hex, 16).map_err(|_| ChunkError("bad chunk size"))
}

/// The fields of a trailer section (ending in an empty line).
fn trailers(section: &[u8]) -> Result<HeaderMap, ChunkError> {
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let parsed = match httparse::parse_headers(section, &mut fields) {
        Ok(httparse::Status::Complete((_, parsed))) => parsed,
        _ => return Err(ChunkError("bad trailer section")),
    };
    let mut map = HeaderMap::with_capacity(parsed.len());
    for field in parsed {
        let name = HeaderName::from_bytes(field.name.as_bytes());
        let value = HeaderValue::from_bytes(field.value);
        match (name, value) {
            (Ok(n), Ok(v)) => {
                map.append(n, v);
            }
            _ => return Err(ChunkError("bad trailer field")),
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `raw` one byte at a time and collects the body, the trailers and whether it ended.
    fn decode_bytewise(raw: &[u8]) -> Result<(Vec<u8>, Option<HeaderMap>, bool), ChunkError> {
        let (mut dec, mut buf, mut body, mut trailers) =
            (Chunked::default(), BytesMut::new(), vec![], None);
        for b in raw {
            buf.extend_from_slice(&[*b]);
            loop {
                match dec.step(&mut buf)? {
                    Step::Data(d) => body.extend_from_slice(&d),
                    Step::Trailers(t) => trailers = Some(t),
                    Step::End => return Ok((body, trailers, true)),
                    Step::More => break,
                }
            }
        }
        Ok((body, trailers, false))
    }

    #[test]
    fn chunks_extensions_and_trailers_decode_byte_by_byte() {
        let raw = b"3;ext=1\r\nabc\r\n10 \r\n0123456789abcdef\r\n0\r\nX-Sum: 7\r\n\r\n";
        let (body, trailers, ended) = decode_bytewise(raw).unwrap();
        assert_eq!(body, b"abc0123456789abcdef");
        assert_eq!(trailers.unwrap()["x-sum"], "7");
        assert!(ended);
    }

    #[test]
    fn the_end_leaves_what_follows_in_the_buffer() {
        let mut buf = BytesMut::from(&b"2\r\nok\r\n0\r\n\r\nHTTP/1.1"[..]);
        let mut dec = Chunked::default();
        assert!(matches!(dec.step(&mut buf).unwrap(), Step::Data(d) if &d[..] == b"ok"));
        assert!(matches!(dec.step(&mut buf).unwrap(), Step::End));
        assert!(matches!(dec.step(&mut buf).unwrap(), Step::End));
        assert_eq!(&buf[..], b"HTTP/1.1");
    }

    #[test]
    fn mutated_bodies_never_panic_whatever_the_split() {
        let valid = b"3;ext=1\r\nabc\r\n10 \r\n0123456789abcdef\r\n0\r\nX-Sum: 7\r\n\r\n";
        let mut rng = fastrand::Rng::with_seed(9);
        for _ in 0..20_000 {
            let mut input = valid.to_vec();
            for _ in 0..rng.usize(1..5) {
                let at = rng.usize(..input.len());
                input[at] = *rng
                    .choice(b"\r\n;: 0123456789abcdefxX\x00\xff")
                    .unwrap_or(&b'x');
            }
            let (mut dec, mut buf, mut fed) = (Chunked::default(), BytesMut::new(), 0);
            while fed < input.len() {
                let next = (fed + rng.usize(1..8)).min(input.len());
                buf.extend_from_slice(&input[fed..next]);
                fed = next;
                match dec.step(&mut buf) {
                    Ok(Step::End) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
    }

    #[test]
    fn broken_framing_is_an_error() {
        for raw in [
            &b"x\r\n"[..],
            b"3\r\nabcX\r\n",
            b"-1\r\n",
            b"1ffffffffffffffff\r\n",
            b"3 junk\r\nabc\r\n",
        ] {
            assert!(
                decode_bytewise(raw).is_err(),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        let long = vec![b'1'; MAX_SIZE_LINE + 10];
        assert!(decode_bytewise(&long).is_err());
    }
}
