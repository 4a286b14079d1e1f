//! Giving freed memory back to the OS after the peaks of loading a config.

use mimalloc as _;

unsafe extern "C" {
    /// mimalloc's collection: frees what threads left behind and returns free pages to the OS.
    fn mi_collect(force: bool);
}

/// Returns memory freed since the last collection to the OS: mimalloc otherwise returns it only as
/// later allocations pass by, which after a rejected reload may be never (17 MB grew to 127 MB).
/// Harmless where mimalloc is not the global allocator (its heaps are then empty).
pub fn release_freed() {
    // SAFETY: mi_collect takes no pointers and may be called from any thread at any time; the mimalloc
    // crate, a dependency of this library, links the symbol in.
    unsafe { mi_collect(true) }
}
