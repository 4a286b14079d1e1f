//! A service's RED metrics as its clients see them: requests by status class and their duration
//! (HTTP), time to a connected backend and connection lifetime (TCP), and every failure by cause in
//! one family, `sinew_service_errors_total`, with the client's causes told apart from the backends'
//! and sinew's own.
//!
//! Every series a service can have is created with the service (at 0), so a ratio over them is 0
//! rather than empty; the children are resolved then, so the data path only touches atomics. The
//! registry drops them with the service (see [`crate::metrics::Registry::forget_service`]).

use crate::config::Mode;
use crate::metrics::{Registry, LATENCY_BUCKETS};
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec};
use std::sync::Arc;
use tokio::time::Instant;

/// `code` label values of `sinew_service_requests_total`: HAProxy's classes, then `other` for a
/// request that ended with no status sent.
pub const CODES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// Why a request or connection of a service failed: a `cause` of `sinew_service_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// No usable backend (HTTP 503; TCP: closed).
    NoBackend,
    /// No backend accepted a connection, after retries (HTTP 502; TCP: closed).
    ConnectFailure,
    /// The backend closed or reset the connection (HTTP: before answering, 502; TCP: mid-stream).
    Reset,
    /// The backend sent no response head within `timeouts.request` (HTTP 504).
    Timeout,
    /// Every backend was full and so was the queue.
    QueueFull,
    /// Every backend stayed full for the whole `timeouts.queue`.
    QueueTimeout,
    /// This host ran out of descriptors, memory, buffers or ports connecting to a backend.
    LocalLimit,
    /// A backend answered with a 5xx, passed on to the client.
    Backend5xx,
    /// The connection was idle for `timeouts.idle` (TCP).
    IdleTimeout,
    /// The client's request head is not valid HTTP/1 (400).
    BadRequest,
    /// The client's request head is too large (431).
    HeadTooLarge,
    /// The client's request head did not come within `timeouts.header_read` (408).
    HeadTimeout,
    /// The client's request body is not valid HTTP framing (400).
    BadRequestBody,
    /// The client went away before its request was answered.
    ClientAborted,
    /// The client stopped sending its request body (408).
    BodyTimeout,
}

/// Causes an HTTP service can count.
pub const HTTP_CAUSES: [Cause; 14] = [
    Cause::NoBackend,
    Cause::ConnectFailure,
    Cause::Reset,
    Cause::Timeout,
    Cause::QueueFull,
    Cause::QueueTimeout,
    Cause::LocalLimit,
    Cause::Backend5xx,
    Cause::BadRequest,
    Cause::HeadTooLarge,
    Cause::HeadTimeout,
    Cause::BadRequestBody,
    Cause::ClientAborted,
    Cause::BodyTimeout,
];

/// Causes a TCP service can count.
pub const TCP_CAUSES: [Cause; 7] = [
    Cause::NoBackend,
    Cause::ConnectFailure,
    Cause::QueueFull,
    Cause::QueueTimeout,
    Cause::LocalLimit,
    Cause::IdleTimeout,
    Cause::Reset,
];

/// How many causes there are.
const CAUSES: usize = Cause::BodyTimeout as usize + 1;

impl Cause {
    /// The `cause` label value.
    pub fn label(self) -> &'static str {
        match self {
            Cause::NoBackend => "no_backend",
            Cause::ConnectFailure => "connect_failure",
            Cause::Reset => "reset",
            Cause::Timeout => "timeout",
            Cause::QueueFull => "queue_full",
            Cause::QueueTimeout => "queue_timeout",
            Cause::LocalLimit => "local_limit",
            Cause::Backend5xx => "backend_5xx",
            Cause::IdleTimeout => "idle_timeout",
            Cause::BadRequest => "bad_request",
            Cause::HeadTooLarge => "head_too_large",
            Cause::HeadTimeout => "head_timeout",
            Cause::BadRequestBody => "bad_request_body",
            Cause::ClientAborted => "client_aborted",
            Cause::BodyTimeout => "body_timeout",
        }
    }

    /// True when the client caused the failure (it is never a backend's or sinew's).
    pub fn is_client(self) -> bool {
        matches!(
            self,
            Cause::BadRequest
                | Cause::HeadTooLarge
                | Cause::HeadTimeout
                | Cause::BadRequestBody
                | Cause::ClientAborted
                | Cause::BodyTimeout
        )
    }
}

/// The `code` index of an HTTP status (codes outside 100-599 count as 5xx, as for backends).
fn class(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}

/// The RED families, registered once per agent.
pub struct RedFamilies {
    requests: IntCounterVec,
    duration: HistogramVec,
    errors: IntCounterVec,
    connect: HistogramVec,
    connection: HistogramVec,
}

impl RedFamilies {
    /// Creates the families in `registry`.
    pub fn register(r: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            requests: r.counter(
                "sinew_service_requests_total",
                "HTTP requests answered to clients (by backends or by sinew), by status class; other: ended with no status sent.",
                &["service", "code"],
            )?,
            duration: r.histogram(
                "sinew_service_request_duration_seconds",
                "HTTP requests from their first byte to the response's last, retries and queue time included.",
                &LATENCY_BUCKETS,
            )?,
            errors: r.counter(
                "sinew_service_errors_total",
                "A service's failed requests (HTTP) or connections (TCP) by cause, the client's included (bad_request, head_too_large, head_timeout, bad_request_body, client_aborted, body_timeout).",
                &["service", "cause"],
            )?,
            connect: r.histogram(
                "sinew_service_connect_duration_seconds",
                "TCP client connections from accept to a connected backend, retries and queue time included.",
                &LATENCY_BUCKETS,
            )?,
            connection: r.histogram(
                "sinew_service_connection_duration_seconds",
                "TCP client connections from accept to close.",
                &LATENCY_BUCKETS,
            )?,
        })
    }

    /// The children of a service in `mode`, every one created now.
    pub fn service(&self, service: &str, mode: Mode) -> Arc<ServiceRed> {
        let mut errors: [Option<IntCounter>; CAUSES] = Default::default();
        let causes: &[Cause] = match mode {
            Mode::Http => &HTTP_CAUSES,
            Mode::Tcp => &TCP_CAUSES,
        };
        for &cause in causes {
            errors[cause as usize] = Some(self.errors.with_label_values(&[service, cause.label()]));
        }
        let kind = match mode {
            Mode::Http => Kind::Http {
                codes: CODES.map(|code| self.requests.with_label_values(&[service, code])),
                duration: self.duration.with_label_values(&[service]),
            },
            Mode::Tcp => Kind::Tcp {
                connect: self.connect.with_label_values(&[service]),
                connection: self.connection.with_label_values(&[service]),
            },
        };
        Arc::new(ServiceRed { errors, kind })
    }
}

/// The RED children of one service.
pub struct ServiceRed {
    /// By `Cause as usize`; only the causes of the service's mode are there.
    errors: [Option<IntCounter>; CAUSES],
    kind: Kind,
}

/// The children only one mode has.
enum Kind {
    Http {
        codes: [IntCounter; CODES.len()],
        duration: Histogram,
    },
    Tcp {
        connect: Histogram,
        connection: Histogram,
    },
}

impl ServiceRed {
    /// Counts a failure by `cause` (one the service's mode does not have is not counted).
    pub fn error(&self, cause: Cause) {
        if let Some(c) = &self.errors[cause as usize] {
            c.inc();
        }
    }

    /// Starts recording an HTTP request whose first byte came at `started`.
    pub fn request(self: &Arc<Self>, started: Instant) -> Recording {
        Recording {
            red: Arc::clone(self),
            started,
            status: None,
            done: false,
        }
    }

    /// Records a TCP connection accepted at `accepted` reaching its backend now.
    pub fn connected(&self, accepted: Instant) {
        if let Kind::Tcp { connect, .. } = &self.kind {
            connect.observe(accepted.elapsed().as_secs_f64());
        }
    }

    /// Times a TCP connection accepted at `accepted`: recorded when the guard is dropped (closed).
    pub fn connection(&self, accepted: Instant) -> OpenConnection<'_> {
        OpenConnection {
            red: self,
            accepted,
        }
    }

    /// Records a finished HTTP request: its status (`None`: none was sent) and duration.
    fn answered(&self, status: Option<u16>, started: Instant) {
        let Kind::Http { codes, duration } = &self.kind else {
            return;
        };
        let code = match status {
            Some(status) => class(status),
            None => {
                self.error(Cause::ClientAborted);
                CODES.len() - 1
            }
        };
        codes[code].inc();
        duration.observe(started.elapsed().as_secs_f64());
    }
}

/// A TCP connection being timed; its duration is recorded when this is dropped.
pub struct OpenConnection<'a> {
    red: &'a ServiceRed,
    accepted: Instant,
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        if let Kind::Tcp { connection, .. } = &self.red.kind {
            connection.observe(self.accepted.elapsed().as_secs_f64());
        }
    }
}

/// One HTTP request being recorded: counted once, when it finishes or when it is dropped (the client
/// went away), with the status it got, if any.
pub struct Recording {
    red: Arc<ServiceRed>,
    started: Instant,
    status: Option<u16>,
    done: bool,
}

impl Recording {
    /// Notes the status sent; the request is recorded when the response ends (see [`Self::finish`]).
    pub fn status(&mut self, status: u16) {
        self.status = Some(status);
    }

    /// When the request's first byte came.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Records the request now, with the status noted (or none).
    pub fn finish(&mut self) {
        if !std::mem::replace(&mut self.done, true) {
            self.red.answered(self.status, self.started);
        }
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn families() -> (Registry, RedFamilies) {
        let registry = Registry::new();
        let red = RedFamilies::register(&registry).unwrap();
        (registry, red)
    }

    fn has(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    #[test]
    fn every_series_of_a_service_exists_from_its_start_with_zero() {
        let (registry, red) = families();
        let _web = red.service("web", Mode::Http);
        let _db = red.service("db", Mode::Tcp);
        let text = registry.render();
        for code in CODES {
            let line = format!(r#"sinew_service_requests_total{{code="{code}",service="web"}} 0"#);
            assert!(has(&text, &line), "{line} not in\n{text}");
        }
        for cause in HTTP_CAUSES {
            let line = format!(
                r#"sinew_service_errors_total{{cause="{}",service="web"}} 0"#,
                cause.label()
            );
            assert!(has(&text, &line), "{line} not in\n{text}");
        }
        for cause in TCP_CAUSES {
            let line = format!(
                r#"sinew_service_errors_total{{cause="{}",service="db"}} 0"#,
                cause.label()
            );
            assert!(has(&text, &line), "{line} not in\n{text}");
        }
        for line in [
            r#"sinew_service_request_duration_seconds_count{service="web"} 0"#,
            r#"sinew_service_connect_duration_seconds_count{service="db"} 0"#,
            r#"sinew_service_connection_duration_seconds_count{service="db"} 0"#,
        ] {
            assert!(has(&text, line), "{line} not in\n{text}");
        }
        // A mode's series only: no request codes for TCP, no idle_timeout for HTTP.
        assert!(!text.contains(r#"sinew_service_requests_total{code="2xx",service="db"}"#));
        assert!(!text.contains(r#"cause="idle_timeout",service="web""#));
        assert!(!text.contains(r#"sinew_service_connect_duration_seconds_count{service="web"}"#));
        assert_eq!(
            text.matches(r#"service="web""#).count(),
            CODES.len() + HTTP_CAUSES.len() + LATENCY_BUCKETS.len() + 3
        );
    }

    #[test]
    fn a_request_counts_once_with_its_status_class_or_other() {
        let (registry, red) = families();
        let web = red.service("web", Mode::Http);
        let now = Instant::now();
        let mut ok = web.request(now);
        ok.status(204);
        ok.finish();
        drop(ok);
        let mut failed = web.request(now);
        failed.status(503);
        drop(failed);
        // The client went away before any status.
        drop(web.request(now));
        web.error(Cause::Backend5xx);
        // Not a cause of HTTP services: not counted, and no series appears.
        web.error(Cause::IdleTimeout);
        let text = registry.render();
        for line in [
            r#"sinew_service_requests_total{code="2xx",service="web"} 1"#,
            r#"sinew_service_requests_total{code="5xx",service="web"} 1"#,
            r#"sinew_service_requests_total{code="other",service="web"} 1"#,
            r#"sinew_service_requests_total{code="4xx",service="web"} 0"#,
            r#"sinew_service_errors_total{cause="client_aborted",service="web"} 1"#,
            r#"sinew_service_errors_total{cause="backend_5xx",service="web"} 1"#,
            r#"sinew_service_request_duration_seconds_count{service="web"} 3"#,
        ] {
            assert!(has(&text, line), "{line} not in\n{text}");
        }
        assert!(!text.contains("idle_timeout"), "{text}");
    }

    #[test]
    fn tcp_connections_are_timed_and_a_removed_service_loses_its_series() {
        let (registry, red) = families();
        let db = red.service("db", Mode::Tcp);
        let _kept = red.service("kept", Mode::Http);
        let accepted = Instant::now();
        db.connected(accepted);
        drop(db.connection(accepted));
        drop(db.connection(accepted));
        db.error(Cause::IdleTimeout);
        let text = registry.render();
        for line in [
            r#"sinew_service_connect_duration_seconds_count{service="db"} 1"#,
            r#"sinew_service_connection_duration_seconds_count{service="db"} 2"#,
            r#"sinew_service_errors_total{cause="idle_timeout",service="db"} 1"#,
        ] {
            assert!(has(&text, line), "{line} not in\n{text}");
        }
        registry.forget_service("db");
        let text = registry.render();
        assert!(!text.contains(r#"service="db""#), "{text}");
        assert!(text.contains(r#"service="kept""#), "{text}");
    }

    #[test]
    fn status_classes() {
        for (status, want) in [
            (100, "1xx"),
            (204, "2xx"),
            (308, "3xx"),
            (431, "4xx"),
            (504, "5xx"),
            (99, "1xx"),
            (999, "5xx"),
        ] {
            assert_eq!(CODES[class(status)], want, "{status}");
        }
    }

    #[test]
    fn client_causes_are_the_client_error_kinds() {
        let client: Vec<&str> = HTTP_CAUSES
            .iter()
            .filter(|c| c.is_client())
            .map(|c| c.label())
            .collect();
        assert_eq!(
            client,
            [
                "bad_request",
                "head_too_large",
                "head_timeout",
                "bad_request_body",
                "client_aborted",
                "body_timeout"
            ]
        );
        assert!(TCP_CAUSES.iter().all(|c| !c.is_client()));
    }
}
