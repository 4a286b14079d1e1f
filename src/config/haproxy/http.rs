//! HAProxy's HTTP directives `option forwardfor` and `retry-on`, mapped onto sinew's `http` and
//! `retries` settings.

use crate::config::{Network, RetryOn};

/// `option forwardfor [except NETWORK] [header NAME] [if-none]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardFor {
    /// `except NETWORK`: clients there get no header.
    pub except: Option<Network>,
    /// `header NAME`: the header used instead of `X-Forwarded-For`.
    pub header: Option<String>,
    /// `if-none`: HAProxy adds the header only when the request has none; sinew always appends.
    pub if_none: bool,
}

/// Reads the words after `option forwardfor`.
pub fn forward_for(args: &[&str]) -> Result<ForwardFor, String> {
    let mut f = ForwardFor::default();
    let mut words = args.iter();
    while let Some(word) = words.next() {
        match *word {
            "except" => {
                let net = words.next().ok_or("except needs a network")?;
                f.except = Some(
                    net.parse()
                        .map_err(|e: crate::config::NetworkError| e.to_string())?,
                );
            }
            "header" => {
                let name = words.next().ok_or("header needs a header name")?;
                hyper::header::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("{name:?} is not a header name"))?;
                f.header = Some((*name).to_string());
            }
            "if-none" => f.if_none = true,
            other => {
                return Err(format!(
                    "unknown argument {other:?} (except, header, if-none)"
                ))
            }
        }
    }
    Ok(f)
}

/// What a `retry-on` line amounts to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryPolicy {
    /// `none`: no retries at all.
    pub none: bool,
    /// sinew's conditions.
    pub on: Vec<RetryOn>,
    /// Status codes retried (`on` then lists `retriable_status_codes`).
    pub codes: Vec<u16>,
    /// Keywords sinew cannot honour, each with what sinew does instead.
    pub unhonoured: Vec<String>,
}

/// Status codes HAProxy's `retry-on` accepts.
const STATUSES: [u16; 10] = [401, 403, 404, 408, 425, 500, 501, 502, 503, 504];

/// Reads the words after `retry-on`; a keyword HAProxy does not know is an error.
pub fn retry_on(args: &[&str]) -> Result<RetryPolicy, String> {
    if args.is_empty() {
        return Err("expected keywords, e.g. retry-on conn-failure 503".into());
    }
    let mut p = RetryPolicy::default();
    let add = |p: &mut RetryPolicy, on: RetryOn| {
        if !p.on.contains(&on) {
            p.on.push(on);
        }
    };
    let keywords: Vec<&str> = args
        .iter()
        .flat_map(|w| match *w {
            "all-retryable-errors" => vec![
                "conn-failure",
                "empty-response",
                "junk-response",
                "response-timeout",
                "0rtt-rejected",
                "500",
                "502",
                "503",
                "504",
            ],
            w => vec![w],
        })
        .collect();
    for word in keywords {
        match word {
            "none" => p.none = true,
            "conn-failure" => add(&mut p, RetryOn::ConnectFailure),
            "empty-response" => add(&mut p, RetryOn::Reset),
            "junk-response" => p.unhonoured.push(format!(
                "{word}: sinew answers a malformed response with 502 and does not retry it"
            )),
            "response-timeout" => p.unhonoured.push(format!(
                "{word}: sinew retries a response timeout only with retries.on gateway_error, \
                 which also retries 502-504 answers"
            )),
            "0rtt-rejected" => p.unhonoured.push(format!(
                "{word}: sinew sends no early data, so there is nothing to retry"
            )),
            code => match code.parse::<u16>() {
                Ok(c) if STATUSES.contains(&c) => {
                    add(&mut p, RetryOn::RetriableStatusCodes);
                    if !p.codes.contains(&c) {
                        p.codes.push(c);
                    }
                }
                _ => {
                    return Err(format!(
                    "unknown keyword {code:?} (none, conn-failure, empty-response, junk-response, \
                         response-timeout, 0rtt-rejected, all-retryable-errors, or a status among \
                         401 403 404 408 425 500 501 502 503 504)"
                ))
                }
            },
        }
    }
    if p.none && (!p.on.is_empty() || !p.unhonoured.is_empty()) {
        return Err("none cannot be combined with other keywords".into());
    }
    if !p.on.contains(&RetryOn::ConnectFailure) && !p.none {
        p.unhonoured.push(
            "conn-failure not listed: sinew always retries a failed connect (the request was never sent)"
                .into(),
        );
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<&str> {
        s.split_whitespace().collect()
    }

    #[test]
    fn forwardfor_arguments_are_read_and_wrong_ones_refused() {
        let f = forward_for(&words("except 127.0.0.0/8 header X-Client")).unwrap();
        assert_eq!(f.except, Some("127.0.0.0/8".parse().unwrap()));
        assert_eq!(f.header.as_deref(), Some("X-Client"));
        assert!(!f.if_none);
        assert_eq!(forward_for(&[]).unwrap(), ForwardFor::default());
        assert!(forward_for(&words("if-none")).unwrap().if_none);
        for bad in ["except", "except eth0", "header", "header a:b", "sometimes"] {
            assert!(forward_for(&words(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn retry_on_keywords_map_warn_or_fail() {
        use RetryOn::*;
        let p = retry_on(&words("conn-failure empty-response 503 504")).unwrap();
        assert_eq!(p.on, [ConnectFailure, Reset, RetriableStatusCodes]);
        assert_eq!((p.codes, p.unhonoured.len()), (vec![503, 504], 0));

        let p = retry_on(&words("all-retryable-errors")).unwrap();
        assert_eq!(p.on, [ConnectFailure, Reset, RetriableStatusCodes]);
        assert_eq!(p.codes, [500, 502, 503, 504]);
        assert_eq!(p.unhonoured.len(), 3, "{:?}", p.unhonoured);

        let p = retry_on(&words("none")).unwrap();
        assert!(p.none && p.on.is_empty());

        let p = retry_on(&words("503")).unwrap();
        assert!(p.unhonoured[0].contains("always retries a failed connect"));

        for bad in ["", "conn-failures", "599", "200", "none 503", "timeout"] {
            assert!(retry_on(&words(bad)).is_err(), "{bad}");
        }
    }
}
