//! Wire constants of the HDE block container (codec id 5). The full specification is
//! docs/hde.md; this module owns only the numbers both sides share, not parsing or policy.

/// Container format version written and accepted.
pub const VERSION: u8 = 1;

/// Smallest block size a container may declare.
pub const MIN_BLOCK_SIZE: usize = 64;

/// Default block size.
pub const DEFAULT_BLOCK_SIZE: usize = 4096;

/// Largest block size accepted by default.
pub const MAX_BLOCK_SIZE: usize = 1 << 20;

/// Per-block record tags.
pub mod tag {
    /// All-zero block, no payload.
    pub const ZERO: u8 = 0;
    /// Duplicate of an earlier block of the same object: `varint ref_index`.
    pub const DUP: u8 = 1;
    /// XOR delta against the baseline block at the same index, zero-run coded:
    /// `varint len, payload`.
    pub const XOR_DELTA: u8 = 2;
    /// One or more zstd frames decompressing to exactly the block: `varint len, payload`.
    pub const ZSTD: u8 = 3;
    /// The block's bytes verbatim (length implied by the header).
    pub const RAW: u8 = 4;
}

/// The encodings a block can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockKind {
    /// All zero.
    Zero,
    /// Copy of an earlier block.
    Dup,
    /// XOR delta against the baseline.
    XorDelta,
    /// zstd compressed.
    Zstd,
    /// Verbatim.
    Raw,
}

impl BlockKind {
    /// All kinds, in tag order.
    pub const ALL: [BlockKind; 5] = [
        BlockKind::Zero,
        BlockKind::Dup,
        BlockKind::XorDelta,
        BlockKind::Zstd,
        BlockKind::Raw,
    ];

    /// The record tag.
    pub fn tag(self) -> u8 {
        match self {
            BlockKind::Zero => tag::ZERO,
            BlockKind::Dup => tag::DUP,
            BlockKind::XorDelta => tag::XOR_DELTA,
            BlockKind::Zstd => tag::ZSTD,
            BlockKind::Raw => tag::RAW,
        }
    }

    /// Lower-case name for reports.
    pub fn name(self) -> &'static str {
        match self {
            BlockKind::Zero => "zero",
            BlockKind::Dup => "dup",
            BlockKind::XorDelta => "xor-delta",
            BlockKind::Zstd => "zstd",
            BlockKind::Raw => "raw",
        }
    }
}

/// Per-encoding counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindStats {
    /// Blocks.
    pub blocks: u64,
    /// Object bytes those blocks cover.
    pub in_bytes: u64,
    /// Container bytes their records take (tag and lengths included).
    pub out_bytes: u64,
}

/// Counters per encoding plus container headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Indexed by `BlockKind::tag()`.
    pub kinds: [KindStats; 5],
    /// Containers.
    pub containers: u64,
    /// Bytes of container headers.
    pub header_bytes: u64,
}

impl Stats {
    /// Counters of one encoding.
    pub fn kind(&self, k: BlockKind) -> &KindStats {
        &self.kinds[k.tag() as usize]
    }

    /// Adds another encoding's counters to these (e.g. the parts of one patch encoded on
    /// several threads).
    pub fn merge(&mut self, other: &Stats) {
        for (a, b) in self.kinds.iter_mut().zip(other.kinds.iter()) {
            a.blocks += b.blocks;
            a.in_bytes += b.in_bytes;
            a.out_bytes += b.out_bytes;
        }
        self.containers += other.containers;
        self.header_bytes += other.header_bytes;
    }

    pub(crate) fn add(&mut self, k: BlockKind, in_bytes: usize, out_bytes: usize) {
        let s = &mut self.kinds[k.tag() as usize];
        s.blocks += 1;
        s.in_bytes += in_bytes as u64;
        s.out_bytes += out_bytes as u64;
    }

    /// Total object bytes.
    pub fn in_bytes(&self) -> u64 {
        self.kinds.iter().map(|k| k.in_bytes).sum()
    }

    /// Total container bytes (headers included).
    pub fn out_bytes(&self) -> u64 {
        self.kinds.iter().map(|k| k.out_bytes).sum::<u64>() + self.header_bytes
    }
}
