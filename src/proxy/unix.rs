//! Unix-socket backends (`unix:/run/app.sock`): the connect, with the path in its errors.
//!
//! For a backend on the same host a Unix socket skips TCP's whole stack (no checksums, no congestion
//! control, no loopback routing), roughly halving the round trip. The stream is then forwarded exactly
//! as a TCP one: half-close is `shutdown(SHUT_WR)` on both. None of TCP's options apply.

use std::io;
use std::path::{Path, PathBuf};
use tokio::net::UnixStream;

/// A failed connect to a Unix socket.
#[derive(Debug, thiserror::Error)]
pub enum UnixError {
    /// The socket could not be reached (missing file, nothing listening, no permission).
    #[error("{}: {source}", path.display())]
    Connect {
        /// The socket's path (a leading NUL for the abstract namespace).
        path: PathBuf,
        /// The OS error (its errno classifies the failure).
        source: io::Error,
    },
    /// The service originates TLS, which sinew does not speak over Unix sockets.
    #[error("TLS to a Unix-socket backend is not supported")]
    Tls,
    /// The service speaks HTTP/2 to its backends, which sinew does only over TCP.
    #[error("HTTP/2 to a Unix-socket backend is not supported")]
    Http2,
}

impl From<UnixError> for io::Error {
    fn from(e: UnixError) -> Self {
        let kind = match &e {
            UnixError::Connect { source, .. } => source.kind(),
            UnixError::Tls | UnixError::Http2 => io::ErrorKind::Unsupported,
        };
        io::Error::new(kind, e)
    }
}

/// Connects to the Unix socket at `path`; the error names the path and keeps the OS error.
pub async fn connect(path: &Path) -> Result<UnixStream, UnixError> {
    UnixStream::connect(path)
        .await
        .map_err(|source| UnixError::Connect {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_socket_names_its_path_and_keeps_its_errno() {
        let dir = std::env::temp_dir().join(format!("sinew-unix-{}", std::process::id()));
        let path = dir.join("missing.sock");
        let e: io::Error = connect(&path).await.unwrap_err().into();
        assert!(e.to_string().contains("missing.sock"), "{e}");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert_eq!(
            crate::resource::os_error(&e),
            Some(rustix::io::Errno::NOENT.raw_os_error())
        );
    }
}
