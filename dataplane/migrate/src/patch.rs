//! The patch object of one round: which blocks changed, and their new bytes coded with HDE
//! against the bytes the destination holds for the same blocks.
//!
//! Owns the patch format, [`build`] (source side) and [`apply`] (destination side). Does not
//! decide which blocks are dirty ([`crate::scan`]) or move the patch ([`crate::Mover`]).
//!
//! ## Compaction
//! The dirty blocks `d_0 < d_1 < ...` are laid end to end into a *compacted* object
//! `C = block(d_0) ‖ block(d_1) ‖ ...`; the destination's current bytes of the same blocks form
//! the compacted baseline `B` (zero where the destination's image is shorter). `C` is coded
//! with one HDE [`Encoder`] (Zero, Dup of an earlier dirty block, XorDelta against `B`,
//! zstd, Raw) in containers of up to [`CONTAINER_BLOCKS`] blocks, with `B` as baseline id 1.
//! So both sides hold only the dirty blocks in memory, not the whole image, and a block
//! that changed by a few bytes costs a few bytes. Only the last block of the image may be
//! short, so only the last block of `C` may be short, as HDE requires.
//!
//! ## Format (all integers unsigned LEB128 varints unless noted)
//! ```text
//! magic        8 bytes "DWCPPAT2" (version 1, per-block zstd inside HDE, is refused)
//! block_size   64 ..= 1 MiB
//! image_len    length of the image after this patch (the destination truncates/extends)
//! round        1-based round number
//! baseline     0 = no XorDelta records (the destination's old bytes are not used),
//!              1 = XorDelta records refer to the compacted baseline (HDE baseline id 1)
//! runs         number of runs, then per run: gap (blocks since the end of the previous run),
//!              length (blocks, >= 1)
//! containers   number of HDE containers, then per container: stored length (varint), kind
//!              (1 byte: 0 = the HDE container as is, 1 = a zstd frame holding it, whose
//!              content size is in the frame header), stored bytes
//! check        8 bytes, big-endian XXH3-64 of C (checked before anything is written)
//! ```
//! The file ends right after `check` (else [`PatchError::Trailing`]).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use dwcp_hde::{Baseline, Decoder, DecoderConfig, Encoder, EncoderConfig, Policy, Stats};
use dwcp_kernels::varint;
use thiserror::Error;

/// Patch file magic.
pub const MAGIC: &[u8; 8] = b"DWCPPAT2";
/// Container kind byte: the HDE container as is.
pub const KIND_PLAIN: u8 = 0;
/// Container kind byte: a zstd frame holding the HDE container.
pub const KIND_ZSTD: u8 = 1;
/// Blocks per HDE container (1 MiB at 4 KiB blocks).
pub const CONTAINER_BLOCKS: usize = 256;
/// HDE baseline id of the compacted baseline.
pub const BASELINE_ID: u32 = 1;

/// Errors building or applying a patch.
#[derive(Debug, Error)]
pub enum PatchError {
    /// Writing the patch or reading/writing the image failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The HDE encoder refused its input (a caller error).
    #[error("encoding block {index}")]
    Encode {
        /// Compacted block index.
        index: u64,
        /// Cause.
        #[source]
        source: dwcp_hde::EncodeError,
    },
    /// An HDE container of the patch is invalid.
    #[error("container {index} of the patch")]
    Decode {
        /// Container number.
        index: usize,
        /// Cause.
        #[source]
        source: dwcp_hde::DecodeError,
    },
    /// The patch is malformed.
    #[error("malformed patch: {what} at byte {at}")]
    Malformed {
        /// Which rule.
        what: &'static str,
        /// Byte offset.
        at: usize,
    },
    /// The decoded blocks do not hash to the patch's check value.
    #[error("patch content check failed: expected {expected:016x}, decoded {got:016x}")]
    Check {
        /// From the patch.
        expected: u64,
        /// Of the decoded bytes.
        got: u64,
    },
    /// Bytes after the check value.
    #[error("{0} bytes after the end of the patch")]
    Trailing(usize),
    /// Inputs that do not describe a patch (unsorted blocks, wrong lengths).
    #[error("invalid patch input: {0}")]
    Input(&'static str),
}

/// What [`build`] produced.
#[derive(Debug, Clone, Default)]
pub struct BuildStats {
    /// Dirty blocks.
    pub blocks: u64,
    /// Image bytes they cover.
    pub data_bytes: u64,
    /// Patch bytes written.
    pub patch_bytes: u64,
    /// HDE counters per block kind.
    pub hde: Stats,
    /// Containers stored as zstd frames, their HDE bytes and their stored bytes.
    pub zstd_containers: u64,
    /// HDE bytes of the containers stored compressed.
    pub zstd_in: u64,
    /// Their stored (zstd) bytes.
    pub zstd_out: u64,
}

/// Block `index`'s length in an image of `image_len` bytes.
pub fn block_len(index: u64, block_size: usize, image_len: u64) -> usize {
    let off = index * block_size as u64;
    image_len.saturating_sub(off).min(block_size as u64) as usize
}

/// Codes `dirty` (sorted, unique block indices of an image of `image_len` bytes) whose new
/// bytes are `new_compact` (the blocks end to end) and whose bytes on the destination are
/// `old_compact` (same length, or `None` when the destination's bytes are unknown or all
/// zero), and writes the patch to `out`.
#[allow(clippy::too_many_arguments)]
pub fn build(
    out: &mut dyn Write,
    block_size: usize,
    image_len: u64,
    round: u32,
    dirty: &[u64],
    new_compact: &[u8],
    old_compact: Option<Arc<[u8]>>,
    policy: Policy,
) -> Result<BuildStats, PatchError> {
    let expected: u64 = dirty
        .iter()
        .map(|&i| block_len(i, block_size, image_len) as u64)
        .sum();
    if expected != new_compact.len() as u64 {
        return Err(PatchError::Input("new bytes do not match the dirty blocks"));
    }
    if dirty.windows(2).any(|w| w[0] >= w[1]) {
        return Err(PatchError::Input("dirty blocks not sorted and unique"));
    }
    if dirty
        .iter()
        .any(|&i| block_len(i, block_size, image_len) == 0)
    {
        return Err(PatchError::Input("dirty block beyond the image"));
    }
    if old_compact
        .as_ref()
        .is_some_and(|o| o.len() != new_compact.len())
    {
        return Err(PatchError::Input("baseline length differs"));
    }
    let io = |source| PatchError::Io {
        what: "writing the patch",
        source,
    };
    let mut head = Vec::with_capacity(64 + dirty.len());
    head.extend_from_slice(MAGIC);
    varint::put(&mut head, block_size as u64);
    varint::put(&mut head, image_len);
    varint::put(&mut head, u64::from(round));
    varint::put(&mut head, u64::from(old_compact.is_some()));
    let runs = runs(dirty);
    varint::put(&mut head, runs.len() as u64);
    let mut end = 0u64;
    for &(start, len) in &runs {
        varint::put(&mut head, start - end);
        varint::put(&mut head, len);
        end = start + len;
    }
    let containers = new_compact.len().div_ceil(CONTAINER_BLOCKS * block_size);
    varint::put(&mut head, containers as u64);
    out.write_all(&head).map_err(io)?;
    let mut written = head.len() as u64;

    let level = match policy {
        Policy::Datacenter => None,
        Policy::Internet { level } | Policy::Hybrid { level, .. } => Some(level),
    };
    let make_enc = || -> Result<Encoder, PatchError> {
        let mut enc = Encoder::new(EncoderConfig {
            block_size,
            policy: Policy::Datacenter,
        })
        .map_err(|source| PatchError::Encode { index: 0, source })?;
        if let Some(old) = &old_compact {
            let b = Baseline::new(BASELINE_ID, old.clone())
                .map_err(|source| PatchError::Encode { index: 0, source })?;
            enc.set_baseline(Some(b));
        }
        Ok(enc)
    };
    // Containers `first..` coded by `enc`, each as varint length, kind, stored bytes, into
    // `sink`; returns (containers, HDE bytes, stored bytes) of the zstd-stored ones.
    let encode = |enc: &mut Encoder,
                  first: usize,
                  chunks: &[&[u8]],
                  sink: &mut Sink<'_>|
     -> Result<(u64, u64, u64), PatchError> {
        let mut buf = Vec::with_capacity(CONTAINER_BLOCKS * block_size + 1024);
        let mut len_buf = Vec::with_capacity(11);
        let mut zc = level
            .map(zstd::bulk::Compressor::new)
            .transpose()
            .map_err(|source| PatchError::Io {
                what: "starting zstd",
                source,
            })?;
        let mut z = Vec::new();
        let mut zs = (0u64, 0u64, 0u64);
        for (c, chunk) in chunks.iter().enumerate() {
            buf.clear();
            let index = ((first + c) * CONTAINER_BLOCKS) as u64;
            enc.encode_chunk(index, chunk, &mut buf)
                .map_err(|source| PatchError::Encode { index, source })?;
            let mut stored: &[u8] = &buf;
            let mut kind = KIND_PLAIN;
            if let Some(zc) = &mut zc {
                z.clear();
                z.reserve(zstd::zstd_safe::compress_bound(buf.len()));
                zc.compress_to_buffer(&buf, &mut z)
                    .map_err(|source| PatchError::Io {
                        what: "zstd",
                        source,
                    })?;
                if z.len() + 8 < buf.len() {
                    stored = &z;
                    kind = KIND_ZSTD;
                    zs.0 += 1;
                    zs.1 += buf.len() as u64;
                    zs.2 += z.len() as u64;
                }
            }
            len_buf.clear();
            varint::put(&mut len_buf, stored.len() as u64);
            len_buf.push(kind);
            sink(&len_buf, stored)?;
        }
        Ok(zs)
    };
    // Two encoders on two cores for large patches: the second half's containers go to
    // memory and follow the first half's. Each encoder finds duplicates within its half
    // only (the decoder decodes in order, so a Dup of an earlier block of the same half is
    // always resolvable).
    let chunks: Vec<&[u8]> = new_compact.chunks(CONTAINER_BLOCKS * block_size).collect();
    let split = if chunks.len() >= PARALLEL_MIN_CONTAINERS {
        chunks.len() / 2
    } else {
        chunks.len()
    };
    let (front, back) = chunks.split_at(split);
    let mut hde = Stats::default();
    let mut zs = (0u64, 0u64, 0u64);
    std::thread::scope(|s| -> Result<(), PatchError> {
        let back_job = (!back.is_empty()).then(|| {
            s.spawn(|| -> Result<Coded, PatchError> {
                let mut enc = make_enc()?;
                let mut mem = Vec::new();
                let z = encode(&mut enc, split, back, &mut |l, b| {
                    mem.extend_from_slice(l);
                    mem.extend_from_slice(b);
                    Ok(())
                })?;
                Ok((mem, *enc.stats(), z))
            })
        });
        let mut enc = make_enc()?;
        let z = encode(&mut enc, 0, front, &mut |l, b| {
            out.write_all(l).map_err(io)?;
            out.write_all(b).map_err(io)?;
            written += (l.len() + b.len()) as u64;
            Ok(())
        })?;
        zs = z;
        hde.merge(enc.stats());
        if let Some(j) = back_job {
            let (mem, st, z) = j
                .join()
                .map_err(|_| PatchError::Input("encoder thread panicked"))??;
            out.write_all(&mem).map_err(io)?;
            written += mem.len() as u64;
            hde.merge(&st);
            zs = (zs.0 + z.0, zs.1 + z.1, zs.2 + z.2);
        }
        Ok(())
    })?;
    out.write_all(&dwcp_kernels::xxh3_64(new_compact).to_be_bytes())
        .map_err(io)?;
    written += 8;
    Ok(BuildStats {
        blocks: dirty.len() as u64,
        data_bytes: new_compact.len() as u64,
        patch_bytes: written,
        hde,
        zstd_containers: zs.0,
        zstd_in: zs.1,
        zstd_out: zs.2,
    })
}

/// The second encoder's output: its containers, HDE counters, zstd counters.
type Coded = (Vec<u8>, Stats, (u64, u64, u64));

/// Receives each coded container as (varint length, bytes).
type Sink<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), PatchError> + 'a;

/// Patches with at least this many containers are encoded on two threads.
const PARALLEL_MIN_CONTAINERS: usize = 8;

/// Sorted unique indices as `(start, len)` runs.
fn runs(sorted: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &i in sorted {
        match out.last_mut() {
            Some((s, l)) if *s + *l == i => *l += 1,
            _ => out.push((i, 1)),
        }
    }
    out
}

/// A parsed patch header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Block size.
    pub block_size: usize,
    /// Image length after the patch.
    pub image_len: u64,
    /// Round number.
    pub round: u32,
    /// XorDelta records refer to the destination's old bytes.
    pub uses_baseline: bool,
    /// Dirty block runs `(start, len)`.
    pub runs: Vec<(u64, u64)>,
}

impl Header {
    /// Number of dirty blocks.
    pub fn blocks(&self) -> u64 {
        self.runs.iter().map(|r| r.1).sum()
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn varint(&mut self, what: &'static str) -> Result<u64, PatchError> {
        varint::get(self.buf, &mut self.pos)
            .map_err(|_| PatchError::Malformed { what, at: self.pos })
    }
    fn bytes(&mut self, n: u64, what: &'static str) -> Result<&[u8], PatchError> {
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .filter(|&e| e <= self.buf.len())
            .ok_or(PatchError::Malformed { what, at: self.pos })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
}

/// Parses the header; returns it and the offset of the container section.
pub fn parse_header(patch: &[u8]) -> Result<(Header, usize), PatchError> {
    let mut r = Reader { buf: patch, pos: 0 };
    if r.bytes(8, "magic")? != MAGIC {
        return Err(PatchError::Malformed {
            what: "magic",
            at: 0,
        });
    }
    let bs = r.varint("block size")?;
    if !(64..=1 << 20).contains(&bs) {
        return Err(PatchError::Malformed {
            what: "block size",
            at: r.pos,
        });
    }
    let block_size = bs as usize;
    let image_len = r.varint("image length")?;
    let round = u32::try_from(r.varint("round")?).map_err(|_| PatchError::Malformed {
        what: "round",
        at: r.pos,
    })?;
    let uses_baseline = match r.varint("baseline")? {
        0 => false,
        1 => true,
        _ => {
            return Err(PatchError::Malformed {
                what: "baseline kind",
                at: r.pos,
            });
        }
    };
    let n_runs = r.varint("run count")?;
    let image_blocks = image_len.div_ceil(bs);
    // Each run takes at least 2 bytes: bound the allocation by the input.
    if n_runs > (patch.len() / 2) as u64 {
        return Err(PatchError::Malformed {
            what: "run count",
            at: r.pos,
        });
    }
    let mut runs = Vec::with_capacity(n_runs as usize);
    let mut end = 0u64;
    for _ in 0..n_runs {
        let gap = r.varint("run gap")?;
        let len = r.varint("run length")?;
        let start = end.checked_add(gap);
        let stop = start.and_then(|s| s.checked_add(len));
        match (start, stop) {
            (Some(s), Some(e)) if len > 0 && (gap > 0 || runs.is_empty()) && e <= image_blocks => {
                runs.push((s, len));
                end = e;
            }
            _ => {
                return Err(PatchError::Malformed {
                    what: "run outside the image",
                    at: r.pos,
                });
            }
        }
    }
    Ok((
        Header {
            block_size,
            image_len,
            round,
            uses_baseline,
            runs,
        },
        r.pos,
    ))
}

/// What [`apply`] did.
#[derive(Debug, Clone, Default)]
pub struct ApplyStats {
    /// Round of the patch.
    pub round: u32,
    /// Blocks written.
    pub blocks: u64,
    /// Image bytes written.
    pub data_bytes: u64,
    /// Image length after the patch.
    pub image_len: u64,
    /// HDE counters.
    pub hde: Stats,
}

/// A decoded, checked patch: the header and the dirty blocks' new bytes end to end.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The header (block size, image length, runs).
    pub header: Header,
    /// New bytes of the dirty blocks, end to end (the compacted object).
    pub compact: Vec<u8>,
    /// HDE counters.
    pub hde: Stats,
}

impl Decoded {
    /// The runs with their byte ranges in [`Decoded::compact`]: `(first block, blocks,
    /// byte range)`.
    pub fn runs(&self) -> impl Iterator<Item = (u64, u64, std::ops::Range<usize>)> + '_ {
        let bs = self.header.block_size;
        let len = self.header.image_len;
        let mut at = 0usize;
        self.header.runs.iter().map(move |&(s, l)| {
            let n: usize = (s..s + l).map(|i| block_len(i, bs, len)).sum();
            let r = at..at + n;
            at += n;
            (s, l, r)
        })
    }
}

/// Decodes `patch` and checks it completely; nothing is written. When the patch carries XOR
/// deltas, `base(offset, buf)` must fill `buf` with the destination's current bytes at
/// `offset` (zero past its end).
pub fn decode(
    patch: &[u8],
    base: &mut dyn FnMut(u64, &mut [u8]) -> std::io::Result<()>,
) -> Result<Decoded, PatchError> {
    let (h, mut pos) = parse_header(patch)?;
    let bs = h.block_size;
    let compact_len: u64 = h
        .runs
        .iter()
        .flat_map(|&(s, l)| s..s + l)
        .map(|i| block_len(i, bs, h.image_len) as u64)
        .sum();
    let mut dec = Decoder::new(DecoderConfig {
        max_object_len: compact_len.max(1),
        max_block_size: bs,
    })
    .map_err(|source| PatchError::Decode { index: 0, source })?;
    if h.uses_baseline {
        let mut b = vec![0u8; compact_len as usize];
        let mut at = 0usize;
        for &(s, l) in &h.runs {
            let n: usize = (s..s + l).map(|i| block_len(i, bs, h.image_len)).sum();
            base(s * bs as u64, &mut b[at..at + n]).map_err(|source| PatchError::Io {
                what: "reading the destination's old blocks",
                source,
            })?;
            at += n;
        }
        dec.add_baseline(BASELINE_ID, Arc::from(b));
    }
    let mut r = Reader { buf: patch, pos };
    let n_containers = r.varint("container count")?;
    // An HDE container holds at most CONTAINER_BLOCKS blocks, raw at worst, plus headers.
    let max_container = CONTAINER_BLOCKS * bs + CONTAINER_BLOCKS * 16 + 4096;
    let mut zd = zstd::bulk::Decompressor::new().map_err(|source| PatchError::Io {
        what: "starting zstd",
        source,
    })?;
    let mut plain = Vec::with_capacity(max_container);
    for index in 0..n_containers as usize {
        let len = r.varint("container length")?;
        let at = r.pos;
        let kind = r.bytes(1, "container kind")?[0];
        let c = r.bytes(len, "container")?;
        let c = match kind {
            KIND_PLAIN => c,
            KIND_ZSTD => {
                plain.clear();
                zd.decompress_to_buffer(c, &mut plain)
                    .map_err(|_| PatchError::Malformed {
                        what: "zstd container",
                        at,
                    })?;
                &plain[..]
            }
            _ => {
                return Err(PatchError::Malformed {
                    what: "container kind",
                    at,
                });
            }
        };
        dec.decode(c)
            .map_err(|source| PatchError::Decode { index, source })?;
    }
    let check = r.bytes(8, "check")?;
    let expected = u64::from_be_bytes(check.try_into().unwrap_or([0; 8]));
    pos = r.pos;
    if pos != patch.len() {
        return Err(PatchError::Trailing(patch.len() - pos));
    }
    if dec.object().len() as u64 != compact_len {
        return Err(PatchError::Malformed {
            what: "containers do not cover the dirty blocks",
            at: pos,
        });
    }
    let got = dwcp_kernels::xxh3_64(dec.object());
    if got != expected {
        return Err(PatchError::Check { expected, got });
    }
    let hde = *dec.stats();
    Ok(Decoded {
        header: h,
        compact: dec.take_object(),
        hde,
    })
}

/// Reads `buf.len()` bytes of `f` at `off`; bytes at or past `len` (or past the file's end)
/// read as zero.
pub fn read_clipped(f: &File, len: u64, off: u64, buf: &mut [u8]) -> std::io::Result<()> {
    let avail = len.saturating_sub(off).min(buf.len() as u64) as usize;
    let mut done = 0usize;
    while done < avail {
        match f.read_at(&mut buf[done..avail], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf[done..].fill(0);
    Ok(())
}

/// Applies `patch` to the image in `target` (opened read-write). Everything is decoded and
/// checked before the first write; an invalid patch changes nothing. Does not sync.
pub fn apply(patch: &[u8], target: &File) -> Result<ApplyStats, PatchError> {
    let old_len = target
        .metadata()
        .map_err(|source| PatchError::Io {
            what: "reading the image length",
            source,
        })?
        .len();
    let d = decode(patch, &mut |off, buf| {
        read_clipped(target, old_len, off, buf)
    })?;
    let wio = |source| PatchError::Io {
        what: "writing the image",
        source,
    };
    let bs = d.header.block_size as u64;
    target.set_len(d.header.image_len).map_err(wio)?;
    for (s, _, r) in d.runs() {
        target.write_all_at(&d.compact[r], s * bs).map_err(wio)?;
    }
    Ok(ApplyStats {
        round: d.header.round,
        blocks: d.header.blocks(),
        data_bytes: d.compact.len() as u64,
        image_len: d.header.image_len,
        hde: d.hde,
    })
}

/// Default zstd policy for patches: try zstd on blocks that look compressible (level 3).
pub const DEFAULT_POLICY: Policy = Policy::Hybrid {
    level: 3,
    max_entropy_bits: 7.0,
};

/// Round-trip time below which a link counts as a datacenter link for [`policy_for_link`].
pub const DATACENTER_RTT: std::time::Duration = std::time::Duration::from_millis(2);

/// The patch policy for a link with round-trip time `rtt` (the control connection's
/// connect time; `None`: unknown): zstd level 1 on a datacenter link, where the encoder,
/// not the link, bounds the job (1 GiB lab image: 5.3-5.4 s at level 1, 6.3-6.5 s at level
/// 3, 7.4 s without zstd), [`DEFAULT_POLICY`] otherwise (on the WAN lab level 3's 8 % fewer
/// bytes are worth more than its CPU). docs/perf-migrate.md.
pub fn policy_for_link(rtt: Option<std::time::Duration>) -> Policy {
    match rtt {
        Some(r) if r < DATACENTER_RTT => Policy::Hybrid {
            level: 1,
            max_entropy_bits: 7.0,
        },
        _ => DEFAULT_POLICY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_follows_the_link() {
        use std::time::Duration;
        let level = |rtt| match policy_for_link(rtt) {
            Policy::Hybrid { level, .. } => level,
            p => panic!("{p:?}"),
        };
        assert_eq!(level(Some(Duration::from_micros(80))), 1);
        assert_eq!(level(Some(Duration::from_millis(50))), 3);
        assert_eq!(level(None), 3);
    }

    fn image(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|i| {
                if (i / 4096) % 3 == 0 {
                    0
                } else {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % 7) as u8
                }
            })
            .collect()
    }

    fn compact(img: &[u8], dirty: &[u64], bs: usize) -> Vec<u8> {
        let mut v = Vec::new();
        for &i in dirty {
            let s = i as usize * bs;
            v.extend_from_slice(&img[s..(s + bs).min(img.len())]);
        }
        v
    }

    #[test]
    fn round_trip_with_and_without_baseline_and_changed_length() {
        let bs = 4096;
        let old = image(40 * bs + 100, 3);
        let mut new = old.clone();
        new.extend_from_slice(&[9u8; 5000]); // grows: last block short
        for b in [1usize, 2, 7, 20, 39] {
            new[b * bs + 17] ^= 0x5a;
        }
        let dirty: Vec<u64> = (0..new.len().div_ceil(bs) as u64)
            .filter(|&i| {
                let s = i as usize * bs;
                let e = (s + bs).min(new.len());
                old.get(s..e) != Some(&new[s..e])
            })
            .collect();
        for with_base in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("img");
            std::fs::write(&path, &old).unwrap();
            let newc = compact(&new, &dirty, bs);
            let oldc = with_base.then(|| {
                let mut padded = old.clone();
                padded.resize(new.len(), 0);
                Arc::from(compact(&padded, &dirty, bs))
            });
            let mut out = Vec::new();
            let st = build(
                &mut out,
                bs,
                new.len() as u64,
                2,
                &dirty,
                &newc,
                oldc,
                DEFAULT_POLICY,
            )
            .unwrap();
            assert_eq!(st.patch_bytes, out.len() as u64);
            if with_base {
                assert!(out.len() < 200 + 5000, "xor patch {} bytes", out.len());
            }
            let f = File::options().read(true).write(true).open(&path).unwrap();
            let a = apply(&out, &f).unwrap();
            assert_eq!(a.blocks, dirty.len() as u64);
            assert_eq!(std::fs::read(&path).unwrap(), new);
        }
    }

    #[test]
    fn large_patches_encoded_on_two_threads_round_trip() {
        let bs = 512;
        let blocks = CONTAINER_BLOCKS * PARALLEL_MIN_CONTAINERS + 77;
        let old = image(blocks * bs, 11);
        let mut new = image(blocks * bs, 12);
        // Duplicates within each half and across the halves, and a few XOR-able blocks.
        let (a, b) = (9 * bs, (blocks - 3) * bs);
        let dup: Vec<u8> = new[a..a + bs].to_vec();
        new[b..b + bs].copy_from_slice(&dup);
        new[(blocks / 2 + 9) * bs..(blocks / 2 + 10) * bs].copy_from_slice(&dup);
        new[7 * bs..8 * bs].copy_from_slice(&old[7 * bs..8 * bs]);
        new[7 * bs + 3] ^= 1;
        let dirty: Vec<u64> = (0..blocks as u64).collect();
        for with_base in [false, true] {
            let mut out = Vec::new();
            let oldc = with_base.then(|| Arc::from(old.clone()));
            let st = build(
                &mut out,
                bs,
                new.len() as u64,
                1,
                &dirty,
                &new,
                oldc,
                DEFAULT_POLICY,
            )
            .unwrap();
            assert_eq!(st.patch_bytes, out.len() as u64);
            assert_eq!(st.hde.in_bytes(), new.len() as u64);
            assert!(st.hde.kind(dwcp_hde::BlockKind::Dup).blocks >= 1);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("img");
            std::fs::write(&path, &old).unwrap();
            let f = File::options().read(true).write(true).open(&path).unwrap();
            apply(&out, &f).unwrap();
            assert!(std::fs::read(&path).unwrap() == new);
        }
    }

    #[test]
    fn containers_are_zstd_frames_and_version_1_patches_are_refused() {
        let bs = 4096;
        let new = image(64 * bs, 8);
        let dirty: Vec<u64> = (0..64).collect();
        let mut out = Vec::new();
        let st = build(
            &mut out,
            bs,
            new.len() as u64,
            1,
            &dirty,
            &new,
            None,
            DEFAULT_POLICY,
        )
        .unwrap();
        assert_eq!(st.zstd_containers, 1);
        assert!(st.zstd_out < st.zstd_in / 2, "{st:?}");
        assert!(out.len() < new.len() / 2);
        out[..8].copy_from_slice(b"DWCPPAT1");
        assert!(matches!(
            parse_header(&out),
            Err(PatchError::Malformed { what: "magic", .. })
        ));
    }

    #[test]
    fn corrupt_patch_changes_nothing() {
        let bs = 512;
        let old = image(64 * bs, 5);
        let mut new = old.clone();
        new[3 * bs..4 * bs].fill(0xee);
        let dirty = [3u64];
        let mut out = Vec::new();
        build(
            &mut out,
            bs,
            new.len() as u64,
            1,
            &dirty,
            &new[3 * bs..4 * bs],
            None,
            DEFAULT_POLICY,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        for i in 0..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x10;
            std::fs::write(&path, &old).unwrap();
            let f = File::options().read(true).write(true).open(&path).unwrap();
            if apply(&bad, &f).is_err() {
                assert_eq!(std::fs::read(&path).unwrap(), old, "flip at {i}");
            }
        }
        let f = File::options().read(true).write(true).open(&path).unwrap();
        assert!(matches!(
            apply(&out[..out.len() - 1], &f),
            Err(PatchError::Malformed { .. })
        ));
    }
}
