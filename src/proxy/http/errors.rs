//! The answers sinew itself gives in HTTP mode, each naming the service and the cause, and marked with
//! an `x-sinew-error` header so nobody mistakes them for a backend's.

use super::body::{full, ProxyBody};
use crate::proxy::blame::ClientFault;
use crate::proxy::Cause;
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
    /// The client's request head is not valid HTTP/1.
    BadRequest,
    /// The client's request head has more fields than `http.max_headers` or more bytes than
    /// `http.max_header_bytes`.
    HeadTooLarge,
    /// The client did not send a whole request head within `timeouts.header_read`.
    HeadTimeout,
    /// The client closed or reset its connection before sending its whole request body.
    ClientAborted,
    /// The client stopped sending its request body, and the backend waited for it until
    /// `timeouts.request`.
    BodyTimeout,
    /// This host ran out of a resource (open files, memory, socket buffers, local ports) connecting
    /// to a backend.
    LocalLimit,
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
            LocalReply::BadRequest => "bad_request",
            LocalReply::HeadTooLarge => "head_too_large",
            LocalReply::HeadTimeout => "head_timeout",
            LocalReply::ClientAborted => "client_aborted",
            LocalReply::BodyTimeout => "body_timeout",
            LocalReply::LocalLimit => "local_limit",
        }
    }

    /// The `cause` it counts as in `sinew_service_errors_total`.
    pub fn red_cause(self) -> Cause {
        match self {
            LocalReply::NoBackend => Cause::NoBackend,
            LocalReply::ConnectFailure => Cause::ConnectFailure,
            LocalReply::Reset => Cause::Reset,
            LocalReply::Timeout => Cause::Timeout,
            LocalReply::BadRequestBody => Cause::BadRequestBody,
            LocalReply::QueueFull => Cause::QueueFull,
            LocalReply::QueueTimeout => Cause::QueueTimeout,
            LocalReply::BadRequest => Cause::BadRequest,
            LocalReply::HeadTooLarge => Cause::HeadTooLarge,
            LocalReply::HeadTimeout => Cause::HeadTimeout,
            LocalReply::ClientAborted => Cause::ClientAborted,
            LocalReply::BodyTimeout => Cause::BodyTimeout,
            LocalReply::LocalLimit => Cause::LocalLimit,
        }
    }

    /// The status sent to the client.
    pub fn status(self) -> StatusCode {
        match self {
            LocalReply::NoBackend
            | LocalReply::QueueFull
            | LocalReply::QueueTimeout
            | LocalReply::LocalLimit => StatusCode::SERVICE_UNAVAILABLE,
            LocalReply::ConnectFailure | LocalReply::Reset => StatusCode::BAD_GATEWAY,
            LocalReply::Timeout => StatusCode::GATEWAY_TIMEOUT,
            LocalReply::BadRequestBody | LocalReply::BadRequest | LocalReply::ClientAborted => {
                StatusCode::BAD_REQUEST
            }
            LocalReply::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            LocalReply::HeadTimeout | LocalReply::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
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
            LocalReply::BadRequest => "the request head is not valid HTTP/1",
            LocalReply::HeadTooLarge => "the request head is too large",
            LocalReply::HeadTimeout => "the request head did not arrive in time",
            LocalReply::ClientAborted => "the client closed before sending the whole request body",
            LocalReply::BodyTimeout => "the request body did not arrive in time",
            LocalReply::LocalLimit => "sinew is out of open files or memory; try again",
        }
    }

    /// True when the client caused this answer (it is counted as a client error).
    pub fn is_client(self) -> bool {
        matches!(
            self,
            LocalReply::BadRequestBody
                | LocalReply::BadRequest
                | LocalReply::HeadTooLarge
                | LocalReply::HeadTimeout
                | LocalReply::ClientAborted
                | LocalReply::BodyTimeout
        )
    }

    /// The answer to a failure that is the client's.
    pub fn of_client(fault: ClientFault) -> Self {
        match fault {
            ClientFault::Framing => LocalReply::BadRequestBody,
            ClientFault::Aborted => LocalReply::ClientAborted,
            ClientFault::Stalled => LocalReply::BodyTimeout,
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

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [LocalReply; 13] = [
        LocalReply::NoBackend,
        LocalReply::ConnectFailure,
        LocalReply::Reset,
        LocalReply::Timeout,
        LocalReply::BadRequestBody,
        LocalReply::QueueFull,
        LocalReply::QueueTimeout,
        LocalReply::BadRequest,
        LocalReply::HeadTooLarge,
        LocalReply::HeadTimeout,
        LocalReply::ClientAborted,
        LocalReply::BodyTimeout,
        LocalReply::LocalLimit,
    ];

    #[test]
    fn every_answer_counts_under_its_own_cause_with_the_same_blame() {
        for reply in ALL {
            let cause = reply.red_cause();
            assert_eq!(cause.label(), reply.cause(), "{reply:?}");
            assert_eq!(cause.is_client(), reply.is_client(), "{reply:?}");
            assert!(crate::proxy::red::HTTP_CAUSES.contains(&cause), "{reply:?}");
        }
    }
}
