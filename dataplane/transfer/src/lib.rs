//! AMST, the adaptive multi-stream transport of DWCP: deterministic, I/O-free protocol logic.
//!
//! Owns: the sender and receiver state machines ([`Sender`], [`Receiver`]), handshake and
//! version/capability negotiation, per-stream sequencing, selective acknowledgements, loss
//! detection (RACK-style time/ordering plus an RFC 6298-like retransmission timeout),
//! retransmission, receiver flow control, pacing, a BBR-like rate-based congestion controller
//! ([`cc`]), stream-count adaptation ([`streams`]), link mode detection ([`mode`]), durable-chunk
//! journalling for resume, the end-to-end object hash check, and a deterministic simulated link
//! ([`sim`]) used by tests and benchmarks.
//!
//! Deliberately does not: open sockets, spawn threads or read clocks. Like `quinn-proto`, the
//! caller passes `Instant`s and received datagrams in, and takes datagrams and the next wake-up
//! time out (`poll_transmit`, `poll_timeout`, `handle_timeout`). It does not implement the delta
//! codecs either: a data chunk's payload is opaque bytes plus a codec id, produced and consumed
//! through the [`codec::ChunkEncoder`] / [`codec::ChunkDecoder`] traits.
#![forbid(unsafe_code)]

pub mod cc;
pub mod codec;
pub mod io;
pub mod mode;
pub mod rangeset;
pub mod receiver;
pub mod rtt;
pub mod sender;
pub mod sim;
pub mod stats;
pub mod streams;
pub mod wire;

pub use cc::{PathHint, WarmOutcome};
pub use io::{Journal, MemJournal, MemSink, MemSource, Sink, Source};
pub use mode::{LinkMode, ModeReason};
pub use receiver::{Receiver, ReceiverConfig, ReceiverState};
pub use sender::{Sender, SenderConfig, SenderState};
pub use stats::{ReceiverStats, SenderStats, SenderTimeline};

/// Protocol version 1: one stream, raw chunks only.
pub const VERSION_1: u8 = 1;
/// Protocol version 3: several streams, codecs (zero/dup/delta/zstd/HDE).
pub const VERSION_3: u8 = 3;

/// "outer: inner: innermost": an error and its `source()` chain on one line, for people
/// (logs, reports, API error bodies). The one display helper of the dataplane's error
/// chains; code decides on an error's type or class methods, never on this text.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Errors that end a transfer.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// Reading the object from the source failed.
    #[error("reading source at offset {offset} failed")]
    Source {
        /// Byte offset of the failed read.
        offset: u64,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Writing, flushing or reading back the sink failed.
    #[error("sink {op} at offset {offset} failed")]
    Sink {
        /// Operation that failed ("open", "write", "flush", "read").
        op: &'static str,
        /// Byte offset concerned (0 for open and flush).
        offset: u64,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Recording durable ranges in the journal failed.
    #[error("journal update for object {object_id} failed")]
    Journal {
        /// Object concerned.
        object_id: u64,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The received object does not hash to the sender's XXH3-128.
    #[error("object {object_id} hash mismatch: expected {expected:032x}, got {actual:032x}")]
    HashMismatch {
        /// Object concerned.
        object_id: u64,
        /// Hash announced by the sender.
        expected: u128,
        /// Hash of what the sink holds.
        actual: u128,
    },
    /// The peer closed the transfer without a verified completion.
    #[error("peer closed the transfer with code {code}: {message}")]
    PeerClosed {
        /// Close code sent by the peer.
        code: u16,
        /// The peer's message.
        message: String,
    },
    /// A frame could not be built (a local bug or an out-of-range parameter).
    #[error("building a {what} frame failed")]
    Encode {
        /// Frame kind.
        what: &'static str,
        /// Details from the wire-format crate.
        #[source]
        source: dwcp_proto::FrameError,
    },
    /// The peer's configuration cannot be used (e.g. no common version).
    #[error("negotiation failed: {reason}")]
    Negotiation {
        /// What did not match.
        reason: &'static str,
    },
    /// Peer authentication failed (SEALED handshake): wrong or unknown key, wrong PSK,
    /// tampered handshake.
    #[error("peer authentication failed")]
    Authentication(#[source] wire::AuthError),
    /// The peer did not answer for longer than the idle timeout.
    #[error("peer silent for longer than the idle timeout")]
    IdleTimeout,
    /// Several reconnections in a row acknowledged nothing more of the object
    /// ([`sender::MAX_FRUITLESS_RECONNECTS`]): the path carries handshakes but not data.
    #[error(
        "no progress across {reconnects} reconnections: the path answers handshakes but no data frame is acknowledged (a queue or MTU that drops frames of this size?)"
    )]
    Stalled {
        /// Reconnections in a row without progress.
        reconnects: u32,
    },
    /// SEALED frames are required here and the peer did not agree to them.
    #[error("negotiation failed: peer did not agree to SEALED frames and SEALED is required")]
    SealedRequired,
}

impl TransferError {
    /// True for a failure of authentication or of the sealing policy, on either side:
    /// [`TransferError::Authentication`], [`TransferError::SealedRequired`], or a peer's
    /// CLOSE with code 5 (authentication failure) or 3 (capability required: SEALED).
    pub fn is_authentication(&self) -> bool {
        match self {
            Self::Authentication(_) | Self::SealedRequired => true,
            Self::PeerClosed { code, .. } => {
                *code == dwcp_proto::CloseCode::AUTH_FAILURE.0
                    || *code == dwcp_proto::CloseCode::CAPABILITY_REQUIRED.0
            }
            _ => false,
        }
    }
}
