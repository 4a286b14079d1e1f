//! The answer a client gets to a forwarded request: a backend's response passed on, or sinew's own
//! reply; each counted (status class, cause) and written to the access log.

use super::access::{self, Logged, Record};
use super::body::{boxed, full, Guarded, ProxyBody};
use super::errors::LocalReply;
use super::forward::Exchanged;
use super::{headers, tunnel, HttpProxy};
use crate::proxy::{Cause, Recording, ServiceProxy};
use bytes::Bytes;
use hyper::body::Body;
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};

/// Passes a backend's response on: counted, its hop-by-hop fields stripped, an upgrade tunnelled, logged at its end.
#[allow(clippy::too_many_arguments)]
pub(super) fn respond(
    proxy: &ServiceProxy,
    http: &HttpProxy,
    exchanged: Exchanged,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    parts: &Parts,
    mut record: Recording,
    attempts: u32,
    seen: &access::Seen,
) -> Response<ProxyBody> {
    let Exchanged { mut resp, pick, .. } = exchanged;
    record.status(resp.status().as_u16());
    if resp.status().is_server_error() {
        proxy.red.error(Cause::Backend5xx);
    }
    let upstream_upgrade =
        (resp.status() == StatusCode::SWITCHING_PROTOCOLS).then(|| hyper::upgrade::on(&mut resp));
    let (mut head, body) = resp.into_parts();
    let log = http.options.access_log.then(|| {
        let service = proxy.balancer.service();
        let status = head.status.as_u16();
        let upstream = Some(pick.entry.key.as_str());
        Record::new(
            service,
            parts,
            status,
            upstream,
            attempts,
            seen,
            record.started(),
        )
    });
    match (upstream_upgrade, client_upgrade) {
        (Some(upstream), Some(client)) => {
            // The request is answered; what the tunnel carries is not a request's.
            record.finish();
            if let Some(log) = log {
                log.log(access::cause::UPGRADED, 0);
            }
            tunnel::spawn(proxy, client, upstream, pick);
            Response::from_parts(head, full(Bytes::new()))
        }
        _ => {
            headers::strip_hop_by_hop(&mut head.headers, false);
            if http.options.via {
                headers::add_via(&mut head.headers);
            }
            let body = boxed(Guarded::new(body, pick, record));
            Response::from_parts(head, logged(body, log))
        }
    }
}

/// Answers with sinew's own reply for `failure`: counted by cause, logged.
pub(super) fn fail(
    proxy: &ServiceProxy,
    http: &HttpProxy,
    failure: LocalReply,
    parts: &Parts,
    mut record: Recording,
    attempts: u32,
    seen: &access::Seen,
) -> Response<ProxyBody> {
    record.status(failure.status().as_u16());
    proxy.red.error(failure.red_cause());
    http.metrics.error(failure.cause()).inc();
    if failure.is_client() {
        proxy.faults.client_error(failure.cause());
    }
    let response = failure.response(proxy.balancer.service());
    if !http.options.access_log {
        return response;
    }
    let service = proxy.balancer.service();
    let status = failure.status().as_u16();
    let log = Record::new(
        service,
        parts,
        status,
        None,
        attempts,
        seen,
        record.started(),
    );
    // Its bytes are sinew's own reply; how the request ended is the failure's cause.
    log.log(
        failure.cause(),
        response.body().size_hint().exact().unwrap_or(0),
    );
    response
}

/// `body`, counted and logged at its end when the service keeps an access log.
fn logged(body: ProxyBody, log: Option<Box<Record>>) -> ProxyBody {
    match log {
        Some(log) => boxed(Logged::new(body, log)),
        None => body,
    }
}
