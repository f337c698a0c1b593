//! One zstd stream across the parts of a pipelined round that moves as a stream
//! ([`crate::partstream`]): each part's patch (plain HDE containers) is the next stretch of
//! a single zstd stream that ends at a flush point, so the destination can decode a part as
//! soon as its stretch is whole, and later parts can refer to data of earlier ones.
//!
//! Why: patches of 1 MiB containers compressed one by one lose the redundancy that spans
//! containers. On the lab's 1 GiB ext4 image, the deduplicated non-zero blocks (747 MB) give
//! 215 MB as 1 MiB zstd -3 frames, 208 MB as one zstd -3 stream and 194 MB as one stream
//! with long-distance matching and a 64 MiB window (docs/perf-migrate.md).
//!
//! Owns: the source's encoder ([`PartCompressor`], kept for the whole round) and the
//! destination's decoder ([`PartDecompressor`], kept by the applier for the whole round).
//! Level 3 and above use long-distance matching with a [`WINDOW_LOG`] window; lower levels
//! keep zstd's default window. The session uses the stream at level 3 and up only (a link
//! that bounds the job): on the datacenter lab, at level 1, the one zstd thread took longer
//! than containers compressed in parallel (5.9-6.2 s against 5.0-5.5 s for a 1 GiB full
//! copy) for 1 % fewer bytes.
//!
//! Does not: frame, order or resend parts (a resumed stream resends the same compressed
//! stretches: the source keeps them, and the destination's decoder only ever takes whole
//! ones, in order), or compress the other rounds and modes (their containers carry zstd
//! frames of their own, [`crate::patch`]).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// Window of the stream at level 3 and above: 64 MiB (the destination's decoder holds this
/// much; a 128 MiB window saved 0.7 % more on the lab image).
pub const WINDOW_LOG: u32 = 26;

/// Where the encoder's output goes: the current part's file.
struct Slot(Option<BufWriter<File>>);

impl Write for Slot {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.0 {
            Some(w) => w.write(buf),
            None => Err(std::io::Error::other("no part file open")),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.0 {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

/// The source's encoder of a round's parts.
pub struct PartCompressor {
    enc: zstd::stream::write::Encoder<'static, Slot>,
}

impl std::fmt::Debug for PartCompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartCompressor").finish_non_exhaustive()
    }
}

impl PartCompressor {
    /// An encoder at `level`.
    pub fn new(level: i32) -> std::io::Result<Self> {
        let mut enc = zstd::stream::write::Encoder::new(Slot(None), level)?;
        if level >= 3 {
            enc.long_distance_matching(true)?;
            enc.window_log(WINDOW_LOG)?;
        }
        Ok(PartCompressor { enc })
    }

    /// Compresses `plain` into a new file `out` as the stream's next stretch (ending at a
    /// flush point); returns the compressed length.
    pub fn part(&mut self, plain: &[u8], out: &Path) -> std::io::Result<u64> {
        self.enc.get_mut().0 = Some(BufWriter::with_capacity(1 << 20, File::create(out)?));
        self.enc.write_all(plain)?;
        self.enc.flush()?;
        let w = self.enc.get_mut().0.take();
        if let Some(w) = w {
            w.into_inner().map_err(|e| e.into_error())?;
        }
        Ok(std::fs::metadata(out)?.len())
    }
}

/// The destination's decoder of a round's parts.
pub struct PartDecompressor {
    dec: zstd::stream::write::Decoder<'static, Vec<u8>>,
}

impl std::fmt::Debug for PartDecompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartDecompressor").finish_non_exhaustive()
    }
}

impl PartDecompressor {
    /// A decoder for a stream of at most a [`WINDOW_LOG`] window.
    pub fn new() -> std::io::Result<Self> {
        let mut dec = zstd::stream::write::Decoder::new(Vec::new())?;
        dec.window_log_max(WINDOW_LOG)?;
        Ok(PartDecompressor { dec })
    }

    /// The plain bytes of the next part from its whole compressed stretch (in a buffer the
    /// decoder reuses for the next part: no regrowing per part).
    pub fn part(&mut self, stretch: &[u8]) -> std::io::Result<&[u8]> {
        self.dec.get_mut().clear();
        self.dec.write_all(stretch)?;
        self.dec.flush()?;
        Ok(self.dec.get_mut())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parts compressed as one stream decode part by part to exactly their bytes, later
    /// parts referring to earlier ones (a repeated part costs almost nothing), at level 1
    /// and 3; a stretch decoded out of order is refused or differs.
    #[test]
    fn parts_decode_one_by_one_in_order() {
        let d = tempfile::tempdir().unwrap();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let random: Vec<u8> = (0..300_000).map(|_| next() as u8).collect();
        let text: Vec<u8> = b"block delta page "
            .iter()
            .cycle()
            .take(100_000)
            .copied()
            .collect();
        let parts = [random.clone(), text, Vec::new(), random, vec![7u8; 10]];
        for level in [1, 3] {
            let mut c = PartCompressor::new(level).unwrap();
            let mut stretches = Vec::new();
            for (i, p) in parts.iter().enumerate() {
                let out = d.path().join(format!("z{i}"));
                let z = c.part(p, &out).unwrap();
                let s = std::fs::read(&out).unwrap();
                assert_eq!(z, s.len() as u64);
                stretches.push(s);
            }
            assert!(
                stretches[3].len() < 30_000,
                "a repeat of part 0 refers to it: {} B",
                stretches[3].len()
            );
            let mut dd = PartDecompressor::new().unwrap();
            for (i, s) in stretches.iter().enumerate() {
                assert_eq!(
                    dd.part(s).unwrap(),
                    &parts[i][..],
                    "part {i} at level {level}"
                );
            }
            let mut fresh = PartDecompressor::new().unwrap();
            let got = fresh.part(&stretches[3]);
            assert!(
                got.is_err() || got.unwrap() != &parts[3][..],
                "out of order"
            );
        }
    }
}
