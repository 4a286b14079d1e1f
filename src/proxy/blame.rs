//! Whose fault a failed exchange is: the client's, the backend's, or sinew's own (a local resource
//! limit). Only the backend's feeds health, outlier ejection and latency; a client that frames its
//! body wrongly, stalls or goes away mid-request, and a host out of descriptors, must never take a
//! healthy backend out of rotation. The decision is made once, here, from plain values; the async
//! code that saw the failure calls it.

pub use crate::resource::{os_error, Resource};

/// Who a failure is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The backend: counts against its health, ejection and latency.
    Backend,
    /// The client: answered as a client error, never charged to a backend.
    Client(ClientFault),
    /// This host: out of descriptors, memory, buffers or ports; never charged to a backend.
    Local(Resource),
}

/// What the client did wrong with its request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFault {
    /// The body is not valid HTTP framing (a bad chunk-size line, say).
    Framing,
    /// The client closed or reset its connection before sending the whole body.
    Aborted,
    /// The client stopped sending the body, and the backend waited for the rest until the request
    /// timeout.
    Stalled,
}

/// What was seen going wrong with one attempt to reach a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Connecting failed; with the OS error number when there is one.
    ConnectFailed(Option<i32>),
    /// Connecting took longer than `timeouts.connect`.
    ConnectTimeout,
    /// Connected, then the exchange failed before a whole response head came (reset, closed, bad head).
    ExchangeFailed,
    /// No response head within `timeouts.request`.
    ResponseTimeout,
}

/// Where the client's request body stood when the attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientBody {
    /// Whole (or there is none): the client has done its part.
    Sent,
    /// Being forwarded, and the last read of it was waiting on the client.
    Waiting,
    /// Being forwarded, and the client was not what it waited on (the backend was reading slowly).
    Flowing,
    /// The client's body was malformed.
    Malformed,
    /// The client's connection ended before the body did.
    Aborted,
}

/// Who a failed attempt is charged to, from what was seen and where the client's body stood.
pub fn blame(seen: Seen, body: ClientBody) -> Blame {
    match (seen, body) {
        // Whatever the backend did after that, the client broke the request first.
        (_, ClientBody::Malformed) => Blame::Client(ClientFault::Framing),
        (_, ClientBody::Aborted) => Blame::Client(ClientFault::Aborted),
        (Seen::ConnectFailed(Some(errno)), _) => match Resource::of_errno(errno) {
            Some(r) => Blame::Local(r),
            None => Blame::Backend,
        },
        // A backend cannot answer a request whose body it is still waiting for.
        (Seen::ResponseTimeout, ClientBody::Waiting) => Blame::Client(ClientFault::Stalled),
        (Seen::ConnectFailed(None), _)
        | (Seen::ConnectTimeout, _)
        | (Seen::ExchangeFailed, _)
        | (Seen::ResponseTimeout, _) => Blame::Backend,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ClientBody::*;

    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    const ENOBUFS: i32 = 105;
    const ENOMEM: i32 = 12;
    const EADDRNOTAVAIL: i32 = 99;
    const ECONNREFUSED: i32 = 111;
    const EHOSTUNREACH: i32 = 113;

    #[test]
    fn whose_fault_each_failure_is() {
        use Blame::*;
        let table: &[(Seen, ClientBody, Blame)] = &[
            // Connecting: a refusal or an unreachable host is the backend's; a local limit is ours.
            (Seen::ConnectFailed(Some(ECONNREFUSED)), Sent, Backend),
            (Seen::ConnectFailed(Some(EHOSTUNREACH)), Waiting, Backend),
            (Seen::ConnectFailed(None), Sent, Backend),
            (Seen::ConnectTimeout, Sent, Backend),
            (
                Seen::ConnectFailed(Some(EMFILE)),
                Sent,
                Local(Resource::ProcessFiles),
            ),
            (
                Seen::ConnectFailed(Some(ENFILE)),
                Sent,
                Local(Resource::SystemFiles),
            ),
            (
                Seen::ConnectFailed(Some(ENOBUFS)),
                Flowing,
                Local(Resource::Buffers),
            ),
            (
                Seen::ConnectFailed(Some(ENOMEM)),
                Sent,
                Local(Resource::Memory),
            ),
            (
                Seen::ConnectFailed(Some(EADDRNOTAVAIL)),
                Sent,
                Local(Resource::Ports),
            ),
            // The exchange: the backend's, unless the client's body broke first.
            (Seen::ExchangeFailed, Sent, Backend),
            (Seen::ExchangeFailed, Waiting, Backend),
            (Seen::ExchangeFailed, Flowing, Backend),
            (
                Seen::ExchangeFailed,
                Malformed,
                Client(ClientFault::Framing),
            ),
            (Seen::ExchangeFailed, Aborted, Client(ClientFault::Aborted)),
            // No answer in time: the client's while the backend still waits for its body.
            (Seen::ResponseTimeout, Sent, Backend),
            (Seen::ResponseTimeout, Flowing, Backend),
            (Seen::ResponseTimeout, Waiting, Client(ClientFault::Stalled)),
            (
                Seen::ResponseTimeout,
                Malformed,
                Client(ClientFault::Framing),
            ),
            (Seen::ResponseTimeout, Aborted, Client(ClientFault::Aborted)),
            (Seen::ConnectTimeout, Aborted, Client(ClientFault::Aborted)),
        ];
        for &(seen, body, want) in table {
            assert_eq!(blame(seen, body), want, "{seen:?} with the body {body:?}");
        }
    }
}
