//! HDE inside transfers: a chunk codec for the AMST engine (`dwcp-transfer`'s
//! [`ChunkEncoder`] / [`ChunkDecoder`]) whose policy follows the link mode.
//!
//! Owns: the mode-to-codec policy, the choice of an HDE block size that fits the chunk grid,
//! the per-chunk encoding (codec 0 raw, 1 zero, 5 HDE container; 4 zstd is decoded too), and
//! the shared [`CodecControl`] through which the owner switches compression on for a
//! datacenter link that is link-bound (not CPU-bound) and reads counters.
//!
//! Policy ([`CodecChoice::Auto`]):
//! - **Datacenter**: raw, with all-zero chunks elided (codec 1). The CPU, not the link, is the
//!   bottleneck on such a path, so compression would slow the transfer. Exception: the owner
//!   measured that the sender is link-bound and called
//!   [`CodecControl::set_datacenter_compress`]; then chunks are encoded as in Hybrid.
//! - **Internet**: HDE container with zstd tried on every block (level
//!   [`ChunkCodecConfig::internet_level`]).
//! - **Hybrid**: HDE container, zstd only on blocks whose sampled entropy says it pays
//!   ([`crate::Policy::Hybrid`]).
//!
//! A container that is not smaller than the chunk is replaced by the raw chunk.
//!
//! Every chunk decodes on its own: chunks are lost, retransmitted, duplicated and reordered,
//! and a receiver may restart and resume, so a chunk may not depend on another chunk having
//! arrived. Dup records therefore only name earlier blocks of the same chunk
//! ([`crate::Encoder::encode_chunk_standalone`], [`crate::Decoder::decode_standalone`]).
//! Cross-chunk dedup and XorDelta need state the protocol guarantees the receiver holds (an
//! acknowledged chunk, a baseline it declared); the transfer engine does not expose either to
//! the codec yet, so this codec names no baseline and no other chunk.
//!
//! Does not: read clocks or measure anything itself (the owner feeds the datacenter signal),
//! frame chunks, or decide the link mode (`dwcp_transfer::mode`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use dwcp_kernels::Kernels;
use dwcp_transfer::LinkMode;
use dwcp_transfer::codec::{CODEC_RAW, CODEC_ZERO, ChunkDecoder, ChunkEncoder, CodecError};

use crate::format::{BlockKind, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE};
use crate::{DecodeError, Decoder, DecoderConfig, EncodeError, Encoder, EncoderConfig, Policy};

/// Codec id: one zstd frame (docs/protocol.md section 7).
pub const CODEC_ZSTD: u8 = 4;
/// Codec id: HDE block container.
pub const CODEC_HDE: u8 = 5;

/// Largest chunk a receiver decodes (bounds the work one frame can cause).
pub const MAX_CHUNK_LEN: usize = 1 << 20;

/// Which codecs a transfer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CodecChoice {
    /// Follow the link mode (see the module docs).
    #[default]
    Auto,
    /// Raw and zero chunks only, whatever the mode.
    Raw,
    /// HDE container with zstd on every block, whatever the mode.
    Hde,
}

impl std::fmt::Display for CodecChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CodecChoice::Auto => "auto",
            CodecChoice::Raw => "raw",
            CodecChoice::Hde => "hde",
        })
    }
}

/// Chunk codec settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChunkCodecConfig {
    /// Codec policy.
    pub choice: CodecChoice,
    /// zstd level in Internet mode (and for [`CodecChoice::Hde`]).
    pub internet_level: i32,
    /// zstd level in Hybrid mode (and for a link-bound datacenter path).
    pub hybrid_level: i32,
    /// Hybrid: try zstd only below this sampled entropy (bits per byte).
    pub hybrid_max_entropy_bits: f32,
    /// Largest HDE block size used; the block size is the largest divisor of the chunk grid
    /// not above this.
    pub max_block_size: usize,
}

impl Default for ChunkCodecConfig {
    fn default() -> Self {
        Self {
            choice: CodecChoice::Auto,
            internet_level: 3,
            hybrid_level: 1,
            hybrid_max_entropy_bits: 6.5,
            max_block_size: 4096,
        }
    }
}

/// Why a chunk codec could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ChunkCodecError {
    /// The HDE encoder refused the configuration.
    #[error("HDE encoder set-up")]
    Encoder(#[source] EncodeError),
    /// The HDE decoder could not be created.
    #[error("HDE decoder set-up")]
    Decoder(#[source] DecodeError),
    /// The zstd decompressor could not be created.
    #[error("zstd decompressor set-up")]
    Zstd(#[source] std::io::Error),
    /// `max_block_size` outside the container's range.
    #[error("max block size {0} outside {MIN_BLOCK_SIZE}..={MAX_BLOCK_SIZE}")]
    BlockSize(usize),
}

/// Policy in force for the last chunk encoded (for stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivePolicy {
    /// Nothing encoded yet.
    None,
    /// Raw and zero chunks.
    Raw,
    /// HDE container without zstd (the peer did not negotiate ZSTD).
    HdeNoZstd,
    /// HDE container, zstd where the entropy estimate says it pays.
    HdeHybrid,
    /// HDE container, zstd tried on every block.
    HdeZstd,
}

impl ActivePolicy {
    fn code(self) -> u64 {
        self as u64
    }
    fn from_code(c: u64) -> Self {
        match c {
            1 => ActivePolicy::Raw,
            2 => ActivePolicy::HdeNoZstd,
            3 => ActivePolicy::HdeHybrid,
            4 => ActivePolicy::HdeZstd,
            _ => ActivePolicy::None,
        }
    }
    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            ActivePolicy::None => "none",
            ActivePolicy::Raw => "raw",
            ActivePolicy::HdeNoZstd => "hde (no zstd)",
            ActivePolicy::HdeHybrid => "hde + zstd where it pays",
            ActivePolicy::HdeZstd => "hde + zstd",
        }
    }
}

/// Shared between a chunk codec (inside a transfer endpoint, on a worker thread) and its
/// owner: the datacenter compression switch and the counters.
#[derive(Debug, Default)]
pub struct CodecControl {
    datacenter_compress: AtomicBool,
    chunks: [AtomicU64; 6],
    data_bytes: AtomicU64,
    payload_bytes: AtomicU64,
    container_fallbacks: AtomicU64,
    policy: AtomicU64,
    blocks: [AtomicU64; 5],
    decode_errors: AtomicU64,
}

/// Counters of a chunk codec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodecStats {
    /// Compression allowed on a datacenter link (the owner's link-bound signal).
    pub datacenter_compress: bool,
    /// Chunks encoded or decoded per codec id (0 raw, 1 zero, 2 dup, 3 xor, 4 zstd, 5 HDE).
    pub chunks: [u64; 6],
    /// Object bytes encoded or decoded (a retransmitted chunk counts again).
    pub data_bytes: u64,
    /// Chunk payload bytes produced or consumed (frame headers and trailers excluded).
    pub payload_bytes: u64,
    /// Containers dropped for the raw chunk because they were not smaller.
    pub container_fallbacks: u64,
    /// HDE blocks per kind (Zero, Dup, XorDelta, Zstd, Raw) in containers sent or received.
    pub blocks: [u64; 5],
    /// Chunks that failed to decode (the frame was dropped).
    pub decode_errors: u64,
    /// Policy in force for the last chunk.
    pub policy: &'static str,
}

impl CodecStats {
    /// Payload bytes per object byte (1.0 = no gain).
    pub fn ratio(&self) -> f64 {
        if self.data_bytes == 0 {
            1.0
        } else {
            self.payload_bytes as f64 / self.data_bytes as f64
        }
    }
}

impl CodecControl {
    /// Allow (or forbid) compression while the link mode is Datacenter. Call with `true` only
    /// on a measured link-bound signal (the sender waits on pacing or the congestion window,
    /// not on the CPU).
    pub fn set_datacenter_compress(&self, on: bool) {
        self.datacenter_compress.store(on, Ordering::Relaxed);
    }

    /// Whether compression is allowed on a datacenter link.
    pub fn datacenter_compress(&self) -> bool {
        self.datacenter_compress.load(Ordering::Relaxed)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> CodecStats {
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CodecStats {
            datacenter_compress: self.datacenter_compress(),
            chunks: std::array::from_fn(|i| ld(&self.chunks[i])),
            data_bytes: ld(&self.data_bytes),
            payload_bytes: ld(&self.payload_bytes),
            container_fallbacks: ld(&self.container_fallbacks),
            blocks: std::array::from_fn(|i| ld(&self.blocks[i])),
            decode_errors: ld(&self.decode_errors),
            policy: ActivePolicy::from_code(ld(&self.policy)).name(),
        }
    }

    fn count(&self, codec: u8, data: usize, payload: usize) {
        if let Some(c) = self.chunks.get(usize::from(codec)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.data_bytes.fetch_add(data as u64, Ordering::Relaxed);
        self.payload_bytes
            .fetch_add(payload as u64, Ordering::Relaxed);
    }

    fn publish_blocks(&self, s: &crate::Stats) {
        for (i, k) in BlockKind::ALL.iter().enumerate() {
            self.blocks[i].store(s.kind(*k).blocks, Ordering::Relaxed);
        }
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The HDE block size for a chunk of `len` bytes at `offset`: blocks must start on the
/// chunk (`block_size` divides `offset`) and should tile it (divide `len` too). Prefers the
/// largest such size in `MIN_BLOCK_SIZE..=max`; None if no valid size exists.
pub fn block_size_for(offset: u64, len: usize, max: usize) -> Option<usize> {
    let max = max.clamp(MIN_BLOCK_SIZE, MAX_BLOCK_SIZE);
    if len == 0 {
        return None;
    }
    let g = gcd(offset, len as u64);
    let top = g.min(max as u64) as usize;
    if let Some(d) = (MIN_BLOCK_SIZE..=top)
        .rev()
        .find(|d| g.is_multiple_of(*d as u64))
    {
        return Some(d);
    }
    if offset == 0 {
        // Any size works; one (possibly short) block, or max-size blocks.
        return Some(len.clamp(MIN_BLOCK_SIZE, max));
    }
    // Blocks that start on the chunk; the last one is short.
    (MIN_BLOCK_SIZE..=max)
        .rev()
        .find(|d| offset.is_multiple_of(*d as u64))
}

/// The HDE chunk codec (see the module docs). One instance encodes or decodes one transfer.
pub struct ChunkCodec {
    cfg: ChunkCodecConfig,
    k: Kernels,
    enc: Encoder,
    dec: Decoder,
    zstd: zstd::bulk::Decompressor<'static>,
    control: Arc<CodecControl>,
    /// (gcd(offset, len), block size) of the last chunk.
    bs_cache: Option<(u64, Option<usize>)>,
}

impl std::fmt::Debug for ChunkCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkCodec")
            .field("cfg", &self.cfg)
            .field("kernels", &self.k.name())
            .field("stats", &self.control.stats())
            .finish()
    }
}

impl ChunkCodec {
    /// A codec with the process-wide kernels and a fresh control handle.
    pub fn new(cfg: ChunkCodecConfig) -> Result<Self, ChunkCodecError> {
        Self::with_control(cfg, Arc::new(CodecControl::default()))
    }

    /// A codec reporting to (and switched by) `control`.
    pub fn with_control(
        cfg: ChunkCodecConfig,
        control: Arc<CodecControl>,
    ) -> Result<Self, ChunkCodecError> {
        if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&cfg.max_block_size) {
            return Err(ChunkCodecError::BlockSize(cfg.max_block_size));
        }
        let enc = Encoder::new(EncoderConfig {
            block_size: cfg.max_block_size,
            policy: Policy::Datacenter,
        })
        .map_err(ChunkCodecError::Encoder)?;
        let dec = Decoder::new(DecoderConfig {
            max_object_len: MAX_CHUNK_LEN as u64,
            max_block_size: MAX_BLOCK_SIZE,
        })
        .map_err(ChunkCodecError::Decoder)?;
        Ok(Self {
            cfg,
            k: *dwcp_kernels::kernels(),
            enc,
            dec,
            zstd: zstd::bulk::Decompressor::new().map_err(ChunkCodecError::Zstd)?,
            control,
            bs_cache: None,
        })
    }

    /// The shared control handle.
    pub fn control(&self) -> Arc<CodecControl> {
        self.control.clone()
    }

    /// The zstd policy for `mode`, or None for raw/zero.
    fn policy_for(&self, mode: LinkMode) -> Option<(Policy, ActivePolicy)> {
        let internet = (
            Policy::Internet {
                level: self.cfg.internet_level,
            },
            ActivePolicy::HdeZstd,
        );
        let hybrid = (
            Policy::Hybrid {
                level: self.cfg.hybrid_level,
                max_entropy_bits: self.cfg.hybrid_max_entropy_bits,
            },
            ActivePolicy::HdeHybrid,
        );
        match (self.cfg.choice, mode) {
            (CodecChoice::Raw, _) => None,
            (CodecChoice::Hde, _) | (CodecChoice::Auto, LinkMode::Internet) => Some(internet),
            (CodecChoice::Auto, LinkMode::Hybrid) => Some(hybrid),
            (CodecChoice::Auto, LinkMode::Datacenter) => {
                self.control.datacenter_compress().then_some(hybrid)
            }
        }
    }

    fn block_size(&mut self, offset: u64, len: usize) -> Option<usize> {
        let g = gcd(offset, len as u64);
        if let Some((cg, bs)) = self.bs_cache
            && cg == g
            && bs.is_none_or(|b| offset.is_multiple_of(b as u64))
        {
            return bs;
        }
        let bs = block_size_for(offset, len, self.cfg.max_block_size);
        self.bs_cache = Some((g, bs));
        bs
    }

    /// Raw: the engine sends the chunk where it already is (no copy into `out`).
    fn raw(&self, raw: &[u8], out: &mut Vec<u8>) -> u8 {
        out.clear();
        self.control.count(CODEC_RAW, raw.len(), raw.len());
        CODEC_RAW
    }

    /// Encodes as an HDE container; None if that is impossible or not smaller.
    fn container(
        &mut self,
        policy: Policy,
        offset: u64,
        raw: &[u8],
        out: &mut Vec<u8>,
    ) -> Option<()> {
        let bs = self.block_size(offset, raw.len())?;
        self.enc.set_block_size(bs).ok()?;
        if self.enc.config().policy != policy {
            self.enc.set_policy(policy).ok()?;
        }
        out.clear();
        let n = self
            .enc
            .encode_chunk_standalone(offset / bs as u64, raw, out)
            .ok()?;
        self.control.publish_blocks(self.enc.stats());
        if n >= raw.len() {
            self.control
                .container_fallbacks
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(())
    }
}

fn bit(mask: u32, codec: u8) -> bool {
    mask & (1u32 << codec) != 0
}

impl ChunkEncoder for ChunkCodec {
    fn codecs(&self) -> u32 {
        match self.cfg.choice {
            CodecChoice::Raw => (1 << CODEC_RAW) | (1 << CODEC_ZERO),
            // Codec 4 is listed so that the ZSTD capability is offered: container blocks
            // use zstd only when it was negotiated.
            _ => (1 << CODEC_RAW) | (1 << CODEC_ZERO) | (1 << CODEC_ZSTD) | (1 << CODEC_HDE),
        }
    }

    fn encode(
        &mut self,
        mode: LinkMode,
        allowed: u32,
        offset: u64,
        raw: &[u8],
        out: &mut Vec<u8>,
    ) -> u8 {
        out.clear();
        if !raw.is_empty() && bit(allowed, CODEC_ZERO) && self.k.is_zero(raw) {
            self.control.count(CODEC_ZERO, raw.len(), 0);
            return CODEC_ZERO;
        }
        let Some((mut policy, mut active)) = self.policy_for(mode) else {
            self.control
                .policy
                .store(ActivePolicy::Raw.code(), Ordering::Relaxed);
            return self.raw(raw, out);
        };
        if !bit(allowed, CODEC_HDE) || raw.is_empty() {
            self.control
                .policy
                .store(ActivePolicy::Raw.code(), Ordering::Relaxed);
            return self.raw(raw, out);
        }
        if !bit(allowed, CODEC_ZSTD) {
            (policy, active) = (Policy::Datacenter, ActivePolicy::HdeNoZstd);
        }
        self.control.policy.store(active.code(), Ordering::Relaxed);
        match self.container(policy, offset, raw, out) {
            Some(()) => {
                self.control.count(CODEC_HDE, raw.len(), out.len());
                CODEC_HDE
            }
            None => self.raw(raw, out),
        }
    }
}

impl ChunkDecoder for ChunkCodec {
    fn codecs(&self) -> u32 {
        (1 << CODEC_RAW) | (1 << CODEC_ZERO) | (1 << CODEC_ZSTD) | (1 << CODEC_HDE)
    }

    fn decode(
        &mut self,
        codec: u8,
        offset: u64,
        len: usize,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        let res = self.decode_inner(codec, offset, len, payload, out);
        match &res {
            Ok(()) => self.control.count(codec, len, payload.len()),
            Err(_) => {
                out.clear();
                self.control.decode_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        res
    }
}

impl ChunkCodec {
    fn decode_inner(
        &mut self,
        codec: u8,
        offset: u64,
        len: usize,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        let length = |got: usize| CodecError::Length {
            codec,
            got,
            expected: len,
        };
        out.clear();
        match codec {
            // raw: the engine writes the payload itself (ChunkDecoder contract)
            CODEC_RAW if payload.len() == len => return Ok(()),
            CODEC_RAW => return Err(length(payload.len())),
            CODEC_ZERO if payload.is_empty() => out.resize(len, 0),
            CODEC_ZERO => return Err(length(payload.len())),
            CODEC_ZSTD => {
                if len > MAX_CHUNK_LEN {
                    return Err(length(MAX_CHUNK_LEN));
                }
                out.resize(len, 0);
                let got = self
                    .zstd
                    .decompress_to_buffer(payload, out.as_mut_slice())
                    .map_err(|e| CodecError::Invalid {
                        codec,
                        source: Arc::new(e),
                    })?;
                out.truncate(got);
            }
            CODEC_HDE => {
                let d =
                    self.dec
                        .decode_standalone(payload, out)
                        .map_err(|e| CodecError::Invalid {
                            codec,
                            source: Arc::new(e),
                        })?;
                if d.offset != offset {
                    return Err(CodecError::Offset {
                        codec,
                        got: d.offset,
                        expected: offset,
                    });
                }
                // Blocks published after the container was checked.
                for (i, k) in BlockKind::ALL.iter().enumerate() {
                    self.control.blocks[i]
                        .store(self.dec.stats().kind(*k).blocks, Ordering::Relaxed);
                }
            }
            _ => return Err(CodecError::Unsupported { codec }),
        }
        if out.len() != len {
            return Err(length(out.len()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mixed(len: usize) -> Vec<u8> {
        let text = b"the quick brown fox jumps over the lazy dog; ";
        let mut x: u64 = 0x1234_5678_9abc_def1;
        (0..len)
            .map(|i| match (i / 8000) % 4 {
                0 => 0,
                1 | 2 => text[i % text.len()],
                _ => {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                }
            })
            .collect()
    }

    const ALL: u32 = (1 << 0) | (1 << 1) | (1 << 4) | (1 << 5);

    #[test]
    fn block_size_tiles_the_chunk_grid() {
        assert_eq!(block_size_for(0, 8000, 4096), Some(4000));
        assert_eq!(block_size_for(16000, 8000, 4096), Some(4000));
        assert_eq!(block_size_for(1408 * 7, 1408, 4096), Some(1408));
        assert_eq!(block_size_for(8908, 8908, 4096), Some(2227));
        // last, short chunk: still starts on a block boundary
        let bs = block_size_for(24000, 13, 4096).expect("size");
        assert_eq!(24000 % bs, 0);
        assert_eq!(block_size_for(0, 10, 4096), Some(64));
        // a prime grid above the maximum: no block size starts every chunk
        assert_eq!(block_size_for(8191, 8191, 4096), None);
        assert_eq!(block_size_for(0, 0, 4096), None);
    }

    #[test]
    fn each_mode_round_trips_every_chunk_alone() {
        let obj = mixed(100_000);
        for (choice, mode) in [
            (CodecChoice::Auto, LinkMode::Datacenter),
            (CodecChoice::Auto, LinkMode::Hybrid),
            (CodecChoice::Auto, LinkMode::Internet),
            (CodecChoice::Raw, LinkMode::Internet),
            (CodecChoice::Hde, LinkMode::Datacenter),
        ] {
            let cfg = ChunkCodecConfig {
                choice,
                ..Default::default()
            };
            let mut enc = ChunkCodec::new(cfg).expect("codec");
            let mut wire = Vec::new();
            for (i, c) in obj.chunks(8000).enumerate() {
                let mut out = Vec::new();
                let id = enc.encode(mode, ALL, i as u64 * 8000, c, &mut out);
                // raw: the engine sends the chunk itself
                if id == CODEC_RAW {
                    out = c.to_vec();
                }
                wire.push((i, id, out));
            }
            // decode in reverse order with a fresh decoder: no chunk depends on another
            wire.reverse();
            let mut dec = ChunkCodec::new(cfg).expect("codec");
            for (i, id, payload) in &wire {
                let c = obj.chunks(8000).nth(*i).expect("chunk");
                let mut out = Vec::new();
                dec.decode(*id, *i as u64 * 8000, c.len(), payload, &mut out)
                    .expect("decode");
                if *id == CODEC_RAW {
                    assert!(out.is_empty(), "raw is written from the payload");
                    out = payload.clone();
                }
                assert_eq!(&out[..], c, "{choice} {mode} chunk {i}");
            }
            let es = enc.control().stats();
            let ds = dec.control().stats();
            assert_eq!(es.chunks, ds.chunks);
            assert_eq!(es.payload_bytes, ds.payload_bytes);
            assert_eq!(es.data_bytes, obj.len() as u64);
            let compressed = matches!(
                (choice, mode),
                (CodecChoice::Auto, LinkMode::Hybrid | LinkMode::Internet) | (CodecChoice::Hde, _)
            );
            assert_eq!(es.chunks[5] > 0, compressed, "{choice} {mode}: {es:?}");
            if compressed {
                assert!(es.ratio() < 0.5, "{choice} {mode}: {es:?}");
            } else {
                assert_eq!(es.chunks[5], 0);
                assert!(es.chunks[1] > 0, "zero chunks elided: {es:?}");
            }
        }
    }

    #[test]
    fn datacenter_compresses_only_when_told_link_bound() {
        let obj = mixed(8000 * 4);
        let mut enc = ChunkCodec::new(ChunkCodecConfig::default()).expect("codec");
        let chunk = &obj[8000..16000]; // text
        let mut out = Vec::new();
        assert_eq!(
            enc.encode(LinkMode::Datacenter, ALL, 8000, chunk, &mut out),
            CODEC_RAW
        );
        enc.control().set_datacenter_compress(true);
        assert_eq!(
            enc.encode(LinkMode::Datacenter, ALL, 8000, chunk, &mut out),
            CODEC_HDE
        );
        assert!(out.len() < 1000);
        assert_eq!(enc.control().stats().policy, ActivePolicy::HdeHybrid.name());
    }

    #[test]
    fn honours_the_negotiated_codecs() {
        let obj = mixed(8000 * 4);
        let text = &obj[8000..16000];
        let mut enc = ChunkCodec::new(ChunkCodecConfig::default()).expect("codec");
        let mut out = Vec::new();
        // raw only (version 1 or a raw-only peer)
        assert_eq!(enc.encode(LinkMode::Internet, 1, 8000, text, &mut out), 0);
        assert_eq!(
            enc.encode(LinkMode::Internet, 1, 0, &obj[..8000], &mut out),
            0
        );
        // container but no ZSTD: no zstd records inside
        let id = enc.encode(LinkMode::Internet, 0b10_0011, 8000, text, &mut out);
        let mut dec = Decoder::new(DecoderConfig::default()).expect("dec");
        if id == CODEC_HDE {
            let mut o = Vec::new();
            dec.decode_standalone(&out, &mut o).expect("decode");
            assert_eq!(dec.stats().kind(BlockKind::Zstd).blocks, 0);
        }
    }

    #[test]
    fn a_container_naming_another_chunk_is_refused() {
        // Two identical 4000-byte blocks in different chunks: a committing encoder makes the
        // second a Dup of block 0, which a standalone decoder must refuse.
        let block: Vec<u8> = (0..4000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut e = Encoder::new(EncoderConfig {
            block_size: 4000,
            policy: Policy::Datacenter,
        })
        .expect("enc");
        let mut first = Vec::new();
        e.encode_chunk(0, &block, &mut first).expect("encode");
        let mut second = Vec::new();
        e.encode_chunk(2, &block, &mut second).expect("encode");
        let mut d = Decoder::new(DecoderConfig::default()).expect("dec");
        let mut out = Vec::new();
        d.decode_standalone(&first, &mut out).expect("first");
        assert!(matches!(
            d.decode_standalone(&second, &mut out),
            Err(DecodeError::DupUnseen {
                block: 2,
                reference: 0
            })
        ));
        assert!(out.is_empty());
        // the standalone encoder never emits such a reference
        let mut second = Vec::new();
        e.encode_chunk_standalone(2, &block, &mut second)
            .expect("encode");
        d.decode_standalone(&second, &mut out).expect("standalone");
        assert_eq!(out, block);
        // and within one chunk a Dup still works
        let two = [block.clone(), block.clone()].concat();
        let mut c = Vec::new();
        e.encode_chunk_standalone(4, &two, &mut c).expect("encode");
        assert!(c.len() < 4100, "second block is a dup: {}", c.len());
        d.decode_standalone(&c, &mut out).expect("intra-chunk dup");
        assert_eq!(out, two);
    }

    #[test]
    fn corrupt_or_misplaced_payloads_are_refused() {
        let obj = mixed(8000 * 4);
        let text = &obj[8000..16000];
        let mut enc = ChunkCodec::new(ChunkCodecConfig {
            choice: CodecChoice::Hde,
            ..Default::default()
        })
        .expect("codec");
        let mut out = Vec::new();
        assert_eq!(
            enc.encode(LinkMode::Internet, ALL, 8000, text, &mut out),
            CODEC_HDE
        );
        let mut dec = ChunkCodec::new(ChunkCodecConfig::default()).expect("codec");
        let mut o = Vec::new();
        // at another offset
        assert!(matches!(
            dec.decode(CODEC_HDE, 16000, 8000, &out, &mut o),
            Err(CodecError::Offset { .. })
        ));
        // other length
        assert!(dec.decode(CODEC_HDE, 8000, 7999, &out, &mut o).is_err());
        // truncated
        assert!(
            dec.decode(CODEC_HDE, 8000, 8000, &out[..out.len() - 1], &mut o)
                .is_err()
        );
        // garbage zstd
        assert!(dec.decode(CODEC_ZSTD, 0, 100, &[1, 2, 3], &mut o).is_err());
        // unknown codec
        assert!(matches!(
            dec.decode(3, 0, 100, &[1, 2, 3], &mut o),
            Err(CodecError::Unsupported { codec: 3 })
        ));
        assert_eq!(dec.control().stats().decode_errors, 5);
        // and the genuine one still decodes
        dec.decode(CODEC_HDE, 8000, 8000, &out, &mut o)
            .expect("decode");
        assert_eq!(&o[..], text);
        // a plain zstd frame (codec 4) decodes too
        let z = zstd::bulk::compress(text, 1).expect("zstd");
        dec.decode(CODEC_ZSTD, 8000, 8000, &z, &mut o)
            .expect("zstd");
        assert_eq!(&o[..], text);
    }
}
