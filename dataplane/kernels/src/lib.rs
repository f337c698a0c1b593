//! Runtime-dispatched data kernels for the DWCP dataplane: zero detection, XOR, zero-run
//! coding of XOR deltas, CRC32C, and the XXH3 hashes.
//!
//! Owns: the [`Kernels`] table of function pointers (a scalar reference set and, on x86_64
//! CPUs that have it, an AVX2 set), chosen once per process at first use of [`kernels()`]
//! (`DWCP_SIMD=scalar` forces the scalar set), the zero-run format ([`zrun`]), LEB128
//! varints ([`varint`]) and the checksum entry points. `unsafe` code lives only in the private
//! `avx2` module.
//!
//! Does not own: any framing or block-selection policy (that is `dwcp-proto` and `dwcp-hde`),
//! or an AVX-512 set (measured as not paying on this workload; see docs/perf-codecs.md).
//!
//! Every SIMD kernel produces exactly the bytes of its scalar reference (property tests in
//! `tests/simd_eq_scalar.rs`).
#![deny(unsafe_code)]

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2;
mod crc;
mod scalar;
pub mod varint;
pub mod zrun;

use std::fmt;
use std::sync::OnceLock;

pub use zrun::{LimitExceeded, ZrunError};

/// Environment variable that selects the kernel set: `scalar` forces the scalar references,
/// `auto` (or unset) uses the best set this CPU supports.
pub const SIMD_ENV: &str = "DWCP_SIMD";

/// A set of kernels. Cheap to copy; all methods are safe.
#[derive(Clone, Copy)]
pub struct Kernels {
    name: &'static str,
    is_zero: fn(&[u8]) -> bool,
    equal: fn(&[u8], &[u8]) -> bool,
    xor_into: fn(&mut [u8], &[u8], &[u8]),
    xor_in_place: fn(&mut [u8], &[u8]),
    xor_zero_masks: fn(&[u8], &[u8], &mut [u32]),
    zero_masks: fn(&[u8], &mut [u32]),
    crc32c_append: fn(u32, &[u8]) -> u32,
}

impl fmt::Debug for Kernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kernels").field("name", &self.name).finish()
    }
}

impl Kernels {
    /// The scalar reference set (table-driven CRC32C included).
    pub fn scalar() -> Self {
        Kernels {
            name: "scalar",
            is_zero: scalar::is_zero,
            equal: scalar::equal,
            xor_into: scalar::xor_into,
            xor_in_place: scalar::xor_in_place,
            xor_zero_masks: scalar::xor_zero_masks,
            zero_masks: scalar::zero_masks,
            crc32c_append: crc::crc32c_append_scalar,
        }
    }

    /// The best set this CPU supports, ignoring `DWCP_SIMD`.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if let Some(k) = avx2::kernels() {
            return k;
        }
        Kernels {
            name: "scalar+hwcrc",
            crc32c_append: crc::crc32c_append_hw,
            ..Self::scalar()
        }
    }

    /// The set selected by `DWCP_SIMD` (`scalar` or `auto`/unset); an unknown value falls back
    /// to [`Kernels::detect`].
    pub fn from_env() -> Self {
        match std::env::var(SIMD_ENV).as_deref() {
            Ok("scalar") => Self::scalar(),
            _ => Self::detect(),
        }
    }

    /// Name of the set: `scalar`, `scalar+hwcrc` or `avx2`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// True if every byte of `buf` is zero.
    #[inline]
    pub fn is_zero(&self, buf: &[u8]) -> bool {
        (self.is_zero)(buf)
    }

    /// True if `a == b` byte for byte (false if the lengths differ).
    #[inline]
    pub fn equal(&self, a: &[u8], b: &[u8]) -> bool {
        a.len() == b.len() && (self.equal)(a, b)
    }

    /// `dst = a ^ b`.
    ///
    /// # Panics
    /// If the three lengths differ.
    #[inline]
    pub fn xor_into(&self, dst: &mut [u8], a: &[u8], b: &[u8]) {
        assert!(
            dst.len() == a.len() && a.len() == b.len(),
            "xor_into: lengths differ"
        );
        (self.xor_into)(dst, a, b)
    }

    /// `dst ^= src`.
    ///
    /// # Panics
    /// If the lengths differ.
    #[inline]
    pub fn xor_in_place(&self, dst: &mut [u8], src: &[u8]) {
        assert_eq!(dst.len(), src.len(), "xor_in_place: lengths differ");
        (self.xor_in_place)(dst, src)
    }

    /// Appends the zero-run coding of `new ^ base` to `out` without materialising the delta;
    /// returns the bytes appended. If the coding would exceed `limit` bytes, appends nothing
    /// and returns [`LimitExceeded`] (early, without finishing the scan).
    ///
    /// # Panics
    /// If `new` and `base` lengths differ.
    pub fn xor_zrun_encode(
        &self,
        new: &[u8],
        base: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<usize, LimitExceeded> {
        zrun::encode_xor(self, new, base, out, limit)
    }

    /// Appends the zero-run coding of an already computed `delta` to `out` (same format and
    /// limit behaviour as [`Kernels::xor_zrun_encode`]).
    pub fn zrun_encode(
        &self,
        delta: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<usize, LimitExceeded> {
        zrun::encode_delta(self, delta, out, limit)
    }

    /// Decodes a zero-run payload against `base` into `out` (`out = base ^ delta`); both must
    /// have the decoded length. Returns the payload bytes consumed (the caller checks that the
    /// whole payload was used).
    pub fn zrun_decode_xor(
        &self,
        enc: &[u8],
        base: &[u8],
        out: &mut [u8],
    ) -> Result<usize, ZrunError> {
        zrun::decode(self, enc, Some(base), out)
    }

    /// Decodes a zero-run payload into the delta itself.
    pub fn zrun_decode(&self, enc: &[u8], out: &mut [u8]) -> Result<usize, ZrunError> {
        zrun::decode(self, enc, None, out)
    }

    /// CRC32C of `data`.
    #[inline]
    pub fn crc32c(&self, data: &[u8]) -> u32 {
        (self.crc32c_append)(0, data)
    }

    /// Continues a CRC32C: `crc32c_append(crc32c(a), b) == crc32c(a ++ b)`.
    #[inline]
    pub fn crc32c_append(&self, crc: u32, data: &[u8]) -> u32 {
        (self.crc32c_append)(crc, data)
    }
}

/// The process-wide kernel set, chosen on first call by [`Kernels::from_env`].
pub fn kernels() -> &'static Kernels {
    static K: OnceLock<Kernels> = OnceLock::new();
    K.get_or_init(Kernels::from_env)
}

/// CRC32C of `data` with the process-wide kernels (the DWCP frame trailer checksum).
#[inline]
pub fn crc32c(data: &[u8]) -> u32 {
    kernels().crc32c(data)
}

/// Continues a CRC32C with the process-wide kernels.
#[inline]
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    kernels().crc32c_append(crc, data)
}

/// True if every byte is zero (process-wide kernels).
#[inline]
pub fn is_zero(buf: &[u8]) -> bool {
    kernels().is_zero(buf)
}

/// XXH3-64 of `data`: the fast non-cryptographic checksum (see docs/perf-codecs.md for the
/// per-core comparison that chose it).
#[inline]
pub fn xxh3_64(data: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(data)
}

/// XXH3-128 of `data`: the block-dedup strong hash.
#[inline]
pub fn xxh3_128(data: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zrun_round_trip_small() {
        let base = vec![7u8; 100];
        let mut new = base.clone();
        new[3] = 1;
        new[50..60].fill(9);
        for k in [Kernels::scalar(), Kernels::detect()] {
            let mut enc = Vec::new();
            let n = k
                .xor_zrun_encode(&new, &base, &mut enc, usize::MAX)
                .unwrap();
            assert_eq!(n, enc.len());
            let mut out = vec![0u8; 100];
            assert_eq!(k.zrun_decode_xor(&enc, &base, &mut out), Ok(enc.len()));
            assert_eq!(out, new);
        }
    }

    #[test]
    fn limit_is_respected() {
        let a = vec![1u8; 4096];
        let b = vec![2u8; 4096];
        let mut out = vec![0xAA];
        let k = kernels();
        assert_eq!(
            k.xor_zrun_encode(&a, &b, &mut out, 100),
            Err(LimitExceeded { limit: 100 })
        );
        assert_eq!(out, vec![0xAA]);
        assert!(k.xor_zrun_encode(&a, &a, &mut out, 100).unwrap() <= 3);
    }
}
