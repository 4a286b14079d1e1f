//! ZooKeeper: the sessions an agent holds, one per ensemble, shared by discovery (which watches
//! paths) and registration (which keeps this host's znodes).

mod metrics;
mod session;

pub use metrics::ZkMetrics;
pub use session::{cluster, Backoff, Conn, Sessions};
