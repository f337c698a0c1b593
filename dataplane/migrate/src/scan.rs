//! Dirty-block tracking on the source: what the destination holds, and which blocks of the
//! image differ from it now.
//!
//! Owns [`DestView`] — the source's knowledge of the destination's image: either its exact
//! bytes (the snapshot of what earlier rounds sent, or a cached earlier version the
//! destination proved it holds by hash), or only a manifest of per-block XXH3-64 hashes the
//! destination sent — and [`DestView::scan`], one pass over the current image that yields the
//! dirty blocks with their new and old bytes and updates the view to the new content.
//!
//! Does not: read hypervisor dirty logs (tracking is by comparison, so it works for any
//! writer, at the cost of one read of the image per round), or code the blocks
//! ([`crate::patch`]).

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

/// The per-block hash used in manifests.
pub fn block_hash(block: &[u8]) -> u64 {
    dwcp_kernels::xxh3_64(block)
}

/// Per-block hashes of `data` (the manifest the destination sends).
pub fn manifest(data: &[u8], block_size: usize) -> Vec<u64> {
    data.chunks(block_size).map(block_hash).collect()
}

/// Manifest serialised as big-endian u64s.
pub fn manifest_bytes(m: &[u64]) -> Vec<u8> {
    m.iter().flat_map(|h| h.to_be_bytes()).collect()
}

/// Parses [`manifest_bytes`]; `None` if the length is not a multiple of 8.
pub fn parse_manifest(b: &[u8]) -> Option<Vec<u64>> {
    b.len().is_multiple_of(8).then(|| {
        b.chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
            .collect()
    })
}

/// Dirty blocks of one scan.
#[derive(Debug, Default)]
pub struct Dirty {
    /// Image length now.
    pub image_len: u64,
    /// Sorted dirty block indices.
    pub blocks: Vec<u64>,
    /// Their new bytes, end to end.
    pub new_compact: Vec<u8>,
    /// The destination's bytes of the same blocks (zero past its end), when known and not
    /// all zero.
    pub old_compact: Option<Arc<[u8]>>,
    /// The file said to hold the destination's bytes (the base cache) disagreed with the
    /// destination's manifest for a dirty block (or could not be read): `old_compact` is
    /// `None` for these blocks' patch, which then codes them without a baseline.
    pub bad_baseline: bool,
}

impl Dirty {
    /// Bytes of image data the dirty blocks cover.
    pub fn data_bytes(&self) -> u64 {
        self.new_compact.len() as u64
    }
}

/// What the source knows about the destination's image.
#[derive(Debug)]
pub struct DestView {
    block_size: usize,
    /// Exact bytes the destination holds (after the last applied round), when known.
    snapshot: Vec<u8>,
    /// Per-block hashes, when only those are known (before the first round).
    manifest: Option<Vec<u64>>,
    /// Length of the destination's image.
    dest_len: u64,
    /// Per-block hashes of the snapshot (after a scan).
    hashes: Vec<u64>,
    /// With a manifest: a file holding the destination's exact bytes (the source's base
    /// cache), read for the dirty blocks only (XOR baselines). Each block read is checked
    /// against the manifest; the first mismatch stops its use ([`DestView::base_mismatch`]).
    old_file: Option<File>,
    /// A block of `old_file` did not match the destination's manifest.
    base_mismatch: bool,
}

impl DestView {
    /// The destination holds nothing (or an empty image): every non-zero block is dirty.
    pub fn empty(block_size: usize) -> Self {
        DestView {
            block_size,
            snapshot: Vec::new(),
            manifest: None,
            dest_len: 0,
            hashes: Vec::new(),
            old_file: None,
            base_mismatch: false,
        }
    }

    /// The destination holds exactly `bytes`.
    pub fn known(block_size: usize, bytes: Vec<u8>) -> Self {
        let dest_len = bytes.len() as u64;
        DestView {
            block_size,
            snapshot: bytes,
            manifest: None,
            dest_len,
            hashes: Vec::new(),
            old_file: None,
            base_mismatch: false,
        }
    }

    /// The destination holds an image of `len` bytes whose blocks hash to `manifest`.
    pub fn from_manifest(block_size: usize, len: u64, manifest: Vec<u64>) -> Self {
        DestView {
            block_size,
            snapshot: Vec::new(),
            manifest: Some(manifest),
            dest_len: len,
            hashes: Vec::new(),
            old_file: None,
            base_mismatch: false,
        }
    }

    /// Like [`DestView::from_manifest`], and `file` holds the destination's exact bytes
    /// (the first scan reads the dirty blocks' old bytes from it for XOR deltas, without
    /// reading the whole file).
    pub fn from_manifest_and_file(
        block_size: usize,
        len: u64,
        manifest: Vec<u64>,
        file: File,
    ) -> Self {
        let mut v = Self::from_manifest(block_size, len, manifest);
        v.old_file = Some(file);
        v
    }

    /// True once a block of the file given to [`DestView::from_manifest_and_file`] did not
    /// match the destination's manifest (a corrupt or stale base cache): its bytes were not
    /// used as baselines from then on, and it should not be trusted again.
    pub fn base_mismatch(&self) -> bool {
        self.base_mismatch
    }

    /// Per-block XXH3-64 of the snapshot (empty before the first scan).
    pub fn hashes(&self) -> &[u64] {
        &self.hashes
    }

    /// Length of the destination's image as known (after the last scan: the image's).
    pub fn len(&self) -> u64 {
        self.dest_len
    }

    /// True for an empty image.
    pub fn is_empty(&self) -> bool {
        self.dest_len == 0
    }

    /// The final scan of a job, streamed: reads the image through a small buffer (no copy
    /// of the whole image in memory) and returns the dirty blocks and the image's
    /// XXH3-128. The view keeps no snapshot afterwards ([`DestView::hashes`] and the length
    /// stay), so no later round can follow.
    pub fn scan_final(&mut self, path: &Path) -> std::io::Result<(Dirty, u128)> {
        let mut all = None;
        let (_, h) =
            self.scan_final_parts(path, u64::MAX, u64::MAX, |d, _| -> std::io::Result<()> {
                all = Some(d);
                Ok(())
            })?;
        Ok((all.unwrap_or_default(), h))
    }

    /// [`DestView::scan_final`] cut into parts: `emit(part, end)` is called, in image order,
    /// with the dirty blocks of a stretch of the image ending at byte `end` as soon as they
    /// reach `first_bytes` of data for the first part, twice the previous part's limit for
    /// each next one up to `part_bytes` (and with the rest at the end; at least once). Every
    /// part's `image_len` is the image's length. A pipelined round encodes and moves a part
    /// while the next one is read. Returns the image length and XXH3-128; fails if the
    /// image's length changes while it is read (the source is paused for a final round).
    pub fn scan_final_parts<E: From<std::io::Error>>(
        &mut self,
        path: &Path,
        first_bytes: u64,
        part_bytes: u64,
        mut emit: impl FnMut(Dirty, u64) -> Result<(), E>,
    ) -> Result<(u64, u128), E> {
        let bs = self.block_size;
        let mut f = File::open(path)?;
        let image_len = f.metadata()?.len();
        // Windows of 8 MiB, smaller when parts are smaller (a part ends on a window).
        let step = (first_bytes.clamp(64 << 10, 8 << 20) as usize / bs * bs).max(bs);
        let mut buf = vec![0u8; step];
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        let mut hashes = Vec::new();
        let mut off = 0u64;
        let mut windows: Vec<Dirty> = Vec::new();
        let mut pending = 0u64;
        let mut emitted = false;
        let mut limit = first_bytes;
        let snapshot = std::mem::take(&mut self.snapshot);
        let manifest = self.manifest.take();
        let mut old_file = self.old_file.take();
        let dest_len = self.dest_len;
        loop {
            let n = read_full(&mut f, &mut buf)?;
            if n == 0 {
                break;
            }
            let chunk = &buf[..n];
            h.update(chunk);
            let first = hashes.len();
            hashes.extend(chunk.chunks(bs).map(block_hash));
            // The same comparison as `scan_read`, on a window of the image.
            let w = Self::compare_window(
                bs,
                off,
                chunk,
                &hashes[first..],
                &snapshot,
                manifest.as_deref(),
                old_file.as_ref(),
                dest_len,
            );
            if w.bad_baseline {
                // Not trusted again in this scan.
                old_file = None;
                self.base_mismatch = true;
            }
            pending += w.new_compact.len() as u64;
            windows.push(w);
            off += n as u64;
            if off > image_len {
                break;
            }
            if pending >= limit && off < image_len {
                emit(merge_windows(std::mem::take(&mut windows), image_len), off)?;
                emitted = true;
                pending = 0;
                limit = limit.saturating_mul(2).min(part_bytes.max(first_bytes));
            }
            if n < step {
                break;
            }
        }
        if off != image_len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the image changed length while read ({image_len} then {off} bytes)"),
            )
            .into());
        }
        if pending > 0 || !emitted {
            emit(merge_windows(windows, image_len), off)?;
        }
        self.hashes = hashes;
        self.dest_len = off;
        Ok((off, h.digest128()))
    }

    /// Dirty blocks of the image window `chunk` starting at byte `off` (a multiple of the
    /// block size), against `snapshot` bytes or `manifest` hashes (with `old_file` for old
    /// bytes).
    #[allow(clippy::too_many_arguments)]
    fn compare_window(
        bs: usize,
        off: u64,
        chunk: &[u8],
        hashes: &[u64],
        snapshot: &[u8],
        manifest: Option<&[u64]>,
        old_file: Option<&File>,
        dest_len: u64,
    ) -> Dirty {
        let k = dwcp_kernels::kernels();
        let mut out = Dirty::default();
        let mut old_compact: Vec<u8> = Vec::new();
        let mut old_nonzero = false;
        let have_bytes = manifest.is_none();
        let zeros = vec![0u8; bs];
        let mut old_buf = vec![0u8; bs];
        for (j, block) in chunk.chunks(bs).enumerate() {
            let start = off + (j * bs) as u64;
            let index = start / bs as u64;
            let held =
                start.min(dest_len) as usize..(start + block.len() as u64).min(dest_len) as usize;
            let dirty = if have_bytes {
                let old = &snapshot[held.clone()];
                !(k.equal(&block[..old.len()], old) && k.is_zero(&block[old.len()..]))
            } else if held.len() == block.len() {
                let m = manifest.unwrap_or(&[]);
                m.get(index as usize) != hashes.get(j)
            } else {
                !(held.is_empty() && k.is_zero(block))
            };
            if dirty {
                out.blocks.push(index);
                out.new_compact.extend_from_slice(block);
                if have_bytes {
                    let old = &snapshot[held.clone()];
                    old_nonzero |= !k.is_zero(old);
                    old_compact.extend_from_slice(old);
                    old_compact.extend_from_slice(&zeros[..block.len() - old.len()]);
                } else if let Some(f) = old_file.filter(|_| !out.bad_baseline) {
                    let old = &mut old_buf[..block.len()];
                    let want = manifest.and_then(|m| m.get(index as usize)).copied();
                    if read_checked(f, dest_len, start, old, held.len(), want) {
                        old_nonzero |= !k.is_zero(old);
                        old_compact.extend_from_slice(old);
                    } else {
                        out.bad_baseline = true;
                    }
                }
            }
        }
        if old_nonzero && !out.bad_baseline {
            out.old_compact = Some(Arc::from(old_compact));
        }
        out
    }

    /// Block size.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// The destination's image as the source knows it (exact once a scan ran).
    pub fn snapshot(&self) -> &[u8] {
        &self.snapshot
    }

    /// Takes the snapshot (for the base cache).
    pub fn into_snapshot(self) -> Vec<u8> {
        self.snapshot
    }

    /// Reads the image at `path` once and returns the blocks that differ from what the
    /// destination holds; the view then describes the image as read (the destination will
    /// hold exactly that once the patch is applied). A block written while it is read is
    /// taken as read; the next scan sees the difference.
    pub fn scan(&mut self, path: &Path) -> std::io::Result<Dirty> {
        let img = read_image(path, self.block_size)?;
        Ok(self.scan_read(img))
    }

    /// [`DestView::scan`] of an image already read (e.g. on another thread while the
    /// destination's manifest was on its way).
    pub fn scan_read(&mut self, img: ReadImage) -> Dirty {
        let bs = self.block_size;
        let k = dwcp_kernels::kernels();
        let ReadImage { bytes, hashes } = img;
        let len = bytes.len() as u64;
        let mut out = Dirty {
            image_len: len,
            ..Dirty::default()
        };
        let mut old_compact: Vec<u8> = Vec::new();
        let mut old_nonzero = false;
        let have_bytes = self.manifest.is_none();
        let old_file = self.old_file.take();
        let mut old_buf = vec![0u8; bs];
        // The destination's bytes past its end read as zero.
        let dest_len = self.dest_len;
        let zeros = vec![0u8; bs];
        for (j, block) in bytes.chunks(bs).enumerate() {
            let start = (j * bs) as u64;
            let index = j as u64;
            let held =
                start.min(dest_len) as usize..(start + block.len() as u64).min(dest_len) as usize;
            let dirty = if have_bytes {
                let old = &self.snapshot[held.clone()];
                !(k.equal(&block[..old.len()], old) && k.is_zero(&block[old.len()..]))
            } else if held.len() == block.len() {
                let m = self.manifest.as_deref().unwrap_or(&[]);
                let h = hashes.get(j).copied().unwrap_or_else(|| block_hash(block));
                m.get(j) != Some(&h)
            } else {
                // Partly or wholly past the destination's end: send unless it is zero
                // past an end the destination does not hold.
                !(held.is_empty() && k.is_zero(block))
            };
            if dirty {
                out.blocks.push(index);
                out.new_compact.extend_from_slice(block);
                if have_bytes {
                    let old = &self.snapshot[held.clone()];
                    old_nonzero |= !k.is_zero(old);
                    old_compact.extend_from_slice(old);
                    old_compact.extend_from_slice(&zeros[..block.len() - old.len()]);
                } else if let Some(f) = old_file.as_ref().filter(|_| !out.bad_baseline) {
                    let old = &mut old_buf[..block.len()];
                    let want = self.manifest.as_deref().and_then(|m| m.get(j)).copied();
                    if read_checked(f, dest_len, start, old, held.len(), want) {
                        old_nonzero |= !k.is_zero(old);
                        old_compact.extend_from_slice(old);
                    } else {
                        out.bad_baseline = true;
                    }
                }
            }
        }
        self.base_mismatch |= out.bad_baseline;
        if (have_bytes || old_file.is_some()) && old_nonzero && !out.bad_baseline {
            out.old_compact = Some(Arc::from(old_compact));
        }
        self.hashes = if hashes.len() as u64 == len.div_ceil(bs as u64) {
            hashes
        } else {
            bytes.chunks(bs).map(block_hash).collect()
        };
        self.snapshot = bytes;
        self.manifest = None;
        self.dest_len = len;
        out
    }
}

/// The windows of one part as one [`Dirty`] (old bytes zero-filled for windows without).
fn merge_windows(windows: Vec<Dirty>, image_len: u64) -> Dirty {
    let mut out = Dirty {
        image_len,
        ..Dirty::default()
    };
    // A window whose baseline could not be trusted: the whole part goes without one.
    let bad = windows.iter().any(|p| p.bad_baseline);
    out.bad_baseline = bad;
    let any_old = !bad && windows.iter().any(|p| p.old_compact.is_some());
    let mut old_compact = Vec::new();
    for p in windows {
        if any_old {
            match &p.old_compact {
                Some(o) => old_compact.extend_from_slice(o),
                None => old_compact.resize(old_compact.len() + p.new_compact.len(), 0),
            }
        }
        out.blocks.extend_from_slice(&p.blocks);
        out.new_compact.extend_from_slice(&p.new_compact);
    }
    if any_old {
        out.old_compact = Some(Arc::from(old_compact));
    }
    out
}

/// Reads the destination's old bytes of a block (`held` of them are inside its image, the
/// rest zero) from `f` into `old`; false if the read fails or the held bytes do not hash to
/// `want` (the destination's manifest entry), i.e. they must not serve as a baseline.
fn read_checked(
    f: &File,
    dest_len: u64,
    start: u64,
    old: &mut [u8],
    held: usize,
    want: Option<u64>,
) -> bool {
    if crate::patch::read_clipped(f, dest_len, start, old).is_err() {
        return false;
    }
    held == 0 || want == Some(block_hash(&old[..held]))
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(m) => n += m,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// An image read into memory with its per-block hashes.
#[derive(Debug, Default)]
pub struct ReadImage {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// XXH3-64 per block (empty if not computed).
    pub hashes: Vec<u64>,
}

/// Reads the image at `path` and hashes each block (the manifest comparison needs them).
pub fn read_image(path: &Path, block_size: usize) -> std::io::Result<ReadImage> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len() as usize;
    let mut bytes = Vec::with_capacity(len);
    // Read in 8 MiB steps and hash each step while it is hot in the cache.
    let step = (8 << 20) / block_size * block_size;
    let mut hashes = Vec::with_capacity(len.div_ceil(block_size));
    loop {
        let at = bytes.len();
        let n = (&mut f).take(step as u64).read_to_end(&mut bytes)?;
        if n == 0 {
            break;
        }
        // `take` reads a whole step unless the file ends: only the last block may be short.
        hashes.extend(bytes[at..].chunks(block_size).map(block_hash));
        if n < step {
            break;
        }
    }
    Ok(ReadImage { bytes, hashes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_finds_exactly_the_changed_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        let bs = 4096;
        let mut img: Vec<u8> = (0..100 * bs).map(|i| (i / 7) as u8).collect();
        img[10 * bs..11 * bs].fill(0);
        std::fs::write(&p, &img).unwrap();
        let mut v = DestView::empty(bs);
        let d = v.scan(&p).unwrap();
        assert_eq!(d.blocks.len(), 99, "zero block skipped");
        assert!(d.old_compact.is_none());
        img[5 * bs + 3] ^= 1;
        img[99 * bs] ^= 1;
        img.extend_from_slice(&[1, 2, 3]);
        std::fs::write(&p, &img).unwrap();
        let d = v.scan(&p).unwrap();
        assert_eq!(d.blocks, vec![5, 99, 100]);
        assert_eq!(d.image_len, img.len() as u64);
        let old = d.old_compact.unwrap();
        assert_eq!(old.len(), 2 * bs + 3);
        assert_eq!(&old[2 * bs..], &[0, 0, 0]);

        // A manifest of an earlier version finds the same blocks.
        let mut earlier = img.clone();
        earlier[50 * bs + 9] ^= 0xff;
        let mut m = DestView::from_manifest(bs, earlier.len() as u64, manifest(&earlier, bs));
        let d = m.scan(&p).unwrap();
        assert_eq!(d.blocks, vec![50]);
        assert!(d.old_compact.is_none());
        assert_eq!(m.snapshot(), &img[..]);
        assert_eq!(
            parse_manifest(&manifest_bytes(&[1, u64::MAX])),
            Some(vec![1, u64::MAX])
        );
    }
}
