//! Version and capability negotiation from two HELLO payloads.
//!
//! Owns the pure rule that turns the local and the remote [`Hello`] into the [`Session`]
//! parameters both ends then use, and the per-frame check of a header against them. It does
//! not send or time anything (the handshake state machine lives in the transfer layer) and
//! does not apply local policy such as "SEALED is mandatory": the caller inspects the result.

use crate::error::{DropReason, FrameError};
use crate::header::{Codec, FrameType, Header, Version};
use crate::payload::{Capabilities, Hello, VersionSet, WirePayload};

/// Why negotiation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NegotiateError {
    /// The two version sets share no version this implementation knows.
    #[error("no common protocol version: local {local:?}, remote {remote:?}")]
    NoCommonVersion {
        /// Local versions.
        local: VersionSet,
        /// Remote versions.
        remote: VersionSet,
    },
    /// One of the HELLOs breaks the payload rules.
    #[error("invalid {side} HELLO")]
    InvalidHello {
        /// `local` or `remote`.
        side: &'static str,
        /// The rule broken.
        #[source]
        source: FrameError,
    },
}

/// Parameters both endpoints use after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Session {
    /// Version of every frame after the handshake.
    pub version: Version,
    /// Capabilities both offered (known bits only; empty in version 1).
    pub capabilities: Capabilities,
    /// Data streams usable: ids `0..max_streams` (1 without MULTISTREAM).
    pub max_streams: u16,
    /// Largest frame payload either side may send.
    pub max_payload: u32,
    /// Object chunk size.
    pub chunk_size: u32,
}

/// Negotiates a session: the highest version both speak; the intersection of capabilities
/// (none in version 1, which has no delta, zstd, multistream or sealed frames); the minimum of
/// each limit (one stream without MULTISTREAM). Symmetric: both ends compute the same result.
pub fn negotiate(local: &Hello, remote: &Hello) -> Result<Session, NegotiateError> {
    local
        .validate()
        .map_err(|source| NegotiateError::InvalidHello {
            side: "local",
            source,
        })?;
    remote
        .validate()
        .map_err(|source| NegotiateError::InvalidHello {
            side: "remote",
            source,
        })?;
    let common = local.versions.intersection(remote.versions);
    let version = common.highest().ok_or(NegotiateError::NoCommonVersion {
        local: local.versions,
        remote: remote.versions,
    })?;
    let capabilities = match version {
        Version::V1 => Capabilities::EMPTY,
        Version::V3 => local
            .capabilities
            .intersection(remote.capabilities)
            .intersection(Capabilities::ALL),
    };
    let max_streams = if capabilities.contains(Capabilities::MULTISTREAM) {
        local.max_streams.min(remote.max_streams)
    } else {
        1
    };
    Ok(Session {
        version,
        capabilities,
        max_streams,
        max_payload: local.max_payload.min(remote.max_payload),
        chunk_size: local.chunk_size.min(remote.chunk_size),
    })
}

impl Session {
    /// True when DATA frames of this session may use `codec`: raw always; zero, dup,
    /// xor-delta and HDE container with DELTA; zstd with ZSTD.
    #[must_use]
    pub fn codec_allowed(&self, codec: Codec) -> bool {
        match codec {
            Codec::Raw => true,
            Codec::Zero | Codec::Dup | Codec::XorDeltaZeroRun | Codec::HdeContainer => {
                self.capabilities.contains(Capabilities::DELTA)
            }
            Codec::Zstd => self.capabilities.contains(Capabilities::ZSTD),
        }
    }

    /// Checks a parsed post-handshake header against the session: version, SEALED (required
    /// when negotiated, refused otherwise), codec, data stream id and payload length.
    /// HELLO/HELLO_ACK are handshake frames and always fail here.
    pub fn admits(&self, h: &Header) -> Result<(), DropReason> {
        if h.version != self.version {
            return Err(DropReason::NotNegotiated);
        }
        if matches!(h.frame_type, FrameType::Hello | FrameType::HelloAck) {
            return Err(DropReason::NotNegotiated);
        }
        let sealed_session = self.capabilities.contains(Capabilities::SEALED);
        if h.flags.contains(crate::Flags::SEALED) != sealed_session {
            return Err(if sealed_session {
                DropReason::Unauthenticated
            } else {
                DropReason::NotNegotiated
            });
        }
        if h.frame_type == FrameType::Data
            && (!self.codec_allowed(h.codec) || h.stream_id >= self.max_streams)
        {
            return Err(DropReason::NotNegotiated);
        }
        if h.payload_len > self.max_payload {
            return Err(DropReason::AboveNegotiatedLimit);
        }
        Ok(())
    }
}
