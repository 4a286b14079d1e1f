//! Reading a header from the first bytes of a connection, v1 or v2 (told apart by their first bytes,
//! as the spec's section 2.3 says). Every malformed input is an error, never a panic.

use super::{Addresses, Header, ProxyProtocolError as Error, V1_MAX, V2_MAX, V2_SIGNATURE};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A complete header and how many bytes of the input it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// What it says.
    pub header: Header,
    /// Its length; the connection's own data follows.
    pub len: usize,
}

/// Decodes the header at the start of `buf`: `Ok(None)` when `buf` is a valid start of one but too
/// short to end it.
pub fn decode(buf: &[u8]) -> Result<Option<Decoded>, Error> {
    if buf.len() >= 12 && buf[..12] == V2_SIGNATURE {
        return v2(buf);
    }
    if buf.starts_with(b"PROXY") {
        return v1(buf);
    }
    // Too short to tell: a prefix of either signature may still become one.
    let n = buf.len();
    if n < 12 && (V2_SIGNATURE.starts_with(buf) || b"PROXY".starts_with(&buf[..n.min(5)])) {
        return Ok(None);
    }
    Err(Error::Missing)
}

/// `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n` or `PROXY UNKNOWN[ ...]\r\n`.
fn v1(buf: &[u8]) -> Result<Option<Decoded>, Error> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= V1_MAX {
            return Err(Error::TooLong(V1_MAX));
        }
        if window.contains(&b'\n') {
            return Err(Error::V1("a line feed without its carriage return"));
        }
        return Ok(None);
    };
    let line = std::str::from_utf8(&window[..end]).map_err(|_| Error::V1("not ASCII"))?;
    let len = end + 2;
    let mut fields = line.split(' ');
    if fields.next() != Some("PROXY") {
        return Err(Error::V1("expected \"PROXY \""));
    }
    let family = fields.next().ok_or(Error::V1("no protocol after PROXY"))?;
    let v4 = match family {
        // Whatever follows UNKNOWN is ignored (spec 2.1).
        "UNKNOWN" => {
            return Ok(Some(Decoded {
                header: Header::Local,
                len,
            }))
        }
        "TCP4" => true,
        "TCP6" => false,
        _ => return Err(Error::V1("protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    let mut next = || {
        fields
            .next()
            .ok_or(Error::V1("expected 4 fields after the protocol"))
    };
    let (src, dst, sport, dport) = (next()?, next()?, next()?, next()?);
    if fields.next().is_some() {
        return Err(Error::V1("more than 4 fields after the protocol"));
    }
    let ip = |s: &str| -> Result<IpAddr, Error> {
        let parsed = if v4 {
            s.parse::<Ipv4Addr>().map(IpAddr::V4)
        } else {
            s.parse::<Ipv6Addr>().map(IpAddr::V6)
        };
        parsed.map_err(|_| Error::V1("an address is not of the protocol's family"))
    };
    let port = |s: &str| -> Result<u16, Error> {
        // Decimal digits only, no sign, no leading zero (spec 2.1).
        if s.is_empty()
            || !s.bytes().all(|b| b.is_ascii_digit())
            || (s.len() > 1 && s.starts_with('0'))
        {
            return Err(Error::V1("a port is not a number from 0 to 65535"));
        }
        s.parse()
            .map_err(|_| Error::V1("a port is not a number from 0 to 65535"))
    };
    let header = Header::Proxy(Addresses {
        source: SocketAddr::new(ip(src)?, port(sport)?),
        destination: SocketAddr::new(ip(dst)?, port(dport)?),
    });
    Ok(Some(Decoded { header, len }))
}

/// The 16-byte fixed part, the address block, then TLVs (skipped: sinew reads none).
fn v2(buf: &[u8]) -> Result<Option<Decoded>, Error> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Err(Error::V2("version is not 2"));
    }
    let family = buf[13];
    let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX {
        return Err(Error::TooLong(V2_MAX));
    }
    if buf.len() < len {
        return Ok(None);
    }
    let block = &buf[16..len];
    let known_family = matches!(family >> 4, 0..=3) && matches!(family & 0x0f, 0..=2);
    if !known_family {
        return Err(Error::V2("unknown address family or transport"));
    }
    let header = match command {
        // A connection the proxy made itself: the addresses, if any, are not the client's.
        0x0 => Header::Local,
        0x1 => match family {
            0x11 => {
                let a = block
                    .get(..12)
                    .ok_or(Error::V2("address block shorter than TCP over IPv4 needs"))?;
                let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(a[o], a[o + 1], a[o + 2], a[o + 3]));
                addresses(ip(0), ip(4), &a[8..12])
            }
            0x21 => {
                let a = block
                    .get(..36)
                    .ok_or(Error::V2("address block shorter than TCP over IPv6 needs"))?;
                let ip = |o: usize| {
                    let mut b = [0u8; 16];
                    b.copy_from_slice(&a[o..o + 16]);
                    IpAddr::V6(Ipv6Addr::from(b))
                };
                addresses(ip(0), ip(16), &a[32..36])
            }
            // UNSPEC, UDP and UNIX sockets: the connection's own addresses stand (spec 2.2).
            _ => Header::Local,
        },
        _ => return Err(Error::V2("command is neither LOCAL nor PROXY")),
    };
    Ok(Some(Decoded { header, len }))
}

/// A PROXY header from two addresses and their two big-endian ports.
fn addresses(src: IpAddr, dst: IpAddr, ports: &[u8]) -> Header {
    Header::Proxy(Addresses {
        source: SocketAddr::new(src, u16::from_be_bytes([ports[0], ports[1]])),
        destination: SocketAddr::new(dst, u16::from_be_bytes([ports[2], ports[3]])),
    })
}

#[cfg(test)]
mod tests {
    use super::super::{encode, Version};
    use super::*;

    fn proxy(s: &str, d: &str) -> Header {
        Header::Proxy(Addresses {
            source: s.parse().unwrap(),
            destination: d.parse().unwrap(),
        })
    }

    #[test]
    fn v1_lines_of_the_spec_decode_and_leave_the_data_after_them() {
        let input = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n";
        let d = decode(input).unwrap().unwrap();
        assert_eq!(d.header, proxy("192.168.0.1:56324", "192.168.0.11:443"));
        assert_eq!(&input[d.len..], b"GET / HTTP/1.1\r\n");
        let d = decode(b"PROXY TCP6 2001:db8::1 ::1 65535 80\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(d.header, proxy("[2001:db8::1]:65535", "[::1]:80"));
        for unknown in [
            &b"PROXY UNKNOWN\r\n"[..],
            b"PROXY UNKNOWN ffff:: ffff:: 65535 65535\r\n",
        ] {
            let d = decode(unknown).unwrap().unwrap();
            assert_eq!((d.header, d.len), (Header::Local, unknown.len()));
        }
    }

    #[test]
    fn malformed_v1_lines_are_errors() {
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY\r\n",
            b"PROXYTCP4\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"PROXY TCP4 \xff.2.3.4 5.6.7.8 1 2\r\n",
        ] {
            assert!(
                matches!(decode(bad), Err(Error::V1(_))),
                "{:?}: {:?}",
                String::from_utf8_lossy(bad),
                decode(bad)
            );
        }
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 100]].concat();
        assert_eq!(decode(&long), Err(Error::TooLong(V1_MAX)));
    }

    #[test]
    fn what_is_neither_signature_is_a_missing_header() {
        for input in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"\x16\x03\x01",
            b"P\x00",
            b"\r\n\r\nX",
        ] {
            assert_eq!(decode(input), Err(Error::Missing), "{input:?}");
        }
        for partial in [
            &b""[..],
            b"PRO",
            b"PROXY TCP4 1.2",
            b"\r\n\r\n\0\r\nQU",
            &V2_SIGNATURE,
        ] {
            assert_eq!(decode(partial), Ok(None), "{partial:?}");
        }
    }

    #[test]
    fn v2_blocks_round_trip_and_tlvs_are_skipped() {
        for (s, d) in [
            ("10.1.2.3:4000", "10.9.9.9:80"),
            ("[2001:db8::5]:1", "[fe80::1]:65535"),
        ] {
            let mut wire = Vec::new();
            encode(Version::V2, proxy(s, d), &mut wire);
            assert_eq!(
                decode(&wire).unwrap().unwrap(),
                Decoded {
                    header: proxy(s, d),
                    len: wire.len()
                }
            );
        }
        // An IPv4 block with a 7-byte TLV (PP2_TYPE_AUTHORITY "a.b") after it, then data.
        let mut wire = V2_SIGNATURE.to_vec();
        wire.extend_from_slice(&[0x21, 0x11, 0, 12 + 6]);
        wire.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 0, 80, 1, 187]);
        wire.extend_from_slice(&[0x02, 0, 3, b'a', b'.', b'b']);
        wire.extend_from_slice(b"data");
        let d = decode(&wire).unwrap().unwrap();
        assert_eq!(d.header, proxy("1.2.3.4:80", "5.6.7.8:443"));
        assert_eq!(&wire[d.len..], b"data");
    }

    #[test]
    fn v2_local_unspec_and_other_families_keep_the_connections_addresses() {
        let mut local = Vec::new();
        encode(Version::V2, Header::Local, &mut local);
        assert_eq!(decode(&local).unwrap().unwrap().header, Header::Local);
        // LOCAL with an address block: the block is skipped, not read.
        let mut wire = V2_SIGNATURE.to_vec();
        wire.extend_from_slice(&[0x20, 0x11, 0, 12]);
        wire.extend_from_slice(&[0; 12]);
        assert_eq!(decode(&wire).unwrap().unwrap().header, Header::Local);
        // PROXY over a UNIX stream socket (216-byte block).
        let mut wire = V2_SIGNATURE.to_vec();
        wire.extend_from_slice(&[0x21, 0x31, 0, 216]);
        wire.extend_from_slice(&[0; 216]);
        assert_eq!(
            decode(&wire).unwrap().unwrap(),
            Decoded {
                header: Header::Local,
                len: 232
            }
        );
    }

    #[test]
    fn malformed_v2_blocks_are_errors() {
        let with = |b12: u8, b13: u8, len: u16, body: &[u8]| {
            let mut w = V2_SIGNATURE.to_vec();
            w.extend_from_slice(&[b12, b13]);
            w.extend_from_slice(&len.to_be_bytes());
            w.extend_from_slice(body);
            w
        };
        assert!(matches!(
            decode(&with(0x11, 0x11, 12, &[0; 12])),
            Err(Error::V2(_))
        ));
        assert!(matches!(
            decode(&with(0x22, 0x11, 12, &[0; 12])),
            Err(Error::V2(_))
        ));
        assert!(matches!(
            decode(&with(0x21, 0x41, 12, &[0; 12])),
            Err(Error::V2(_))
        ));
        assert!(matches!(
            decode(&with(0x21, 0x11, 4, &[0; 4])),
            Err(Error::V2(_))
        ));
        assert!(matches!(
            decode(&with(0x21, 0x21, 12, &[0; 12])),
            Err(Error::V2(_))
        ));
        assert_eq!(
            decode(&with(0x21, 0x11, 65535, &[])),
            Err(Error::TooLong(V2_MAX))
        );
        // Announced but not all here yet.
        assert_eq!(decode(&with(0x21, 0x11, 12, &[0; 5])), Ok(None));
    }

    #[test]
    fn random_and_truncated_inputs_never_panic() {
        let mut seeds = Vec::new();
        for (v, h) in [
            (Version::V1, proxy("1.2.3.4:5", "6.7.8.9:10")),
            (Version::V1, proxy("[::1]:5", "[::2]:10")),
            (Version::V2, proxy("1.2.3.4:5", "6.7.8.9:10")),
            (Version::V2, proxy("[::1]:5", "[::2]:10")),
            (Version::V2, Header::Local),
        ] {
            let mut w = Vec::new();
            encode(v, h, &mut w);
            seeds.push(w);
        }
        let mut rng = fastrand::Rng::with_seed(24);
        for seed in &seeds {
            // Every prefix is incomplete, never an error nor a header.
            for n in 0..seed.len() {
                assert_eq!(decode(&seed[..n]), Ok(None), "{:?}", &seed[..n]);
            }
            for _ in 0..2000 {
                let mut m = seed.clone();
                for _ in 0..rng.usize(1..4) {
                    let i = rng.usize(..m.len());
                    m[i] = rng.u8(..);
                }
                m.truncate(rng.usize(..=m.len()));
                let _ = decode(&m);
            }
        }
        for _ in 0..20000 {
            let n = rng.usize(..200);
            let mut m: Vec<u8> = (0..n).map(|_| rng.u8(..)).collect();
            if rng.bool() && m.len() >= 13 {
                m[..12].copy_from_slice(&V2_SIGNATURE);
                m[12] = 0x20 | rng.u8(..3);
            }
            if let Ok(Some(d)) = decode(&m) {
                assert!(d.len <= m.len());
            }
        }
    }
}
