//! sinew's own HTTP/1 server path for client connections: request heads parsed in place, bodies of up
//! to `http.max_retry_body` (and 64 KiB) read into memory, and each response written with its head and
//! first body bytes in one write, by the task of the connection (no dispatch between a connection and a
//! service task, no header map copies, no boxed body per request on the way in).
//!
//! Requests this path does not take (upgrades, CONNECT, `Expect`, `Transfer-Encoding`, larger bodies,
//! and HTTP/2 with prior knowledge) end it with [`ConnectionFate::Handoff`]: the bytes read stay in the buffer
//! and hyper's server takes the connection from there, for good.

use super::body::ProxyBody;
use super::errors::LocalReply;
use super::h1::{self, Delimit, Outgoing, Parsed, RequestError};
use super::{forward, HttpProxy};
use crate::proxy::io::WaitReadable;
use crate::proxy::{Peer, ServiceProxy};
use bytes::BytesMut;
use hyper::body::{Body, Frame};
use hyper::{Method, Response, Version};
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// Response bytes gathered before they are written while the body goes on.
const GATHER: usize = 64 * 1024;
/// Body chunks at least this large are written as they are rather than copied.
const DIRECT: usize = 16 * 1024;
/// Longest a closing connection reads what the client still sends.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);
/// Most bytes a closing connection reads and drops.
const LINGER_BYTES: usize = 256 * 1024;

/// How the own path ended with a connection.
pub enum ConnectionFate {
    /// The connection is done with (closed by either side, or after a stop).
    Closed,
    /// The buffer starts with a request for hyper's server, which takes the connection.
    Handoff,
}

/// What waiting for the next request came to. Not boxed: a box would be an allocation per request.
#[allow(clippy::large_enum_variant)]
enum NextRequest {
    Request(h1::Request),
    Handoff,
    Reject(LocalReply),
    Close,
}

/// One client connection on the own path.
struct Front<'a, S> {
    io: &'a mut S,
    buf: &'a mut BytesMut,
    out: Vec<u8>,
    proxy: &'a Arc<ServiceProxy>,
    http: &'a HttpProxy,
    /// Requests read so far.
    served: u64,
    /// When the connection was accepted.
    opened: Instant,
    /// When the first byte of the request being read came (the accept, for the first request).
    started: Option<Instant>,
}

/// Serves requests on `io` (bytes already read in `buf`) until the connection ends or a request for
/// hyper's server comes.
pub async fn serve_own_path<S>(
    io: &mut S,
    buf: &mut BytesMut,
    peer: Peer,
    proxy: &Arc<ServiceProxy>,
    http: &HttpProxy,
) -> ConnectionFate
where
    S: AsyncRead + AsyncWrite + WaitReadable + Unpin,
{
    let mut front = Front {
        io,
        buf,
        out: Vec::new(),
        proxy,
        http,
        served: 0,
        opened: Instant::now(),
        started: None,
    };
    let stop = proxy.stop.cancelled();
    tokio::pin!(stop);
    let mut stopping = false;
    let max_body = http.options.max_retry_body.min(h1::MAX_BODY);
    loop {
        let req = match front.next(&mut stop, &mut stopping, max_body).await {
            NextRequest::Request(req) => req,
            NextRequest::Handoff => return ConnectionFate::Handoff,
            NextRequest::Close => return ConnectionFate::Closed,
            NextRequest::Reject(reply) => {
                // Boxed, as below: a rare path whose state every idle connection would carry.
                Box::pin(front.reject(reply)).await;
                return ConnectionFate::Closed;
            }
        };
        front.served += 1;
        // Boxed: forwarding and answering are most of a connection's state, and a connection waiting
        // for its next request needs none of it. One allocation when a request comes (as its read
        // buffer is taken then) replaces that cost on every idle keep-alive connection.
        if !Box::pin(front.exchange(req, peer)).await {
            return ConnectionFate::Closed;
        }
    }
}

impl<S: AsyncRead + AsyncWrite + WaitReadable + Unpin> Front<'_, S> {
    /// When the request just read began: its first byte, or now when it came whole with the last.
    fn began(&self) -> Instant {
        self.started.unwrap_or_else(Instant::now)
    }

    /// Serves one request whose head was read: reads its body, forwards it and writes the answer;
    /// true when the connection can take another request.
    async fn exchange(&mut self, req: h1::Request, peer: Peer) -> bool {
        if !self.fill(req.body_len).await {
            return false;
        }
        let body = self.buf.split_to(req.body_len).freeze();
        let (version, head) = (req.parts.version, req.parts.method == Method::HEAD);
        let started = self.began();
        let proxy = Arc::clone(self.proxy);
        let resp = forward::handle_buffered(req.parts, body, started, proxy, self.http, peer).await;
        let keep_alive = req.keep_alive && !self.proxy.stop.is_cancelled();
        match self.respond(resp, version, head, keep_alive).await {
            Ok(true) => true,
            Ok(false) | Err(_) => {
                self.close().await;
                false
            }
        }
    }

    /// Answers a request refused before forwarding (`reply`), then closes the connection.
    async fn reject(&mut self, reply: LocalReply) {
        let (proxy, http) = (self.proxy, self.http);
        let mut record = proxy.red.request(self.began());
        record.status(reply.status().as_u16());
        proxy.red.error(reply.red_cause());
        http.metrics.error(reply.cause()).inc();
        if reply.is_client() {
            proxy.faults.client_error(reply.cause());
        }
        let resp = reply.response(proxy.balancer.service());
        let _ = self.respond(resp, Version::HTTP_11, false, false).await;
        record.finish();
        self.close().await;
    }

    /// Waits for the next request head. The first request must be whole within `timeouts.header_read`
    /// of the accept, later ones within it of their first byte; a stop (`stop`, seen once) ends a
    /// connection waiting between requests, except that a connection with no request yet, or any
    /// connection during a binary upgrade, still gets its next one (see `serve_hyper` in the parent).
    async fn next<F>(
        &mut self,
        stop: &mut Pin<&mut F>,
        stopping: &mut bool,
        max_body: usize,
    ) -> NextRequest
    where
        F: std::future::Future<Output = ()>,
    {
        let timeouts = &self.proxy.timeouts;
        let options = &self.http.options;
        self.started = (self.served == 0).then_some(self.opened);
        let mut grace = None;
        loop {
            if !self.buf.is_empty() {
                match h1::parse_request(self.buf, options.max_headers, max_body) {
                    // A whole head that came in one read is held to the same limit.
                    Ok(Parsed::Request(req)) if req.head_len > options.max_header_bytes => {
                        return NextRequest::Reject(LocalReply::HeadTooLarge)
                    }
                    Ok(Parsed::Request(req)) => return NextRequest::Request(req),
                    Ok(Parsed::Elsewhere) => return NextRequest::Handoff,
                    Ok(Parsed::Partial) if self.buf.len() >= options.max_header_bytes => {
                        return NextRequest::Reject(LocalReply::HeadTooLarge)
                    }
                    Ok(Parsed::Partial) => {}
                    Err(e) => {
                        tracing::debug!(service = %self.proxy.balancer.service(), error = %e, "bad request head");
                        return NextRequest::Reject(match e {
                            RequestError::TooManyFields => LocalReply::HeadTooLarge,
                            _ => LocalReply::BadRequest,
                        });
                    }
                }
                self.started.get_or_insert_with(Instant::now);
            }
            let deadline = self.started.map(|t| t + timeouts.header_read).or(grace);
            tokio::select! {
                biased;
                read = read_more(self.io, self.buf) => match read {
                    Ok(n) if n > 0 => {}
                    _ => return NextRequest::Close,
                },
                _ = until(deadline) => {
                    // A connection that never began a request (a probe, a preconnect) is closed
                    // without an answer, as HAProxy's `http-ignore-probes` and hyper do.
                    return match self.started {
                        Some(_) if !self.buf.is_empty() => NextRequest::Reject(LocalReply::HeadTimeout),
                        _ => NextRequest::Close,
                    };
                }
                _ = stop.as_mut(), if !*stopping => {
                    *stopping = true;
                    if !self.buf.is_empty() {
                        continue;
                    }
                    match super::grace_after_stop(self.proxy, self.served) {
                        Some(wait) => grace = Some(Instant::now() + wait),
                        None => return NextRequest::Close,
                    }
                    self.started = None;
                }
            }
        }
    }

    /// Reads until the buffer holds `len` bytes; false if the client closed first.
    async fn fill(&mut self, len: usize) -> bool {
        while self.buf.len() < len {
            self.buf.reserve(len - self.buf.len());
            match self.io.read_buf(self.buf).await {
                Ok(n) if n > 0 => {}
                _ => return false,
            }
        }
        true
    }

    /// Writes `resp` to a client speaking `version` (`head`: a HEAD request); true when the connection
    /// can take another request.
    async fn respond(
        &mut self,
        resp: Response<ProxyBody>,
        version: Version,
        head: bool,
        mut keep_alive: bool,
    ) -> std::io::Result<bool> {
        let (parts, mut body) = resp.into_parts();
        self.out.clear();
        let outgoing = Outgoing {
            status: parts.status,
            headers: &parts.headers,
            size: body.size_hint().exact(),
        };
        let delimit = h1::encode_response(&outgoing, version, head, &mut keep_alive, &mut self.out);
        let complete = match delimit {
            Delimit::None => true,
            _ => self.send_body(&mut body, delimit).await?,
        };
        self.write_out().await?;
        self.io.flush().await?;
        if self.out.capacity() > h1::KEEP_OUT {
            self.out = Vec::new();
        }
        Ok(keep_alive && complete)
    }

    /// Sends the body after the head in `out`, gathering what is ready into one write; false when it
    /// broke off or did not match its declared length (the connection must then close).
    async fn send_body(&mut self, body: &mut ProxyBody, delimit: Delimit) -> std::io::Result<bool> {
        let mut left = match delimit {
            Delimit::Length(n) => n,
            _ => u64::MAX,
        };
        loop {
            // What the body has ready now; before waiting for more, what is gathered goes out.
            let ready = poll_fn(|cx| match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(frame) => Poll::Ready(Some(frame)),
                Poll::Pending => Poll::Ready(None),
            })
            .await;
            let frame = match ready {
                Some(frame) => frame,
                None => {
                    self.write_out().await?;
                    self.io.flush().await?;
                    poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
                }
            };
            let frame: Frame<_> = match frame {
                None => break,
                Some(Ok(frame)) => frame,
                Some(Err(e)) => {
                    tracing::debug!(service = %self.proxy.balancer.service(), error = %e, "response body broke off");
                    return Ok(false);
                }
            };
            let frame = match frame.into_data() {
                Ok(data) => {
                    if data.len() as u64 > left {
                        // More than declared: what fits goes out, and the connection ends.
                        self.out.extend_from_slice(&data[..left as usize]);
                        return Ok(false);
                    }
                    left -= data.len() as u64;
                    if data.is_empty() {
                        continue;
                    }
                    if delimit == Delimit::Chunked {
                        h1::chunk_size(data.len(), &mut self.out);
                    }
                    if data.len() >= DIRECT {
                        self.write_out().await?;
                        self.io.write_all(&data).await?;
                    } else {
                        self.out.extend_from_slice(&data);
                    }
                    if delimit == Delimit::Chunked {
                        self.out.extend_from_slice(b"\r\n");
                    }
                    if self.out.len() >= GATHER {
                        self.write_out().await?;
                    }
                    continue;
                }
                Err(frame) => frame,
            };
            if let (Ok(trailers), Delimit::Chunked) = (frame.into_trailers(), delimit) {
                h1::last_chunk(Some(&trailers), &mut self.out);
                return Ok(true);
            }
        }
        match delimit {
            Delimit::Chunked => h1::last_chunk(None, &mut self.out),
            Delimit::Length(_) if left > 0 => return Ok(false),
            _ => {}
        }
        Ok(delimit != Delimit::Close)
    }

    /// Writes what `out` holds.
    async fn write_out(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.io.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Ends the connection: what was written goes out, then the end of the stream. When the client has
    /// sent more (requests pipelined after the last one answered), that is read and dropped for a
    /// moment before closing, so the close does not reset the connection before the client has read
    /// its response (RFC 9112 section 9.6).
    async fn close(&mut self) {
        let _ = self.io.shutdown().await;
        if self.buf.is_empty() {
            return;
        }
        let drain = async {
            let mut drained = 0;
            while drained < LINGER_BYTES {
                self.buf.clear();
                self.buf.reserve(h1::READ_SPACE);
                match self.io.read_buf(self.buf).await {
                    Ok(n) if n > 0 => drained += n,
                    _ => return,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
    }
}

/// Reads more of a request into `buf`. With nothing buffered (between requests) it waits for bytes
/// without holding a read buffer, so an idle keep-alive connection holds none, as HAProxy releases
/// empty buffers.
async fn read_more<S>(io: &mut S, buf: &mut BytesMut) -> std::io::Result<usize>
where
    S: AsyncRead + WaitReadable + Unpin,
{
    if buf.is_empty() {
        let ready = poll_fn(|cx| Poll::Ready(io.poll_readable(cx))).await;
        if ready.is_pending() {
            *buf = BytesMut::new();
            poll_fn(|cx| io.poll_readable(cx)).await?;
        }
    }
    buf.reserve(h1::READ_SPACE);
    io.read_buf(buf).await
}

/// Resolves at `deadline`; never without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use tokio::net::{TcpListener, TcpStream};

    /// The size of what `f` returns, without calling it.
    fn returned<A, R>(_: &impl Fn(A) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    #[test]
    fn an_idle_keep_alive_connection_holds_a_small_task() {
        // The connection task's future, most of what an idle keep-alive connection holds. Forwarding
        // and answering a request are boxed while they run: inline they made it 3,880 bytes.
        let task = returned(&|a: (TcpStream, Peer, Arc<ServiceProxy>)| {
            super::super::serve_connection(a.0, a.1, a.2)
        });
        assert!(
            task <= 1536,
            "a plain HTTP connection's task is {task} bytes"
        );
    }

    #[tokio::test]
    async fn a_connection_waiting_for_its_next_request_holds_no_read_buffer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let mut buf = BytesMut::new();
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        while buf.len() < 16 {
            read_more(&mut server, &mut buf).await.unwrap();
        }
        client.write_all(b"Host: a\r\n\r\n").await.unwrap();
        read_more(&mut server, &mut buf).await.unwrap();
        assert_eq!(&buf[..], b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(buf.capacity() > 0, "a request being read has its buffer");

        // The request is taken; nothing more has come.
        buf.clear();
        {
            let read = read_more(&mut server, &mut buf);
            tokio::pin!(read);
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(read.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(
            buf.capacity(),
            0,
            "the empty buffer was let go while waiting"
        );
        client.write_all(b"GET /next").await.unwrap();
        read_more(&mut server, &mut buf).await.unwrap();
        assert!(b"GET /next".starts_with(&buf[..]) && !buf.is_empty());
    }
}
