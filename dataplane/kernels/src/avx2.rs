//! AVX2 kernels (x86_64 only). The only module of the crate with `unsafe` code.
//!
//! Owns the 32-byte-at-a-time versions of the scalar references in `scalar.rs`. The
//! `#[target_feature(enable = "avx2")]` functions are private; the only way to reach them is
//! through [`kernels`], which returns them only after `is_x86_feature_detected!("avx2")` said
//! yes, so the safe wrappers' contract holds by construction. Slice lengths are checked by
//! the callers in `lib.rs` (all inputs of a call have equal length); every pointer access
//! here stays below the length of the slice it came from. This module does not do CRC32C
//! (see `crc.rs`) nor any format logic (see `zrun.rs`).

use std::arch::x86_64::{
    __m256i, _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_movemask_epi8, _mm256_or_si256,
    _mm256_setzero_si256, _mm256_storeu_si256, _mm256_testz_si256, _mm256_xor_si256,
};

use crate::{Kernels, scalar};

/// The AVX2 kernel set, or `None` if this CPU lacks AVX2.
pub(crate) fn kernels() -> Option<Kernels> {
    if !std::arch::is_x86_feature_detected!("avx2") {
        return None;
    }
    Some(Kernels {
        name: "avx2",
        is_zero,
        equal,
        xor_into,
        xor_in_place,
        xor_zero_masks,
        zero_masks,
        crc32c_append: crate::crc::crc32c_append_hw,
    })
}

// The wrappers below are only stored in the `Kernels` built by `kernels()` after detection.

fn is_zero(buf: &[u8]) -> bool {
    // SAFETY: reachable only through `kernels()`, which checked that the CPU has AVX2.
    unsafe { is_zero_avx2(buf) }
}

fn equal(a: &[u8], b: &[u8]) -> bool {
    // SAFETY: AVX2 is present (see `kernels()`); lengths re-asserted inside.
    unsafe { equal_avx2(a, b) }
}

fn xor_into(dst: &mut [u8], a: &[u8], b: &[u8]) {
    // SAFETY: AVX2 is present (see `kernels()`); the caller checked equal lengths, which
    // `xor_into_avx2` re-asserts.
    unsafe { xor_into_avx2(dst, a, b) }
}

fn xor_in_place(dst: &mut [u8], src: &[u8]) {
    // SAFETY: AVX2 is present (see `kernels()`); lengths re-asserted inside.
    unsafe { xor_in_place_avx2(dst, src) }
}

fn xor_zero_masks(a: &[u8], b: &[u8], masks: &mut [u32]) {
    // SAFETY: AVX2 is present (see `kernels()`); lengths re-asserted inside.
    unsafe { xor_zero_masks_avx2(a, b, masks) }
}

fn zero_masks(a: &[u8], masks: &mut [u32]) {
    // SAFETY: AVX2 is present (see `kernels()`); lengths re-asserted inside.
    unsafe { zero_masks_avx2(a, masks) }
}

/// Unaligned 32-byte load of `s[off..off + 32]`.
///
/// # Safety
/// The CPU must have AVX2, and `off + 32 <= s.len()` (every caller's loop condition).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load(s: &[u8], off: usize) -> __m256i {
    debug_assert!(off + 32 <= s.len());
    // SAFETY: the caller guarantees `off + 32 <= s.len()`, so the 32 bytes read are inside
    // `s`; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(s.as_ptr().add(off).cast::<__m256i>()) }
}

/// Unaligned 32-byte store into `s[off..off + 32]`.
///
/// # Safety
/// The CPU must have AVX2, and `off + 32 <= s.len()`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn store(s: &mut [u8], off: usize, v: __m256i) {
    debug_assert!(off + 32 <= s.len());
    // SAFETY: the caller guarantees `off + 32 <= s.len()`; `s` is borrowed mutably, so the
    // 32 bytes written are ours; `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_si256(s.as_mut_ptr().add(off).cast::<__m256i>(), v) }
}

/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
unsafe fn is_zero_avx2(buf: &[u8]) -> bool {
    let n = buf.len();
    let mut i = 0;
    while i + 128 <= n {
        // SAFETY: AVX2 present (function contract); `i + 128 <= n = buf.len()`.
        let acc = unsafe {
            _mm256_or_si256(
                _mm256_or_si256(load(buf, i), load(buf, i + 32)),
                _mm256_or_si256(load(buf, i + 64), load(buf, i + 96)),
            )
        };
        if _mm256_testz_si256(acc, acc) == 0 {
            return false;
        }
        i += 128;
    }
    while i + 32 <= n {
        // SAFETY: AVX2 present; `i + 32 <= n`.
        let v = unsafe { load(buf, i) };
        if _mm256_testz_si256(v, v) == 0 {
            return false;
        }
        i += 32;
    }
    scalar::is_zero(&buf[i..])
}

/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
unsafe fn equal_avx2(a: &[u8], b: &[u8]) -> bool {
    assert_eq!(a.len(), b.len());
    let n = a.len();
    let mut i = 0;
    while i + 128 <= n {
        // SAFETY: AVX2 present (function contract); `i + 128 <= n` for both slices.
        let acc = unsafe {
            _mm256_or_si256(
                _mm256_or_si256(
                    _mm256_xor_si256(load(a, i), load(b, i)),
                    _mm256_xor_si256(load(a, i + 32), load(b, i + 32)),
                ),
                _mm256_or_si256(
                    _mm256_xor_si256(load(a, i + 64), load(b, i + 64)),
                    _mm256_xor_si256(load(a, i + 96), load(b, i + 96)),
                ),
            )
        };
        if _mm256_testz_si256(acc, acc) == 0 {
            return false;
        }
        i += 128;
    }
    while i + 32 <= n {
        // SAFETY: AVX2 present; `i + 32 <= n`.
        let x = unsafe { _mm256_xor_si256(load(a, i), load(b, i)) };
        if _mm256_testz_si256(x, x) == 0 {
            return false;
        }
        i += 32;
    }
    scalar::equal(&a[i..], &b[i..])
}

/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
unsafe fn xor_into_avx2(dst: &mut [u8], a: &[u8], b: &[u8]) {
    assert!(dst.len() == a.len() && a.len() == b.len());
    let n = dst.len();
    let mut i = 0;
    while i + 64 <= n {
        // SAFETY: AVX2 present; `i + 64 <= n` for all three slices (equal lengths asserted).
        unsafe {
            let x0 = _mm256_xor_si256(load(a, i), load(b, i));
            let x1 = _mm256_xor_si256(load(a, i + 32), load(b, i + 32));
            store(dst, i, x0);
            store(dst, i + 32, x1);
        }
        i += 64;
    }
    while i + 32 <= n {
        // SAFETY: AVX2 present; `i + 32 <= n`.
        unsafe { store(dst, i, _mm256_xor_si256(load(a, i), load(b, i))) };
        i += 32;
    }
    scalar::xor_into(&mut dst[i..], &a[i..], &b[i..]);
}

/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
unsafe fn xor_in_place_avx2(dst: &mut [u8], src: &[u8]) {
    assert_eq!(dst.len(), src.len());
    let n = dst.len();
    let mut i = 0;
    while i + 64 <= n {
        // SAFETY: AVX2 present; `i + 64 <= n` for both slices.
        unsafe {
            let x0 = _mm256_xor_si256(load(dst, i), load(src, i));
            let x1 = _mm256_xor_si256(load(dst, i + 32), load(src, i + 32));
            store(dst, i, x0);
            store(dst, i + 32, x1);
        }
        i += 64;
    }
    while i + 32 <= n {
        // SAFETY: AVX2 present; `i + 32 <= n`.
        unsafe { store(dst, i, _mm256_xor_si256(load(dst, i), load(src, i))) };
        i += 32;
    }
    scalar::xor_in_place(&mut dst[i..], &src[i..]);
}

/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
unsafe fn xor_zero_masks_avx2(a: &[u8], b: &[u8], masks: &mut [u32]) {
    assert_eq!(a.len(), b.len());
    let n = a.len();
    assert!(masks.len() >= n.div_ceil(32));
    let zero = _mm256_setzero_si256();
    let full = n / 32;
    for (k, m) in masks[..full].iter_mut().enumerate() {
        let i = k * 32;
        // SAFETY: AVX2 present; `i + 32 <= full * 32 <= n`.
        let x = unsafe { _mm256_xor_si256(load(a, i), load(b, i)) };
        *m = _mm256_movemask_epi8(_mm256_cmpeq_epi8(x, zero)) as u32;
    }
    if full * 32 < n {
        scalar::xor_zero_masks(&a[full * 32..], &b[full * 32..], &mut masks[full..]);
    }
}

/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
unsafe fn zero_masks_avx2(a: &[u8], masks: &mut [u32]) {
    let n = a.len();
    assert!(masks.len() >= n.div_ceil(32));
    let zero = _mm256_setzero_si256();
    let full = n / 32;
    for (k, m) in masks[..full].iter_mut().enumerate() {
        // SAFETY: AVX2 present; `k * 32 + 32 <= n`.
        let x = unsafe { load(a, k * 32) };
        *m = _mm256_movemask_epi8(_mm256_cmpeq_epi8(x, zero)) as u32;
    }
    if full * 32 < n {
        scalar::zero_masks(&a[full * 32..], &mut masks[full..]);
    }
}
