//! LEB128 unsigned varints (7 bits per byte, low group first, high bit = continuation).
//!
//! Owns the encoding used for every length in the zero-run format and the HDE container.
//! It does not accept non-canonical input: an encoding longer than 10 bytes, or a 10th byte
//! carrying bits above bit 63, is an error (so a value has at most one accepted encoding
//! length bound and decoding can never overflow).

use thiserror::Error;

/// Longest encoding of a `u64`.
pub const MAX_LEN: usize = 10;

/// Why a varint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum VarintError {
    /// The input ended inside the varint that starts at `at`.
    #[error("varint at byte {at} is truncated")]
    Truncated {
        /// Offset of the varint's first byte.
        at: usize,
    },
    /// The varint at `at` does not fit in 64 bits.
    #[error("varint at byte {at} overflows 64 bits")]
    Overflow {
        /// Offset of the varint's first byte.
        at: usize,
    },
}

/// Number of bytes `put` writes for `v`.
#[inline]
pub fn encoded_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Appends `v` to `out`.
#[inline]
pub fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a varint from `buf` at `*pos`, advancing `*pos` past it.
#[inline]
pub fn get(buf: &[u8], pos: &mut usize) -> Result<u64, VarintError> {
    let at = *pos;
    let mut v: u64 = 0;
    for i in 0..MAX_LEN {
        let Some(&b) = buf.get(at + i) else {
            return Err(VarintError::Truncated { at });
        };
        if i == MAX_LEN - 1 && b > 1 {
            return Err(VarintError::Overflow { at });
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *pos = at + i + 1;
            return Ok(v);
        }
    }
    Err(VarintError::Overflow { at })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_edges() {
        for v in [
            0u64,
            1,
            127,
            128,
            255,
            16383,
            16384,
            u32::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put(&mut out, v);
            assert_eq!(out.len(), encoded_len(v), "len of {v}");
            let mut pos = 0;
            assert_eq!(get(&out, &mut pos), Ok(v));
            assert_eq!(pos, out.len());
        }
    }

    #[test]
    fn rejects_truncated_and_overflow() {
        let mut pos = 0;
        assert_eq!(
            get(&[0x80, 0x80], &mut pos),
            Err(VarintError::Truncated { at: 0 })
        );
        assert_eq!(get(&[], &mut pos), Err(VarintError::Truncated { at: 0 }));
        let mut too_big = vec![0xff; 9];
        too_big.push(0x02);
        assert_eq!(
            get(&too_big, &mut pos),
            Err(VarintError::Overflow { at: 0 })
        );
        assert_eq!(pos, 0);
    }
}
