//! Writing a header: the v1 text line or the v2 binary block, as HAProxy's `send-proxy` and
//! `send-proxy-v2` do.

use super::{Addresses, Header, Version, V2_SIGNATURE};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};

/// Appends the header for `header` in `version` to `out`.
///
/// A client and a listener address of different families (an IPv4 client on an IPv6 listener) are both
/// written as IPv6, the IPv4 one mapped (`::ffff:a.b.c.d`), since one header carries one family.
pub fn encode(version: Version, header: Header, out: &mut Vec<u8>) {
    match (version, header) {
        (Version::V1, Header::Local) => out.extend_from_slice(b"PROXY UNKNOWN\r\n"),
        (Version::V1, Header::Proxy(a)) => {
            let (s, d) = same_family(a);
            let family = if s.is_ipv4() { "TCP4" } else { "TCP6" };
            // Writing into a Vec cannot fail.
            let _ = write!(
                out,
                "PROXY {family} {} {} {} {}\r\n",
                s.ip(),
                d.ip(),
                s.port(),
                d.port()
            );
        }
        (Version::V2, Header::Local) => {
            out.extend_from_slice(&V2_SIGNATURE);
            // Version 2, command LOCAL; family UNSPEC; no address block.
            out.extend_from_slice(&[0x20, 0x00, 0, 0]);
        }
        (Version::V2, Header::Proxy(a)) => {
            out.extend_from_slice(&V2_SIGNATURE);
            out.push(0x21);
            match same_family(a) {
                (SocketAddr::V4(s), SocketAddr::V4(d)) => {
                    out.extend_from_slice(&[0x11, 0, 12]);
                    out.extend_from_slice(&s.ip().octets());
                    out.extend_from_slice(&d.ip().octets());
                }
                (s, d) => {
                    out.extend_from_slice(&[0x21, 0, 36]);
                    out.extend_from_slice(&v6(s.ip()).octets());
                    out.extend_from_slice(&v6(d.ip()).octets());
                }
            }
            let (s, d) = (a.source.port(), a.destination.port());
            out.extend_from_slice(&s.to_be_bytes());
            out.extend_from_slice(&d.to_be_bytes());
        }
    }
}

/// Both addresses in one family: unchanged when they share one, both IPv6 otherwise.
fn same_family(a: Addresses) -> (SocketAddr, SocketAddr) {
    if a.source.is_ipv4() == a.destination.is_ipv4() {
        return (a.source, a.destination);
    }
    let map = |s: SocketAddr| SocketAddr::new(IpAddr::V6(v6(s.ip())), s.port());
    (map(a.source), map(a.destination))
}

/// `ip` as IPv6 (IPv4 mapped).
fn v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(s: &str, d: &str) -> Header {
        Header::Proxy(Addresses {
            source: s.parse().unwrap(),
            destination: d.parse().unwrap(),
        })
    }

    fn encoded(version: Version, header: Header) -> Vec<u8> {
        let mut out = Vec::new();
        encode(version, header, &mut out);
        out
    }

    #[test]
    fn v1_lines_are_the_specs_examples() {
        assert_eq!(
            encoded(Version::V1, proxy("192.168.0.1:56324", "192.168.0.11:443")),
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
        );
        assert_eq!(
            encoded(Version::V1, proxy("[2001:db8::1]:65535", "[::1]:80")),
            b"PROXY TCP6 2001:db8::1 ::1 65535 80\r\n"
        );
        assert_eq!(encoded(Version::V1, Header::Local), b"PROXY UNKNOWN\r\n");
        // The longest TCP6 line fits the spec's 107-byte limit.
        let long = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535";
        assert!(encoded(Version::V1, proxy(long, long)).len() <= super::super::V1_MAX);
    }

    #[test]
    fn v2_blocks_are_byte_exact() {
        let mut want = V2_SIGNATURE.to_vec();
        want.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c]);
        want.extend_from_slice(&[192, 168, 0, 1, 192, 168, 0, 11]);
        want.extend_from_slice(&[0xdc, 0x04, 0x01, 0xbb]);
        assert_eq!(
            encoded(Version::V2, proxy("192.168.0.1:56324", "192.168.0.11:443")),
            want
        );

        let got = encoded(Version::V2, proxy("[2001:db8::1]:1", "[::1]:2"));
        assert_eq!(
            &got[..16],
            &[&V2_SIGNATURE[..], &[0x21, 0x21, 0x00, 36]].concat()[..]
        );
        assert_eq!(got.len(), 16 + 36);
        assert_eq!(got[16], 0x20);
        assert_eq!(&got[48..], &[0, 1, 0, 2]);

        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(encoded(Version::V2, Header::Local), local);
    }

    #[test]
    fn mixed_families_are_written_as_ipv6() {
        assert_eq!(
            encoded(Version::V1, proxy("10.0.0.1:5", "[::1]:80")),
            b"PROXY TCP6 ::ffff:10.0.0.1 ::1 5 80\r\n"
        );
        assert_eq!(
            encoded(Version::V2, proxy("10.0.0.1:5", "[::1]:80"))[13],
            0x21
        );
    }
}
