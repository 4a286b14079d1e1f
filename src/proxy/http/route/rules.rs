//! A frontend's routing rules, compiled once per config: which service a request goes to, decided from
//! its host and path alone (a pure function, tested by table).
//!
//! The comparisons are HAProxy's: `hdr(host)` is an exact match of the whole value (a port included),
//! `hdr_dom` matches a pattern that sits between delimiters (`.`, `:`, `/`, `?`) or the ends, `hdr_beg`
//! and `path_beg` are prefixes, `path_reg` finds a match anywhere in the path; `-i` ignores ASCII case.
//! A request without a `Host` fails every host condition (and so passes a negated one), as a missing
//! sample does in HAProxy.

use crate::config::{compile_regex, Condition, HttpFrontend, MatchKind};

/// Delimiters around a domain match (HAProxy's `dom` match).
const DOMAIN_DELIMITERS: &[u8] = b"/?.:";

/// The compiled rules of one frontend. Services are named by index into [`Rules::services`].
pub struct Rules {
    services: Vec<String>,
    routes: Vec<(Vec<Test>, usize)>,
    default: Option<usize>,
}

/// One compiled condition.
struct Test {
    kind: MatchKind,
    /// Literal patterns, lowercased when `ignore_case`.
    values: Vec<String>,
    /// `path_regex` patterns.
    regexes: Vec<regex::Regex>,
    ignore_case: bool,
    negate: bool,
}

/// What routing a request came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// A rule matched: the service at this index.
    Rule(usize),
    /// No rule matched; the default service, at this index.
    Default(usize),
    /// No rule matched and there is no default service.
    NoMatch,
}

impl Rules {
    /// Compiles `frontend`'s rules; an error only for a regex validation would have refused.
    pub fn compile(frontend: &HttpFrontend) -> Result<Self, regex::Error> {
        let mut services: Vec<String> = Vec::new();
        let mut index = |name: &str| match services.iter().position(|s| s == name) {
            Some(i) => i,
            None => {
                services.push(name.to_string());
                services.len() - 1
            }
        };
        let mut routes = Vec::with_capacity(frontend.routes.len());
        for route in &frontend.routes {
            let tests = route
                .when
                .iter()
                .map(Test::compile)
                .collect::<Result<Vec<_>, _>>()?;
            routes.push((tests, index(&route.service)));
        }
        let default = frontend.default_service.as_deref().map(&mut index);
        Ok(Self {
            services,
            routes,
            default,
        })
    }

    /// The services the rules name, by index.
    pub fn services(&self) -> &[String] {
        &self.services
    }

    /// Routes a request with this `Host` value (from the header, or the target's authority) and path.
    pub fn decide(&self, host: Option<&str>, path: &str) -> Decision {
        for (tests, service) in &self.routes {
            if tests.iter().all(|t| t.holds(host, path)) {
                return Decision::Rule(*service);
            }
        }
        match self.default {
            Some(i) => Decision::Default(i),
            None => Decision::NoMatch,
        }
    }
}

impl Test {
    fn compile(c: &Condition) -> Result<Self, regex::Error> {
        let regexes = match c.kind {
            MatchKind::PathRegex => c
                .values
                .iter()
                .map(|v| compile_regex(v, c.ignore_case))
                .collect::<Result<_, _>>()?,
            _ => Vec::new(),
        };
        let values = c
            .values
            .iter()
            .map(|v| match (c.kind, c.ignore_case) {
                (MatchKind::HostDomain, i) => {
                    // HAProxy ignores delimiters at the ends of a domain pattern.
                    let v = v.trim_matches(|ch: char| DOMAIN_DELIMITERS.contains(&(ch as u8)));
                    if i {
                        v.to_ascii_lowercase()
                    } else {
                        v.to_string()
                    }
                }
                (_, true) => v.to_ascii_lowercase(),
                (_, false) => v.clone(),
            })
            .collect();
        Ok(Self {
            kind: c.kind,
            values,
            regexes,
            ignore_case: c.ignore_case,
            negate: c.negate,
        })
    }

    /// True when the condition holds for the request.
    fn holds(&self, host: Option<&str>, path: &str) -> bool {
        let subject = match self.kind {
            MatchKind::Host | MatchKind::HostDomain | MatchKind::HostPrefix => host,
            MatchKind::PathPrefix | MatchKind::PathRegex => Some(path),
        };
        let matched = subject.is_some_and(|s| self.matches(s));
        matched != self.negate
    }

    fn matches(&self, subject: &str) -> bool {
        if self.kind == MatchKind::PathRegex {
            return self.regexes.iter().any(|r| r.is_match(subject));
        }
        let lowered;
        let s = if self.ignore_case {
            lowered = subject.to_ascii_lowercase();
            lowered.as_str()
        } else {
            subject
        };
        self.values.iter().any(|v| match self.kind {
            MatchKind::Host => s == v,
            MatchKind::HostPrefix | MatchKind::PathPrefix => s.starts_with(v.as_str()),
            MatchKind::HostDomain => domain_match(s, v),
            MatchKind::PathRegex => false,
        })
    }
}

/// True when `pattern` occurs in `s` with a delimiter or an end of `s` on each side.
fn domain_match(s: &str, pattern: &str) -> bool {
    if pattern.is_empty() {
        return false;
    }
    let bytes = s.as_bytes();
    let bounded = |i: usize| i == 0 || DOMAIN_DELIMITERS.contains(&bytes[i - 1]);
    let bounded_after = |end: usize| end == bytes.len() || DOMAIN_DELIMITERS.contains(&bytes[end]);
    s.match_indices(pattern)
        .any(|(i, m)| bounded(i) && bounded_after(i + m.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FrontendRoute, FrontendTimeouts};

    fn cond(kind: MatchKind, values: &[&str], ignore_case: bool, negate: bool) -> Condition {
        Condition {
            kind,
            values: values.iter().map(|v| v.to_string()).collect(),
            ignore_case,
            negate,
        }
    }

    fn one(c: Condition) -> Rules {
        Rules::compile(&HttpFrontend {
            listen: "127.0.0.1:1".parse().unwrap(),
            routes: vec![FrontendRoute {
                service: "a".into(),
                when: vec![c],
            }],
            default_service: None,
            timeouts: FrontendTimeouts::default(),
        })
        .unwrap()
    }

    #[test]
    fn each_match_kind_compares_as_haproxy_does() {
        use MatchKind::*;
        let table: &[(Condition, Option<&str>, &str, bool)] = &[
            (
                cond(Host, &["a.example.com"], false, false),
                Some("a.example.com"),
                "/",
                true,
            ),
            (
                cond(Host, &["a.example.com"], false, false),
                Some("a.example.com:8080"),
                "/",
                false,
            ),
            (
                cond(Host, &["a.example.com"], false, false),
                Some("A.example.com"),
                "/",
                false,
            ),
            (
                cond(Host, &["A.Example.com"], true, false),
                Some("a.EXAMPLE.com"),
                "/",
                true,
            ),
            (
                cond(Host, &["x", "a.example.com"], false, false),
                Some("a.example.com"),
                "/",
                true,
            ),
            (
                cond(Host, &["a.example.com"], false, false),
                None,
                "/",
                false,
            ),
            (cond(Host, &["a.example.com"], false, true), None, "/", true),
            (
                cond(HostDomain, &["example.com"], false, false),
                Some("www.example.com"),
                "/",
                true,
            ),
            (
                cond(HostDomain, &["example.com"], false, false),
                Some("example.com:80"),
                "/",
                true,
            ),
            (
                cond(HostDomain, &["example.com"], false, false),
                Some("badexample.com"),
                "/",
                false,
            ),
            (
                cond(HostDomain, &["example.com"], false, false),
                Some("example.community"),
                "/",
                false,
            ),
            (
                cond(HostDomain, &[".svc1."], true, false),
                Some("SVC1.lb.example.com"),
                "/",
                true,
            ),
            (
                cond(HostPrefix, &["api."], false, false),
                Some("api.example.com"),
                "/",
                true,
            ),
            (
                cond(HostPrefix, &["api."], false, false),
                Some("www.api.example.com"),
                "/",
                false,
            ),
            (
                cond(PathPrefix, &["/api"], false, false),
                Some("x"),
                "/api/v1",
                true,
            ),
            (
                cond(PathPrefix, &["/api"], false, false),
                None,
                "/API/v1",
                false,
            ),
            (
                cond(PathPrefix, &["/api"], true, false),
                None,
                "/API/v1",
                true,
            ),
            (cond(PathPrefix, &["/api"], false, true), None, "/web", true),
            (
                cond(PathRegex, &["^/v[0-9]+/users$"], false, false),
                None,
                "/v2/users",
                true,
            ),
            (
                cond(PathRegex, &["^/v[0-9]+/users$"], false, false),
                None,
                "/v2/users/1",
                false,
            ),
            (
                cond(PathRegex, &["users"], false, false),
                None,
                "/v2/users/1",
                true,
            ),
            (
                cond(PathRegex, &["^/USERS"], true, false),
                None,
                "/users",
                true,
            ),
        ];
        for (i, (c, host, path, want)) in table.iter().enumerate() {
            let got = one(c.clone()).decide(*host, path) == Decision::Rule(0);
            assert_eq!(got, *want, "row {i}: {c:?} on host {host:?} path {path:?}");
        }
    }

    #[test]
    fn first_matching_rule_wins_all_conditions_must_hold_else_the_default() {
        let frontend = HttpFrontend {
            listen: "127.0.0.1:1".parse().unwrap(),
            routes: vec![
                FrontendRoute {
                    service: "api".into(),
                    when: vec![
                        cond(MatchKind::HostDomain, &["example.com"], false, false),
                        cond(MatchKind::PathPrefix, &["/api"], false, false),
                    ],
                },
                FrontendRoute {
                    service: "web".into(),
                    when: vec![cond(MatchKind::HostDomain, &["example.com"], false, false)],
                },
            ],
            default_service: Some("api".into()),
            timeouts: FrontendTimeouts::default(),
        };
        let rules = Rules::compile(&frontend).unwrap();
        assert_eq!(rules.services(), ["api", "web"]);
        assert_eq!(
            rules.decide(Some("example.com"), "/api/x"),
            Decision::Rule(0)
        );
        assert_eq!(rules.decide(Some("example.com"), "/"), Decision::Rule(1));
        assert_eq!(
            rules.decide(Some("other.org"), "/api"),
            Decision::Default(0)
        );
        let no_default = Rules::compile(&HttpFrontend {
            default_service: None,
            ..frontend
        })
        .unwrap();
        assert_eq!(no_default.decide(None, "/api"), Decision::NoMatch);
    }
}
