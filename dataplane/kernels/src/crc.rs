//! CRC32C (Castagnoli, reflected polynomial 0x82F63B78, init and final XOR 0xFFFFFFFF), the
//! DWCP frame trailer checksum.
//!
//! Owns the scalar slice-by-8 table reference and the hardware path. The hardware path is the
//! `crc32c` crate, which detects SSE4.2 at run time and runs three interleaved `crc32`
//! instruction streams (recombined with shift tables); see docs/decisions/codecs.md for why
//! no in-house PCLMUL/VPCLMUL folding kernel exists. This module does not do XXH3 (that is
//! `xxhash-rust`, re-exported from the crate root).

const POLY: u32 = 0x82F6_3B78;

const fn make_tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut s = 1;
        while s < 8 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            s += 1;
        }
        i += 1;
    }
    t
}

static TABLES: [[u32; 256]; 8] = make_tables();

/// Scalar reference: continues the CRC32C `crc` (0 for a fresh checksum) over `data`.
pub fn crc32c_append_scalar(crc: u32, data: &[u8]) -> u32 {
    let t = &TABLES;
    let mut c = !crc;
    let mut chunks = data.chunks_exact(8);
    for ch in &mut chunks {
        let lo = u32::from_le_bytes([ch[0], ch[1], ch[2], ch[3]]) ^ c;
        let hi = u32::from_le_bytes([ch[4], ch[5], ch[6], ch[7]]);
        c = t[7][(lo & 0xff) as usize]
            ^ t[6][((lo >> 8) & 0xff) as usize]
            ^ t[5][((lo >> 16) & 0xff) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][(hi & 0xff) as usize]
            ^ t[2][((hi >> 8) & 0xff) as usize]
            ^ t[1][((hi >> 16) & 0xff) as usize]
            ^ t[0][(hi >> 24) as usize];
    }
    for &b in chunks.remainder() {
        c = (c >> 8) ^ t[0][((c ^ u32::from(b)) & 0xff) as usize];
    }
    !c
}

/// Hardware path (falls back to the crate's own software code without SSE4.2).
pub fn crc32c_append_hw(crc: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        // RFC 3720 B.4 and the usual check value.
        assert_eq!(crc32c_append_scalar(0, b"123456789"), 0xE306_9283);
        assert_eq!(crc32c_append_scalar(0, &[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c_append_scalar(0, &[0xffu8; 32]), 0x62A8_AB43);
        let inc: Vec<u8> = (0u8..32).collect();
        assert_eq!(crc32c_append_scalar(0, &inc), 0x46DD_794E);
        assert_eq!(crc32c_append_hw(0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn append_is_concatenation() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        let whole = crc32c_append_scalar(0, &data);
        let part = crc32c_append_scalar(crc32c_append_scalar(0, &data[..333]), &data[333..]);
        assert_eq!(whole, part);
    }
}
