//! systemd's protocols: notify (`sd_notify`) tells the service manager that sinew is ready and, after a
//! binary upgrade, which process is the service's main one now; socket activation (`sd_listen_fds`)
//! hands sinew listening sockets that systemd bound. Without their environment variables both do nothing.

use std::ffi::OsStr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Why a notification could not be sent.
#[derive(Debug, thiserror::Error)]
#[error("NOTIFY_SOCKET {path}: {source}")]
pub struct NotifyError {
    /// The socket named by `NOTIFY_SOCKET`.
    path: String,
    /// The OS error.
    source: std::io::Error,
}

/// Sends `READY=1`, preceded by `MAINPID=` of this process when it took over from another; false when
/// no service manager listens (`NOTIFY_SOCKET` unset).
pub fn ready(took_over: bool) -> Result<bool, NotifyError> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let msg = match took_over {
        true => format!("MAINPID={}\nREADY=1", std::process::id()),
        false => "READY=1".to_string(),
    };
    send(&path, &msg)?;
    Ok(true)
}

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;

/// Takes the sockets systemd passed to this process (`LISTEN_FDS`, for this `LISTEN_PID`), each with its
/// `LISTEN_FDNAMES` entry, and removes those variables so that no child process sees them. Call it
/// once, before any thread starts.
pub fn listen_fds() -> Vec<(OwnedFd, Option<String>)> {
    let pid = std::env::var("LISTEN_PID").ok();
    let count = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    if pid.and_then(|p| p.parse::<u32>().ok()) != Some(std::process::id()) {
        return Vec::new();
    }
    let count = count.and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
    let mut names = names
        .split(':')
        .map(|n| Some(n.to_string()).filter(|n| !n.is_empty()));
    (LISTEN_FDS_START..LISTEN_FDS_START.saturating_add(count.max(0)))
        .map(|raw| {
            // SAFETY: systemd passed descriptors 3..3+LISTEN_FDS to this very process (LISTEN_PID was
            // checked), nothing else in the process owns them, and each is wrapped exactly once here.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            // Inherited without close-on-exec; keep them from leaking into exec checks.
            let _ = rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC);
            (fd, names.next().flatten())
        })
        .collect()
}

fn send(path: &OsStr, msg: &str) -> Result<(), NotifyError> {
    let err = |source| NotifyError {
        path: path.to_string_lossy().into_owned(),
        source,
    };
    let addr = match path.as_bytes().strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name).map_err(err)?
        }
        None => SocketAddr::from_pathname(path).map_err(err)?,
    };
    let socket = UnixDatagram::unbound().map_err(err)?;
    socket.send_to_addr(msg.as_bytes(), &addr).map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_path_and_abstract_sockets() {
        let dir = std::env::temp_dir().join(format!("sinew-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("sinew-notify-{}", std::process::id());
        let listener =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        send(OsStr::new(&format!("@{name}")), "MAINPID=1\nREADY=1").unwrap();
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"MAINPID=1\nREADY=1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
