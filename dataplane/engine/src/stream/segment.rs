//! The segment: the object the stream carrier moves for each stretch of the stream.
//!
//! Owns the segment layout — a 16-byte prefix `b"DWSG"`, flags (u32 BE: bit 0 END, bit 1
//! ABORT), sequence number (u64 BE), then the stream bytes; the prefix is covered by the
//! object hash — and the connection id of segment `seq` (`seq + 1`, never 0). Does not: move
//! segments (the carrier in [`super`] does) or parse DWCP frames (`dwcp_proto` does, for the
//! engine's connection table).

use super::StreamError;

/// Segment prefix magic.
pub const SEGMENT_MAGIC: [u8; 4] = *b"DWSG";
/// Segment prefix length.
pub const PREFIX_LEN: usize = 16;
/// Flag: last segment of the stream.
pub const FLAG_END: u32 = 1;
/// Flag: the sending side's input failed; the stream is incomplete.
pub const FLAG_ABORT: u32 = 2;

pub(super) fn seq_conn(seq: u64) -> u32 {
    // conn id 0 is never used; the stream length is bounded by 2^32 - 1 segments.
    (seq as u32).wrapping_add(1).max(1)
}

/// Builds the segment prefix.
pub fn segment_prefix(flags: u32, seq: u64) -> [u8; PREFIX_LEN] {
    let mut p = [0u8; PREFIX_LEN];
    p[..4].copy_from_slice(&SEGMENT_MAGIC);
    p[4..8].copy_from_slice(&flags.to_be_bytes());
    p[8..].copy_from_slice(&seq.to_be_bytes());
    p
}

/// Parses a segment: (flags, body).
pub fn parse_segment(seq: u64, seg: &[u8]) -> Result<(u32, &[u8]), StreamError> {
    let bad = |reason| StreamError::Malformed { seq, reason };
    if seg.len() < PREFIX_LEN {
        return Err(bad("shorter than its prefix"));
    }
    if seg[..4] != SEGMENT_MAGIC {
        return Err(bad("bad magic"));
    }
    let flags = u32::from_be_bytes([seg[4], seg[5], seg[6], seg[7]]);
    if flags & !(FLAG_END | FLAG_ABORT) != 0 {
        return Err(bad("unknown flags"));
    }
    let mut s = [0u8; 8];
    s.copy_from_slice(&seg[8..16]);
    if u64::from_be_bytes(s) != seq {
        return Err(bad("sequence number differs from the connection's"));
    }
    Ok((flags, &seg[PREFIX_LEN..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_round_trip_and_rejections() {
        let mut seg = segment_prefix(FLAG_END, 7).to_vec();
        seg.extend_from_slice(b"abc");
        let (f, body) = parse_segment(7, &seg).unwrap();
        assert_eq!((f, body), (FLAG_END, &b"abc"[..]));
        assert!(parse_segment(8, &seg).is_err(), "wrong sequence number");
        assert!(parse_segment(7, &seg[..10]).is_err(), "short");
        let mut bad = seg.clone();
        bad[0] ^= 1;
        assert!(parse_segment(7, &bad).is_err(), "magic");
        let mut bad = seg;
        bad[7] |= 8;
        assert!(parse_segment(7, &bad).is_err(), "unknown flag");
    }

    #[test]
    fn conn_ids_never_zero() {
        assert_eq!(seq_conn(0), 1);
        assert_eq!(seq_conn(41), 42);
        assert_ne!(seq_conn(u64::from(u32::MAX)), 0);
    }
}
