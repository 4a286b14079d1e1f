//! Synapse's shared HTTP frontend (`haproxy.shared_frontend`, top level and per service) translated into
//! one [`HttpFrontend`]: the top-level lines first, then each service's, read as one HAProxy frontend.
//!
//! Accepted: `bind ADDR:PORT`, `mode http`, `timeout client` / `timeout http-request`, `acl NAME FETCH
//! [-i] VALUE...` with the fetches `hdr(host)`, `hdr_dom(host)`, `hdr_beg(host)`, `path_beg` and
//! `path_reg`, `use_backend NAME if|unless CONDITION` (ACL names, `!`, `or`/`||`) and `default_backend
//! NAME`. ACLs declared twice under one name are alternatives, as in HAProxy. Any other fetch, flag,
//! anonymous ACL, unknown ACL name or backend is an error naming the line; other directives are
//! reported as warnings.

use crate::config::{Condition, FrontendRoute, FrontendTimeouts, HttpFrontend, MatchKind};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Most rules one `use_backend` line may expand to (alternatives of alternatives multiply).
const MAX_EXPANSION: usize = 64;

/// A condition in disjunctive normal form: any clause, each of conditions that must all hold.
type Dnf = Vec<Vec<Condition>>;

/// The frontend as read so far.
#[derive(Default)]
pub(super) struct SharedFrontend {
    listen: Option<SocketAddr>,
    acls: BTreeMap<String, Vec<Condition>>,
    routes: Vec<FrontendRoute>,
    default: Option<String>,
    timeouts: FrontendTimeouts,
    /// Directives sinew does not implement, for warnings.
    pub(super) ignored: Vec<String>,
}

impl SharedFrontend {
    /// Reads one line; `backend` resolves a `use_backend`/`default_backend` name to a service.
    pub(super) fn line(
        &mut self,
        line: &str,
        backend: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [] => Ok(()),
            ["bind", addr] => {
                let addr = addr.strip_prefix('*').unwrap_or(addr);
                let addr = match addr.strip_prefix(':') {
                    Some(port) => format!("0.0.0.0:{port}"),
                    None => addr.to_string(),
                };
                let a = crate::config::parse_socket_addr(&addr).map_err(|e| e.to_string())?;
                if self.listen.replace(a).is_some() {
                    return Err("a second `bind`: sinew's frontend listens on one address".into());
                }
                Ok(())
            }
            ["bind", _, ..] => Err("bind options are not supported on the shared frontend".into()),
            ["mode", "http"] => Ok(()),
            ["mode", other] => Err(format!(
                "mode {other}: the shared frontend routes HTTP requests only"
            )),
            ["timeout", which @ ("client" | "http-request"), value] => {
                let d = crate::config::haproxy::time(value).map_err(|e| e.to_string())?;
                if *which == "client" {
                    self.timeouts.idle = d;
                } else {
                    self.timeouts.header_read = d;
                }
                Ok(())
            }
            ["acl", name, fetch, rest @ ..] => self.acl(name, fetch, rest),
            ["use_backend", name, kw @ ("if" | "unless"), cond @ ..] => {
                let service =
                    backend(name).ok_or_else(|| format!("no service has backend {name:?}"))?;
                let dnf = self.condition(cond)?;
                let dnf = if *kw == "unless" { negate(dnf)? } else { dnf };
                for when in dnf {
                    self.routes.push(FrontendRoute {
                        service: service.clone(),
                        when,
                    });
                }
                Ok(())
            }
            ["use_backend", name] => {
                let service =
                    backend(name).ok_or_else(|| format!("no service has backend {name:?}"))?;
                self.routes.push(FrontendRoute {
                    service,
                    when: Vec::new(),
                });
                Ok(())
            }
            ["use_backend", ..] => Err("expected `use_backend NAME [if|unless CONDITION]`".into()),
            ["default_backend", name] => {
                let service =
                    backend(name).ok_or_else(|| format!("no service has backend {name:?}"))?;
                if self.default.replace(service).is_some() {
                    return Err("a second default_backend".into());
                }
                Ok(())
            }
            [first, ..] => {
                self.ignored.push((*first).to_string());
                Ok(())
            }
        }
    }

    /// Reads `acl NAME FETCH [-i] [--] VALUE...`.
    fn acl(&mut self, name: &str, fetch: &str, rest: &[&str]) -> Result<(), String> {
        let kind = match fetch.to_ascii_lowercase().as_str() {
            "hdr(host)" | "req.hdr(host)" => MatchKind::Host,
            "hdr_dom(host)" => MatchKind::HostDomain,
            "hdr_beg(host)" => MatchKind::HostPrefix,
            "path_beg" => MatchKind::PathPrefix,
            "path_reg" => MatchKind::PathRegex,
            _ => {
                return Err(format!(
                    "acl {name}: fetch {fetch} is not supported (supported: hdr(host), hdr_dom(host), hdr_beg(host), path_beg, path_reg)"
                ))
            }
        };
        let mut ignore_case = false;
        let mut values = rest.iter();
        let mut pending: Vec<String> = Vec::new();
        for v in values.by_ref() {
            match *v {
                "-i" => ignore_case = true,
                "--" => break,
                f if f.starts_with('-') => {
                    return Err(format!("acl {name}: flag {f} is not supported (only -i)"))
                }
                v => {
                    pending.push(v.to_string());
                    break;
                }
            }
        }
        pending.extend(values.map(|v| v.to_string()));
        if pending.is_empty() {
            return Err(format!("acl {name}: no value to match"));
        }
        if kind == MatchKind::PathRegex {
            for v in &pending {
                crate::config::compile_regex(v, ignore_case).map_err(|e| {
                    format!("acl {name}: {v:?} is not a valid regular expression: {e}")
                })?;
            }
        }
        self.acls
            .entry(name.to_string())
            .or_default()
            .push(Condition {
                kind,
                values: pending,
                ignore_case,
                negate: false,
            });
        Ok(())
    }

    /// Reads a condition: ACL names (`!` negates), all of which must hold, alternatives split by `or`.
    fn condition(&self, words: &[&str]) -> Result<Dnf, String> {
        if words.is_empty() {
            return Err("a condition after if/unless is required".into());
        }
        let mut out = Dnf::new();
        for alternative in words.split(|w| *w == "or" || *w == "||") {
            if alternative.is_empty() {
                return Err("`or` needs a condition on each side".into());
            }
            let mut clause: Dnf = vec![Vec::new()];
            for term in alternative {
                if term.starts_with('{') {
                    return Err(
                        "anonymous ACLs ({ ... }) are not supported; name them with `acl`".into(),
                    );
                }
                let (negated, name) = match term.strip_prefix('!') {
                    Some(n) => (true, n),
                    None => (false, *term),
                };
                let decls = self
                    .acls
                    .get(name)
                    .ok_or_else(|| format!("no acl named {name:?} declared before this line"))?;
                let term: Dnf = if negated {
                    vec![decls.iter().map(flip).collect()]
                } else {
                    decls.iter().map(|c| vec![c.clone()]).collect()
                };
                clause = and(&clause, &term)?;
            }
            out.extend(clause);
        }
        Ok(out)
    }

    /// The native frontend, once every line is read; an error when no line gives a `bind`.
    pub(super) fn finish(self) -> Result<HttpFrontend, String> {
        let listen = self
            .listen
            .ok_or("no `bind ADDRESS:PORT` line, so nothing to listen on")?;
        Ok(HttpFrontend {
            listen,
            routes: self.routes,
            default_service: self.default,
            timeouts: self.timeouts,
        })
    }
}

/// The condition with its sense reversed.
fn flip(c: &Condition) -> Condition {
    Condition {
        negate: !c.negate,
        ..c.clone()
    }
}

/// Both conditions: every clause of `a` with every clause of `b`.
fn and(a: &Dnf, b: &Dnf) -> Result<Dnf, String> {
    if a.len() * b.len() > MAX_EXPANSION {
        return Err(format!(
            "the condition expands to more than {MAX_EXPANSION} rules; simplify it"
        ));
    }
    Ok(a.iter()
        .flat_map(|x| b.iter().map(move |y| x.iter().chain(y).cloned().collect()))
        .collect())
}

/// The negation (De Morgan): every clause fails, so one condition of each is reversed.
fn negate(dnf: Dnf) -> Result<Dnf, String> {
    let mut out: Dnf = vec![Vec::new()];
    for clause in dnf {
        let alternatives: Dnf = clause.iter().map(|c| vec![flip(c)]).collect();
        out = and(&out, &alternatives)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(lines: &[&str]) -> Result<HttpFrontend, String> {
        let mut f = SharedFrontend::default();
        let backend = |n: &str| ["svc1", "svc2"].contains(&n).then(|| n.to_string());
        for l in lines {
            f.line(l, &backend).map_err(|e| format!("{l}: {e}"))?;
        }
        f.finish()
    }

    #[test]
    fn acls_and_use_backend_lines_become_rules() {
        let f = read(&[
            "bind 127.0.0.1:8081",
            "mode http",
            "acl is_svc1 hdr_dom(host) -i svc1.example.com",
            "acl api path_beg /api /v2",
            "use_backend svc1 if is_svc1 !api",
            "use_backend svc2 if api or is_svc1",
            "default_backend svc2",
        ])
        .unwrap();
        assert_eq!(f.listen, "127.0.0.1:8081".parse().unwrap());
        assert_eq!(f.default_service.as_deref(), Some("svc2"));
        let r = &f.routes;
        assert_eq!(r.len(), 3, "{r:?}");
        assert_eq!((r[0].service.as_str(), r[0].when.len()), ("svc1", 2));
        let (dom, api) = (&r[0].when[0], &r[0].when[1]);
        assert!(dom.kind == MatchKind::HostDomain && dom.ignore_case && !dom.negate);
        assert!(api.kind == MatchKind::PathPrefix && api.negate && api.values == ["/api", "/v2"]);
        assert_eq!(r[1].when[0].kind, MatchKind::PathPrefix);
        assert_eq!(r[2].when[0].kind, MatchKind::HostDomain);
    }

    #[test]
    fn same_name_acls_are_alternatives_and_unless_negates() {
        let f = read(&[
            "bind :8081",
            "acl h hdr(host) a.example.com",
            "acl h hdr_beg(host) b.",
            "use_backend svc1 if h",
            "use_backend svc2 unless h",
        ])
        .unwrap();
        assert_eq!(f.listen, "0.0.0.0:8081".parse().unwrap());
        assert_eq!(f.routes.len(), 3);
        assert_eq!(f.routes[0].when[0].kind, MatchKind::Host);
        assert_eq!(f.routes[1].when[0].kind, MatchKind::HostPrefix);
        let unless = &f.routes[2];
        assert_eq!(unless.service, "svc2");
        assert!(unless.when.len() == 2 && unless.when.iter().all(|c| c.negate));
    }

    #[test]
    fn lines_outside_the_subset_are_errors_naming_what_is_wrong() {
        for (lines, want) in [
            (&["acl a src 10.0.0.0/8"][..], "fetch src is not supported"),
            (
                &["acl a hdr(x-foo) bar"],
                "fetch hdr(x-foo) is not supported",
            ),
            (&["acl a path_beg -m beg /x"], "flag -m is not supported"),
            (&["acl a path_reg ^/(x"], "not a valid regular expression"),
            (&["use_backend svc1 if nope"], "no acl named \"nope\""),
            (&["use_backend other"], "no service has backend \"other\""),
            (&["use_backend svc1 if { path_beg /x }"], "anonymous ACLs"),
            (&["mode tcp"], "routes HTTP requests only"),
            (&["bind 127.0.0.1:1 ssl crt x.pem"], "bind options"),
            (
                &["default_backend svc1", "default_backend svc2"],
                "a second default_backend",
            ),
            (&["mode http"], "no `bind"),
        ] {
            let e = read(lines).unwrap_err();
            assert!(e.contains(want), "{lines:?}: {e}");
        }
    }

    #[test]
    fn other_directives_are_kept_for_warnings_and_timeouts_map() {
        let mut f = SharedFrontend::default();
        let none = |_: &str| None;
        for l in [
            "bind 127.0.0.1:1",
            "option httplog",
            "timeout client 30s",
            "timeout http-request 5s",
        ] {
            f.line(l, &none).unwrap();
        }
        assert_eq!(f.ignored, ["option"]);
        let f = f.finish().unwrap();
        assert_eq!(f.timeouts.idle, std::time::Duration::from_secs(30));
        assert_eq!(f.timeouts.header_read, std::time::Duration::from_secs(5));
    }
}
