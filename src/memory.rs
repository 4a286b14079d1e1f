//! The allocator's memory: committed as it is used, and given back to the OS after the peaks of
//! loading a config.

use mimalloc as _;
use std::ffi::{c_int, c_long};

/// mimalloc's `mi_option_arena_eager_commit` (the same number in its v2 and v3 `mi_option_t`).
const ARENA_EAGER_COMMIT: c_int = 4;

unsafe extern "C" {
    /// mimalloc's collection: frees what threads left behind and returns free pages to the OS.
    fn mi_collect(force: bool);
    /// Sets an option's value unless the environment (`MIMALLOC_<NAME>`) or `mi_option_set` gave one.
    fn mi_option_set_default(option: c_int, value: c_long);
}

/// Makes mimalloc commit the memory of its arenas as it is used rather than all at once when an arena
/// is reserved: with 100 services of 10 backends, 12.5 MiB of RSS at rest instead of 19. An explicit
/// `MIMALLOC_ARENA_EAGER_COMMIT` in the environment still wins. It applies to arenas reserved after
/// it, so the binary calls it from a constructor, before the allocator starts.
pub fn commit_on_demand() {
    // SAFETY: mi_option_set_default takes plain integers, checks the option number, and only writes
    // the option's value; the mimalloc crate, a dependency of this library, links the symbol in.
    unsafe { mi_option_set_default(ARENA_EAGER_COMMIT, 0) }
}

/// Returns memory freed since the last collection to the OS: mimalloc otherwise returns it only as
/// later allocations pass by, which after a rejected reload may be never (17 MB grew to 127 MB).
/// Harmless where mimalloc is not the global allocator (its heaps are then empty).
pub fn release_freed() {
    // SAFETY: mi_collect takes no pointers and may be called from any thread at any time; the mimalloc
    // crate, a dependency of this library, links the symbol in.
    unsafe { mi_collect(true) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The variable mimalloc reads for the option.
    const ENV: &str = "MIMALLOC_ARENA_EAGER_COMMIT";

    unsafe extern "C" {
        /// An option's value.
        fn mi_option_get(option: c_int) -> c_long;
    }

    /// Whether mimalloc commits an arena's memory when it reserves it (0: as it is used; 2, its own
    /// default: on systems that overcommit).
    fn arena_eager_commit() -> c_long {
        // SAFETY: mi_option_get takes a checked option number and reads its value.
        unsafe { mi_option_get(ARENA_EAGER_COMMIT) }
    }

    #[test]
    fn arenas_commit_on_demand_unless_the_environment_says_otherwise() {
        // mimalloc reads its environment once, at process start: each case runs in a process of its own.
        for (env, expected) in [(None, "0"), (Some("1"), "1"), (Some("2"), "2")] {
            let mut child = std::process::Command::new(std::env::current_exe().unwrap());
            child.args([
                "--exact",
                "memory::tests::eager_commit_after_commit_on_demand",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ]);
            match env {
                Some(value) => child.env(ENV, value),
                None => child.env_remove(ENV),
            };
            let out = child.output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{stdout}");
            assert!(
                stdout.contains(&format!("arena_eager_commit={expected}\n")),
                "{ENV}={env:?}: {stdout}"
            );
        }
    }

    /// Run by the test above in a child process.
    #[test]
    #[ignore = "run in a child process by arenas_commit_on_demand_unless_the_environment_says_otherwise"]
    fn eager_commit_after_commit_on_demand() {
        commit_on_demand();
        println!("arena_eager_commit={}", arena_eager_commit());
    }
}
