//! Nerve's `haproxy_server_options`: the string Synapse appends to a backend's HAProxy `server` line,
//! read for what sinew implements (`backup`, `disabled`, `enabled`, `weight N`, `maxconn N`,
//! `send-proxy`, `send-proxy-v2`).
//!
//! Everything else (`check`, `inter 2s`, `id 7`, `cookie c`, ...) is reported back as ignored, never
//! failing the znode; so is an option sinew knows with a value HAProxy would reject (`weight x`): that
//! option is left out, the rest of the line still applies.

use crate::balance::ServerOptions;
use crate::config::{SendProxy, MAX_WEIGHT};

/// HAProxy server keywords that take one argument: their argument is not taken for an option.
const WITH_ARGUMENT: &[&str] = &[
    "addr",
    "agent-addr",
    "agent-inter",
    "agent-port",
    "agent-send",
    "alpn",
    "ca-file",
    "check-alpn",
    "check-proto",
    "check-sni",
    "ciphers",
    "cookie",
    "crl-file",
    "crt",
    "downinter",
    "error-limit",
    "fall",
    "fastinter",
    "id",
    "init-addr",
    "inter",
    "max-reuse",
    "maxqueue",
    "minconn",
    "namespace",
    "observe",
    "on-error",
    "on-marked-down",
    "on-marked-up",
    "pool-max-conn",
    "pool-purge-delay",
    "port",
    "proto",
    "redir",
    "resolvers",
    "rise",
    "slowstart",
    "sni",
    "source",
    "ssl-max-ver",
    "ssl-min-ver",
    "track",
    "verify",
    "verifyhost",
    "weight",
    "maxconn",
];

/// Something in a znode that sinew left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignored {
    /// A server option sinew does not implement, by keyword.
    Unsupported(String),
    /// A known option with a value HAProxy would reject.
    Malformed {
        /// The keyword.
        option: String,
        /// What followed it (empty when nothing did).
        value: String,
        /// What a valid value is.
        expected: &'static str,
    },
    /// A field that is not what Nerve writes (e.g. `labels` that is not a hash of strings).
    Field(String),
}

impl Ignored {
    /// A short name for the warn-once bookkeeping: the option keyword, or the field.
    pub fn key(&self) -> &str {
        match self {
            Ignored::Unsupported(o) => o,
            Ignored::Malformed { option, .. } => option,
            Ignored::Field(f) => f,
        }
    }
}

impl std::fmt::Display for Ignored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ignored::Unsupported(o) => write!(
                f,
                "haproxy_server_options: {o:?} is not implemented by sinew, ignored"
            ),
            Ignored::Malformed {
                option,
                value,
                expected,
            } => write!(
                f,
                "haproxy_server_options: \"{option} {value}\": expected {expected}, option ignored"
            ),
            Ignored::Field(m) => f.write_str(m),
        }
    }
}

/// What a `haproxy_server_options` string says.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// `weight N`, when given and valid (the last one wins, as in HAProxy).
    pub weight: Option<u32>,
    /// `backup`, `disabled`, `maxconn`.
    pub options: ServerOptions,
    /// What was left out, in order.
    pub ignored: Vec<Ignored>,
}

/// Reads a `haproxy_server_options` string.
pub fn parse(line: &str) -> Parsed {
    let mut out = Parsed::default();
    let mut words = line.split_whitespace();
    while let Some(word) = words.next() {
        match word {
            "backup" => out.options.backup = true,
            "disabled" => out.options.disabled = true,
            "enabled" => out.options.disabled = false,
            "send-proxy" => out.options.send_proxy = Some(SendProxy::V1),
            "send-proxy-v2" => out.options.send_proxy = Some(SendProxy::V2),
            // sinew's checks send the header whenever the traffic does.
            "check-send-proxy" => {}
            "weight" | "maxconn" => {
                let value = words.next().unwrap_or("");
                let n = value.parse::<u32>().ok();
                match (word, n) {
                    ("weight", Some(w)) if w <= MAX_WEIGHT => out.weight = Some(w),
                    // HAProxy: `maxconn 0` is no limit.
                    ("maxconn", Some(0)) => out.options.max_connections = None,
                    ("maxconn", Some(m)) => out.options.max_connections = Some(m),
                    _ => out.ignored.push(Ignored::Malformed {
                        option: word.to_string(),
                        value: value.to_string(),
                        expected: if word == "weight" {
                            "a weight from 0 to 256"
                        } else {
                            "a whole number (0: no limit)"
                        },
                    }),
                }
            }
            other => {
                if WITH_ARGUMENT.contains(&other) {
                    words.next();
                }
                out.ignored.push(Ignored::Unsupported(other.to_string()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unsupported(names: &[&str]) -> Vec<Ignored> {
        names
            .iter()
            .map(|n| Ignored::Unsupported(n.to_string()))
            .collect()
    }

    #[test]
    fn options_sinew_implements_are_read() {
        type Row = (&'static str, Option<u32>, bool, bool, Option<u32>);
        // (line, weight, backup, disabled, maxconn)
        let table: [Row; 8] = [
            ("", None, false, false, None),
            ("backup", None, true, false, None),
            ("disabled", None, false, true, None),
            ("disabled enabled", None, false, false, None),
            ("weight 3", Some(3), false, false, None),
            ("weight 0 weight 256", Some(256), false, false, None),
            ("  maxconn 10   backup ", None, true, false, Some(10)),
            ("maxconn 5 maxconn 0", None, false, false, None),
        ];
        for (line, weight, backup, disabled, max) in table {
            let p = parse(line);
            assert_eq!(
                (
                    p.weight,
                    p.options.backup,
                    p.options.disabled,
                    p.options.max_connections
                ),
                (weight, backup, disabled, max),
                "{line:?}"
            );
            assert!(p.ignored.is_empty(), "{line:?}: {:?}", p.ignored);
        }
    }

    #[test]
    fn unknown_options_are_reported_with_their_arguments_skipped() {
        let p = parse("check inter 2000 id 7 backup cookie c1 send-proxy-v2 maxconn 4");
        assert_eq!(p.ignored, unsupported(&["check", "inter", "id", "cookie"]));
        assert_eq!(p.options.send_proxy, Some(SendProxy::V2));
        assert_eq!(
            parse("send-proxy check-send-proxy").options.send_proxy,
            Some(SendProxy::V1)
        );
        assert!(p.options.backup);
        assert_eq!(p.options.max_connections, Some(4));
    }

    #[test]
    fn a_malformed_value_leaves_out_that_option_only() {
        for (line, option, value) in [
            ("weight x backup", "weight", "x"),
            ("backup weight 257", "weight", "257"),
            ("backup weight", "weight", ""),
            ("backup maxconn -1", "maxconn", "-1"),
            ("maxconn many backup", "maxconn", "many"),
        ] {
            let p = parse(line);
            assert!(p.options.backup, "{line}: backup still applies");
            assert_eq!(
                (p.weight, p.options.max_connections),
                (None, None),
                "{line}"
            );
            assert!(
                matches!(&p.ignored[..], [Ignored::Malformed { option: o, value: v, .. }] if o == option && v == value),
                "{line}: {:?}",
                p.ignored
            );
            assert!(p.ignored[0].to_string().contains(option), "{line}");
        }
    }
}
