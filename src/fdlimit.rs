//! The open-file limit: every proxied connection takes two descriptors, so the soft limit that
//! shells and containers often start processes with (1,024) would cap a host at about 500 connections.
//! At start sinew raises its soft limit to the hard one, as HAProxy, nginx (`worker_rlimit_nofile`)
//! and Go programs do; the hard limit stays the operator's to set (`LimitNOFILE=` in systemd).
//!
//! When the limit is reached anyway, a [`Spare`] set of descriptors held back at start lets the admin
//! API still accept a connection: the operator can see what is happening while the proxy is full
//! (the "idle descriptor" of libev and nginx-style servers).

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use std::fs::File;
use std::io;
use std::sync::Mutex;

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

/// Descriptors held back (open on `/dev/null`) so that one more can be opened when the limit is
/// reached: [`Spare::release`] closes one just before an accept that must not fail, and
/// [`Spare::refill`] takes it back once that connection is done.
pub struct Spare {
    held: Mutex<Vec<File>>,
    size: usize,
}

impl Spare {
    /// Holds up to `size` descriptors back (fewer if they cannot all be opened now).
    pub fn new(size: usize) -> Self {
        let spare = Self {
            held: Mutex::new(Vec::with_capacity(size)),
            size,
        };
        spare.refill();
        spare
    }

    /// Closes one held descriptor; false when none is held.
    pub fn release(&self) -> bool {
        self.lock().pop().is_some()
    }

    /// Opens descriptors again until `size` are held, or the limit stops it (tried again next time).
    pub fn refill(&self) {
        let mut held = self.lock();
        while held.len() < self.size {
            match File::open("/dev/null") {
                Ok(f) => held.push(f),
                Err(_) => return,
            }
        }
    }

    /// Descriptors held now.
    pub fn held(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<File>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spare_descriptor_is_released_and_taken_back() {
        let spare = Spare::new(2);
        assert_eq!(spare.held(), 2);
        assert!(spare.release() && spare.release());
        assert!(!spare.release(), "none left");
        spare.refill();
        assert_eq!(spare.held(), 2);
    }

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
