//! HAProxy directive lines (from Synapse configs) mapped onto sinew's settings.
//!
//! A directive sinew does not implement is listed in [`Directives::unsupported`]; a directive with a value
//! HAProxy would reject too (`retries many`, `timeout connect soon`, `balance leastconnn`) is an error.

mod balance;
mod http;

pub use http::{ForwardFor, RetryPolicy};

use super::duration;
use super::health::{CheckType, HealthCheck};
use super::{Algorithm, Mode, Timeouts, DEFAULT_WEIGHT};
use std::time::Duration;

/// What a service's directive lines and server options amount to.
#[derive(Debug, Default, Clone)]
pub struct Directives {
    /// `mode`.
    pub mode: Mode,
    /// `balance`.
    pub balance: Algorithm,
    /// `timeout connect|client|server|queue`.
    pub timeouts: Timeouts,
    /// `retries`.
    pub retries: Option<u32>,
    /// `check inter/fastinter/downinter/rise/fall` in server options, `option httpchk`, `http-check expect`.
    pub health_check: Option<HealthCheck>,
    /// `check` in server options: HAProxy checks a server only when its line says so.
    pub check: bool,
    /// `maxconn` in server options.
    pub max_connections: Option<u32>,
    /// `slowstart` in server options.
    pub slow_start: Option<Duration>,
    /// `observe layer4|layer7` with `error-limit` in server options: passive outlier ejection.
    pub outlier: Option<super::Outlier>,
    /// `weight` in server options.
    pub weight: u32,
    /// `send-proxy` / `send-proxy-v2` in server options.
    pub send_proxy: Option<super::SendProxy>,
    /// `balance hdr(NAME)`: the header hashed.
    pub hash_header: Option<String>,
    /// `option forwardfor`; without it HAProxy adds no `X-Forwarded-For`.
    pub forward_for: Option<ForwardFor>,
    /// `retry-on`.
    pub retry_on: Option<RetryPolicy>,
    /// `maxconn` of a frontend, listen or defaults section.
    pub max_client_connections: Option<u32>,
    /// What sinew does not implement, each message saying what sinew does instead.
    pub unsupported: Vec<String>,
    /// Directives accepted without a setting because sinew covers them its own way, with how.
    pub noted: Vec<String>,
    /// `timeout server`: also the wait for a response head in HTTP mode.
    pub server: Option<Duration>,
    /// `timeout client` and `timeout tunnel`.
    client: Option<Duration>,
    tunnel: Option<Duration>,
}

impl Directives {
    fn check(&mut self) -> &mut HealthCheck {
        // HAProxy checks `/` and waits up to `inter` (2 s) for an answer.
        self.health_check.get_or_insert_with(|| HealthCheck {
            path: "/".into(),
            timeout: Duration::from_secs(2),
            ..HealthCheck::default()
        })
    }
}

/// Why an HAProxy directive or server option is refused; each message quotes what was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HaproxyError {
    /// A time that is not a number with a known unit.
    #[error("expected a time such as 5000 (ms), 500ms, 5s or 1m")]
    Time,
    /// A time longer than [`duration::MAX`], as written.
    #[error("{0} is too long: at most 3650 days")]
    TimeTooLong(String),
    /// A directive line with a wrong value.
    #[error("{line:?}: {problem}")]
    Directive {
        /// The line, trimmed.
        line: String,
        /// What is wrong with its value.
        problem: String,
    },
    /// A server option with a missing or wrong value.
    #[error("server option {option:?} {value:?}: {problem}")]
    ServerOption {
        /// The option's name.
        option: String,
        /// Its value as written (empty when missing).
        value: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// A duration in HAProxy's syntax: a number with an optional unit (`us`, `ms`, `s`, `m`, `h`, `d`);
/// unitless means milliseconds. At most [`duration::MAX`]; the multiplication by the unit is checked.
pub fn time(text: &str) -> Result<Duration, HaproxyError> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let too_long = || HaproxyError::TimeTooLong(text.to_string());
    let n: u64 = match n.parse() {
        Ok(n) => n,
        Err(_) if !n.is_empty() => return Err(too_long()),
        Err(_) => return Err(HaproxyError::Time),
    };
    let seconds = |per: u64| n.checked_mul(per).map(Duration::from_secs);
    let d = match unit {
        "" | "ms" => Some(Duration::from_millis(n)),
        "us" => Some(Duration::from_micros(n)),
        "s" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3600),
        "d" => seconds(86_400),
        _ => return Err(HaproxyError::Time),
    };
    d.filter(|d| *d <= duration::MAX).ok_or_else(too_long)
}

/// Applies one `listen`/`backend`/`frontend`/`defaults` line; an error says what is wrong with its value.
pub fn directive(line: &str, d: &mut Directives) -> Result<(), HaproxyError> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let bad = |problem: &str| {
        Err(HaproxyError::Directive {
            line: line.trim().to_string(),
            problem: problem.to_string(),
        })
    };
    let ok = match words.as_slice() {
        [] => true,
        [first, ..] if first.starts_with('#') => true,
        ["mode", "tcp"] => {
            d.mode = Mode::Tcp;
            true
        }
        ["mode", "http"] => {
            d.mode = Mode::Http;
            true
        }
        ["mode", ..] => return bad("expected mode tcp or mode http"),
        ["balance", args @ ..] => match balance::parse(args) {
            Ok(balance::Balance::Mapped(algo, header)) => {
                d.balance = algo;
                d.hash_header = header;
                true
            }
            Ok(balance::Balance::Approximated) => {
                d.unsupported.push(format!(
                    "directive {:?}: not supported, sinew balances with {} instead",
                    line.trim(),
                    d.balance.name()
                ));
                true
            }
            Err(e) => return bad(&e),
        },
        ["option", "forwardfor", args @ ..] => match http::forward_for(args) {
            Ok(f) => {
                if f.if_none {
                    d.unsupported.push(format!(
                        "directive {:?}: if-none not supported, sinew always appends the client",
                        line.trim()
                    ));
                }
                set(&mut d.forward_for, Some(f))
            }
            Err(e) => return bad(&e),
        },
        ["retry-on", args @ ..] => match http::retry_on(args) {
            Ok(p) => {
                for u in &p.unhonoured {
                    d.unsupported
                        .push(format!("directive {:?}: {u}", line.trim()));
                }
                set(&mut d.retry_on, Some(p))
            }
            Err(e) => return bad(&e),
        },
        ["maxconn", n] => match n.parse() {
            Ok(n) if n > 0 => set(&mut d.max_client_connections, Some(n)),
            _ => return bad("expected a whole number from 1"),
        },
        ["maxconn", ..] => return bad("expected one number"),
        ["timeout", kind
        @ ("connect" | "client" | "server" | "tunnel" | "queue" | "http-request" | "check"), value] =>
        {
            let t = match time(value) {
                Ok(t) => t,
                Err(e) => return bad(&e.to_string()),
            };
            timeout(kind, t, d);
            true
        }
        ["retries", n] => match n.parse() {
            Ok(n) => set(&mut d.retries, Some(n)),
            Err(_) => return bad("expected a whole number"),
        },
        ["option", "redispatch"] => true,
        ["log", ..]
        | ["no", "log"]
        | ["option", "dontlognull" | "httplog" | "tcplog" | "logasap"] => {
            d.noted.push(format!(
                "directive {:?}: sinew writes its own logs",
                line.trim()
            ));
            true
        }
        ["stats", ..] => {
            d.noted.push(format!(
                "directive {:?}: the admin server's status page and /metrics replace HAProxy stats",
                line.trim()
            ));
            true
        }
        ["option", "httpchk", rest @ ..] => {
            let path = rest
                .iter()
                .find(|w| w.starts_with('/'))
                .unwrap_or(&"/")
                .to_string();
            let c = d.check();
            c.kind = CheckType::Http;
            c.path = path;
            c.host = host_header(line);
            true
        }
        // Defaults for every server line of the proxy, in the syntax of `server_options`.
        ["default-server", rest @ ..] => {
            server_options(&rest.join(" "), d)?;
            true
        }
        ["http-check", "expect", "status", code] => match code.parse() {
            Ok(code) => {
                d.check().expect_status = vec![code];
                true
            }
            Err(_) => return bad("expected a status code"),
        },
        ["http-check", "expect", "string", text @ ..] => {
            d.check().expect_body = Some(text.join(" "));
            true
        }
        _ => false,
    };
    if !ok {
        d.unsupported.push(format!(
            "directive {:?}: not supported yet, ignored",
            line.trim()
        ));
    }
    Ok(())
}

/// Applies `timeout KIND T` for a kind sinew implements.
fn timeout(kind: &str, t: Duration, d: &mut Directives) {
    match kind {
        "connect" => d.timeouts.connect = t,
        "client" | "server" | "tunnel" => {
            match kind {
                "client" => d.client = Some(t),
                "server" => d.server = Some(t),
                _ => d.tunnel = Some(t),
            }
            // The longest of them is the idle timeout of the whole proxied connection; a later
            // section (the service's) overrides each one, as in HAProxy.
            let idle = [d.client, d.server, d.tunnel].into_iter().flatten().max();
            d.timeouts.idle = idle.unwrap_or(t);
        }
        "queue" => d.timeouts.queue = t,
        "http-request" => d.timeouts.header_read = t,
        _ => d.check().timeout = t,
    }
}

/// The `Host` header written into an `option httpchk` version string, as in
/// `option httpchk GET /health HTTP/1.1\r\nHost:\ www.example.com`.
fn host_header(line: &str) -> Option<String> {
    let at = line.to_ascii_lowercase().find("host:")?;
    let value = line[at + "host:".len()..].trim_start_matches(['\\', ' ']);
    let end = value
        .find(|c: char| c.is_whitespace() || c == '\\')
        .unwrap_or(value.len());
    Some(value[..end].to_string()).filter(|h| !h.is_empty())
}

fn set<T>(slot: &mut T, value: T) -> bool {
    *slot = value;
    true
}

/// Applies a `server_options` string (appended to every server line by Synapse); an error names an option
/// whose value is missing or wrong.
pub fn server_options(options: &str, d: &mut Directives) -> Result<(), HaproxyError> {
    if d.weight == 0 {
        d.weight = DEFAULT_WEIGHT;
    }
    let words: Vec<&str> = options.split_whitespace().collect();
    let mut i = 0;
    while i < words.len() {
        let value = words.get(i + 1).copied().unwrap_or("");
        let bad = |problem: &str| {
            Err(HaproxyError::ServerOption {
                option: words[i].to_string(),
                value: value.to_string(),
                problem: problem.to_string(),
            })
        };
        let consumed = match words[i] {
            "check" => {
                d.check = true;
                d.check();
                1
            }
            "inter" | "fastinter" | "downinter" => match time(value) {
                Ok(t) => {
                    let c = d.check();
                    match words[i] {
                        "inter" => c.interval = t,
                        "fastinter" => c.fast_interval = Some(t),
                        _ => c.down_interval = Some(t),
                    }
                    2
                }
                Err(e) => return bad(&e.to_string()),
            },
            "rise" | "fall" => match value.parse::<u32>() {
                Ok(n) if n > 0 => {
                    let c = d.check();
                    if words[i] == "rise" {
                        c.rise = n;
                    } else {
                        c.fall = n;
                    }
                    2
                }
                _ => return bad("expected a whole number from 1"),
            },
            "weight" => match value.parse::<u32>() {
                Ok(w) if w <= super::MAX_WEIGHT => {
                    d.weight = w;
                    2
                }
                _ => return bad("expected a weight from 0 to 256"),
            },
            "maxconn" => match value.parse::<u32>() {
                Ok(n) if n > 0 => {
                    d.max_connections = Some(n);
                    2
                }
                _ => return bad("expected a whole number from 1"),
            },
            "slowstart" => match time(value) {
                Ok(t) => {
                    d.slow_start = Some(t);
                    2
                }
                Err(e) => return bad(&e.to_string()),
            },
            "observe" => match value {
                "layer4" | "layer7" => {
                    d.outlier.get_or_insert_with(super::Outlier::default);
                    2
                }
                _ => return bad("expected layer4 or layer7"),
            },
            "error-limit" => match value.parse::<u32>() {
                Ok(n) if n > 0 => {
                    d.outlier
                        .get_or_insert_with(super::Outlier::default)
                        .consecutive_failures = n;
                    2
                }
                _ => return bad("expected a whole number from 1"),
            },
            // HAProxy's reaction to reaching error-limit; sinew's is always an ejection.
            "on-error" => 2,
            "send-proxy" | "send-proxy-v2" => {
                d.send_proxy = Some(match words[i] {
                    "send-proxy" => super::SendProxy::V1,
                    _ => super::SendProxy::V2,
                });
                1
            }
            // sinew's checks send the header whenever the service's traffic does.
            "check-send-proxy" => 1,
            _ => 0,
        };
        if consumed == 0 {
            d.unsupported.push(format!(
                "server option {:?}: not supported yet, ignored",
                words[i]
            ));
            i += 1;
        } else {
            i += consumed;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_haproxy_syntax() {
        assert_eq!(time("5000"), Ok(Duration::from_millis(5000)));
        assert_eq!(time("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(time("1m"), Ok(Duration::from_secs(60)));
        assert!(time("soon").is_err());
    }

    #[test]
    fn times_past_the_maximum_are_errors_not_overflows() {
        assert_eq!(time("3650d"), Ok(duration::MAX));
        for t in [
            "300000000000000d",
            "3651d",
            "99999999999999999999",
            "213503982334601h",
        ] {
            let e = time(t).unwrap_err().to_string();
            assert!(e.contains("too long"), "{t}: {e}");
        }
        let e = directive(
            "timeout connect 300000000000000d",
            &mut Directives::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("timeout connect") && e.contains("at most 3650 days"),
            "{e}"
        );
        let e = server_options("check inter 300000000000000d", &mut Directives::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("too long"), "{e}");
    }

    #[test]
    fn directives_map_and_unknown_ones_are_listed() {
        let mut d = Directives::default();
        for line in [
            "mode http",
            "balance leastconn",
            "timeout connect 500",
            "timeout server 30s",
            "retries 3",
            "option redispatch",
            "option httpchk GET /health",
            "http-check expect status 200",
            "option forwardfor",
            "# a comment",
            "log global",
        ] {
            directive(line, &mut d).unwrap();
        }
        server_options(
            "check inter 2000 rise 3 fall 2 weight 5 maxconn 100 backup",
            &mut d,
        )
        .unwrap();
        assert!(d.check);
        assert_eq!(d.noted.len(), 1, "{:?}", d.noted);
        assert_eq!((d.mode, d.balance), (Mode::Http, Algorithm::LeastConn));
        assert_eq!(d.timeouts.connect, Duration::from_millis(500));
        assert_eq!(d.retries, Some(3));
        let c = d.health_check.as_ref().unwrap();
        assert_eq!(
            (c.kind, c.path.as_str(), c.rise, c.fall),
            (CheckType::Http, "/health", 3, 2)
        );
        assert_eq!(c.expect_status, vec![200]);
        assert_eq!((d.weight, d.max_connections), (5, Some(100)));
        assert_eq!(d.forward_for, Some(ForwardFor::default()));
        assert_eq!(
            d.unsupported,
            vec!["server option \"backup\": not supported yet, ignored".to_string()]
        );
    }

    #[test]
    fn frontend_directives_map_and_known_algorithms_sinew_lacks_are_warned_about() {
        let mut d = Directives::default();
        for line in [
            "balance leastconn",
            "balance uri",
            "option forwardfor except 10.0.0.0/8 header X-Client",
            "retry-on conn-failure 503",
            "maxconn 500",
        ] {
            directive(line, &mut d).unwrap();
        }
        assert_eq!(d.balance, Algorithm::LeastConn);
        assert_eq!(
            d.unsupported,
            ["directive \"balance uri\": not supported, sinew balances with least_conn instead"]
        );
        let f = d.forward_for.as_ref().unwrap();
        assert_eq!(f.header.as_deref(), Some("X-Client"));
        assert_eq!(
            d.retry_on.as_ref().map(|p| p.codes.clone()),
            Some(vec![503])
        );
        assert_eq!(d.max_client_connections, Some(500));
        directive("balance hdr(X-User)", &mut d).unwrap();
        assert_eq!(
            (d.balance, d.hash_header.as_deref()),
            (Algorithm::Hash, Some("X-User"))
        );
    }

    #[test]
    fn wrong_values_are_errors_not_warnings() {
        for line in [
            "retries many",
            "timeout connect soon",
            "mode udp",
            "http-check expect status ok",
            "balance leastconnn",
            "balance",
            "option forwardfor except everyone",
            "retry-on 503 sometimes",
            "maxconn 0",
            "maxconn lots",
        ] {
            let e = directive(line, &mut Directives::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(line), "{e}");
        }
        for opts in ["check inter", "rise 0", "weight 300", "maxconn lots"] {
            assert!(
                server_options(opts, &mut Directives::default()).is_err(),
                "{opts}"
            );
        }
    }

    #[test]
    fn timeout_check_bounds_the_health_check() {
        let mut d = Directives::default();
        directive("timeout check 750ms", &mut d).unwrap();
        assert!(!d.check, "only `check` in server options turns checks on");
        assert_eq!(
            d.health_check.map(|c| c.timeout),
            Some(Duration::from_millis(750))
        );
    }

    #[test]
    fn httpchk_host_header_and_default_server_are_read() {
        let mut d = Directives::default();
        directive(
            r"option httpchk GET /ping HTTP/1.1\r\nHost:\ api.example.com",
            &mut d,
        )
        .unwrap();
        directive("default-server inter 3s fall 5", &mut d).unwrap();
        let c = d.health_check.as_ref().unwrap();
        assert_eq!(c.path, "/ping");
        assert_eq!(c.host.as_deref(), Some("api.example.com"));
        assert_eq!((c.interval, c.fall), (Duration::from_secs(3), 5));
        assert!(!d.check, "default-server alone does not turn checks on");
        assert!(directive("default-server rise none", &mut d).is_err());
    }

    #[test]
    fn a_service_timeout_overrides_the_default_one() {
        let mut d = Directives::default();
        directive("timeout server 50s", &mut d).unwrap();
        directive("timeout client 10s", &mut d).unwrap();
        directive("timeout server 5s", &mut d).unwrap();
        assert_eq!(d.timeouts.idle, Duration::from_secs(10));
        assert_eq!(d.server, Some(Duration::from_secs(5)));
    }

    #[test]
    fn send_proxy_server_options_map_to_send_proxy() {
        let mut d = Directives::default();
        server_options("check send-proxy-v2 check-send-proxy", &mut d).unwrap();
        assert_eq!(d.send_proxy, Some(super::super::SendProxy::V2));
        assert!(d.unsupported.is_empty(), "{:?}", d.unsupported);
        server_options("send-proxy", &mut d).unwrap();
        assert_eq!(d.send_proxy, Some(super::super::SendProxy::V1));
    }

    #[test]
    fn slowstart_and_observe_map_to_slow_start_and_outlier_ejection() {
        let mut d = Directives::default();
        server_options(
            "check slowstart 30s observe layer7 error-limit 3 on-error mark-down",
            &mut d,
        )
        .unwrap();
        assert_eq!(d.slow_start, Some(Duration::from_secs(30)));
        assert_eq!(d.outlier.map(|o| o.consecutive_failures), Some(3));
        assert!(d.unsupported.is_empty(), "{:?}", d.unsupported);
    }
}
