//! Proxying: local listeners and the forwarding of client connections to picked backends.

mod io;
mod listener;
mod ratelog;
mod tcp;

pub use listener::serve;

use crate::balance::Balancer;
use crate::config::{Retries, Timeouts};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What the forwarding path of one service needs.
pub struct ServiceProxy {
    /// Picks backends.
    pub balancer: Arc<Balancer>,
    /// Connect and idle timeouts.
    pub timeouts: Timeouts,
    /// Connect retry policy.
    pub retries: Retries,
    /// Cancelled when open connections must be cut (shutdown grace period over).
    pub abort: CancellationToken,
    warnings: ratelog::RateLimited,
}

impl ServiceProxy {
    /// Builds the forwarding path of a service.
    pub fn new(
        balancer: Arc<Balancer>,
        timeouts: Timeouts,
        retries: Retries,
        abort: CancellationToken,
    ) -> Self {
        Self {
            balancer,
            timeouts,
            retries,
            abort,
            warnings: ratelog::RateLimited::default(),
        }
    }
}
