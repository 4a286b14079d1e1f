//! What a Synapse service's frontend says about its listener and requests: `option forwardfor`,
//! `retry-on`, `maxconn` and `bind_options`, set on the translated [`ServiceConfig`].

use crate::config::haproxy::Directives;
use crate::config::{FieldName, Level, Mode, RetryOn, ServiceConfig, TlsListen};
use hyper::header::HeaderName;
use std::path::PathBuf;

/// Bind keywords HAProxy reads with one argument; sinew ignores them with a warning unless mapped below.
const BIND_WITH_ARGUMENT: &[&str] = &[
    "accept-netscaler-cip",
    "alpn",
    "backlog",
    "ca-ignore-err",
    "ca-sign-file",
    "ca-sign-pass",
    "ca-verify-file",
    "ciphers",
    "ciphersuites",
    "crl-file",
    "crt-ignore-err",
    "crt-list",
    "curves",
    "ecdhe",
    "expose-fd",
    "gid",
    "group",
    "id",
    "interface",
    "level",
    "maxconn",
    "mode",
    "mss",
    "name",
    "namespace",
    "nice",
    "npn",
    "process",
    "proto",
    "quic-cc-algo",
    "severity-output",
    "shards",
    "ssl-max-ver",
    "ssl-min-ver",
    "tcp-ut",
    "thread",
    "tls-ticket-keys",
    "uid",
    "user",
];

/// Bind keywords HAProxy reads without an argument; sinew ignores them with a warning.
const BIND_FLAGS: &[&str] = &[
    "allow-0rtt",
    "defer-accept",
    "force-sslv3",
    "force-tlsv10",
    "force-tlsv11",
    "force-tlsv12",
    "force-tlsv13",
    "generate-certificates",
    "no-ca-names",
    "no-sslv3",
    "no-tls-tickets",
    "no-tlsv10",
    "no-tlsv11",
    "no-tlsv12",
    "no-tlsv13",
    "prefer-client-ciphers",
    "quic-force-retry",
    "strict-sni",
    "tfo",
    "transparent",
    "v4v6",
    "v6only",
];

/// Sets forwarded headers, retry conditions and the client connection limit from `d`; what cannot be
/// honoured goes to `warn`.
pub(super) fn apply(
    d: &Directives,
    service: &mut ServiceConfig,
    warn: &mut impl FnMut(Level, String),
) {
    service.hash_header = d.hash_header.clone();
    service.max_client_connections = d.max_client_connections;
    if d.mode == Mode::Tcp {
        if d.forward_for.is_some() {
            warn(
                Level::Warn,
                "option forwardfor has no effect in mode tcp (as in HAProxy)".into(),
            );
        }
        if d.retry_on.is_some() {
            warn(
                Level::Info,
                "retry-on applies to mode http only (as in HAProxy)".into(),
            );
        }
        return;
    }
    // Without `option forwardfor` HAProxy adds no X-Forwarded-For, so neither does the translation.
    let http = &mut service.http;
    http.forwarded_headers = d.forward_for.is_some();
    if let Some(f) = &d.forward_for {
        http.forwarded_except = f.except.into_iter().collect();
        if let Some(name) = f
            .header
            .as_ref()
            .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok())
        {
            http.forwarded_for_header = FieldName(name);
        }
    }
    if let Some(p) = &d.retry_on {
        if p.none {
            service.retries.attempts = 0;
        } else {
            let mut on = vec![RetryOn::ConnectFailure];
            on.extend(p.on.iter().filter(|o| **o != RetryOn::ConnectFailure));
            service.retries.on = on;
            service.retries.retriable_status_codes = p.codes.clone();
        }
    }
}

/// `haproxy.bind_options`: `ssl crt FILE [ca-file FILE verify required]` terminate TLS on the listener;
/// `accept-proxy` reads a PROXY protocol header first; unknown keywords are errors; other HAProxy
/// keywords are warned about.
pub(super) fn bind_options(
    options: &str,
    service: &mut ServiceConfig,
    warn: &mut impl FnMut(Level, String),
) -> Result<(), String> {
    let (mut ssl, mut crt, mut ca, mut verify) = (false, None, None, None);
    let mut words = options.split_whitespace();
    while let Some(word) = words.next() {
        let mut value = || {
            words
                .next()
                .map(String::from)
                .ok_or(format!("{word} needs a value"))
        };
        match word {
            "accept-proxy" => service.accept_proxy = true,
            "ssl" => ssl = true,
            "crt" => crt = Some(PathBuf::from(value()?)),
            "ca-file" => ca = Some(PathBuf::from(value()?)),
            "verify" => verify = Some(value()?),
            w if BIND_WITH_ARGUMENT.contains(&w) => {
                let v = value()?;
                warn(
                    Level::Warn,
                    format!("bind option {w:?} {v:?}: not supported, ignored"),
                );
            }
            w if BIND_FLAGS.contains(&w) => {
                warn(
                    Level::Warn,
                    format!("bind option {w:?}: not supported, ignored"),
                );
            }
            other => return Err(format!("unknown bind option {other:?}")),
        }
    }
    match (ssl, crt) {
        (false, None) => {}
        (true, Some(cert)) => {
            // HAProxy's `crt` file holds the certificate chain and the key; sinew reads each from it.
            let client_ca = match verify.as_deref() {
                Some("required") => Some(ca.ok_or("verify required needs ca-file")?),
                None | Some("none") => {
                    if ca.is_some() {
                        warn(Level::Warn, "ca-file without verify required: client certificates are not asked for".into());
                    }
                    None
                }
                Some("optional") => return Err(
                    "verify optional: sinew asks for client certificates only as verify required"
                        .into(),
                ),
                Some(other) => {
                    return Err(format!(
                        "verify {other:?}: expected none, optional or required"
                    ))
                }
            };
            service.tls_listen = Some(TlsListen {
                cert: cert.clone(),
                key: cert,
                client_ca,
            });
        }
        (true, None) => return Err("ssl needs crt FILE".into()),
        (false, Some(_)) => {
            return Err("crt without ssl: HAProxy would not terminate TLS either".into())
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(options: &str) -> (Result<ServiceConfig, String>, Vec<String>) {
        let mut s = ServiceConfig::new(Some("127.0.0.1:1".parse().unwrap()));
        let mut said = Vec::new();
        let r = bind_options(options, &mut s, &mut |_, m| said.push(m));
        (r.map(|()| s), said)
    }

    #[test]
    fn bind_options_map_tls_and_proxy_protocol_and_warn_about_the_rest() {
        let (s, said) = bind("ssl crt /etc/ssl/web.pem alpn h2,http/1.1");
        let tls = s.unwrap().tls_listen.unwrap();
        assert_eq!(
            (tls.cert.to_str(), tls.key.to_str()),
            (Some("/etc/ssl/web.pem"), Some("/etc/ssl/web.pem"))
        );
        assert!(tls.client_ca.is_none());
        assert_eq!(
            said,
            ["bind option \"alpn\" \"h2,http/1.1\": not supported, ignored"]
        );

        let (s, _) = bind("ssl crt /c.pem ca-file /ca.pem verify required");
        assert_eq!(
            s.unwrap().tls_listen.unwrap().client_ca.as_deref(),
            Some(std::path::Path::new("/ca.pem"))
        );

        let (s, said) = bind("accept-proxy ssl crt /c.pem");
        let s = s.unwrap();
        assert!(s.accept_proxy && s.tls_listen.is_some() && said.is_empty());

        let (s, said) = bind("transparent");
        assert!(s.unwrap().tls_listen.is_none());
        assert_eq!(
            said,
            ["bind option \"transparent\": not supported, ignored"]
        );

        for (bad, says) in [
            ("ssl", "ssl needs crt"),
            ("crt /c.pem", "without ssl"),
            ("ssl crt", "crt needs a value"),
            ("ssl crt /c.pem verify required", "needs ca-file"),
            ("ssl crt /c.pem verify sometimes", "verify \"sometimes\""),
            ("accept-proxxy", "unknown bind option"),
            ("backlog", "backlog needs a value"),
        ] {
            let e = bind(bad).0.unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
