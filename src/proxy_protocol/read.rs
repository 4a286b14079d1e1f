//! Taking a header off an accepted connection before anything else reads it: the bytes are peeked
//! until a whole header is there, then exactly the header is consumed, so what follows (a TLS
//! ClientHello, an HTTP request, early TCP data) is left in the socket for the usual path.

use super::{decode, Header, ProxyProtocolError as Error, V2_MAX};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// How long to wait before peeking again at a header that arrived in part (senders write it at once,
/// so this is rare; peeking again at once would spin).
const PARTIAL_PAUSE: Duration = Duration::from_millis(5);

/// Reads the PROXY header `stream` starts with, waiting at most `timeout` for all of it.
pub async fn read_header(stream: &mut TcpStream, timeout: Duration) -> Result<Header, Error> {
    match tokio::time::timeout(timeout, read(stream)).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout(timeout)),
    }
}

/// Peeks until a whole header is there (or the input cannot be one), then consumes exactly it. A
/// client that sends part of a header and stops (or closes) is held until the caller's timeout: the
/// peeked bytes stay in the socket, so the end of the stream only shows once they are read.
async fn read(stream: &mut TcpStream) -> Result<Header, Error> {
    let mut buf = vec![0u8; V2_MAX];
    loop {
        let n = stream
            .peek(&mut buf)
            .await
            .map_err(|e| Error::Io(e.to_string()))?;
        if n == 0 {
            return Err(Error::Truncated);
        }
        if let Some(d) = decode(&buf[..n])? {
            stream
                .read_exact(&mut buf[..d.len])
                .await
                .map_err(|e| Error::Io(e.to_string()))?;
            return Ok(d.header);
        }
        tokio::time::sleep(PARTIAL_PAUSE).await;
    }
}
