//! HAProxy's `balance` directive mapped onto sinew's algorithms: a name HAProxy does not know is an
//! error, one HAProxy knows but sinew does not implement is approximated with a warning.

use crate::config::Algorithm;

/// What a `balance` line amounts to in sinew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    /// The same algorithm; with `hdr(NAME)`, the header hashed.
    Mapped(Algorithm, Option<String>),
    /// An algorithm HAProxy implements and sinew does not; the service keeps the one it had.
    Approximated,
}

/// Reads the words after `balance`; an error says what HAProxy would say.
pub fn parse(args: &[&str]) -> Result<Balance, String> {
    let Some((algo, rest)) = args.split_first() else {
        return Err("expected an algorithm, e.g. roundrobin or leastconn".into());
    };
    let no_args = |a: Algorithm| {
        if rest.is_empty() {
            Ok(Balance::Mapped(a, None))
        } else {
            Err(format!("{algo} takes no arguments"))
        }
    };
    match *algo {
        "roundrobin" | "static-rr" => no_args(Algorithm::RoundRobin),
        "leastconn" => no_args(Algorithm::LeastConn),
        "source" => no_args(Algorithm::Hash),
        "random" => no_args(Algorithm::Random),
        a if a.starts_with("random(") => match a["random(".len()..].strip_suffix(')') {
            Some(n) if n.parse::<u32>().is_ok_and(|n| n > 0) => no_args(Algorithm::Random),
            _ => Err("expected random or random(DRAWS) with DRAWS from 1".into()),
        },
        a if a.starts_with("hdr(") => match a["hdr(".len()..].strip_suffix(')') {
            Some(name) if !name.is_empty() && is_token(name) => {
                Ok(Balance::Mapped(Algorithm::Hash, Some(name.to_string())))
            }
            _ => Err("expected hdr(NAME) with a header name".into()),
        },
        "first" | "uri" | "rdp-cookie" => Ok(Balance::Approximated),
        a if a.starts_with("rdp-cookie(") && a.ends_with(')') => Ok(Balance::Approximated),
        "url_param" | "hash" if !rest.is_empty() => Ok(Balance::Approximated),
        "url_param" | "hash" => Err(format!("{algo} needs an argument")),
        _ => Err(format!(
            "unknown algorithm {algo:?} (HAProxy knows roundrobin, static-rr, leastconn, first, source, \
             uri, url_param, hdr(NAME), random, rdp-cookie, hash)"
        )),
    }
}

/// True for a header field name: visible characters other than separators.
fn is_token(name: &str) -> bool {
    name.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_haproxy_algorithm_maps_is_approximated_or_is_refused() {
        use Algorithm::*;
        let mapped = |a| Ok(Balance::Mapped(a, None));
        for (line, want) in [
            ("roundrobin", mapped(RoundRobin)),
            ("static-rr", mapped(RoundRobin)),
            ("leastconn", mapped(LeastConn)),
            ("source", mapped(Hash)),
            ("random", mapped(Random)),
            ("random(2)", mapped(Random)),
            (
                "hdr(X-User)",
                Ok(Balance::Mapped(Hash, Some("X-User".into()))),
            ),
            ("first", Ok(Balance::Approximated)),
            ("uri", Ok(Balance::Approximated)),
            ("uri whole depth 3", Ok(Balance::Approximated)),
            ("url_param userid", Ok(Balance::Approximated)),
            ("rdp-cookie", Ok(Balance::Approximated)),
            ("rdp-cookie(mstshash)", Ok(Balance::Approximated)),
            ("hash req.hdr(host)", Ok(Balance::Approximated)),
        ] {
            let words: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(parse(&words), want, "{line}");
        }
        for line in [
            "leastconnn",
            "round-robin",
            "",
            "leastconn now",
            "random(0)",
            "random(two)",
            "hdr()",
            "hdr(a b",
            "url_param",
            "hash",
        ] {
            let words: Vec<&str> = line.split_whitespace().collect();
            assert!(parse(&words).is_err(), "{line}");
        }
    }
}
