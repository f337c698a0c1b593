//! Errors of the wire boundary and the drop-reason counter index.
//!
//! Owns [`FrameError`] (every way a datagram or a payload can be malformed, with context) and
//! [`DropReason`] (a small `Copy` index the dataplane uses to count dropped frames). It does
//! not count anything itself: counters live in the dataplane.

use crate::header::FrameType;

/// Every way building or parsing a DWCP frame or one of its typed payloads can fail.
///
/// Receive-side variants map to a [`DropReason`] with [`FrameError::reason`]; the receiver
/// counts the reason and drops the datagram.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The datagram is shorter than the header or than header + payload length + trailer.
    #[error("truncated frame: need {need} bytes, got {got}")]
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        got: usize,
    },
    /// The first two bytes are not 0xDC57.
    #[error("bad magic 0x{0:04x}")]
    BadMagic(u16),
    /// The version byte is neither 1 nor 3.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// The frame type byte names no known frame type.
    #[error("unknown frame type 0x{0:02x}")]
    UnknownFrameType(u8),
    /// A reserved bit (an undefined flag, or a reserved header byte) is not zero.
    #[error("reserved bits set in {field}: 0x{value:04x}")]
    ReservedBitsSet {
        /// Which header field (`flags`, `reserved41`, `reserved42`).
        field: &'static str,
        /// The offending bits.
        value: u16,
    },
    /// The codec byte names no known codec.
    #[error("unknown codec id {0}")]
    UnknownCodec(u8),
    /// The payload length field exceeds [`crate::MAX_PAYLOAD`].
    #[error("payload length {len} exceeds maximum {max}")]
    PayloadTooLarge {
        /// Declared or supplied payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A header field holds a value the frame type or version does not allow.
    #[error("{frame_type:?} header field {field} = {value} is not allowed: {rule}")]
    InvalidField {
        /// The frame type of the header.
        frame_type: FrameType,
        /// The field name.
        field: &'static str,
        /// The value found.
        value: u64,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// The datagram is longer than header + payload length + trailer.
    #[error("length mismatch: header says {expected} bytes, datagram has {got}")]
    LengthMismatch {
        /// 48 + payload length + trailer length.
        expected: usize,
        /// Datagram length.
        got: usize,
    },
    /// The CRC32C trailer does not match header + payload.
    #[error("checksum mismatch: trailer 0x{expected:08x}, computed 0x{actual:08x}")]
    ChecksumMismatch {
        /// Value in the trailer.
        expected: u32,
        /// Value computed over header + payload.
        actual: u32,
    },
    /// A SEALED frame was given to the checksum-verifying parser; it must go through
    /// [`crate::parse_frame_unverified`] and AEAD verification instead.
    #[error("sealed frame needs AEAD verification, not a checksum")]
    SealedNotVerified,
    /// A typed payload is shorter than its layout requires.
    #[error("{frame_type:?} payload truncated: need {need} bytes, got {got}")]
    PayloadTruncated {
        /// Frame type whose payload was decoded.
        frame_type: FrameType,
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        got: usize,
    },
    /// A typed payload has bytes after its last field that are not allowed.
    #[error("{frame_type:?} payload has {extra} trailing bytes")]
    TrailingBytes {
        /// Frame type whose payload was decoded.
        frame_type: FrameType,
        /// Count of unexpected bytes.
        extra: usize,
    },
    /// A typed payload field holds a value its layout does not allow.
    #[error("{frame_type:?} payload field {field} = {value} is not allowed: {rule}")]
    InvalidPayloadField {
        /// Frame type whose payload was decoded.
        frame_type: FrameType,
        /// The field name.
        field: &'static str,
        /// The value found.
        value: u64,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// The CLOSE message is not valid UTF-8.
    #[error("{frame_type:?} message is not UTF-8")]
    InvalidUtf8 {
        /// Frame type whose payload was decoded.
        frame_type: FrameType,
        /// Decoder error.
        #[source]
        source: std::str::Utf8Error,
    },
    /// The output buffer is too small for what is being written (sender side only).
    #[error("output buffer too small: need {need} bytes, got {got}")]
    BufferTooSmall {
        /// Bytes needed.
        need: usize,
        /// Buffer length.
        got: usize,
    },
}

impl FrameError {
    /// The counter index for this error. Every receive-side error has its own reason;
    /// [`FrameError::BufferTooSmall`] (sender side) maps to [`DropReason::LocalError`].
    #[must_use]
    pub fn reason(&self) -> DropReason {
        match self {
            Self::Truncated { .. } => DropReason::Truncated,
            Self::BadMagic(_) => DropReason::BadMagic,
            Self::UnsupportedVersion(_) => DropReason::UnsupportedVersion,
            Self::UnknownFrameType(_) => DropReason::UnknownFrameType,
            Self::ReservedBitsSet { .. } => DropReason::ReservedBitsSet,
            Self::UnknownCodec(_) => DropReason::UnknownCodec,
            Self::PayloadTooLarge { .. } => DropReason::PayloadTooLarge,
            Self::InvalidField { .. } => DropReason::InvalidField,
            Self::LengthMismatch { .. } => DropReason::LengthMismatch,
            Self::ChecksumMismatch { .. } => DropReason::ChecksumMismatch,
            Self::SealedNotVerified => DropReason::Unauthenticated,
            Self::PayloadTruncated { .. }
            | Self::TrailingBytes { .. }
            | Self::InvalidPayloadField { .. }
            | Self::InvalidUtf8 { .. } => DropReason::MalformedPayload,
            Self::BufferTooSmall { .. } => DropReason::LocalError,
        }
    }
}

macro_rules! drop_reasons {
    ($($(#[$doc:meta])* $name:ident = $label:literal,)*) => {
        /// Why a received frame was dropped: a small `Copy` index for per-reason counters
        /// (`counters[reason.index()]`, `DropReason::COUNT` entries, labels from
        /// [`DropReason::as_str`]).
        ///
        /// The first group is produced by this crate's parsers; the second group names checks
        /// done by the transfer layer (authentication, replay, connection state) so that every
        /// drop in the dataplane is counted through the same index.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum DropReason {
            $($(#[$doc])* $name,)*
        }

        impl DropReason {
            /// Every reason, in index order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$name,)*];
            /// Number of reasons (size of a counter array).
            pub const COUNT: usize = Self::ALL.len();

            /// Stable snake_case label for metrics.
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(DropReason::$name => $label,)*
                }
            }
        }
    };
}

drop_reasons! {
    /// Datagram shorter than header or than declared frame.
    Truncated = "truncated",
    /// Bad magic.
    BadMagic = "bad_magic",
    /// Unknown version byte.
    UnsupportedVersion = "unsupported_version",
    /// Unknown frame type byte.
    UnknownFrameType = "unknown_frame_type",
    /// Undefined flag or reserved byte set.
    ReservedBitsSet = "reserved_bits_set",
    /// Unknown codec id.
    UnknownCodec = "unknown_codec",
    /// Payload length above the protocol maximum.
    PayloadTooLarge = "payload_too_large",
    /// Header field not allowed for the frame type or version.
    InvalidField = "invalid_field",
    /// Datagram longer than the declared frame.
    LengthMismatch = "length_mismatch",
    /// CRC32C trailer mismatch.
    ChecksumMismatch = "checksum_mismatch",
    /// SEALED frame offered to the checksum path.
    Unauthenticated = "unauthenticated",
    /// Typed payload malformed.
    MalformedPayload = "malformed_payload",
    /// AEAD tag verification failed (transfer layer).
    AuthFailed = "auth_failed",
    /// Sequence number already seen or older than the replay window (transfer layer).
    Replay = "replay",
    /// Connection id not known to the receiver (transfer layer).
    UnknownConnection = "unknown_connection",
    /// Frame uses a version or capability the session did not negotiate (transfer layer).
    NotNegotiated = "not_negotiated",
    /// Payload larger than the negotiated maximum (transfer layer).
    AboveNegotiatedLimit = "above_negotiated_limit",
    /// Error on the local side, not caused by the peer.
    LocalError = "local_error",
}

impl DropReason {
    /// Index into a counter array of [`DropReason::COUNT`] entries.
    #[must_use]
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
