//! HDE, hierarchical delta encoding: a block codec that encodes each block of an object as the
//! cheapest of Zero, Dup (an earlier block of the same object), XorDelta (zero-run coded XOR
//! against the receiver's baseline version), Zstd or Raw, in a self-describing container
//! (DWCP codec id 5; wire specification in docs/hde.md).
//!
//! Owns the container format ([`format`]), the [`Encoder`] with its policy and dedup table,
//! the [`Decoder`] with its validation, and the transfer engine's chunk codec ([`chunk`]: the
//! mode-driven policy, every chunk an independent container). Does not own framing,
//! transport, or SIMD code (the kernels come from `dwcp-kernels`); this crate has no `unsafe`
//! code.
#![forbid(unsafe_code)]

pub mod chunk;
mod decoder;
mod encoder;
pub mod estimate;
pub mod format;

pub use decoder::{DecodeError, Decoded, Decoder, DecoderConfig};
pub use encoder::{Baseline, EncodeError, Encoder, EncoderConfig, Policy};
pub use format::{BlockKind, KindStats, Stats};
