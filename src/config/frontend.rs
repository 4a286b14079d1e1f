//! Shared HTTP frontends: one listener that routes each request to one of the configured services by
//! ordered rules (first match wins), else to a default service, like an HAProxy `frontend` with
//! `acl`, `use_backend ... if` and `default_backend` lines.
//!
//! A rule is a list of conditions that must all hold; each condition is one HAProxy ACL: a fetch
//! (`match`), its patterns (`values`, any of which may match), `-i` (`ignore_case`) and `!` (`negate`).
//! `use_backend X if A or B` is two rules for `X`, one per alternative, which is the same thing.

use super::{addr, duration, FieldError, Mode, ServiceConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// One shared HTTP listener and its routing rules.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpFrontend {
    /// The local address clients connect to.
    #[serde(deserialize_with = "addr::socket_addr")]
    pub listen: SocketAddr,
    /// Rules tried in order; the first whose conditions all hold picks the service.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// The service for requests no rule matches; without one they get a 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_service: Option<String>,
    /// Client-side timeouts of the listener.
    #[serde(default)]
    pub timeouts: FrontendTimeouts,
}

/// The client-side timeouts of a frontend (the backend side is each service's own).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct FrontendTimeouts {
    /// A client connection with no traffic either way for this long is closed.
    #[serde(with = "duration")]
    pub idle: Duration,
    /// A client must send a whole request head within this long.
    #[serde(with = "duration")]
    pub header_read: Duration,
}

impl Default for FrontendTimeouts {
    fn default() -> Self {
        let service = super::Timeouts::default();
        Self {
            idle: service.idle,
            header_read: service.header_read,
        }
    }
}

/// One routing rule: `use_backend SERVICE if CONDITION...`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The service that gets the request.
    pub service: String,
    /// Conditions that must all hold; none: the rule always matches.
    #[serde(default)]
    pub when: Vec<Condition>,
}

/// One condition on a request: an HAProxy ACL.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// What is compared, and how.
    #[serde(rename = "match")]
    pub kind: MatchKind,
    /// Patterns; the condition holds when any of them matches.
    pub values: Vec<String>,
    /// Compare without regard to ASCII case (HAProxy's `-i`).
    #[serde(default)]
    pub ignore_case: bool,
    /// The condition holds when no pattern matches (HAProxy's `!`).
    #[serde(default)]
    pub negate: bool,
}

/// The request property a condition looks at and how its patterns compare with it.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MatchKind {
    /// The whole `Host` value equals a pattern, port included (HAProxy's `hdr(host)`).
    Host,
    /// A pattern equals a run of `Host` delimited by `.`, `:`, `/`, `?` or the ends (`hdr_dom(host)`).
    HostDomain,
    /// `Host` starts with a pattern (`hdr_beg(host)`).
    HostPrefix,
    /// The path (without the query) starts with a pattern (`path_beg`).
    PathPrefix,
    /// A regular expression (Rust `regex` syntax) finds a match in the path (`path_reg`).
    PathRegex,
}

impl MatchKind {
    /// The HAProxy fetch this is.
    pub fn haproxy(self) -> &'static str {
        match self {
            MatchKind::Host => "hdr(host)",
            MatchKind::HostDomain => "hdr_dom(host)",
            MatchKind::HostPrefix => "hdr_beg(host)",
            MatchKind::PathPrefix => "path_beg",
            MatchKind::PathRegex => "path_reg",
        }
    }
}

/// Compiles a `path_regex` pattern as the router does.
pub fn compile_regex(pattern: &str, ignore_case: bool) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .case_insensitive(ignore_case)
        .build()
}

impl HttpFrontend {
    /// True when a route or the default sends requests to `service`.
    pub fn routes_to(&self, service: &str) -> bool {
        self.default_service.as_deref() == Some(service)
            || self.routes.iter().any(|r| r.service == service)
    }

    /// Checks the rules against the services they name, with fields relative to the frontend.
    pub fn validate(&self, services: &BTreeMap<String, ServiceConfig>) -> Result<(), FieldError> {
        let known = |field: String, name: &str| match services.get(name) {
            None => Err(FieldError::new(field, format!("no service named {name:?}"))),
            Some(s) if s.mode != Mode::Http => Err(FieldError::new(
                field,
                format!("service {name:?} is not in mode http, so it cannot take routed requests"),
            )),
            Some(_) => Ok(()),
        };
        if let Some(name) = &self.default_service {
            known("default_service".into(), name)?;
        }
        if self.routes.is_empty() && self.default_service.is_none() {
            return Err(FieldError::new(
                "routes",
                "a frontend needs routes or a default_service",
            ));
        }
        for (i, route) in self.routes.iter().enumerate() {
            known(format!("routes[{i}].service"), &route.service)?;
            for (j, c) in route.when.iter().enumerate() {
                let field = format!("routes[{i}].when[{j}].values");
                if c.values.is_empty() {
                    return Err(FieldError::new(field, "at least one value is required"));
                }
                if c.kind == MatchKind::PathRegex {
                    for v in &c.values {
                        compile_regex(v, c.ignore_case).map_err(|e| {
                            FieldError::new(
                                field.clone(),
                                format!("{v:?} is not a valid regular expression: {e}"),
                            )
                        })?;
                    }
                }
            }
        }
        let t = &self.timeouts;
        for (field, d) in [
            ("timeouts.idle", t.idle),
            ("timeouts.header_read", t.header_read),
        ] {
            if d.is_zero() {
                return Err(FieldError::new(field, "must be greater than zero"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::load::tests::parse;

    const SERVICES: &str = "services:\n  a: { listen: 127.0.0.1:5001, mode: http, backends: [127.0.0.1:1] }\n  t: { listen: 127.0.0.1:5002, backends: [127.0.0.1:1] }\n";

    fn with_frontend(frontend: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
        parse(&format!("{SERVICES}http_frontends:\n  web:\n{frontend}"))
    }

    #[test]
    fn reads_rules_in_yaml() {
        let c = with_frontend(
            "    listen: 127.0.0.1:8081\n    routes:\n      - service: a\n        when:\n          - { match: host_domain, values: [a.example.com], ignore_case: true }\n          - { match: path_prefix, values: [/api], negate: true }\n    default_service: a\n",
        )
        .unwrap();
        let f = &c.http_frontends["web"];
        assert_eq!(f.routes[0].when.len(), 2);
        assert!(f.routes[0].when[0].ignore_case && f.routes[0].when[1].negate);
        assert_eq!(f.default_service.as_deref(), Some("a"));
    }

    #[test]
    fn rules_naming_unknown_or_tcp_services_are_errors() {
        let e = with_frontend("    listen: 127.0.0.1:8081\n    routes: [{ service: b }]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("http_frontends.web.routes[0].service: no service named \"b\""),
            "{e}"
        );
        let e = with_frontend("    listen: 127.0.0.1:8081\n    default_service: t\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("http_frontends.web.default_service: service \"t\" is not in mode http"),
            "{e}"
        );
    }

    #[test]
    fn a_regex_that_does_not_compile_is_an_error_naming_the_field() {
        let e = with_frontend(
            "    listen: 127.0.0.1:8081\n    routes: [{ service: a, when: [{ match: path_regex, values: [\"^/(a\"] }] }]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("test.yaml: http_frontends.web.routes[0].when[0].values: \"^/(a\" is not a valid regular expression"),
            "{e}"
        );
    }

    #[test]
    fn a_frontend_without_rules_or_listen_conflicts_is_refused() {
        let e = with_frontend("    listen: 127.0.0.1:8081\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs routes or a default_service"), "{e}");
        let e = with_frontend("    listen: 127.0.0.1:5001\n    default_service: a\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("http_frontends.web.listen: 127.0.0.1:5001 is already used by a"),
            "{e}"
        );
        let e = with_frontend(
            "    listen: 127.0.0.1:8081\n    routes: [{ service: a, when: [{ match: host, values: [] }] }]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("routes[0].when[0].values: at least one value"),
            "{e}"
        );
        let e = with_frontend(
            "    listen: 127.0.0.1:8081\n    routes: [{ service: a, when: [{ match: src, values: [x] }] }]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown variant `src`"), "{e}");
    }
}
