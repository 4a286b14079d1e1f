//! Unix-socket test backends: a fresh socket directory per test, and an echo backend on a Unix socket.

use std::path::{Path, PathBuf};
use tokio::net::UnixListener;
use tokio::task::JoinHandle;

/// A fresh directory for this test's sockets.
pub fn socket_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sinew-unix-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("socket dir");
    dir
}

/// A backend on a Unix socket that greets each connection with `<name>\n`, echoes until EOF, then
/// shuts its side down (as [`super::EchoBackend`] on TCP).
pub struct UnixEcho {
    task: JoinHandle<()>,
}

impl UnixEcho {
    /// Listens at `path` (a leading NUL: in the abstract namespace).
    pub fn start(path: &Path, name: &str) -> Self {
        let listener = UnixListener::bind(path).expect("bind unix backend");
        let greeting = format!("{name}\n");
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(super::greet_then_echo(s, greeting.clone()));
            }
        });
        Self { task }
    }
}

impl Drop for UnixEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}
