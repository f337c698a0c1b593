//! The 48-byte DWCP frame header: typed fields, parsing with full validation, writing.
//!
//! Owns the header layout, the field enums ([`Version`], [`FrameType`], [`Codec`]), the
//! [`Flags`] bit set, and the stateless validation rules (reserved bits, per-type and
//! per-version field rules). It does not look at the payload, the trailer or any session
//! state (negotiated limits, replay windows): see [`crate::frame`] and the transfer layer.

use crate::error::FrameError;

/// Header length in bytes.
pub const HEADER_LEN: usize = 48;
/// First two bytes of every frame.
pub const MAGIC: u16 = 0xDC57;
/// Stream id carried by every control frame (HELLO, HELLO_ACK, ACK, NACK, PROBE, PROBE_ACK,
/// KEEPALIVE, CLOSE). DATA frames use stream ids `0..CONTROL_STREAM`.
pub const CONTROL_STREAM: u16 = 0xFFFF;
/// In SEALED frames the sequence number must be below this (it is 48 bits of the AEAD nonce).
pub const SEALED_SEQ_LIMIT: u64 = 1 << 48;

/// Protocol version carried in byte 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Version {
    /// Plain protocol: one data stream (0), raw codec, no baseline, no SEALED frames.
    V1 = 1,
    /// Full protocol: multi-stream, delta/zstd/HDE codecs, baselines, SEALED frames.
    V3 = 3,
}

impl Version {
    /// All versions, lowest first.
    pub const ALL: [Version; 2] = [Version::V1, Version::V3];

    /// Parses the version byte.
    pub fn from_u8(v: u8) -> Result<Self, FrameError> {
        match v {
            1 => Ok(Self::V1),
            3 => Ok(Self::V3),
            other => Err(FrameError::UnsupportedVersion(other)),
        }
    }

    /// The version byte.
    #[must_use]
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

/// Frame type carried in byte 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum FrameType {
    /// Handshake request: [`crate::Hello`].
    Hello = 0x01,
    /// Handshake answer: [`crate::Hello`].
    HelloAck = 0x02,
    /// Object data chunk: opaque payload, encoded with the header's codec.
    Data = 0x10,
    /// Cumulative + selective acknowledgement: [`crate::Ack`].
    Ack = 0x11,
    /// Negative acknowledgement: [`crate::Nack`].
    Nack = 0x12,
    /// Path probe: [`crate::Probe`].
    Probe = 0x20,
    /// Probe answer: [`crate::ProbeAck`].
    ProbeAck = 0x21,
    /// Liveness: [`crate::Keepalive`] (empty payload).
    Keepalive = 0x30,
    /// Connection close: [`crate::Close`].
    Close = 0x3F,
}

impl FrameType {
    /// All frame types in wire-id order.
    pub const ALL: [FrameType; 9] = [
        FrameType::Hello,
        FrameType::HelloAck,
        FrameType::Data,
        FrameType::Ack,
        FrameType::Nack,
        FrameType::Probe,
        FrameType::ProbeAck,
        FrameType::Keepalive,
        FrameType::Close,
    ];

    /// Parses the frame type byte.
    pub fn from_u8(v: u8) -> Result<Self, FrameError> {
        Ok(match v {
            0x01 => Self::Hello,
            0x02 => Self::HelloAck,
            0x10 => Self::Data,
            0x11 => Self::Ack,
            0x12 => Self::Nack,
            0x20 => Self::Probe,
            0x21 => Self::ProbeAck,
            0x30 => Self::Keepalive,
            0x3F => Self::Close,
            other => return Err(FrameError::UnknownFrameType(other)),
        })
    }

    /// The frame type byte.
    #[must_use]
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// True for every type except DATA.
    #[must_use]
    pub const fn is_control(self) -> bool {
        !matches!(self, Self::Data)
    }
}

/// Payload codec carried in byte 40 (DATA frames; control frames always use `Raw`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Codec {
    /// Payload is the chunk bytes as they are.
    Raw = 0,
    /// The chunk is all zero bytes; the payload is empty or a codec-defined descriptor.
    Zero = 1,
    /// The chunk duplicates a block already sent; the payload references it.
    Dup = 2,
    /// XOR delta against the baseline named in the header, then zero-run coded.
    XorDeltaZeroRun = 3,
    /// zstd frame.
    Zstd = 4,
    /// HDE block container (see docs/hde.md).
    HdeContainer = 5,
}

impl Codec {
    /// All codecs in id order.
    pub const ALL: [Codec; 6] = [
        Codec::Raw,
        Codec::Zero,
        Codec::Dup,
        Codec::XorDeltaZeroRun,
        Codec::Zstd,
        Codec::HdeContainer,
    ];

    /// Parses the codec byte.
    pub fn from_u8(v: u8) -> Result<Self, FrameError> {
        Ok(match v {
            0 => Self::Raw,
            1 => Self::Zero,
            2 => Self::Dup,
            3 => Self::XorDeltaZeroRun,
            4 => Self::Zstd,
            5 => Self::HdeContainer,
            other => return Err(FrameError::UnknownCodec(other)),
        })
    }

    /// The codec byte.
    #[must_use]
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

/// Defines a bit-set newtype over an unsigned integer with named constant bits.
macro_rules! bit_set {
    (
        $(#[$meta:meta])*
        $name:ident($int:ty) { $($(#[$bdoc:meta])* $bit:ident = $val:expr,)* }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct $name($int);

        impl $name {
            $($(#[$bdoc])* pub const $bit: Self = Self($val);)*
            /// Every defined bit.
            pub const ALL: Self = Self(0 $(| $val)*);
            /// No bit.
            pub const EMPTY: Self = Self(0);

            /// The raw bits.
            #[must_use]
            pub const fn bits(self) -> $int {
                self.0
            }
            /// Keeps every bit, defined or not.
            #[must_use]
            pub const fn from_bits_retain(bits: $int) -> Self {
                Self(bits)
            }
            /// `None` when an undefined bit is set.
            #[must_use]
            pub const fn from_bits(bits: $int) -> Option<Self> {
                if bits & !Self::ALL.0 == 0 { Some(Self(bits)) } else { None }
            }
            /// Drops undefined bits.
            #[must_use]
            pub const fn from_bits_truncate(bits: $int) -> Self {
                Self(bits & Self::ALL.0)
            }
            /// True when every bit of `other` is set.
            #[must_use]
            pub const fn contains(self, other: Self) -> bool {
                self.0 & other.0 == other.0
            }
            /// True when no bit is set.
            #[must_use]
            pub const fn is_empty(self) -> bool {
                self.0 == 0
            }
            /// Bits set in either.
            #[must_use]
            pub const fn union(self, other: Self) -> Self {
                Self(self.0 | other.0)
            }
            /// Bits set in both.
            #[must_use]
            pub const fn intersection(self, other: Self) -> Self {
                Self(self.0 & other.0)
            }
            /// Bits of `self` not in `other`.
            #[must_use]
            pub const fn difference(self, other: Self) -> Self {
                Self(self.0 & !other.0)
            }
            /// Sets the bits of `other`.
            pub fn insert(&mut self, other: Self) {
                self.0 |= other.0;
            }
            /// Clears the bits of `other`.
            pub fn remove(&mut self, other: Self) {
                self.0 &= !other.0;
            }
            /// Sets or clears the bits of `other`.
            pub fn set(&mut self, other: Self, on: bool) {
                if on { self.insert(other) } else { self.remove(other) }
            }
        }

        impl std::ops::BitOr for $name {
            type Output = Self;
            fn bitor(self, rhs: Self) -> Self {
                self.union(rhs)
            }
        }

        impl std::ops::BitAnd for $name {
            type Output = Self;
            fn bitand(self, rhs: Self) -> Self {
                self.intersection(rhs)
            }
        }

        impl std::ops::BitOrAssign for $name {
            fn bitor_assign(&mut self, rhs: Self) {
                self.insert(rhs);
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}(", stringify!($name))?;
                let mut first = true;
                $(
                    if self.contains(Self::$bit) {
                        if !first { f.write_str(" | ")?; }
                        f.write_str(stringify!($bit))?;
                        first = false;
                    }
                )*
                let unknown = self.0 & !Self::ALL.0;
                if unknown != 0 {
                    if !first { f.write_str(" | ")?; }
                    write!(f, "{unknown:#x}")?;
                }
                f.write_str(")")
            }
        }
    };
}
pub(crate) use bit_set;

bit_set! {
    /// Header flags (bytes 4-5). Undefined bits must be zero on the wire.
    Flags(u16) {
        /// Trailer is a 16-byte AEAD tag instead of a 4-byte CRC32C.
        SEALED = 1 << 0,
        /// Last chunk of the object (DATA only).
        LAST = 1 << 1,
        /// This chunk was sent before (DATA only; informative, it carries a new seq).
        RETRANSMIT = 1 << 2,
    }
}

/// `N` bytes of the header at `off` (offsets are constants inside the header; out-of-range
/// would read zeros rather than panic).
fn field<const N: usize>(h: &[u8; HEADER_LEN], off: usize) -> [u8; N] {
    let mut a = [0u8; N];
    if let Some(s) = h.get(off..off.saturating_add(N)) {
        a.copy_from_slice(s);
    }
    a
}

/// What [`Header::route`] reads of a datagram: enough to find its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    /// Connection id chosen by the initiator in HELLO.
    pub conn_id: u32,
    /// Frame type.
    pub frame_type: FrameType,
}

/// A decoded, validated frame header.
///
/// Every field is public; [`Header::validate`] states the rules a header must meet to be
/// written by [`crate::build_frame`] or accepted by [`Header::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// Protocol version.
    pub version: Version,
    /// Frame type.
    pub frame_type: FrameType,
    /// Flags.
    pub flags: Flags,
    /// Stream id: `0..CONTROL_STREAM` for DATA, [`CONTROL_STREAM`] for control frames.
    pub stream_id: u16,
    /// Connection id chosen by the initiator in HELLO.
    pub conn_id: u32,
    /// Bytes between header and trailer.
    pub payload_len: u32,
    /// Sequence number, per (connection, direction, stream); never reused, retransmissions
    /// take a new one.
    pub seq: u64,
    /// Object id (DATA only, 0 in control frames).
    pub object_id: u64,
    /// Byte offset of the chunk in the object (DATA only, 0 in control frames).
    pub offset: u64,
    /// Payload codec (DATA only, `Raw` in control frames).
    pub codec: Codec,
    /// Baseline id, 0 = none.
    pub baseline: u32,
}

impl Header {
    /// A header with every numeric field zero, no flag, raw codec, and the stream id the frame
    /// type requires ([`CONTROL_STREAM`] for control frames, 0 for DATA).
    #[must_use]
    pub const fn new(version: Version, frame_type: FrameType) -> Self {
        Self {
            version,
            frame_type,
            flags: Flags::EMPTY,
            stream_id: if frame_type.is_control() {
                CONTROL_STREAM
            } else {
                0
            },
            conn_id: 0,
            payload_len: 0,
            seq: 0,
            object_id: 0,
            offset: 0,
            codec: Codec::Raw,
            baseline: 0,
        }
    }

    /// Trailer length implied by the SEALED flag: 16 or 4.
    #[must_use]
    pub const fn trailer_len(&self) -> usize {
        if self.flags.contains(Flags::SEALED) {
            crate::TAG_LEN
        } else {
            crate::CRC_LEN
        }
    }

    /// Whole frame length: header + payload + trailer.
    #[must_use]
    pub const fn frame_len(&self) -> usize {
        HEADER_LEN
            .saturating_add(self.payload_len as usize)
            .saturating_add(self.trailer_len())
    }

    /// The 96-bit AEAD nonce of a SEALED frame: conn id (4 bytes) ‖ stream id (2) ‖ low 48
    /// bits of seq (6), all big-endian. Unique per key as long as seq is never reused on a
    /// stream and stays below [`SEALED_SEQ_LIMIT`].
    #[must_use]
    pub fn aead_nonce(&self) -> [u8; 12] {
        let mut n = [0u8; 12];
        let seq = self.seq.to_be_bytes();
        for (dst, src) in n.iter_mut().zip(
            self.conn_id
                .to_be_bytes()
                .iter()
                .chain(self.stream_id.to_be_bytes().iter())
                .chain(seq.iter().skip(2)),
        ) {
            *dst = *src;
        }
        n
    }

    /// Reads only what routing a datagram to its connection needs: the connection id and
    /// frame type, after checking length, magic, version and frame type. The endpoint that
    /// receives the datagram parses and verifies the whole frame (header, payload, trailer);
    /// this is the cheap first look a connection table takes, so the header's layout is known
    /// here only.
    pub fn route(buf: &[u8]) -> Result<Route, FrameError> {
        let (h, _, frame_type) = Self::prefix(buf)?;
        Ok(Route {
            conn_id: u32::from_be_bytes(field(h, 8)),
            frame_type,
        })
    }

    /// The first checks of [`Header::parse`] and [`Header::route`]: length, magic, version,
    /// frame type.
    fn prefix(buf: &[u8]) -> Result<(&[u8; HEADER_LEN], Version, FrameType), FrameError> {
        let Some(h) = buf.first_chunk::<HEADER_LEN>() else {
            return Err(FrameError::Truncated {
                need: HEADER_LEN,
                got: buf.len(),
            });
        };
        let magic = u16::from_be_bytes([h[0], h[1]]);
        if magic != MAGIC {
            return Err(FrameError::BadMagic(magic));
        }
        let version = Version::from_u8(h[2])?;
        let frame_type = FrameType::from_u8(h[3])?;
        Ok((h, version, frame_type))
    }

    /// Parses and validates the first [`HEADER_LEN`] bytes of `buf` (further bytes are
    /// ignored). Checks, in order: length, magic, version, frame type, flags and reserved
    /// bytes, codec, payload length limit, then [`Header::validate`].
    pub fn parse(buf: &[u8]) -> Result<Self, FrameError> {
        let (h, version, frame_type) = Self::prefix(buf)?;
        let flag_bits = u16::from_be_bytes([h[4], h[5]]);
        let Some(flags) = Flags::from_bits(flag_bits) else {
            return Err(FrameError::ReservedBitsSet {
                field: "flags",
                value: flag_bits & !Flags::ALL.bits(),
            });
        };
        if h[41] != 0 {
            return Err(FrameError::ReservedBitsSet {
                field: "reserved41",
                value: u16::from(h[41]),
            });
        }
        let r42 = u16::from_be_bytes([h[42], h[43]]);
        if r42 != 0 {
            return Err(FrameError::ReservedBitsSet {
                field: "reserved42",
                value: r42,
            });
        }
        let codec = Codec::from_u8(h[40])?;
        let be32 = |o: usize| u32::from_be_bytes(field(h, o));
        let be64 = |o: usize| u64::from_be_bytes(field(h, o));
        let header = Self {
            version,
            frame_type,
            flags,
            stream_id: u16::from_be_bytes([h[6], h[7]]),
            conn_id: be32(8),
            payload_len: be32(12),
            seq: be64(16),
            object_id: be64(24),
            offset: be64(32),
            codec,
            baseline: be32(44),
        };
        header.validate()?;
        Ok(header)
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `out`, exactly as the fields
    /// say (no validation: [`crate::build_frame`] validates).
    pub fn write(&self, out: &mut [u8]) -> Result<(), FrameError> {
        let got = out.len();
        let Some(h) = out.first_chunk_mut::<HEADER_LEN>() else {
            return Err(FrameError::BufferTooSmall {
                need: HEADER_LEN,
                got,
            });
        };
        *h = self.to_bytes();
        Ok(())
    }

    /// The 48 header bytes.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        let fields: [(usize, &[u8]); 11] = [
            (0, &MAGIC.to_be_bytes()),
            (2, &[self.version.as_u8()]),
            (3, &[self.frame_type.as_u8()]),
            (4, &self.flags.bits().to_be_bytes()),
            (6, &self.stream_id.to_be_bytes()),
            (8, &self.conn_id.to_be_bytes()),
            (12, &self.payload_len.to_be_bytes()),
            (16, &self.seq.to_be_bytes()),
            (24, &self.object_id.to_be_bytes()),
            (32, &self.offset.to_be_bytes()),
            (44, &self.baseline.to_be_bytes()),
        ];
        for (off, bytes) in fields {
            for (dst, src) in h.iter_mut().skip(off).zip(bytes) {
                *dst = *src;
            }
        }
        h[40] = self.codec.as_u8();
        h
    }

    /// Checks the stateless rules every header must meet (besides what the types already
    /// guarantee):
    ///
    /// - no undefined flag bit; payload length at most [`crate::MAX_PAYLOAD`];
    /// - control frames: stream id [`CONTROL_STREAM`], object id, offset and baseline 0,
    ///   codec `Raw`, no LAST/RETRANSMIT flag; HELLO and HELLO_ACK are never SEALED;
    /// - DATA: stream id below [`CONTROL_STREAM`]; codec `XorDeltaZeroRun` needs a baseline,
    ///   codecs `Raw`, `Zero` and `Zstd` must not name one;
    /// - version 1: no SEALED flag; DATA only on stream 0 with codec `Raw`;
    /// - SEALED: seq below [`SEALED_SEQ_LIMIT`].
    pub fn validate(&self) -> Result<(), FrameError> {
        let ft = self.frame_type;
        let bad = |field: &'static str, value: u64, rule: &'static str| {
            Err(FrameError::InvalidField {
                frame_type: ft,
                field,
                value,
                rule,
            })
        };
        if Flags::from_bits(self.flags.bits()).is_none() {
            return Err(FrameError::ReservedBitsSet {
                field: "flags",
                value: self.flags.bits() & !Flags::ALL.bits(),
            });
        }
        if self.payload_len as usize > crate::MAX_PAYLOAD {
            return Err(FrameError::PayloadTooLarge {
                len: self.payload_len as usize,
                max: crate::MAX_PAYLOAD,
            });
        }
        let sealed = self.flags.contains(Flags::SEALED);
        if ft.is_control() {
            if self.stream_id != CONTROL_STREAM {
                return bad(
                    "stream_id",
                    self.stream_id.into(),
                    "control frames use stream 0xFFFF",
                );
            }
            if self.object_id != 0 {
                return bad("object_id", self.object_id, "must be 0 in control frames");
            }
            if self.offset != 0 {
                return bad("offset", self.offset, "must be 0 in control frames");
            }
            if self.baseline != 0 {
                return bad(
                    "baseline",
                    self.baseline.into(),
                    "must be 0 in control frames",
                );
            }
            if self.codec != Codec::Raw {
                return bad(
                    "codec",
                    self.codec.as_u8().into(),
                    "control frames use codec 0",
                );
            }
            let data_only = self.flags.intersection(Flags::LAST | Flags::RETRANSMIT);
            if !data_only.is_empty() {
                return bad(
                    "flags",
                    data_only.bits().into(),
                    "LAST and RETRANSMIT are DATA-only",
                );
            }
            if sealed && matches!(ft, FrameType::Hello | FrameType::HelloAck) {
                return bad(
                    "flags",
                    Flags::SEALED.bits().into(),
                    "HELLO and HELLO_ACK are never sealed",
                );
            }
        } else {
            if self.stream_id == CONTROL_STREAM {
                return bad(
                    "stream_id",
                    self.stream_id.into(),
                    "stream 0xFFFF is reserved for control frames",
                );
            }
            match (self.codec, self.baseline) {
                (Codec::XorDeltaZeroRun, 0) => {
                    return bad("baseline", 0, "xor-delta codec needs a baseline");
                }
                (Codec::Raw | Codec::Zero | Codec::Zstd, b) if b != 0 => {
                    return bad(
                        "baseline",
                        b.into(),
                        "raw, zero and zstd codecs take no baseline",
                    );
                }
                _ => {}
            }
        }
        if self.version == Version::V1 {
            if sealed {
                return bad(
                    "flags",
                    Flags::SEALED.bits().into(),
                    "version 1 has no sealed frames",
                );
            }
            if ft == FrameType::Data {
                if self.stream_id != 0 {
                    return bad(
                        "stream_id",
                        self.stream_id.into(),
                        "version 1 data uses stream 0 only",
                    );
                }
                if self.codec != Codec::Raw {
                    return bad(
                        "codec",
                        self.codec.as_u8().into(),
                        "version 1 data is raw only",
                    );
                }
            }
        }
        if sealed && self.seq >= SEALED_SEQ_LIMIT {
            return bad("seq", self.seq, "sealed frames need seq < 2^48");
        }
        Ok(())
    }
}
