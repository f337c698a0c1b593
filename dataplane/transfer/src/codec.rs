//! The hook between the transfer engine and the chunk codecs: a chunk's payload is opaque bytes
//! plus a codec id. The engine only ships these; the delta/compression codecs live in their own
//! crate and plug in through [`ChunkEncoder`] / [`ChunkDecoder`].
//!
//! Built in: codec 0 (raw) and codec 1 (all-zero chunk, empty payload), enough for version 1
//! (raw only) and for tests that show a v3 path differs on the wire yet delivers the same bytes.
//! The HDE codec with the mode-driven policy (raw/zero in datacenter mode, HDE + zstd in
//! internet mode, per-block choice in hybrid mode) is `dwcp_hde::chunk::ChunkCodec`.
//!
//! Contract for implementations: every chunk must decode on its own. Chunks are lost,
//! retransmitted (re-encoded, possibly under another mode), duplicated and reordered, and a
//! receiver may restart and resume, so a payload may only reference state the protocol
//! guarantees the receiver holds (a baseline it declared), never another chunk of the
//! transfer. A decoder that refuses a payload makes the receiver drop the frame (counted as
//! malformed); the chunk is then retransmitted.

use crate::mode::LinkMode;

/// Codec id: raw bytes.
pub const CODEC_RAW: u8 = 0;
/// Codec id: the chunk is all zeros, payload empty.
pub const CODEC_ZERO: u8 = 1;

/// Error decoding a chunk payload.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CodecError {
    /// The codec id is not one this decoder knows.
    #[error("unsupported codec id {codec}")]
    Unsupported {
        /// Codec id.
        codec: u8,
    },
    /// The payload does not decode to the expected chunk length.
    #[error("codec {codec} payload decodes to {got} bytes, expected {expected}")]
    Length {
        /// Codec id.
        codec: u8,
        /// Bytes produced.
        got: usize,
        /// Chunk length expected.
        expected: usize,
    },
    /// The payload is not valid for its codec.
    #[error("codec {codec} payload is invalid")]
    Invalid {
        /// Codec id.
        codec: u8,
        /// What the codec found.
        #[source]
        source: std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The payload describes bytes at another offset than the frame's.
    #[error("codec {codec} payload is for offset {got}, the frame says {expected}")]
    Offset {
        /// Codec id.
        codec: u8,
        /// Offset in the payload.
        got: u64,
        /// Offset in the frame header.
        expected: u64,
    },
}

/// Encodes a raw chunk for the wire.
pub trait ChunkEncoder: std::fmt::Debug + Send {
    /// Bitmask of codec ids this encoder may emit.
    fn codecs(&self) -> u32;
    /// Encode `raw` (chunk at `offset`) into `out`, using only codecs in `allowed`; returns the
    /// codec id. `mode` is the current link mode (the codec layer's policy input).
    ///
    /// For [`CODEC_RAW`] `out` is ignored: the engine sends `raw` where it already is (it
    /// reads the chunk straight into the frame), so an encoder need not copy it.
    fn encode(
        &mut self,
        mode: LinkMode,
        allowed: u32,
        offset: u64,
        raw: &[u8],
        out: &mut Vec<u8>,
    ) -> u8;
}

/// Decodes a chunk payload back to raw bytes.
pub trait ChunkDecoder: std::fmt::Debug + Send {
    /// Bitmask of codec ids this decoder understands.
    fn codecs(&self) -> u32;
    /// Decode `payload` (codec `codec`) of the chunk at `offset` with raw length `len` into `out`.
    ///
    /// For [`CODEC_RAW`] a decoder checks that `payload` is `len` bytes and leaves `out`
    /// empty: the engine then writes the payload from the receive buffer itself (no copy).
    /// Any other codec fills `out` with exactly `len` bytes.
    fn decode(
        &mut self,
        codec: u8,
        offset: u64,
        len: usize,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError>;
}

/// Built-in codec: raw, and zero-chunk elision when allowed.
#[derive(Debug, Default, Clone, Copy)]
pub struct BasicCodec;

impl ChunkEncoder for BasicCodec {
    fn codecs(&self) -> u32 {
        (1 << CODEC_RAW) | (1 << CODEC_ZERO)
    }
    fn encode(
        &mut self,
        _mode: LinkMode,
        allowed: u32,
        _offset: u64,
        raw: &[u8],
        out: &mut Vec<u8>,
    ) -> u8 {
        out.clear();
        if allowed & (1 << CODEC_ZERO) != 0 && raw.iter().all(|&b| b == 0) {
            return CODEC_ZERO;
        }
        CODEC_RAW
    }
}

impl ChunkDecoder for BasicCodec {
    fn codecs(&self) -> u32 {
        (1 << CODEC_RAW) | (1 << CODEC_ZERO)
    }
    fn decode(
        &mut self,
        codec: u8,
        _offset: u64,
        len: usize,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        out.clear();
        match codec {
            CODEC_RAW if payload.len() == len => return Ok(()),
            CODEC_RAW => {
                return Err(CodecError::Length {
                    codec,
                    got: payload.len(),
                    expected: len,
                });
            }
            CODEC_ZERO if payload.is_empty() => out.resize(len, 0),
            CODEC_ZERO => {
                return Err(CodecError::Length {
                    codec,
                    got: payload.len(),
                    expected: 0,
                });
            }
            _ => return Err(CodecError::Unsupported { codec }),
        }
        if out.len() != len {
            return Err(CodecError::Length {
                codec,
                got: out.len(),
                expected: len,
            });
        }
        Ok(())
    }
}
