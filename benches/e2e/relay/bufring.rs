//! A provided buffer ring: buffers the kernel picks from when a multishot receive completes, handed back
//! by advancing the ring's tail once the bytes in them have been sent on.

use crate::net::BUF_SIZE;
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
    /// The buffers, `BUF_SIZE` bytes each, indexed by buffer id.
    buffers: Box<[u8]>,
    /// The tail as written locally, published by `publish`.
    tail: u16,
    /// The tail the kernel last saw.
    published: u16,
}

impl BufRing {
    /// Allocates `count` buffers, all of them to be provided once registered.
    pub fn new(count: u16) -> io::Result<BufRing> {
        if !count.is_power_of_two() || count > 32768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "--bufs must be a power of two up to 32768",
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
            buffers: vec![0; usize::from(count) * BUF_SIZE].into_boxed_slice(),
            tail: 0,
            published: 0,
        };
        for bid in 0..count {
            bufs.give_back(bid);
        }
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
        let start = usize::from(bid) * BUF_SIZE + off as usize;
        &self.buffers[start..start + len as usize]
    }

    /// Queues buffer `bid` to be provided again (visible to the kernel after `publish`).
    pub fn give_back(&mut self, bid: u16) {
        let index = usize::from(self.tail & (self.count - 1));
        let addr = self.buffers[usize::from(bid) * BUF_SIZE..].as_ptr() as u64;
        // SAFETY: `index` is within the ring; the kernel does not read entries past the published tail.
        let entry = unsafe { &mut *self.entries.add(index) };
        entry.set_addr(addr);
        entry.set_len(BUF_SIZE as u32);
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

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { alloc::dealloc(self.entries.cast(), self.layout) };
    }
}
