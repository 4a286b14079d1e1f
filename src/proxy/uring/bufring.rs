//! A provided buffer ring: buffers the kernel picks from when a receive completes, handed back by
//! advancing the ring's tail once the bytes in them have been sent on. A socket waiting for bytes holds
//! no buffer: it takes one only when bytes arrive.
//!
//! The kernel takes buffers in the order they were provided, so every buffer provided is soon used and
//! holds memory. Only the first few are provided at start; more are added when a receive finds none
//! left (`grow`), so the memory in use follows the most bytes ever in flight at once, not the ring's
//! capacity.

use io_uring::types::BufRingEntry;
use io_uring::IoUring;
use std::alloc::{self, Layout};
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

/// The buffer group id receives select from.
pub const GROUP: u16 = 0;

/// The ring of buffer descriptors (page-aligned, shared with the kernel) and the buffers themselves.
pub struct BufRing {
    /// The descriptor ring.
    entries: *mut BufRingEntry,
    /// Its layout, to free it.
    layout: Layout,
    /// Entries in the ring, a power of two.
    count: u16,
    /// The buffers, `size` bytes each, indexed by buffer id.
    buffers: Box<[u8]>,
    /// Bytes per buffer.
    size: usize,
    /// The tail as written locally, published by `publish`.
    tail: u16,
    /// The tail the kernel last saw.
    published: u16,
    /// Buffers provided so far (ids `0..provided`).
    provided: u16,
}

impl BufRing {
    /// Reserves `count` buffers of `size` bytes, the first `initial` of them to be provided once
    /// registered. The memory is the allocator's zeroed pages: a buffer costs memory once the kernel
    /// first fills it.
    pub fn new(count: u16, size: usize, initial: u16) -> io::Result<BufRing> {
        if !count.is_power_of_two() || count > 32768 || size == 0 || size > u32::MAX as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the buffer count must be a power of two up to 32768, and the size 1 to 4 GiB",
            ));
        }
        let layout = Layout::from_size_align(usize::from(count) * size_of::<BufRingEntry>(), 4096)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: the layout has a non-zero size (count >= 1).
        let entries = unsafe { alloc::alloc_zeroed(layout) }.cast::<BufRingEntry>();
        if entries.is_null() {
            return Err(io::Error::new(io::ErrorKind::OutOfMemory, "buffer ring"));
        }
        let mut bufs = BufRing {
            entries,
            layout,
            count,
            buffers: vec![0; usize::from(count) * size].into_boxed_slice(),
            size,
            tail: 0,
            published: 0,
            provided: 0,
        };
        bufs.grow(initial);
        Ok(bufs)
    }

    /// Registers the buffers with `ring` as group `GROUP` and provides all of them. The ring must be
    /// dropped before `self` (created after it), as the kernel writes into the buffers until then.
    pub fn register(&mut self, ring: &IoUring) -> io::Result<()> {
        // SAFETY: `entries` is page-aligned, `count` entries long, and outlives the ring.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                self.entries as u64,
                self.count,
                GROUP,
                0,
            )?
        };
        self.publish();
        Ok(())
    }

    /// The bytes of buffer `bid` from `off`, `len` long.
    pub fn slice(&self, bid: u16, off: u32, len: u32) -> &[u8] {
        let start = usize::from(bid) * self.size + off as usize;
        &self.buffers[start..start + len as usize]
    }

    /// Provides up to `n` more buffers (visible to the kernel after `publish`); false when all are
    /// provided already.
    pub fn grow(&mut self, n: u16) -> bool {
        let more = n.min(self.count - self.provided);
        for bid in self.provided..self.provided + more {
            self.give_back(bid);
        }
        self.provided += more;
        more > 0
    }

    /// Buffers provided so far.
    pub fn provided(&self) -> u16 {
        self.provided
    }

    /// Bytes per buffer.
    pub fn size(&self) -> u32 {
        self.size as u32
    }

    /// Queues buffer `bid` to be provided again (visible to the kernel after `publish`).
    pub fn give_back(&mut self, bid: u16) {
        let index = usize::from(self.tail & (self.count - 1));
        let addr = self.buffers[usize::from(bid) * self.size..].as_ptr() as u64;
        // SAFETY: `index` is within the ring; the kernel does not read entries past the published tail.
        let entry = unsafe { &mut *self.entries.add(index) };
        entry.set_addr(addr);
        entry.set_len(self.size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Whether buffers were given back since the last `publish`.
    pub fn returning(&self) -> bool {
        self.tail != self.published
    }

    /// Makes the buffers given back visible to the kernel.
    pub fn publish(&mut self) {
        if !self.returning() {
            return;
        }
        // SAFETY: the tail field lies in the first entry, which is valid; the kernel reads it atomically.
        let tail = unsafe { &*BufRingEntry::tail(self.entries).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
        self.published = self.tail;
    }
}

// SAFETY: the ring's memory is owned by the value alone (the kernel reads it, but only the owner
// writes it), so it may move to another thread with it.
unsafe impl Send for BufRing {}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { alloc::dealloc(self.entries.cast(), self.layout) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_provides_a_few_buffers_and_grows_to_its_capacity() {
        let mut bufs = BufRing::new(8, 4096, 2).unwrap();
        assert_eq!((bufs.provided, bufs.tail), (2, 2), "the first few only");
        assert!(bufs.grow(4));
        assert_eq!((bufs.provided, bufs.tail), (6, 6));
        assert!(bufs.grow(4), "up to the capacity");
        assert_eq!((bufs.provided, bufs.tail), (8, 8));
        assert!(!bufs.grow(4), "full: nothing more to provide");
        assert_eq!(bufs.tail, 8);
        assert!(BufRing::new(6, 4096, 2).is_err(), "a power of two");
    }
}
