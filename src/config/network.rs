//! An IP network written as `ADDR/BITS` (or a bare address, a network of one), as in HAProxy's
//! `option forwardfor except 10.0.0.0/8`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IPv4 or IPv6 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    bits: u8,
}

/// Why a network is refused; each message quotes what was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    /// Not an address, or an address with a prefix length that does not fit it.
    #[error("{0:?} is not a network such as 10.0.0.0/8, 127.0.0.1 or fd00::/8")]
    Malformed(String),
}

impl Network {
    /// True when `ip` is inside the network (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix(
                u128::from(u32::from(net)),
                u128::from(u32::from(ip)),
                self.bits,
                32,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix(u128::from(net), u128::from(ip), self.bits, 128)
            }
            _ => false,
        }
    }
}

/// True when the first `bits` of `width`-bit numbers `a` and `b` agree.
fn prefix(a: u128, b: u128, bits: u8, width: u8) -> bool {
    let shift = u32::from(width - bits);
    bits == 0 || (a >> shift) == (b >> shift)
}

impl FromStr for Network {
    type Err = NetworkError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || NetworkError::Malformed(s.to_string());
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => width,
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= width)
                .ok_or_else(bad)?,
        };
        Ok(Self { addr, bits })
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.bits)
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Network {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_contain_their_addresses_only() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for (net, inside, outside) in [
            ("10.0.0.0/8", "10.200.1.1", "11.0.0.1"),
            ("127.0.0.1", "127.0.0.1", "127.0.0.2"),
            ("0.0.0.0/0", "192.0.2.1", "::2"),
            ("192.168.1.0/24", "::ffff:192.168.1.9", "192.168.2.1"),
            ("fd00::/8", "fd12::1", "fe80::1"),
        ] {
            let n: Network = net.parse().unwrap();
            assert!(n.contains(ip(inside)), "{net} {inside}");
            assert!(!n.contains(ip(outside)), "{net} {outside}");
        }
        for bad in ["10.0.0.0/33", "eth0", "10.0.0.0/x", "::/129", ""] {
            assert!(bad.parse::<Network>().is_err(), "{bad}");
        }
    }
}
