//! The UMEM memory area: one anonymous mapping of `frames * 4096` bytes, owned.
//!
//! Owns: mmap (hugepages first when asked, then 4 KiB pages with a log line), NUMA binding
//! with `mbind` before first touch, the first touch itself (on the calling thread, so call
//! it after pinning), munmap on drop, and bounds-checked raw access to frame bytes.
//! Does not: decide who owns which frame (that is the pool and the rings, see
//! [`crate::port`]); access through [`UmemArea::frame`] / [`UmemArea::frame_mut`] is `unsafe`
//! because only the caller knows that the kernel is not using that frame right now.

use std::ptr::NonNull;

use crate::FRAME_SIZE;
use crate::error::XskError;
use crate::numa::{self, NumaPolicy};

const HUGE_PAGE: usize = 2 << 20;

/// How to allocate a UMEM area.
#[derive(Debug, Clone)]
pub struct UmemOptions {
    /// Number of 4096-byte frames.
    pub frames: u32,
    /// Try `MAP_HUGETLB` (2 MiB pages) first.
    pub hugepages: bool,
    /// NUMA node to bind to; `None` means "the node of the CPU this thread runs on".
    pub node: Option<u32>,
    /// Binding strictness.
    pub policy: NumaPolicy,
}

impl Default for UmemOptions {
    fn default() -> Self {
        Self {
            frames: 4096,
            hugepages: true,
            node: None,
            policy: NumaPolicy::Preferred,
        }
    }
}

/// An owned, page-aligned, zero-initialised anonymous mapping used as UMEM.
#[derive(Debug)]
pub struct UmemArea {
    ptr: NonNull<u8>,
    len: usize,
    map_len: usize,
    frames: u32,
    hugepages: bool,
    node: Option<u32>,
}

impl UmemArea {
    /// Maps, binds and touches a new area.
    pub fn new(opts: &UmemOptions) -> Result<Self, XskError> {
        if opts.frames == 0 {
            return Err(XskError::Config {
                what: "UMEM frame count must be > 0".into(),
            });
        }
        let len = opts.frames as usize * FRAME_SIZE as usize;
        let mut hugepages = false;
        let mut mapped = None;
        if opts.hugepages {
            let map_len = len.div_ceil(HUGE_PAGE) * HUGE_PAGE;
            match map(map_len, libc::MAP_HUGETLB) {
                Ok(p) => {
                    hugepages = true;
                    mapped = Some((p, map_len));
                }
                Err(e) => tracing::info!(
                    bytes = map_len,
                    error = %e,
                    "no hugepages for UMEM (see /proc/sys/vm/nr_hugepages), using 4 KiB pages"
                ),
            }
        }
        let (ptr, map_len) = match mapped {
            Some(m) => m,
            None => (
                map(len, 0).map_err(|source| XskError::Mmap { len, source })?,
                len,
            ),
        };
        let node = opts
            .node
            .or_else(|| numa::current_cpu().and_then(numa::node_of_cpu));
        let mut area = Self {
            ptr,
            len,
            map_len,
            frames: opts.frames,
            hugepages,
            node: None,
        };
        if let Some(n) = node {
            // SAFETY: `area` owns the mapping [ptr, ptr+map_len), page aligned, not yet touched.
            match unsafe { numa::mbind(area.ptr.as_ptr(), area.map_len, n, opts.policy) } {
                Ok(()) => area.node = Some(n),
                Err(e) => tracing::info!(node = n, error = %e, "mbind of UMEM failed"),
            }
        }
        // First touch on this (pinned) thread places the pages; it also fails early here
        // rather than with SIGBUS on the packet path when hugepages run out.
        // SAFETY: the mapping is owned, writable and `map_len` bytes long.
        unsafe { std::ptr::write_bytes(area.ptr.as_ptr(), 0, area.map_len) };
        Ok(area)
    }

    /// Number of frames.
    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// Length in bytes (frames * 4096).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: an area has at least one frame.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether the area is backed by hugepages.
    pub fn hugepages(&self) -> bool {
        self.hugepages
    }

    /// NUMA node the area is bound to, if binding succeeded.
    pub fn node(&self) -> Option<u32> {
        self.node
    }

    /// The whole area as the raw slice `xdpilone::Umem::new` wants.
    pub(crate) fn as_raw(&self) -> NonNull<[u8]> {
        NonNull::slice_from_raw_parts(self.ptr, self.len)
    }

    #[inline]
    fn check(&self, offset: u64, len: usize) -> usize {
        let off = usize::try_from(offset).unwrap_or(usize::MAX);
        assert!(
            off <= self.len && len <= self.len - off,
            "UMEM access [{off}, +{len}) outside the {}-byte area",
            self.len
        );
        off
    }

    /// Bytes `[offset, offset+len)` of the area.
    ///
    /// # Safety
    ///
    /// The caller must own the frame(s) covering that range: they are in no kernel ring (fill
    /// or tx) and no `&mut` to them exists. Out-of-bounds ranges panic.
    #[inline]
    pub unsafe fn frame(&self, offset: u64, len: usize) -> &[u8] {
        let off = self.check(offset, len);
        // SAFETY: in bounds (checked); the caller guarantees no concurrent writer.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(off), len) }
    }

    /// Mutable bytes `[offset, offset+len)` of the area.
    ///
    /// # Safety
    ///
    /// The caller must own the frame(s) covering that range exclusively: they are in no kernel
    /// ring and no other reference to them exists while the returned slice lives. Out-of-bounds
    /// ranges panic.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn frame_mut(&self, offset: u64, len: usize) -> &mut [u8] {
        let off = self.check(offset, len);
        // SAFETY: in bounds (checked); the caller guarantees exclusive ownership of the range.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(off), len) }
    }
}

fn map(len: usize, extra_flags: libc::c_int) -> std::io::Result<NonNull<u8>> {
    // SAFETY: anonymous private mapping at a kernel-chosen address; no existing memory is
    // affected. The result is checked against MAP_FAILED before use.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra_flags,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    NonNull::new(p.cast()).ok_or_else(|| std::io::Error::other("mmap returned null"))
}

impl Drop for UmemArea {
    fn drop(&mut self) {
        // SAFETY: we own the mapping; every borrow of it is tied to `&self` and so has ended,
        // and the owner types drop the kernel socket (which pins the pages) before the area.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.map_len) };
    }
}

// SAFETY: the area is plain memory owned by this value; moving it to another thread moves
// that ownership. Shared access across threads goes through the `unsafe` accessors whose
// contracts forbid data races.
unsafe impl Send for UmemArea {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_zeroed_area_and_bounds_checks() {
        let a = UmemArea::new(&UmemOptions {
            frames: 8,
            hugepages: false,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(a.len(), 8 * 4096);
        assert!(!a.hugepages());
        // SAFETY: no kernel socket uses this area; the test owns all frames.
        let f = unsafe { a.frame_mut(4096, 4096) };
        assert!(f.iter().all(|&b| b == 0));
        f[0] = 7;
        // SAFETY: as above; the previous &mut is dead.
        assert_eq!(unsafe { a.frame(4096, 1) }[0], 7);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // SAFETY: as above; this must panic on the bounds check before any access.
            let _ = unsafe { a.frame(7 * 4096 + 1, 4096) };
        }));
        assert!(r.is_err());
    }

    #[test]
    fn hugepage_request_falls_back_or_succeeds() {
        let a = UmemArea::new(&UmemOptions {
            frames: 16,
            hugepages: true,
            ..Default::default()
        })
        .unwrap();
        let nr: u64 = std::fs::read_to_string("/proc/sys/vm/nr_hugepages")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if nr == 0 {
            assert!(!a.hugepages(), "no hugepages reserved, must fall back");
        }
        assert_eq!(a.frames(), 16);
    }
}
