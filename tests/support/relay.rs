//! A loopback TCP relay that a test can cut, so that for its clients the server has gone away.

use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// A loopback TCP relay to `target`; dropping it closes its listener and every relayed connection, so
/// that for a client of the relay the server has stopped.
pub struct Relay {
    /// Where clients connect.
    pub addr: SocketAddr,
    tasks: JoinSet<()>,
}

impl Relay {
    /// Starts relaying from a free loopback port.
    pub async fn start(target: SocketAddr) -> Self {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), target).await
    }

    /// Starts relaying from `addr` (e.g. to bring a stopped relay back on the same port).
    pub async fn start_on(addr: SocketAddr, target: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind relay");
        let addr = listener.local_addr().expect("relay addr");
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                conns.spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Self { addr, tasks }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}
