//! Registration (the Nerve side): health-checks this host's services and keeps one ephemeral znode per
//! healthy instance in ZooKeeper. Not part of this version yet; configs with a `register` section are
//! rejected at load.
