//! Real PROXY protocol peers for tests: nginx reading it (`listen ... proxy_protocol`) and HAProxy
//! sending it (`server ... send-proxy-v2`), each a child process in its own temporary directory on a
//! free loopback port, stopped by PID on drop.

use super::process::{free_port, Proc};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A temporary directory for one peer, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "sinew-{name}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("peer temp dir");
        Dir(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// nginx on a loopback port that requires a PROXY header (v1 or v2) and answers every request with
/// `<address>:<port>` from it.
pub struct Nginx {
    /// Where it listens.
    pub addr: SocketAddr,
    _proc: Proc,
    _dir: Dir,
}

impl Nginx {
    /// Starts nginx and waits until it listens.
    pub async fn start() -> Self {
        let dir = Dir::new("nginx");
        let port = free_port();
        let d = dir.0.display();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 64; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  server {{\n    listen 127.0.0.1:{port} proxy_protocol;\n    location / {{ return 200 \"$proxy_protocol_addr:$proxy_protocol_port\"; }}\n  }}\n}}\n"
        );
        let path = dir.0.join("nginx.conf");
        std::fs::write(&path, conf).expect("nginx.conf");
        let child = Command::new("/usr/sbin/nginx")
            .arg("-p")
            .arg(&dir.0)
            .arg("-e")
            .arg(dir.0.join("error.log"))
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx");
        let proc = Proc(child);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        super::process::wait_listening(addr).await;
        Nginx {
            addr,
            _proc: proc,
            _dir: dir,
        }
    }
}

/// HAProxy in HTTP mode on a loopback port, forwarding to one server with `send-proxy-v2`.
pub struct Haproxy {
    /// Where it listens.
    pub addr: SocketAddr,
    _proc: Proc,
    _dir: Dir,
}

impl Haproxy {
    /// Starts HAProxy in front of `server` and waits until it listens.
    pub async fn start(server: SocketAddr) -> Self {
        let dir = Dir::new("haproxy");
        let port = free_port();
        let conf = format!(
            "global\n  maxconn 100\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 10s\n  timeout server 10s\nfrontend f\n  bind 127.0.0.1:{port}\n  default_backend b\nbackend b\n  server s {server} send-proxy-v2\n"
        );
        let path = dir.0.join("haproxy.cfg");
        std::fs::write(&path, conf).expect("haproxy.cfg");
        let child = Command::new("/usr/sbin/haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn haproxy");
        let proc = Proc(child);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        super::process::wait_listening(addr).await;
        Haproxy {
            addr,
            _proc: proc,
            _dir: dir,
        }
    }
}
