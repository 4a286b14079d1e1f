//! The answers sinew itself gives in HTTP mode, each naming the service and the cause, and marked with
//! an `x-sinew-error` header so nobody mistakes them for a backend's.

use super::body::{full, ProxyBody};
use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};

/// Why sinew answered a request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalReply {
    /// The service has no backend to send to.
    NoBackend,
    /// No backend accepted a connection, after retries.
    ConnectFailure,
    /// The backend closed or reset the connection before answering.
    Reset,
    /// The backend did not send a response head within `timeouts.request`.
    Timeout,
    /// The request body could not be read from the client.
    BadRequestBody,
    /// Every backend was at `max_connections` and the queue was full.
    QueueFull,
    /// Every backend stayed at `max_connections` for the whole `timeouts.queue`.
    QueueTimeout,
}

impl LocalReply {
    /// Label value for metrics and the `x-sinew-error` header.
    pub fn cause(self) -> &'static str {
        match self {
            LocalReply::NoBackend => "no_backend",
            LocalReply::ConnectFailure => "connect_failure",
            LocalReply::Reset => "reset",
            LocalReply::Timeout => "timeout",
            LocalReply::BadRequestBody => "bad_request_body",
            LocalReply::QueueFull => "queue_full",
            LocalReply::QueueTimeout => "queue_timeout",
        }
    }

    /// The status sent to the client.
    pub fn status(self) -> StatusCode {
        match self {
            LocalReply::NoBackend | LocalReply::QueueFull | LocalReply::QueueTimeout => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            LocalReply::ConnectFailure | LocalReply::Reset => StatusCode::BAD_GATEWAY,
            LocalReply::Timeout => StatusCode::GATEWAY_TIMEOUT,
            LocalReply::BadRequestBody => StatusCode::BAD_REQUEST,
        }
    }

    fn explain(self) -> &'static str {
        match self {
            LocalReply::NoBackend => "no backend available",
            LocalReply::ConnectFailure => "no backend accepted the connection",
            LocalReply::Reset => "the backend closed the connection before responding",
            LocalReply::Timeout => "the backend did not respond in time",
            LocalReply::BadRequestBody => "the request body could not be read",
            LocalReply::QueueFull => "every backend is busy and the queue is full",
            LocalReply::QueueTimeout => "every backend stayed busy for the whole queue timeout",
        }
    }

    /// The plain-text response for this failure.
    pub fn response(self, service: &str) -> Response<ProxyBody> {
        let body = format!("sinew: service {service}: {}\n", self.explain());
        let mut r = Response::new(full(Bytes::from(body)));
        *r.status_mut() = self.status();
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r.headers_mut()
            .insert("x-sinew-error", HeaderValue::from_static(self.cause()));
        r
    }
}
