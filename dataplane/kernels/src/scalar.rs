//! Scalar reference kernels: plain, obviously-correct Rust that every SIMD kernel must match
//! byte for byte (the property tests compare them).
//!
//! Owns the portable fallback used when no SIMD path is detected or `DWCP_SIMD=scalar` is set.
//! It does not try to be fast beyond what the compiler does by itself.

/// True if every byte of `buf` is zero.
pub fn is_zero(buf: &[u8]) -> bool {
    buf.iter().all(|&b| b == 0)
}

/// True if `a == b` (lengths checked by the caller).
pub fn equal(a: &[u8], b: &[u8]) -> bool {
    a.iter().zip(b).all(|(x, y)| x == y)
}

/// `dst[i] = a[i] ^ b[i]`; the three lengths are checked by the caller.
pub fn xor_into(dst: &mut [u8], a: &[u8], b: &[u8]) {
    for ((d, x), y) in dst.iter_mut().zip(a).zip(b) {
        *d = x ^ y;
    }
}

/// `dst[i] ^= src[i]`; the lengths are checked by the caller.
pub fn xor_in_place(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= s;
    }
}

/// For each 32-byte chunk `k` of `a ^ b`, bit `i` of `masks[k]` is set when byte `32k + i` of
/// the XOR is zero. Bits past the end of the input are clear. `masks.len()` is checked by the
/// caller to be at least `a.len().div_ceil(32)`.
pub fn xor_zero_masks(a: &[u8], b: &[u8], masks: &mut [u32]) {
    for ((m, ca), cb) in masks.iter_mut().zip(a.chunks(32)).zip(b.chunks(32)) {
        let mut bits = 0u32;
        for (i, (x, y)) in ca.iter().zip(cb).enumerate() {
            bits |= u32::from(x == y) << i;
        }
        *m = bits;
    }
}

/// Like [`xor_zero_masks`] for `a` itself (bit set where the byte is zero).
pub fn zero_masks(a: &[u8], masks: &mut [u32]) {
    for (m, ca) in masks.iter_mut().zip(a.chunks(32)) {
        let mut bits = 0u32;
        for (i, x) in ca.iter().enumerate() {
            bits |= u32::from(*x == 0) << i;
        }
        *m = bits;
    }
}
