//! Which requests the admin API serves: the checks against DNS rebinding and cross-site requests.
//!
//! The admin server listens on loopback by default and, without `admin.token`, asks no credentials, so
//! the threat is a web page in a browser on the same host (or network). Such a page can send a
//! "simple" cross-origin request (a `text/plain` POST) without any preflight, and through DNS
//! rebinding (its own name re-pointed at 127.0.0.1) it can even read the answers, as same-origin.
//! Two facts a browser cannot forge defend against both:
//! - `Host` is the name the browser thinks it talks to: a rebound page sends its own domain. Every
//!   state-changing request must name `localhost`, a `*.localhost` name or an IP literal, which no
//!   attacker's DNS can re-point. Reads (`/metrics`, `/api/services`, the status page) are served
//!   whatever the `Host`, as HAProxy's stats page is: Prometheus and dashboards scrape hosts by their
//!   DNS names, and breaking every scrape costs more than a rebound page reading backend addresses.
//! - `Origin` is sent by browsers with every cross-origin request and every non-GET one: a
//!   state-changing request that carries one must come from the admin server's own origin (the
//!   status page).
//!
//! A request carrying the right `admin.token` passes both: a page cannot attach an `Authorization`
//! header to a cross-origin request without a CORS answer the admin server never gives, so remote
//! scrapers and scripts that reach the server by a DNS name keep working when they send the token.

use crate::metrics::Registry;
use prometheus::IntCounterVec;
use std::net::{IpAddr, Ipv6Addr};

/// What the request carries in place of `admin.token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    /// No token is configured.
    NotConfigured,
    /// A token is configured and the request carries it.
    Valid,
    /// A token is configured and the request does not carry it.
    Missing,
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `Host` names something other than localhost or an IP address (DNS rebinding).
    #[error("the Host header must be localhost or an IP address (or send Authorization: Bearer <admin.token>)")]
    Host,
    /// A state-changing request from a page of another origin (cross-site request).
    #[error("cross-origin requests cannot change state")]
    Origin,
    /// A state-changing request without the configured token.
    #[error("this endpoint needs Authorization: Bearer <admin.token>")]
    Token,
}

impl Refusal {
    /// The `reason` label of the refusal metric.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Host => "host",
            Refusal::Origin => "origin",
            Refusal::Token => "token",
        }
    }
}

/// The family of refused requests, by reason; clones share it.
#[derive(Clone)]
pub struct RefusalMetrics {
    refused: IntCounterVec,
}

impl RefusalMetrics {
    /// Creates the refusal family in `registry`, with a series for every reason from the start.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let refused = registry.counter(
            "sinew_admin_requests_refused_total",
            "Admin API requests refused, by reason (host: not localhost or an IP address; origin: cross-site; token: missing or wrong admin.token).",
            &["reason"],
        )?;
        for refusal in [Refusal::Host, Refusal::Origin, Refusal::Token] {
            refused.with_label_values(&[refusal.reason()]);
        }
        Ok(Self { refused })
    }

    /// Counts a refused request.
    pub fn count(&self, refusal: Refusal) {
        self.refused.with_label_values(&[refusal.reason()]).inc();
    }
}

/// Decides whether to serve a request from its `Host` and `Origin` headers (as sent, if any), whether
/// it changes state (anything but GET and HEAD), and its token.
pub fn admit(
    host: Option<&str>,
    origin: Option<&str>,
    changes_state: bool,
    token: Token,
) -> Result<(), Refusal> {
    if token == Token::Valid || !changes_state {
        return Ok(());
    }
    // A request without Host (HTTP/1.0 tools) cannot come from a browser.
    if host.is_some_and(|h| !local_host(h)) {
        return Err(Refusal::Host);
    }
    if let Some(origin) = origin {
        if !same_origin(origin, host) {
            return Err(Refusal::Origin);
        }
    }
    match token {
        Token::Missing => Err(Refusal::Token),
        Token::NotConfigured | Token::Valid => Ok(()),
    }
}

/// True when a `Host` value names localhost, a `*.localhost` name or an IP literal (any port).
fn local_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // An IPv6 literal: `[::1]` or `[::1]:port`.
        Some(rest) => {
            return rest.split_once(']').is_some_and(|(ip, port)| {
                ip.parse::<Ipv6Addr>().is_ok()
                    && (port.is_empty() || port.strip_prefix(':').is_some_and(valid_port))
            });
        }
        None => match host.rsplit_once(':') {
            Some((name, port)) if valid_port(port) => name,
            Some(_) => return false,
            None => host,
        },
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost") || name.parse::<IpAddr>().is_ok()
}

/// True for a port as a browser sends it (1 to 5 digits).
fn valid_port(port: &str) -> bool {
    !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
}

/// True when `origin` (`scheme://host[:port]`) is the origin of the page served as `host`.
fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host else { return false };
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_names_and_ip_literals_are_trusted_hosts() {
        for host in [
            "localhost",
            "LOCALHOST:3212",
            "localhost.:3212",
            "status.localhost:80",
            "127.0.0.1:3212",
            "10.1.2.3",
            "[::1]:3212",
            "[::1]",
        ] {
            assert!(local_host(host), "{host} should be trusted");
        }
        for host in [
            "evil.example",
            "evil.example:3212",
            "localhost.evil.example",
            "127.0.0.1.evil.example:3212",
            "127.0.0.1:port",
            "[::1",
            "[::1]x",
            "[evil.example]:80",
            "",
        ] {
            assert!(!local_host(host), "{host:?} should not be trusted");
        }
    }

    #[test]
    fn requests_are_admitted_or_refused_by_host_origin_and_token() {
        use Refusal as R;
        use Token::*;
        let local = Some("127.0.0.1:3212");
        let foreign = Some("evil.example:3212");
        let page = Some("http://127.0.0.1:3212");
        let evil = Some("http://evil.example");
        // (host, origin, changes state, token, expected)
        let table = [
            // Reads are served to any Host (scrapers use DNS names), with or without a token.
            (local, None, false, NotConfigured, Ok(())),
            (None, None, false, NotConfigured, Ok(())),
            (foreign, None, false, NotConfigured, Ok(())),
            (foreign, None, false, Missing, Ok(())),
            (local, evil, false, Missing, Ok(())),
            // Writes from curl and `sinew` (no Origin), and from the status page itself.
            (local, None, true, NotConfigured, Ok(())),
            (local, page, true, NotConfigured, Ok(())),
            (
                Some("LOCALHOST:3212"),
                Some("http://localhost:3212"),
                true,
                NotConfigured,
                Ok(()),
            ),
            // Cross-site writes, with or without a token configured.
            (local, evil, true, NotConfigured, Err(R::Origin)),
            (local, Some("null"), true, NotConfigured, Err(R::Origin)),
            (
                local,
                Some("http://127.0.0.1:9999"),
                true,
                NotConfigured,
                Err(R::Origin),
            ),
            (None, page, true, NotConfigured, Err(R::Origin)),
            (local, evil, true, Missing, Err(R::Origin)),
            // DNS rebinding: the page's own origin, under its own name.
            (
                foreign,
                Some("http://evil.example:3212"),
                true,
                NotConfigured,
                Err(R::Host),
            ),
            // The token: needed for writes when configured, and trusted from anywhere.
            (local, None, true, Missing, Err(R::Token)),
            (local, page, true, Missing, Err(R::Token)),
            (foreign, evil, true, Valid, Ok(())),
            (foreign, None, false, Valid, Ok(())),
            (foreign, None, true, NotConfigured, Err(R::Host)),
        ];
        for (host, origin, writes, token, expected) in table {
            assert_eq!(
                admit(host, origin, writes, token),
                expected,
                "host {host:?}, origin {origin:?}, writes {writes}, token {token:?}"
            );
        }
    }
}
