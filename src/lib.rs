//! sinew: a service-discovery agent. It registers this host's healthy services in ZooKeeper (as Nerve
//! did) and serves each dependency on a localhost listener that balances over the dependency's
//! backends (as Synapse + HAProxy did).

pub mod admin;
pub mod agent;
pub mod balance;
pub mod config;
pub mod control;
pub mod demo;
pub mod discovery;
pub mod endpoint;
pub mod fault;
pub mod fdlimit;
pub mod health;
pub mod http_client;
pub mod lifecycle;
pub mod log_level;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod proxy;
pub mod proxy_protocol;
pub mod ratelog;
pub mod register;
pub mod resource;
pub mod status;
pub mod supervise;
pub mod systemd;
pub mod upgrade;
pub mod zk;
