//! The HDE encoder: per block, the cheapest of Zero, Dup, XorDelta, Zstd and Raw.
//!
//! Owns the selection policy, the sender's dedup table (XXH3-128 of every block it encoded
//! as something other than Zero, mapped to the first block index that had it) and the
//! reusable scratch buffers, so encoding a block into a warmed caller buffer allocates nothing
//! except dedup-table growth. It does not own framing (the caller puts a container in DWCP
//! frames), retransmission, or baseline distribution: the caller must only name a baseline the
//! receiver holds, and must deliver containers so that a Dup's target arrives first.
//!
//! One `Encoder` covers one version of one object: block indexes are absolute within the
//! object and each index is encoded once (a retransmission resends the same bytes).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use dwcp_kernels::{Kernels, varint};
use thiserror::Error;

use crate::estimate::entropy_bits;
use crate::format::{
    BlockKind, DEFAULT_BLOCK_SIZE, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE, Stats, VERSION,
};

/// Below this many bytes of best-so-far payload zstd is not tried: it cannot win enough.
const ZSTD_MIN_GAIN_INPUT: usize = 64;

/// An XorDelta payload this small is taken without hashing or trying anything else.
const XOR_SHORTCUT: usize = 8;

/// The dedup keys are XXH3-128 values already: hashing them again (SipHash) would only cost
/// time, so the table uses their low 64 bits as the hash.
#[derive(Default)]
struct KeyIsHash(u64);

impl Hasher for KeyIsHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for key types other than u128; fold bytes in (FNV-1a).
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

type DedupTable = HashMap<u128, u64, BuildHasherDefault<KeyIsHash>>;

/// When zstd is tried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Policy {
    /// No zstd (CPU is the bottleneck, not the link).
    Datacenter,
    /// zstd at `level` on every block where nothing cheaper was found.
    Internet {
        /// zstd level (1 and 3 are the useful ones here).
        level: i32,
    },
    /// zstd at `level` only when the sampled order-0 entropy is at most `max_entropy_bits`
    /// bits per byte (6.5 means "likely to save at least ~15 %").
    Hybrid {
        /// zstd level.
        level: i32,
        /// Entropy threshold in bits per byte.
        max_entropy_bits: f32,
    },
}

impl Policy {
    /// Hybrid at level 1 with a 6.5 bit/byte threshold.
    pub const HYBRID_DEFAULT: Policy = Policy::Hybrid {
        level: 1,
        max_entropy_bits: 6.5,
    };

    fn level(&self) -> Option<i32> {
        match *self {
            Policy::Datacenter => None,
            Policy::Internet { level } | Policy::Hybrid { level, .. } => Some(level),
        }
    }
}

/// Encoder settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncoderConfig {
    /// Block size in bytes (`MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE`).
    pub block_size: usize,
    /// zstd policy.
    pub policy: Policy,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        EncoderConfig {
            block_size: DEFAULT_BLOCK_SIZE,
            policy: Policy::Datacenter,
        }
    }
}

/// A version of the object that the receiver already holds.
#[derive(Debug, Clone)]
pub struct Baseline {
    id: u32,
    data: Arc<[u8]>,
}

impl Baseline {
    /// A baseline with a nonzero id (0 means "none" on the wire).
    pub fn new(id: u32, data: Arc<[u8]>) -> Result<Self, EncodeError> {
        if id == 0 {
            return Err(EncodeError::ZeroBaselineId);
        }
        Ok(Baseline { id, data })
    }

    /// Its id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Its bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }
}

/// Why encoding failed (all are caller errors or zstd failing to initialise).
#[derive(Debug, Error)]
pub enum EncodeError {
    /// Block size outside the accepted range.
    #[error("block size {block_size} outside {min}..={max}")]
    BadBlockSize {
        /// Requested size.
        block_size: usize,
        /// Minimum.
        min: usize,
        /// Maximum.
        max: usize,
    },
    /// Baseline id 0 is reserved for "none".
    #[error("baseline id 0 is reserved for \"no baseline\"")]
    ZeroBaselineId,
    /// A block was empty or longer than the block size.
    #[error("block {index} has {len} bytes; blocks are 1..={block_size}")]
    BadBlockLen {
        /// Block index.
        index: u64,
        /// Its length.
        len: usize,
        /// Configured block size.
        block_size: usize,
    },
    /// First block index times block size overflows 64 bits.
    #[error("block index {index} is out of range")]
    IndexOverflow {
        /// The index.
        index: u64,
    },
    /// zstd context creation or level setting failed.
    #[error("zstd setup failed at level {level}")]
    Zstd {
        /// The level.
        level: i32,
        /// zstd's error.
        #[source]
        source: std::io::Error,
    },
}

/// The block encoder. See the module docs.
pub struct Encoder {
    cfg: EncoderConfig,
    k: Kernels,
    baseline: Option<Baseline>,
    dedup: DedupTable,
    zstd: Option<(i32, zstd::bulk::Compressor<'static>)>,
    xor_scratch: Vec<u8>,
    zstd_scratch: Vec<u8>,
    stats: Stats,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("cfg", &self.cfg)
            .field("kernels", &self.k.name())
            .field("baseline", &self.baseline.as_ref().map(|b| b.id))
            .field("dedup_entries", &self.dedup.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Encoder {
    /// A new encoder with the process-wide kernels and no baseline.
    pub fn new(cfg: EncoderConfig) -> Result<Self, EncodeError> {
        Self::with_kernels(cfg, *dwcp_kernels::kernels())
    }

    /// A new encoder using a specific kernel set (tests and benchmarks force the scalar one).
    pub fn with_kernels(cfg: EncoderConfig, k: Kernels) -> Result<Self, EncodeError> {
        if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&cfg.block_size) {
            return Err(EncodeError::BadBlockSize {
                block_size: cfg.block_size,
                min: MIN_BLOCK_SIZE,
                max: MAX_BLOCK_SIZE,
            });
        }
        let mut e = Encoder {
            cfg,
            k,
            baseline: None,
            dedup: DedupTable::default(),
            zstd: None,
            xor_scratch: Vec::with_capacity(cfg.block_size),
            zstd_scratch: vec![0u8; cfg.block_size],
            stats: Stats::default(),
        };
        e.set_policy(cfg.policy)?;
        Ok(e)
    }

    /// Sets the baseline that XorDelta blocks refer to (the receiver must hold it).
    pub fn set_baseline(&mut self, baseline: Option<Baseline>) {
        self.baseline = baseline;
    }

    /// Changes the zstd policy (e.g. when the mode detector switches).
    pub fn set_policy(&mut self, policy: Policy) -> Result<(), EncodeError> {
        self.cfg.policy = policy;
        match (policy.level(), &mut self.zstd) {
            (None, _) => {}
            (Some(level), Some((cur, c))) if *cur != level => {
                c.set_compression_level(level)
                    .map_err(|source| EncodeError::Zstd { level, source })?;
                *cur = level;
            }
            (Some(_), Some(_)) => {}
            (Some(level), None) => {
                let c = zstd::bulk::Compressor::new(level)
                    .map_err(|source| EncodeError::Zstd { level, source })?;
                self.zstd = Some((level, c));
            }
        }
        Ok(())
    }

    /// The configuration in force.
    pub fn config(&self) -> EncoderConfig {
        self.cfg
    }

    /// Counters so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Appends a container header for `len` object bytes starting at block `first_block`.
    /// Follow it with exactly `len.div_ceil(block_size)` calls to [`Encoder::encode_block`]
    /// (all blocks full but the last).
    pub fn write_header(
        &mut self,
        out: &mut Vec<u8>,
        first_block: u64,
        len: u64,
    ) -> Result<(), EncodeError> {
        first_block
            .checked_mul(self.cfg.block_size as u64)
            .and_then(|o| o.checked_add(len))
            .ok_or(EncodeError::IndexOverflow { index: first_block })?;
        let start = out.len();
        out.push(VERSION);
        out.push(0);
        varint::put(out, self.cfg.block_size as u64);
        varint::put(out, first_block);
        varint::put(out, len);
        varint::put(out, self.baseline.as_ref().map_or(0, |b| u64::from(b.id)));
        self.stats.containers += 1;
        self.stats.header_bytes += (out.len() - start) as u64;
        Ok(())
    }

    /// Encodes `data` (object bytes from block `first_block` on) as one complete container
    /// appended to `out`. Returns the bytes appended.
    pub fn encode_chunk(
        &mut self,
        first_block: u64,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<usize, EncodeError> {
        let start = out.len();
        self.write_header(out, first_block, data.len() as u64)?;
        for (j, block) in data.chunks(self.cfg.block_size).enumerate() {
            self.encode_block(first_block + j as u64, block, out)?;
        }
        Ok(out.len() - start)
    }

    /// Encodes `data` as one container that decodes on its own (see
    /// `Decoder::decode_standalone`): the dedup table is cleared before and after, so Dup
    /// records only name earlier blocks of this container. For transports that lose, reorder
    /// or repeat containers. Returns the bytes appended.
    pub fn encode_chunk_standalone(
        &mut self,
        first_block: u64,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<usize, EncodeError> {
        self.dedup.clear();
        let r = self.encode_chunk(first_block, data, out);
        self.dedup.clear();
        r
    }

    /// Changes the block size (forgets the dedup table, whose indexes depend on it). The
    /// receiver must accept the new size: a committing decoder refuses a second size per
    /// object, a standalone one takes any valid size per container.
    pub fn set_block_size(&mut self, block_size: usize) -> Result<(), EncodeError> {
        if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
            return Err(EncodeError::BadBlockSize {
                block_size,
                min: MIN_BLOCK_SIZE,
                max: MAX_BLOCK_SIZE,
            });
        }
        if block_size != self.cfg.block_size {
            self.cfg.block_size = block_size;
            self.dedup.clear();
            self.zstd_scratch.resize(block_size, 0);
        }
        Ok(())
    }

    /// Appends the record of block `index` to `out` and returns the encoding chosen.
    pub fn encode_block(
        &mut self,
        index: u64,
        block: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<BlockKind, EncodeError> {
        let n = block.len();
        let bs = self.cfg.block_size;
        if n == 0 || n > bs {
            return Err(EncodeError::BadBlockLen {
                index,
                len: n,
                block_size: bs,
            });
        }
        let start = out.len();
        let kind = self.choose_and_write(index, block, out)?;
        self.stats.add(kind, n, out.len() - start);
        Ok(kind)
    }

    fn baseline_block(
        baseline: &Option<Baseline>,
        bs: usize,
        index: u64,
        n: usize,
    ) -> Option<&[u8]> {
        let b = baseline.as_ref()?;
        let off = usize::try_from(index).ok()?.checked_mul(bs)?;
        b.data.get(off..off.checked_add(n)?)
    }

    fn choose_and_write(
        &mut self,
        index: u64,
        block: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<BlockKind, EncodeError> {
        let n = block.len();
        if self.k.is_zero(block) {
            out.push(BlockKind::Zero.tag());
            return Ok(BlockKind::Zero);
        }

        // Best so far, as the payload size after the tag. Raw costs n.
        let mut best = (BlockKind::Raw, n);

        // XorDelta against the baseline block at the same index.
        if let Some(base) = Self::baseline_block(&self.baseline, self.cfg.block_size, index, n) {
            self.xor_scratch.clear();
            let limit = n.saturating_sub(1 + varint::encoded_len(n as u64));
            if let Ok(len) = self
                .k
                .xor_zrun_encode(block, base, &mut self.xor_scratch, limit)
            {
                let cost = varint::encoded_len(len as u64) + len;
                if cost < best.1 {
                    best = (BlockKind::XorDelta, cost);
                }
                if len <= XOR_SHORTCUT {
                    return Ok(self.write(out, best.0, block, 0));
                }
            }
        }

        // Dup of an earlier block of this object.
        let h = dwcp_kernels::xxh3_128(block);
        match self.dedup.entry(h) {
            Entry::Occupied(e) if *e.get() < index => {
                let r = *e.get();
                if varint::encoded_len(r) < best.1 {
                    return Ok(self.write(out, BlockKind::Dup, block, r));
                }
            }
            Entry::Occupied(_) => {}
            Entry::Vacant(v) => {
                v.insert(index);
            }
        }

        // zstd per policy.
        let try_zstd = match self.cfg.policy {
            Policy::Datacenter => false,
            Policy::Internet { .. } => best.1 > ZSTD_MIN_GAIN_INPUT,
            Policy::Hybrid {
                max_entropy_bits, ..
            } => best.1 > ZSTD_MIN_GAIN_INPUT && entropy_bits(block) <= max_entropy_bits,
        };
        let mut zlen = 0;
        if try_zstd && let Some((_, c)) = self.zstd.as_mut() {
            // Room for a payload that would beat the best so far, length varint included.
            let room = best
                .1
                .saturating_sub(1 + varint::encoded_len(best.1 as u64))
                .min(self.zstd_scratch.len());
            if let Ok(len) = c.compress_to_buffer(block, &mut self.zstd_scratch[..room]) {
                let cost = varint::encoded_len(len as u64) + len;
                if cost < best.1 {
                    best = (BlockKind::Zstd, cost);
                    zlen = len;
                }
            }
        }
        Ok(self.write(out, best.0, block, zlen as u64))
    }

    /// Writes a record; `arg` is the Dup reference or the zstd payload length.
    fn write(&mut self, out: &mut Vec<u8>, kind: BlockKind, block: &[u8], arg: u64) -> BlockKind {
        out.push(kind.tag());
        match kind {
            BlockKind::Zero => {}
            BlockKind::Dup => varint::put(out, arg),
            BlockKind::XorDelta => {
                varint::put(out, self.xor_scratch.len() as u64);
                out.extend_from_slice(&self.xor_scratch);
            }
            BlockKind::Zstd => {
                varint::put(out, arg);
                out.extend_from_slice(&self.zstd_scratch[..arg as usize]);
            }
            BlockKind::Raw => out.extend_from_slice(block),
        }
        kind
    }
}
