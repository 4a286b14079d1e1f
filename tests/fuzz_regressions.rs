//! Inputs that once crashed a parser of outside input, fed to the same functions the fuzz targets in
//! `fuzz/` call. Each must now be answered with an error naming the field, never a panic.

use sinew::config::{Config, Format};
use std::path::Path;

/// Nerve's seconds beyond what a Duration holds (`Duration::from_secs_f64` panicked on them).
#[test]
fn nerve_seconds_too_large_for_a_duration() {
    for (field, json) in [
        (
            "check_interval",
            r#"{"services":{"w":{"host":"h","port":1,"zk_hosts":["z:1"],"zk_path":"/a","check_interval":1e300,"checks":[{"type":"tcp"}]}}}"#,
        ),
        (
            "timeout",
            r#"{"services":{"w":{"host":"h","port":1,"zk_hosts":["z:1"],"zk_path":"/a","checks":[{"type":"tcp","timeout":1e30}]}}}"#,
        ),
    ] {
        let Err(err) = sinew::config::nerve::parse(json, Path::new("nerve.conf.json")) else {
            panic!("{field} of 1e30 s or more is accepted");
        };
        let err = err.to_string();
        assert!(err.contains(field), "{err}");
    }
}

/// A check interval that parses but would overflow the clock when the next round is scheduled.
#[test]
fn native_check_interval_too_large_for_the_clock() {
    let yaml = "register:\n  services:\n    w:\n      host: h\n      port: 1\n      zk_hosts: [z:1]\n      zk_path: /a\n      check_interval: 100000years\n      checks: [{ type: tcp }]\n";
    let Err(err) = Config::parse(yaml, Format::Yaml, Path::new("fuzz.yaml")) else {
        panic!("a check interval of 100000 years is accepted");
    };
    let err = err.to_string();
    assert!(err.contains("check_interval"), "{err}");
}

/// An HAProxy time whose multiplication by its unit overflowed (a panic in debug builds, a wrapped,
/// tiny timeout in release builds), in every place a Synapse config carries one.
#[test]
fn haproxy_time_too_large_for_a_duration() {
    for (field, defaults, options) in [
        ("haproxy.defaults", "timeout connect 300000000000000d", ""),
        ("haproxy.defaults", "timeout server 213503982334601h", ""),
        ("server_options", "", "check inter 300000000000000d"),
    ] {
        let json = format!(
            r#"{{"haproxy": {{"defaults": ["{defaults}"]}}, "services": {{"web": {{"default_servers": [{{"host": "127.0.0.1", "port": 9}}], "haproxy": {{"port": 4001, "server_options": "{options}"}}}}}}}}"#
        );
        let Err(err) = sinew::config::synapse::parse(&json, Path::new("synapse.json")) else {
            panic!("{defaults}{options} is accepted");
        };
        let err = err.to_string();
        assert!(err.contains(field) && err.contains("too long"), "{err}");
    }
}

/// Flow collections nested 100,000 deep (200 KB) kept the YAML parser busy for 25 s of CPU before any
/// error; the pre-scan refuses them at once, for native and Synapse configs alike.
#[test]
fn deeply_nested_yaml_is_refused_before_parsing() {
    let deep = format!("services: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let started = std::time::Instant::now();
    let Err(err) = Config::parse(&deep, Format::Yaml, Path::new("deep.yaml")) else {
        panic!("100,000 levels are accepted");
    };
    assert!(err.to_string().contains("nested deeper than 64"), "{err}");
    let Err(err) = sinew::config::synapse::parse(&deep, Path::new("deep.yaml")) else {
        panic!("100,000 levels are accepted");
    };
    assert!(err.to_string().contains("nested deeper than 64"), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// Decodes a chunked body fed `piece` bytes at a time: the body, and whether it ended (`None` on an
/// error).
fn decode_chunked(raw: &[u8], piece: usize) -> Option<(Vec<u8>, bool)> {
    use sinew::proxy::wire::{Chunked, Step};
    let (mut dec, mut buf, mut body) = (Chunked::default(), bytes::BytesMut::new(), Vec::new());
    for part in raw.chunks(piece) {
        buf.extend_from_slice(part);
        loop {
            match dec.step(&mut buf).ok()? {
                Step::Data(d) => body.extend_from_slice(&d),
                Step::Trailers(_) => {}
                Step::End => return Some((body, true)),
                Step::More => break,
            }
        }
    }
    Some((body, false))
}

/// A chunk-size line or trailer section exactly as long as allowed, whose CRLF is cut by a read, was
/// refused as too long although the same bytes in one read were accepted (`h1_chunked`: fed whole
/// and byte by byte, the verdicts differed).
#[test]
fn chunked_lines_of_the_longest_length_decode_whatever_the_split() {
    let mut size_line = b"1;".to_vec();
    size_line.resize(4096, b'x');
    let mut trailer = b"x-t: ".to_vec();
    trailer.resize(64 * 1024, b'v');
    for raw in [
        [&size_line[..], b"\r\na\r\n0\r\n\r\n"].concat(),
        [&b"1\r\na\r\n0\r\n"[..], &trailer, b"\r\n\r\n"].concat(),
    ] {
        let whole = decode_chunked(&raw, raw.len());
        assert_eq!(whole, Some((b"a".to_vec(), true)));
        for piece in [1, 2, 3, 7] {
            assert_eq!(decode_chunked(&raw, piece), whole, "in pieces of {piece}");
        }
    }
    // One byte longer is refused, whatever the split.
    let mut longer = size_line.clone();
    longer.push(b'x');
    let raw = [&longer[..], b"\r\na\r\n0\r\n\r\n"].concat();
    for piece in [1, 2, raw.len()] {
        assert_eq!(decode_chunked(&raw, piece), None, "in pieces of {piece}");
    }
}

/// The HTTP/2 preface's method after the empty lines a request may start with was served by the own
/// HTTP/1 path (and sent to the backend as a `PRI` request), while without them it went to hyper's
/// server: where a request goes must not depend on blank lines before it (`h1_framing`).
#[test]
fn the_preface_method_after_blank_lines_goes_where_it_goes_without_them() {
    use sinew::proxy::wire::{parse_request, Parsed};
    let crash = b"\nPRI a HTTP/1.1\r\nHost: x\r\n\n\n\n\n\n\n\n)\n\xff0\r\n\r";
    for raw in [
        &crash[..],
        b"PRI a HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\r\nPRI a HTTP/1.1\r\n\r\n",
    ] {
        let mut buf = bytes::BytesMut::from(raw);
        let parsed = parse_request(&mut buf, 100, 1024);
        assert!(
            matches!(parsed, Ok(Parsed::Elsewhere)),
            "{:?} not handed over",
            String::from_utf8_lossy(raw)
        );
        assert_eq!(&buf[..], raw, "the buffer is left for hyper's server");
    }
}
