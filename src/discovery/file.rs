//! File discovery: a JSON list of backends (`["10.0.0.1:80", {"host": "10.0.0.2", "port": 80, "weight": 2}]`),
//! re-read whenever its content changes.
//!
//! The file is polled rather than watched with inotify: polling survives editors and deploy tools that
//! replace the file by rename, directories that appear late, and network filesystems, at the cost of a
//! small read every interval. A file that is missing or malformed keeps the previous set and logs once.

use super::{to_backends, SourceContext};
use crate::balance::Origin;
use crate::config::BackendAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often the file is checked for changes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Why a backends file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("{}: cannot read backends file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The content is not a valid list of backends.
    #[error("{}: invalid backends file: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The JSON error, with line and column.
        source: serde_json::Error,
    },
}

/// Parses a backends file's content.
pub fn parse(path: &Path, content: &[u8]) -> Result<Vec<BackendAddr>, FileError> {
    serde_json::from_slice(content).map_err(|source| FileError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// Polls `path` until shutdown, updating the balancer on every change of content.
pub async fn run(path: PathBuf, ctx: SourceContext) {
    let service = ctx.balancer.service().to_string();
    let span = tracing::info_span!("file_discovery", service = %service, path = %path.display());
    let mut last_content: Option<Vec<u8>> = None;
    let mut last_error: Option<String> = None;
    let mut ticker = tokio::time::interval(POLL_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let result = match tokio::fs::read(&path).await {
            Ok(content) if last_content.as_ref() == Some(&content) => continue,
            Ok(content) => {
                let parsed = parse(&path, &content);
                last_content = Some(content);
                parsed
            }
            Err(source) => {
                last_content = None;
                Err(FileError::Read {
                    path: path.clone(),
                    source,
                })
            }
        };
        match result {
            Ok(addrs) => {
                last_error = None;
                tracing::info!(parent: &span, backends = addrs.len(), "backends file read");
                ctx.balancer.update(to_backends(&addrs, &Origin::File));
            }
            Err(e) => {
                let message = e.to_string();
                if last_error.as_deref() != Some(message.as_str()) {
                    ctx.metrics.error(&service, "file");
                    tracing::error!(parent: &span, error = %message, "keeping the previous backends");
                    last_error = Some(message);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms() {
        let list = parse(
            Path::new("f"),
            br#"["127.0.0.1:1", {"host": "h", "port": 2, "weight": 3}]"#,
        )
        .unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].weight, 3);
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let e = parse(Path::new("/etc/b.json"), b"[\n\"127.0.0.1:0\"]")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/etc/b.json: invalid backends file"), "{e}");
        assert!(e.contains("line 2"), "{e}");
    }
}
