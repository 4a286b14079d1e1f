//! The open-file limit: every proxied connection takes two descriptors, so the soft limit that
//! shells and containers often start processes with (1,024) would cap a host at about 500 connections.
//! At start sinew raises its soft limit to the hard one, as HAProxy, nginx (`worker_rlimit_nofile`)
//! and Go programs do; the hard limit stays the operator's to set (`LimitNOFILE=` in systemd).

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use std::io;

/// Ceiling used when the hard limit is "unlimited", which Linux does not accept for open files
/// (the kernel's default `fs.nr_open`).
const UNLIMITED: u64 = 1 << 20;

/// Raises the soft open-file limit to the hard limit; returns the limit before and after.
pub fn raise() -> io::Result<(u64, u64)> {
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(UNLIMITED);
    let maximum = limit.maximum.unwrap_or(UNLIMITED);
    if current >= maximum {
        return Ok((current, current));
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(maximum),
            maximum: limit.maximum,
        },
    )?;
    Ok((current, maximum))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let limit = getrlimit(Resource::Nofile);
        let hard = limit.maximum.unwrap_or(UNLIMITED);
        // Start low, as a shell would (lowering the soft limit is always allowed).
        let low = hard.min(1024);
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(low),
                maximum: limit.maximum,
            },
        )
        .unwrap();
        assert_eq!(raise().unwrap(), (low, hard));
        assert_eq!(getrlimit(Resource::Nofile).current, Some(hard));
        assert_eq!(
            raise().unwrap(),
            (hard, hard),
            "a second call changes nothing"
        );
    }
}
