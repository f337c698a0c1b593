//! The HDE decoder: validates and decodes containers into the receiver's copy of the object.
//!
//! Owns the receiver's object buffer (the blocks decoded so far, which Dup records refer to),
//! the set of blocks seen, the baselines it holds (by id), and the checks that make arbitrary
//! input safe: every length is bounded before use, a container is decoded into scratch
//! space and committed only when all of it is valid, and memory use is capped by
//! [`DecoderConfig::max_object_len`]. It never panics on input bytes. It does not own where
//! the object goes afterwards (the caller copies [`Decoder::chunk`] to its sink) nor how
//! baselines reach it.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use dwcp_kernels::varint::{self, VarintError};
use dwcp_kernels::{Kernels, ZrunError};
use thiserror::Error;

use crate::format::{BlockKind, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE, Stats, VERSION, tag};

/// Decoder limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderConfig {
    /// Largest object end offset accepted (bounds the object buffer).
    pub max_object_len: u64,
    /// Largest block size accepted.
    pub max_block_size: usize,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig {
            max_object_len: 1 << 30,
            max_block_size: MAX_BLOCK_SIZE,
        }
    }
}

/// Why a container was refused. Nothing of a refused container is committed.
#[derive(Debug, Error)]
pub enum DecodeError {
    /// The container ended early.
    #[error("container truncated at byte {at} reading {what}")]
    Truncated {
        /// Offset where more bytes were needed.
        at: usize,
        /// What was being read.
        what: &'static str,
    },
    /// A malformed varint.
    #[error("bad varint at byte {at} ({what})")]
    Varint {
        /// Offset.
        at: usize,
        /// What was being read.
        what: &'static str,
        /// Details.
        #[source]
        source: VarintError,
    },
    /// Unknown container version.
    #[error("container version {version} is not supported (expected {VERSION})")]
    UnsupportedVersion {
        /// Version byte.
        version: u8,
    },
    /// Reserved flag bits set.
    #[error("container flags {flags:#04x} has reserved bits set")]
    BadFlags {
        /// Flags byte.
        flags: u8,
    },
    /// Block size out of range.
    #[error("block size {block_size} outside {min}..={max}")]
    BadBlockSize {
        /// Declared size.
        block_size: u64,
        /// Minimum.
        min: usize,
        /// Maximum.
        max: usize,
    },
    /// Block size differs from the one this object already uses.
    #[error("block size {got} differs from this object's {expected}")]
    BlockSizeMismatch {
        /// The object's block size.
        expected: usize,
        /// The container's.
        got: usize,
    },
    /// The container reaches beyond the configured maximum object length.
    #[error("container covers bytes up to {end}, beyond the limit of {max}")]
    TooLarge {
        /// End offset (saturated on overflow).
        end: u64,
        /// Limit.
        max: u64,
    },
    /// Baseline id larger than 32 bits.
    #[error("baseline id {value} does not fit 32 bits")]
    BadBaselineId {
        /// Declared id.
        value: u64,
    },
    /// Unknown record tag.
    #[error("block {block}: unknown tag {tag} at byte {at}")]
    UnknownTag {
        /// Block index.
        block: u64,
        /// Tag byte.
        tag: u8,
        /// Offset.
        at: usize,
    },
    /// A Dup refers to the same or a later block.
    #[error("block {block}: dup refers to block {reference}, which is not earlier")]
    DupNotEarlier {
        /// Block index.
        block: u64,
        /// Referenced index.
        reference: u64,
    },
    /// A Dup refers to a block this decoder has not decoded.
    #[error("block {block}: dup refers to block {reference}, which has not been received")]
    DupUnseen {
        /// Block index.
        block: u64,
        /// Referenced index.
        reference: u64,
    },
    /// An XorDelta in a container that names no baseline.
    #[error("block {block}: xor-delta but the container names no baseline")]
    NoBaselineId {
        /// Block index.
        block: u64,
    },
    /// An XorDelta against a baseline this decoder does not hold.
    #[error(
        "block {block}: xor-delta against baseline {baseline_id}, which this receiver does not hold"
    )]
    UnknownBaseline {
        /// Block index.
        block: u64,
        /// Baseline id.
        baseline_id: u32,
    },
    /// The baseline does not cover the block.
    #[error(
        "block {block}: baseline {baseline_id} has {baseline_len} bytes, too short for this block"
    )]
    BaselineTooShort {
        /// Block index.
        block: u64,
        /// Baseline id.
        baseline_id: u32,
        /// Baseline length.
        baseline_len: usize,
    },
    /// A payload length beyond the container.
    #[error("block {block}: payload of {len} bytes at byte {at} exceeds the {available} left")]
    PayloadTooLong {
        /// Block index.
        block: u64,
        /// Claimed length.
        len: u64,
        /// Offset.
        at: usize,
        /// Bytes left.
        available: usize,
    },
    /// Bad zero-run payload.
    #[error("block {block}: bad xor-delta payload")]
    Zrun {
        /// Block index.
        block: u64,
        /// Details.
        #[source]
        source: ZrunError,
    },
    /// A zero-run payload with bytes left over after the block was complete.
    #[error("block {block}: xor-delta payload has {unused} unused bytes")]
    PayloadNotConsumed {
        /// Block index.
        block: u64,
        /// Bytes left over.
        unused: usize,
    },
    /// zstd refused the payload.
    #[error("block {block}: zstd payload is invalid")]
    Zstd {
        /// Block index.
        block: u64,
        /// zstd's error.
        #[source]
        source: std::io::Error,
    },
    /// zstd produced the wrong number of bytes.
    #[error("block {block}: zstd payload decompressed to {got} bytes, expected {expected}")]
    ZstdLength {
        /// Block index.
        block: u64,
        /// Bytes produced.
        got: usize,
        /// Block length.
        expected: usize,
    },
    /// Bytes after the last record.
    #[error("{extra} trailing bytes after the last block at byte {at}")]
    TrailingBytes {
        /// Offset.
        at: usize,
        /// Count.
        extra: usize,
    },
    /// The zstd decompression context could not be created.
    #[error("zstd decompressor setup failed")]
    ZstdInit(#[source] std::io::Error),
}

/// The byte range of the object that a container filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// First block index.
    pub first_block: u64,
    /// Byte offset in the object.
    pub offset: u64,
    /// Byte length.
    pub len: usize,
    /// Baseline id named by the container (0 = none).
    pub baseline_id: u32,
}

impl Decoded {
    /// Byte range in the object.
    pub fn range(&self) -> Range<usize> {
        self.offset as usize..self.offset as usize + self.len
    }
}

/// A parsed, bounded container header.
struct Header {
    bs: usize,
    first_block: u64,
    offset: u64,
    len: usize,
    baseline_id: u32,
    header_len: usize,
}

impl Header {
    fn decoded(&self) -> Decoded {
        Decoded {
            first_block: self.first_block,
            offset: self.offset,
            len: self.len,
            baseline_id: self.baseline_id,
        }
    }
}

/// The block decoder. See the module docs.
pub struct Decoder {
    cfg: DecoderConfig,
    k: Kernels,
    baselines: HashMap<u32, Arc<[u8]>>,
    block_size: Option<usize>,
    object: Vec<u8>,
    seen: Vec<u64>,
    scratch: Vec<u8>,
    zstd: zstd::bulk::Decompressor<'static>,
    stats: Stats,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("cfg", &self.cfg)
            .field("kernels", &self.k.name())
            .field("baselines", &self.baselines.keys().collect::<Vec<_>>())
            .field("block_size", &self.block_size)
            .field("object_len", &self.object.len())
            .field("stats", &self.stats)
            .finish()
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn byte(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or(DecodeError::Truncated { at: self.pos, what })?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let at = self.pos;
        varint::get(self.buf, &mut self.pos).map_err(|source| DecodeError::Varint {
            at,
            what,
            source,
        })
    }

    /// A `varint len` followed by that many bytes.
    fn payload(&mut self, block: u64) -> Result<&[u8], DecodeError> {
        let len = self.varint("payload length")?;
        let available = self.buf.len() - self.pos;
        if len > available as u64 {
            return Err(DecodeError::PayloadTooLong {
                block,
                len,
                at: self.pos,
                available,
            });
        }
        let p = &self.buf[self.pos..self.pos + len as usize];
        self.pos += len as usize;
        Ok(p)
    }
}

impl Decoder {
    /// A decoder with the process-wide kernels.
    pub fn new(cfg: DecoderConfig) -> Result<Self, DecodeError> {
        Self::with_kernels(cfg, *dwcp_kernels::kernels())
    }

    /// A decoder using a specific kernel set.
    pub fn with_kernels(cfg: DecoderConfig, k: Kernels) -> Result<Self, DecodeError> {
        Ok(Decoder {
            cfg,
            k,
            baselines: HashMap::new(),
            block_size: None,
            object: Vec::new(),
            seen: Vec::new(),
            scratch: Vec::new(),
            zstd: zstd::bulk::Decompressor::new().map_err(DecodeError::ZstdInit)?,
            stats: Stats::default(),
        })
    }

    /// Makes baseline `id` available to XorDelta blocks (replacing one with the same id).
    pub fn add_baseline(&mut self, id: u32, data: Arc<[u8]>) {
        self.baselines.insert(id, data);
    }

    /// Forgets baseline `id`.
    pub fn remove_baseline(&mut self, id: u32) -> Option<Arc<[u8]>> {
        self.baselines.remove(&id)
    }

    /// The object as decoded so far (blocks not yet received read as zero).
    pub fn object(&self) -> &[u8] {
        &self.object
    }

    /// The bytes a successful [`Decoder::decode`] filled.
    pub fn chunk(&self, d: &Decoded) -> &[u8] {
        &self.object[d.range()]
    }

    /// Takes the object buffer, leaving the decoder empty (baselines kept).
    pub fn take_object(&mut self) -> Vec<u8> {
        self.seen.clear();
        self.block_size = None;
        std::mem::take(&mut self.object)
    }

    /// Starts a new object: forgets all blocks and the block size, keeps the object buffer's
    /// allocation (so a long-lived receiver does not fault in fresh pages per object), the
    /// baselines and the counters.
    pub fn reset(&mut self) {
        self.seen.clear();
        self.block_size = None;
        self.object.clear();
    }

    /// Counters so far (successfully decoded containers only).
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// True if block `index` has been decoded.
    pub fn has_block(&self, index: u64) -> bool {
        let Ok(i) = usize::try_from(index) else {
            return false;
        };
        self.seen
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Decodes one container and commits it to the object. On error nothing changes.
    pub fn decode(&mut self, container: &[u8]) -> Result<Decoded, DecodeError> {
        let mut c = Cursor {
            buf: container,
            pos: 0,
        };
        let h = self.header(&mut c, false)?;
        let mut scratch = std::mem::take(&mut self.scratch);
        let res = self.decode_body(&mut c, &h, false, &mut scratch);
        let stats = match res {
            Ok(s) => s,
            Err(e) => {
                self.scratch = scratch;
                return Err(e);
            }
        };

        // Commit. `end` was checked against max_object_len in `header`.
        let offset_us = h.offset as usize;
        let end = offset_us + h.len;
        if self.object.len() < end {
            self.object.resize(end, 0);
        }
        self.object[offset_us..end].copy_from_slice(&scratch);
        self.scratch = scratch;
        self.block_size = Some(h.bs);
        let count = h.len.div_ceil(h.bs);
        let first = h.first_block as usize;
        let words = (first + count).div_ceil(64);
        if self.seen.len() < words {
            self.seen.resize(words, 0);
        }
        for i in first..first + count {
            self.seen[i / 64] |= 1 << (i % 64);
        }
        self.add_stats(&stats, h.header_len);
        Ok(h.decoded())
    }

    /// Decodes one container that must decode on its own into `out` (cleared first): Dup
    /// records may only name earlier blocks of the same container, and nothing is read from
    /// or committed to the object buffer, so containers can arrive in any order, be lost or
    /// be repeated. The block size may differ between containers; the offset is not bounded
    /// by `max_object_len`, only the container's length is. XorDelta records still need the
    /// baseline the container names (see [`Decoder::add_baseline`]). On error `out` is
    /// cleared.
    pub fn decode_standalone(
        &mut self,
        container: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Decoded, DecodeError> {
        let mut c = Cursor {
            buf: container,
            pos: 0,
        };
        let res = self
            .header(&mut c, true)
            .and_then(|h| self.decode_body(&mut c, &h, true, out).map(|s| (h, s)));
        match res {
            Ok((h, stats)) => {
                self.add_stats(&stats, h.header_len);
                Ok(h.decoded())
            }
            Err(e) => {
                out.clear();
                Err(e)
            }
        }
    }

    fn add_stats(&mut self, stats: &Stats, header_len: usize) {
        for (acc, s) in self.stats.kinds.iter_mut().zip(stats.kinds) {
            acc.blocks += s.blocks;
            acc.in_bytes += s.in_bytes;
            acc.out_bytes += s.out_bytes;
        }
        self.stats.containers += 1;
        self.stats.header_bytes += header_len as u64;
    }

    /// Parses and bounds the container header.
    fn header(&self, c: &mut Cursor, standalone: bool) -> Result<Header, DecodeError> {
        let version = c.byte("version")?;
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion { version });
        }
        let flags = c.byte("flags")?;
        if flags != 0 {
            return Err(DecodeError::BadFlags { flags });
        }
        let bs64 = c.varint("block size")?;
        let max_bs = self.cfg.max_block_size;
        if bs64 < MIN_BLOCK_SIZE as u64 || bs64 > max_bs as u64 {
            return Err(DecodeError::BadBlockSize {
                block_size: bs64,
                min: MIN_BLOCK_SIZE,
                max: max_bs,
            });
        }
        let bs = bs64 as usize;
        if !standalone
            && let Some(expected) = self.block_size
            && expected != bs
        {
            return Err(DecodeError::BlockSizeMismatch { expected, got: bs });
        }
        let first_block = c.varint("first block")?;
        let len = c.varint("length")?;
        let max = self.cfg.max_object_len;
        let offset = first_block.checked_mul(bs64);
        let end = offset.and_then(|o| o.checked_add(len));
        // A standalone container only bounds its own length; a committed one bounds the end
        // of the object buffer.
        let bounded = if standalone { len } else { end.unwrap_or(0) };
        let (offset, len) = match (offset, end) {
            (Some(o), Some(_)) if bounded <= max && usize::try_from(len).is_ok() => {
                (o, len as usize)
            }
            _ => {
                return Err(DecodeError::TooLarge {
                    end: if standalone {
                        len
                    } else {
                        end.unwrap_or(u64::MAX)
                    },
                    max,
                });
            }
        };
        let baseline_raw = c.varint("baseline id")?;
        let baseline_id = u32::try_from(baseline_raw).map_err(|_| DecodeError::BadBaselineId {
            value: baseline_raw,
        })?;
        let header_len = c.pos;
        // Every record takes at least its tag byte: refuse before allocating for a header that
        // claims more blocks than the container could hold.
        let count = (len as u64).div_ceil(bs64);
        let left = (c.buf.len() - header_len) as u64;
        if count > left {
            return Err(DecodeError::Truncated {
                at: c.buf.len(),
                what: "block records",
            });
        }
        Ok(Header {
            bs,
            first_block,
            offset,
            len,
            baseline_id,
            header_len,
        })
    }

    /// Decodes the records into `out` (resized to the container's length) and checks that
    /// nothing trails them.
    fn decode_body(
        &mut self,
        c: &mut Cursor,
        h: &Header,
        standalone: bool,
        out: &mut Vec<u8>,
    ) -> Result<Stats, DecodeError> {
        out.clear();
        out.resize(h.len, 0);
        let mut stats = Stats::default();
        self.decode_blocks(c, h, standalone, out, &mut stats)?;
        if c.pos != c.buf.len() {
            return Err(DecodeError::TrailingBytes {
                at: c.pos,
                extra: c.buf.len() - c.pos,
            });
        }
        Ok(stats)
    }

    fn decode_blocks(
        &mut self,
        c: &mut Cursor,
        h: &Header,
        standalone: bool,
        out: &mut [u8],
        stats: &mut Stats,
    ) -> Result<(), DecodeError> {
        let (first_block, bs, baseline_id) = (h.first_block, h.bs, h.baseline_id);
        let len = out.len();
        let count = len.div_ceil(bs);
        for j in 0..count {
            let block = first_block + j as u64;
            let start = j * bs;
            let n = bs.min(len - start);
            let rec_at = c.pos;
            let t = c.byte("block tag")?;
            let kind = match t {
                tag::ZERO => {
                    out[start..start + n].fill(0);
                    BlockKind::Zero
                }
                tag::DUP => {
                    let reference = c.varint("dup reference")?;
                    if reference >= block {
                        return Err(DecodeError::DupNotEarlier { block, reference });
                    }
                    if reference >= first_block {
                        // Earlier block of this container: `rj < j`, so its range ends at or
                        // before `start`.
                        let rs = (reference - first_block) as usize * bs;
                        out.copy_within(rs..rs + n, start);
                    } else {
                        // `reference < first_block`, and first_block * bs fitted in u64 and
                        // below max_object_len, so this arithmetic cannot overflow.
                        let rs = reference as usize * bs;
                        if standalone || !self.has_block(reference) || rs + n > self.object.len() {
                            return Err(DecodeError::DupUnseen { block, reference });
                        }
                        out[start..start + n].copy_from_slice(&self.object[rs..rs + n]);
                    }
                    BlockKind::Dup
                }
                tag::XOR_DELTA => {
                    let payload = c.payload(block)?;
                    if baseline_id == 0 {
                        return Err(DecodeError::NoBaselineId { block });
                    }
                    let base = self
                        .baselines
                        .get(&baseline_id)
                        .ok_or(DecodeError::UnknownBaseline { block, baseline_id })?;
                    let base_off = block as usize * bs; // below max_object_len, see above
                    let base_blk =
                        base.get(base_off..base_off + n)
                            .ok_or(DecodeError::BaselineTooShort {
                                block,
                                baseline_id,
                                baseline_len: base.len(),
                            })?;
                    let used = self
                        .k
                        .zrun_decode_xor(payload, base_blk, &mut out[start..start + n])
                        .map_err(|source| DecodeError::Zrun { block, source })?;
                    if used != payload.len() {
                        return Err(DecodeError::PayloadNotConsumed {
                            block,
                            unused: payload.len() - used,
                        });
                    }
                    BlockKind::XorDelta
                }
                tag::ZSTD => {
                    let payload = c.payload(block)?;
                    let got = self
                        .zstd
                        .decompress_to_buffer(payload, &mut out[start..start + n])
                        .map_err(|source| DecodeError::Zstd { block, source })?;
                    if got != n {
                        return Err(DecodeError::ZstdLength {
                            block,
                            got,
                            expected: n,
                        });
                    }
                    BlockKind::Zstd
                }
                tag::RAW => {
                    let avail = c.buf.len() - c.pos;
                    if avail < n {
                        return Err(DecodeError::Truncated {
                            at: c.pos,
                            what: "raw block",
                        });
                    }
                    out[start..start + n].copy_from_slice(&c.buf[c.pos..c.pos + n]);
                    c.pos += n;
                    BlockKind::Raw
                }
                t => {
                    return Err(DecodeError::UnknownTag {
                        block,
                        tag: t,
                        at: rec_at,
                    });
                }
            };
            stats.add(kind, n, c.pos - rec_at);
        }
        Ok(())
    }
}
