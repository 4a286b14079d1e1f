//! `sinew log-level` and `sinew reload`: one request to a running sinew's admin API, its answer
//! printed, and a non-zero exit when the admin server refused or failed it.

use crate::endpoint::Endpoint;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

/// The environment variable read for the admin token when `--token` is not given.
pub const TOKEN_ENV: &str = "SINEW_ADMIN_TOKEN";

/// Longer than the admin server's own reload timeout, so its answer arrives rather than ours.
const TIMEOUT: Duration = Duration::from_secs(40);

/// Largest answer read.
const MAX_BODY: usize = 16 << 20;

/// Where the admin server is and how to authenticate to it.
#[derive(clap::Args, Debug, Clone)]
pub struct AdminArgs {
    /// The admin server's address (ip:port, [ipv6]:port or host:port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:3210")]
    pub admin: Endpoint,
    /// The admin token (admin.token), sent as `Authorization: Bearer`; default: $SINEW_ADMIN_TOKEN.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
}

/// Why a command could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The admin server could not be reached or its answer not read.
    #[error(
        "admin server at {addr}: {message} (is sinew running, and is --admin its admin.listen?)"
    )]
    Unreachable {
        /// The admin address.
        addr: SocketAddr,
        /// What went wrong.
        message: String,
    },
    /// The admin server answered with an error status.
    #[error("admin server at {addr}: HTTP {status}: {body}")]
    Refused {
        /// The admin address.
        addr: SocketAddr,
        /// The HTTP status.
        status: u16,
        /// Its answer, trimmed.
        body: String,
    },
}

/// Sends one request to the admin API and returns the body of a 2xx answer.
pub async fn call(
    args: &AdminArgs,
    method: Method,
    path: &str,
    body: Option<String>,
) -> Result<String, ControlError> {
    let addr = args.admin.reachable().await;
    let token = args
        .token
        .clone()
        .or_else(|| std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()));
    let unreachable = |message: String| ControlError::Unreachable { addr, message };
    let exchange = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| unreachable(format!("connect: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(format!("http handshake: {e}")))?;
        let driver = tokio::spawn(conn);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, addr.to_string())
            .header(CONTENT_TYPE, "text/plain; charset=utf-8");
        if let Some(t) = &token {
            request = request.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| unreachable(format!("bad request: {e}")))?;
        let response = sender.send_request(request).await;
        let result = async {
            let response = response.map_err(|e| unreachable(format!("http: {e}")))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| unreachable(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok((status, String::from_utf8_lossy(&body).into_owned()))
        }
        .await;
        driver.abort();
        result
    };
    let (status, body) = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| unreachable(format!("no answer within {TIMEOUT:?}")))??;
    if (200..300).contains(&status) {
        Ok(body)
    } else {
        Err(ControlError::Refused {
            addr,
            status,
            body: body.trim_end().to_string(),
        })
    }
}
