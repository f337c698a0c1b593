//! The mmapped region file as a slice of `AtomicU64` words.
//!
//! Owns the `MAP_SHARED` mapping and the only unsafe conversion in the crate's data path:
//! from the mapping's pointer to `&[AtomicU64]`. Everything else in the crate reads and
//! writes the region through that slice with explicit orderings. Does not interpret words.
#![allow(unsafe_code)]

use std::sync::atomic::AtomicU64;

/// A shared, writable mapping of the whole region file.
#[derive(Debug)]
pub(crate) struct Mapping {
    map: memmap2::MmapRaw,
    words: usize,
}

impl Mapping {
    /// Maps `len` bytes of `file` shared and writable. `len` must be a multiple of 8 and no
    /// larger than the file.
    pub(crate) fn new(file: &std::fs::File, len: usize) -> std::io::Result<Self> {
        assert!(
            len.is_multiple_of(8) && len > 0,
            "mapping length must be a non-zero multiple of 8"
        );
        let map = memmap2::MmapOptions::new().len(len).map_raw(file)?;
        Ok(Self {
            map,
            words: len / 8,
        })
    }

    /// The region as words.
    pub(crate) fn words(&self) -> &[AtomicU64] {
        // SAFETY: `map` is a live MAP_SHARED mapping of `words * 8` bytes that stays mapped for
        // the lifetime of `self` (the returned slice borrows `self`). mmap returns page-aligned
        // memory, so the pointer satisfies AtomicU64's 8-byte alignment. AtomicU64 has the same
        // size and bit validity as u64 and every bit pattern is valid. The memory is only ever
        // accessed through atomic operations by this crate (in this and other processes), so
        // concurrent writes by the peer process are not data races. The one hazard outside Rust's
        // model is another process truncating the file, which would raise SIGBUS; the file is
        // created at full size and never shrunk by this crate.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().cast::<AtomicU64>(), self.words) }
    }
}
