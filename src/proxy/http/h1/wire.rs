//! The HTTP/1 parsers and encoders of this module as the fuzz targets in `fuzz/` and their regression
//! tests (`tests/fuzz_regressions.rs`) call them. Not an API: hidden from the docs, and free to change.

pub use super::super::headers::strip_hop_by_hop;
pub use super::chunked::{ChunkError, Chunked, Step};
pub use super::head::{encode_request, parse_response, Framing, Head, HeadError};
pub use super::request::{parse_request, Parsed, Request, RequestError};
pub use super::response::{chunk_size, encode_response, last_chunk, Delimit, Outgoing};
