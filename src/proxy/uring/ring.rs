//! Building a ring with the setup flags that suit one thread owning it, falling back to fewer flags on
//! kernels that refuse them.

use io_uring::IoUring;
use std::io;

/// Applies a set of setup flags to a ring builder.
type SetupFlags = fn(&mut io_uring::Builder);

/// Builds a ring of `entries` submission entries (the completion queue eight times as large: a
/// connection may have seven operations in flight), owned and
/// entered by one thread only: `SINGLE_ISSUER|DEFER_TASKRUN` when `defer` (completions are processed
/// when that thread enters the kernel, not by interrupting it), else or where refused
/// `SINGLE_ISSUER|COOP_TASKRUN`, else none. Returns the ring and the flags it got.
pub fn build(entries: u32, defer: bool) -> io::Result<(IoUring, &'static str)> {
    setup(entries, defer, false)
}

/// As `build` without `DEFER_TASKRUN`, created disabled (`R_DISABLED`): `SINGLE_ISSUER` ties it to the
/// thread that enables it (`register_enable_rings`), not to the one that builds it.
pub(super) fn build_disabled(entries: u32) -> io::Result<(IoUring, &'static str)> {
    setup(entries, false, true)
}

/// Builds the ring, trying the setup flags from the most to the fewest.
fn setup(entries: u32, defer: bool, disabled: bool) -> io::Result<(IoUring, &'static str)> {
    let mut attempts: Vec<(&'static str, SetupFlags)> = Vec::new();
    if defer {
        attempts.push(("SINGLE_ISSUER|DEFER_TASKRUN", |b| {
            b.setup_single_issuer().setup_defer_taskrun();
        }));
    }
    attempts.push(("SINGLE_ISSUER|COOP_TASKRUN", |b| {
        b.setup_single_issuer().setup_coop_taskrun();
    }));
    attempts.push(("no setup flags", |_| {}));
    let mut last = None;
    for (name, apply) in attempts {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(entries * 8).setup_submit_all();
        if disabled {
            builder.setup_r_disabled();
        }
        apply(&mut builder);
        match builder.build(entries) {
            Ok(ring) => return Ok((ring, name)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no ring")))
}
