//! DWCP wire format: the 48-byte header, whole frames with their CRC32C or AEAD-tag trailer,
//! the typed control payloads, version/capability negotiation and the replay window rule.
//!
//! Pure and I/O-free: callers pass byte slices in and get typed values or [`FrameError`]s
//! out; nothing here reads clocks, sockets or randomness, and nothing panics on any input.
//! The specification is docs/protocol.md. Codecs of DATA payloads (HDE, zstd, XOR delta) and
//! AEAD cryptography are deliberately not here.
//!
//! Receive path:
//! ```
//! use dwcp_proto::*;
//! let mut buf = [0u8; 256];
//! let mut h = Header::new(Version::V3, FrameType::Data);
//! h.stream_id = 2;
//! h.seq = 7;
//! h.flags = Flags::LAST;
//! let n = build_frame(&h, b"chunk bytes", &mut buf).unwrap();
//! let f = parse_frame(&buf[..n]).unwrap();
//! assert_eq!(f.payload, b"chunk bytes");
//! assert_eq!(f.header.payload_len, 11);
//! let bad = parse_frame(&buf[..n - 1]).unwrap_err();
//! assert_eq!(bad.reason(), DropReason::Truncated);
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

pub mod error;
pub mod frame;
pub mod header;
pub mod negotiate;
pub mod payload;
pub mod replay;

pub use error::{DropReason, FrameError};
pub use frame::{
    CRC_LEN, DEFAULT_PORT, Frame, MAX_FRAME_LEN, MAX_PAYLOAD, MIN_FRAME_LEN, TAG_LEN, Trailer,
    UnverifiedFrame, UnverifiedFrameMut, build_frame, build_sealed_frame, build_typed_frame,
    finish_frame_in_place, frame_crc, parse_frame, parse_frame_unverified,
    parse_frame_unverified_mut, seal_frame_in_place,
};
pub use header::{
    CONTROL_STREAM, Codec, Flags, FrameType, HEADER_LEN, Header, MAGIC, Route, SEALED_SEQ_LIMIT,
    Version,
};
pub use negotiate::{NegotiateError, Session, negotiate};
pub use payload::{
    Ack, Capabilities, Close, CloseCode, DIGEST_XXH3_128, Hello, KEEPALIVE_DIGEST_LEN, Keepalive,
    MAX_CLOSE_MESSAGE_LEN, MAX_KEY_EXCHANGE_LEN, MAX_NACK_RANGES, MAX_SACK_RANGES, Nack,
    ObjectDigest, Payload, Probe, ProbeAck, SESSION_NONCE_LEN, SeqRange, VersionSet, WirePayload,
};
pub use replay::ReplayWindow;
