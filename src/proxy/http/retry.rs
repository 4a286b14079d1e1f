//! Whether an HTTP request goes to another backend after a try: a pure decision over plain values (what
//! the try came to, what the request allows, the service's retry policy), so every case sits in one
//! table; and the backoff before the next try.
//!
//! The retry budget is not an input here: it is a slot taken (and held) by the forwarding loop once
//! this decision says "again", so a request that will not be retried never touches it.

use super::errors::LocalReply;
use crate::config::{Retries, RetryOn};
use hyper::StatusCode;
use std::time::Duration;

/// What one try came to, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No response from the backend, for this reason.
    Failed(LocalReply),
    /// The backend answered with this status.
    Answered(StatusCode),
}

/// What the request and its tries so far allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Sending it twice does no harm (a safe or idempotent method, or an idempotency key).
    pub idempotent: bool,
    /// Its body is in memory, so another try can send it again. Only answers look at it: after a
    /// failure the forwarding loop itself stops at a streamed body that is already gone.
    pub replayable: bool,
    /// `retries.attempts` leaves room for another try.
    pub tries_left: bool,
}

/// True when the request goes to another backend after a try that came to `outcome`.
pub fn again(outcome: Outcome, request: Request, policy: &Retries) -> bool {
    if !request.tries_left {
        return false;
    }
    match outcome {
        // The backend never saw the request: sending it elsewhere is always safe.
        Outcome::Failed(LocalReply::ConnectFailure) => true,
        Outcome::Failed(LocalReply::Reset) => {
            request.idempotent && policy.on.contains(&RetryOn::Reset)
        }
        // No answer within the request timeout is a gateway error made here rather than by a proxy
        // beyond: a backend cut off mid-request must not fail an idempotent request.
        Outcome::Failed(LocalReply::Timeout) => {
            request.idempotent && policy.on.contains(&RetryOn::GatewayError)
        }
        Outcome::Failed(_) => false,
        Outcome::Answered(status) => {
            request.replayable && request.idempotent && retried_status(status, policy)
        }
    }
}

/// True when `policy` retries an answer with `status`.
fn retried_status(status: StatusCode, policy: &Retries) -> bool {
    let code = status.as_u16();
    policy.on.iter().any(|on| match on {
        RetryOn::GatewayError => matches!(code, 502..=504),
        RetryOn::ServerError => (500..600).contains(&code),
        RetryOn::RetriableStatusCodes => policy.retriable_status_codes.contains(&code),
        RetryOn::ConnectFailure | RetryOn::Reset => false,
    })
}

/// Fully jittered exponential backoff before try `attempt` (1 for the first retry): uniform in
/// `[0, min(max, base * 2^(attempt-1))]`.
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let cap = base
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(max);
    cap.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(on: &[RetryOn], codes: &[u16]) -> Retries {
        Retries {
            on: on.to_vec(),
            retriable_status_codes: codes.to_vec(),
            ..Retries::default()
        }
    }

    /// A case: its name, the try's outcome, the request, `retries.on`, `retriable_status_codes`,
    /// and whether the request goes to another backend.
    type Row = (
        &'static str,
        Outcome,
        Request,
        &'static [RetryOn],
        &'static [u16],
        bool,
    );

    const ALL: Request = Request {
        idempotent: true,
        replayable: true,
        tries_left: true,
    };

    #[test]
    fn each_input_decides_as_the_table_says() {
        use LocalReply as L;
        use Outcome::{Answered, Failed};
        use RetryOn as On;
        let not_idempotent = Request {
            idempotent: false,
            ..ALL
        };
        let streamed = Request {
            replayable: false,
            ..ALL
        };
        let last_try = Request {
            tries_left: false,
            ..ALL
        };
        let s = |code| StatusCode::from_u16(code).unwrap();
        #[rustfmt::skip]
        let table: &[Row] = &[
            ("connect failure, default policy", Failed(L::ConnectFailure), ALL, &[On::ConnectFailure], &[], true),
            ("connect failure, empty policy", Failed(L::ConnectFailure), ALL, &[], &[], true),
            ("connect failure, not idempotent", Failed(L::ConnectFailure), not_idempotent, &[], &[], true),
            ("connect failure, streamed body", Failed(L::ConnectFailure), streamed, &[], &[], true),
            ("connect failure, last try", Failed(L::ConnectFailure), last_try, &[On::ConnectFailure], &[], false),
            ("reset, listed", Failed(L::Reset), ALL, &[On::Reset], &[], true),
            ("reset, not listed", Failed(L::Reset), ALL, &[On::ConnectFailure, On::GatewayError], &[], false),
            ("reset, not idempotent", Failed(L::Reset), not_idempotent, &[On::Reset], &[], false),
            ("reset, last try", Failed(L::Reset), last_try, &[On::Reset], &[], false),
            ("timeout, gateway errors listed", Failed(L::Timeout), ALL, &[On::GatewayError], &[], true),
            ("timeout, 5xx only", Failed(L::Timeout), ALL, &[On::ServerError], &[], false),
            ("timeout, not idempotent", Failed(L::Timeout), not_idempotent, &[On::GatewayError], &[], false),
            ("timeout, last try", Failed(L::Timeout), last_try, &[On::GatewayError], &[], false),
            ("local limit", Failed(L::LocalLimit), ALL, &[On::ConnectFailure, On::Reset, On::GatewayError], &[], false),
            ("queue full", Failed(L::QueueFull), ALL, &[On::ConnectFailure, On::Reset, On::GatewayError], &[], false),
            ("client aborted", Failed(L::ClientAborted), ALL, &[On::Reset, On::GatewayError], &[], false),
            ("body timeout", Failed(L::BodyTimeout), ALL, &[On::Reset, On::GatewayError], &[], false),
            ("503, gateway errors", Answered(s(503)), ALL, &[On::GatewayError], &[], true),
            ("500, gateway errors", Answered(s(500)), ALL, &[On::GatewayError], &[], false),
            ("500, 5xx", Answered(s(500)), ALL, &[On::ServerError], &[], true),
            ("599, 5xx", Answered(s(599)), ALL, &[On::ServerError], &[], true),
            ("429, listed code", Answered(s(429)), ALL, &[On::RetriableStatusCodes], &[429], true),
            ("429, codes not enabled", Answered(s(429)), ALL, &[On::ServerError], &[429], false),
            ("409, other code listed", Answered(s(409)), ALL, &[On::RetriableStatusCodes], &[429], false),
            ("200, everything listed", Answered(s(200)), ALL, &[On::ConnectFailure, On::Reset, On::GatewayError, On::ServerError], &[], false),
            ("503, only connect/reset", Answered(s(503)), ALL, &[On::ConnectFailure, On::Reset], &[], false),
            ("503, not idempotent", Answered(s(503)), not_idempotent, &[On::GatewayError], &[], false),
            ("503, streamed body", Answered(s(503)), streamed, &[On::GatewayError], &[], false),
            ("503, last try", Answered(s(503)), last_try, &[On::GatewayError], &[], false),
        ];
        for (case, outcome, request, on, codes, want) in table {
            assert_eq!(
                again(*outcome, *request, &policy(on, codes)),
                *want,
                "{case}"
            );
        }
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let (base, max) = (Duration::from_millis(25), Duration::from_millis(250));
        for attempt in 1..20 {
            let d = backoff(attempt, base, max);
            assert!(
                d <= max && d <= base * (1 << (attempt - 1).min(16)),
                "{attempt}: {d:?}"
            );
        }
    }
}
