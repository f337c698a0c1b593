//! Typed payloads of the control frames, with encode/decode and validation.
//!
//! Owns the payload layouts of HELLO/HELLO_ACK ([`Hello`]), ACK ([`Ack`]), NACK ([`Nack`]),
//! PROBE ([`Probe`]), PROBE_ACK ([`ProbeAck`]), KEEPALIVE ([`Keepalive`]) and CLOSE
//! ([`Close`]), and the [`Payload`] sum type that dispatches on the frame type. DATA payloads
//! are opaque here (their codecs live in the HDE and kernels crates). Decoders never panic:
//! every length and field is checked and reported as a [`FrameError`]. Encoders apply the same
//! rules, so whatever encodes also decodes to the same value.

use crate::error::FrameError;
use crate::frame::MAX_PAYLOAD;
use crate::header::{CONTROL_STREAM, FrameType, Version, bit_set};

/// Largest key-exchange blob in HELLO / HELLO_ACK.
pub const MAX_KEY_EXCHANGE_LEN: usize = 1280;
/// Largest number of selective-ack ranges in one ACK.
pub const MAX_SACK_RANGES: usize = 32;
/// Largest number of missing ranges in one NACK.
pub const MAX_NACK_RANGES: usize = 64;
/// Largest CLOSE message in bytes (UTF-8).
pub const MAX_CLOSE_MESSAGE_LEN: usize = 256;
/// Length of the HELLO session nonce.
pub const SESSION_NONCE_LEN: usize = 32;
/// Fixed part of a HELLO payload (before the key-exchange blob).
pub const HELLO_FIXED_LEN: usize = 48;
/// Fixed part of an ACK payload (before the ranges).
pub const ACK_FIXED_LEN: usize = 32;
/// Fixed part of a NACK payload (before the ranges).
pub const NACK_FIXED_LEN: usize = 8;
/// Fixed part of a PROBE payload (before the padding).
pub const PROBE_FIXED_LEN: usize = 16;
/// PROBE_ACK payload length.
pub const PROBE_ACK_LEN: usize = 24;
/// Fixed part of a CLOSE payload (before the message).
pub const CLOSE_FIXED_LEN: usize = 4;
/// Bytes per encoded sequence range.
pub const RANGE_LEN: usize = 16;

/// A typed payload that can be encoded into and decoded from a frame payload.
pub trait WirePayload: Sized {
    /// The frame type named in decode errors.
    const FRAME_TYPE: FrameType;
    /// True when frames of type `ft` carry this payload.
    fn frame_type_allowed(ft: FrameType) -> bool {
        ft == Self::FRAME_TYPE
    }
    /// Checks the rules [`WirePayload::decode`] enforces.
    fn validate(&self) -> Result<(), FrameError>;
    /// Encoded length in bytes.
    fn encoded_len(&self) -> usize;
    /// Validates, then writes the payload at the start of `out`; returns the length written.
    fn encode(&self, out: &mut [u8]) -> Result<usize, FrameError>;
    /// Decodes and validates a whole payload (no bytes may be left over).
    fn decode(buf: &[u8]) -> Result<Self, FrameError>;

    /// Encodes into a new vector.
    fn to_vec(&self) -> Result<Vec<u8>, FrameError> {
        let mut v = vec![0u8; self.encoded_len()];
        let n = self.encode(&mut v)?;
        v.truncate(n);
        Ok(v)
    }
}

// ---------------------------------------------------------------------------------------
// Byte cursor helpers (bounds-checked, never panic).

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    ft: FrameType,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], ft: FrameType) -> Self {
        Self { buf, pos: 0, ft }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        let end = self.pos.saturating_add(n);
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(FrameError::PayloadTruncated {
                frame_type: self.ft,
                need: end,
                got: self.buf.len(),
            })?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u16(&mut self) -> Result<u16, FrameError> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        self.array().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Result<u64, FrameError> {
        self.array().map(u64::from_be_bytes)
    }

    fn rest(&mut self) -> &'a [u8] {
        let s = self.buf.get(self.pos..).unwrap_or_default();
        self.pos = self.buf.len();
        s
    }

    fn finish(&self) -> Result<(), FrameError> {
        let extra = self.buf.len().saturating_sub(self.pos);
        if extra != 0 {
            return Err(FrameError::TrailingBytes {
                frame_type: self.ft,
                extra,
            });
        }
        Ok(())
    }
}

struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    fn new(buf: &'a mut [u8], need: usize) -> Result<Self, FrameError> {
        if buf.len() < need {
            return Err(FrameError::BufferTooSmall {
                need,
                got: buf.len(),
            });
        }
        Ok(Self { buf, pos: 0 })
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        let end = self.pos.saturating_add(bytes.len());
        let got = self.buf.len();
        let dst = self
            .buf
            .get_mut(self.pos..end)
            .ok_or(FrameError::BufferTooSmall { need: end, got })?;
        dst.copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    fn zeros(&mut self, n: usize) -> Result<(), FrameError> {
        let end = self.pos.saturating_add(n);
        let got = self.buf.len();
        let dst = self
            .buf
            .get_mut(self.pos..end)
            .ok_or(FrameError::BufferTooSmall { need: end, got })?;
        dst.fill(0);
        self.pos = end;
        Ok(())
    }
}

fn bad(ft: FrameType, field: &'static str, value: u64, rule: &'static str) -> FrameError {
    FrameError::InvalidPayloadField {
        frame_type: ft,
        field,
        value,
        rule,
    }
}

fn check_zero_padding(ft: FrameType, pad: &[u8]) -> Result<(), FrameError> {
    match pad.iter().find(|b| **b != 0) {
        Some(b) => Err(bad(ft, "padding", u64::from(*b), "padding bytes must be 0")),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------
// Sequence ranges.

/// A half-open range of sequence numbers `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqRange {
    /// First sequence number in the range.
    pub start: u64,
    /// One past the last sequence number in the range.
    pub end: u64,
}

impl SeqRange {
    /// `[start, end)`.
    #[must_use]
    pub const fn new(start: u64, end: u64) -> Self {
        Self { start, end }
    }

    /// Number of sequence numbers in the range.
    #[must_use]
    pub const fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// True when the range holds no sequence number.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// True when `seq` is in the range.
    #[must_use]
    pub const fn contains(&self, seq: u64) -> bool {
        self.start <= seq && seq < self.end
    }
}

/// Ranges must be non-empty, ascending, and separated by at least one missing number.
/// `floor` is a strict lower bound for the first start (`None` = no bound).
fn check_ranges(ft: FrameType, ranges: &[SeqRange], floor: Option<u64>) -> Result<(), FrameError> {
    let mut prev_end: Option<u64> = None;
    for r in ranges {
        if r.start >= r.end {
            return Err(bad(ft, "range", r.start, "ranges need start < end"));
        }
        match prev_end {
            Some(pe) if r.start <= pe => {
                return Err(bad(
                    ft,
                    "range",
                    r.start,
                    "ranges must ascend with a gap between them",
                ));
            }
            None => {
                if let Some(f) = floor
                    && r.start <= f
                {
                    return Err(bad(
                        ft,
                        "range",
                        r.start,
                        "selective ranges start above the cumulative seq",
                    ));
                }
            }
            _ => {}
        }
        prev_end = Some(r.end);
    }
    Ok(())
}

fn read_ranges(r: &mut Reader<'_>, n: usize) -> Result<Vec<SeqRange>, FrameError> {
    // Check the length before allocating so a bogus count cannot make us allocate.
    let need = n.saturating_mul(RANGE_LEN);
    let avail = r.buf.len().saturating_sub(r.pos);
    if avail < need {
        return Err(FrameError::PayloadTruncated {
            frame_type: r.ft,
            need: r.pos.saturating_add(need),
            got: r.buf.len(),
        });
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(SeqRange {
            start: r.u64()?,
            end: r.u64()?,
        });
    }
    Ok(v)
}

fn write_ranges(w: &mut Writer<'_>, ranges: &[SeqRange]) -> Result<(), FrameError> {
    for r in ranges {
        w.put(&r.start.to_be_bytes())?;
        w.put(&r.end.to_be_bytes())?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// HELLO / HELLO_ACK.

bit_set! {
    /// Protocol versions an endpoint speaks: bit `v` set means version `v`. Undefined bits
    /// are kept as received and ignored by negotiation (a future version's bit).
    VersionSet(u16) {
        /// Version 1.
        V1 = 1 << 1,
        /// Version 3.
        V3 = 1 << 3,
    }
}

impl VersionSet {
    /// The set holding one version.
    #[must_use]
    pub const fn of(v: Version) -> Self {
        Self::from_bits_retain(1 << v.as_u8())
    }

    /// True when version `v` is in the set.
    #[must_use]
    pub const fn supports(self, v: Version) -> bool {
        self.contains(Self::of(v))
    }

    /// Highest known version in the set.
    #[must_use]
    pub fn highest(self) -> Option<Version> {
        Version::ALL.into_iter().rev().find(|v| self.supports(*v))
    }
}

bit_set! {
    /// Capability bits offered in HELLO / HELLO_ACK. Undefined bits are kept as received and
    /// dropped by negotiation.
    Capabilities(u16) {
        /// Delta codecs: zero, dup, xor-delta + zero-run, HDE container; baselines.
        DELTA = 1 << 0,
        /// zstd codec.
        ZSTD = 1 << 1,
        /// More than one data stream.
        MULTISTREAM = 1 << 2,
        /// SEALED frames (AEAD).
        SEALED = 1 << 3,
        /// Late object digest: HELLO's object hash field carries the source's resume key
        /// and the sender sends the object's XXH3-128 at the end, in a KEEPALIVE
        /// ([`ObjectDigest`], docs/protocol.md 8.3).
        LATE_DIGEST = 1 << 4,
    }
}

/// HELLO and HELLO_ACK payload: what an endpoint supports and its receive limits.
///
/// Layout (big-endian): versions u16, capabilities u16, max_streams u16,
/// key_exchange_len u16, max_payload u32, chunk_size u32, session_nonce [u8; 32],
/// key_exchange [u8; key_exchange_len], then the extension: every remaining byte of the
/// payload, opaque to the wire layer (the transfer layer's handshake data, and any
/// anti-amplification padding it defines).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Hello {
    /// Versions spoken.
    pub versions: VersionSet,
    /// Capabilities offered.
    pub capabilities: Capabilities,
    /// Most data streams this endpoint accepts (>= 1).
    pub max_streams: u16,
    /// Largest frame payload this endpoint accepts (1..=MAX_PAYLOAD).
    pub max_payload: u32,
    /// Preferred object chunk size in bytes (1..=max_payload).
    pub chunk_size: u32,
    /// Fresh random nonce of this endpoint for this session.
    pub session_nonce: [u8; SESSION_NONCE_LEN],
    /// Key-exchange material (e.g. an ephemeral public key), at most
    /// [`MAX_KEY_EXCHANGE_LEN`] bytes; empty when SEALED is not offered.
    pub key_exchange: Vec<u8>,
    /// Extension bytes after the key exchange, up to the end of the payload (opaque here).
    pub extension: Vec<u8>,
}

impl Hello {
    /// A HELLO offering everything this implementation supports, with the given limits, a
    /// zero nonce, no key exchange and no extension.
    #[must_use]
    pub fn new(max_streams: u16, max_payload: u32, chunk_size: u32) -> Self {
        Self {
            versions: VersionSet::ALL,
            capabilities: Capabilities::ALL,
            max_streams,
            max_payload,
            chunk_size,
            session_nonce: [0; SESSION_NONCE_LEN],
            key_exchange: Vec::new(),
            extension: Vec::new(),
        }
    }
}

impl WirePayload for Hello {
    const FRAME_TYPE: FrameType = FrameType::Hello;

    fn frame_type_allowed(ft: FrameType) -> bool {
        matches!(ft, FrameType::Hello | FrameType::HelloAck)
    }

    fn validate(&self) -> Result<(), FrameError> {
        let ft = Self::FRAME_TYPE;
        if self.max_streams == 0 {
            return Err(bad(ft, "max_streams", 0, "must be at least 1"));
        }
        if self.max_payload == 0 || self.max_payload as usize > MAX_PAYLOAD {
            return Err(bad(
                ft,
                "max_payload",
                self.max_payload.into(),
                "must be in 1..=65472",
            ));
        }
        if self.chunk_size == 0 || self.chunk_size > self.max_payload {
            return Err(bad(
                ft,
                "chunk_size",
                self.chunk_size.into(),
                "must be in 1..=max_payload",
            ));
        }
        if self.key_exchange.len() > MAX_KEY_EXCHANGE_LEN {
            return Err(bad(
                ft,
                "key_exchange_len",
                self.key_exchange.len() as u64,
                "at most 1280 bytes",
            ));
        }
        if self.encoded_len() > MAX_PAYLOAD {
            return Err(bad(
                ft,
                "extension",
                self.extension.len() as u64,
                "payload exceeds the maximum",
            ));
        }
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        HELLO_FIXED_LEN
            .saturating_add(self.key_exchange.len())
            .saturating_add(self.extension.len())
    }

    fn encode(&self, out: &mut [u8]) -> Result<usize, FrameError> {
        self.validate()?;
        let mut w = Writer::new(out, self.encoded_len())?;
        let kex_len = u16::try_from(self.key_exchange.len()).unwrap_or(u16::MAX);
        w.put(&self.versions.bits().to_be_bytes())?;
        w.put(&self.capabilities.bits().to_be_bytes())?;
        w.put(&self.max_streams.to_be_bytes())?;
        w.put(&kex_len.to_be_bytes())?;
        w.put(&self.max_payload.to_be_bytes())?;
        w.put(&self.chunk_size.to_be_bytes())?;
        w.put(&self.session_nonce)?;
        w.put(&self.key_exchange)?;
        w.put(&self.extension)?;
        Ok(w.pos)
    }

    fn decode(buf: &[u8]) -> Result<Self, FrameError> {
        let ft = Self::FRAME_TYPE;
        let mut r = Reader::new(buf, ft);
        let versions = VersionSet::from_bits_retain(r.u16()?);
        let capabilities = Capabilities::from_bits_retain(r.u16()?);
        let max_streams = r.u16()?;
        let kex_len = usize::from(r.u16()?);
        let max_payload = r.u32()?;
        let chunk_size = r.u32()?;
        let session_nonce = r.array::<SESSION_NONCE_LEN>()?;
        if kex_len > MAX_KEY_EXCHANGE_LEN {
            return Err(bad(
                ft,
                "key_exchange_len",
                kex_len as u64,
                "at most 1280 bytes",
            ));
        }
        let key_exchange = r.take(kex_len)?.to_vec();
        let extension = r.rest().to_vec();
        let hello = Self {
            versions,
            capabilities,
            max_streams,
            max_payload,
            chunk_size,
            session_nonce,
            key_exchange,
            extension,
        };
        hello.validate()?;
        Ok(hello)
    }
}

// ---------------------------------------------------------------------------------------
// ACK.

/// ACK payload: acknowledges DATA frames of one stream.
///
/// Layout (big-endian): stream_id u16, sack_count u16, ack_delay_us u32,
/// cumulative_seq u64, recv_timestamp_ns u64, receive_rate u64, then `sack_count` ranges of
/// (start u64, end u64).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Ack {
    /// Data stream acknowledged (not [`CONTROL_STREAM`]).
    pub stream_id: u16,
    /// Microseconds between receipt of the largest acknowledged seq and sending this ACK.
    pub ack_delay_us: u32,
    /// Every seq below this was received (the next seq expected in order).
    pub cumulative_seq: u64,
    /// Receiver's monotonic clock (ns) when the largest acknowledged seq arrived; only
    /// differences between ACKs are meaningful (one-way delay trend).
    pub recv_timestamp_ns: u64,
    /// Payload bytes per second delivered on this stream over the receiver's last interval.
    pub receive_rate: u64,
    /// Received ranges above `cumulative_seq`: ascending, non-adjacent, at most
    /// [`MAX_SACK_RANGES`].
    pub sack: Vec<SeqRange>,
}

impl Ack {
    /// Largest seq this ACK reports received, if any.
    #[must_use]
    pub fn largest_acked(&self) -> Option<u64> {
        match self.sack.last() {
            Some(r) => r.end.checked_sub(1),
            None => self.cumulative_seq.checked_sub(1),
        }
    }

    /// True when this ACK reports `seq` received.
    #[must_use]
    pub fn acks(&self, seq: u64) -> bool {
        seq < self.cumulative_seq || self.sack.iter().any(|r| r.contains(seq))
    }
}

impl WirePayload for Ack {
    const FRAME_TYPE: FrameType = FrameType::Ack;

    fn validate(&self) -> Result<(), FrameError> {
        let ft = Self::FRAME_TYPE;
        if self.stream_id == CONTROL_STREAM {
            return Err(bad(
                ft,
                "stream_id",
                self.stream_id.into(),
                "must name a data stream",
            ));
        }
        if self.sack.len() > MAX_SACK_RANGES {
            return Err(bad(
                ft,
                "sack_count",
                self.sack.len() as u64,
                "at most 32 ranges",
            ));
        }
        check_ranges(ft, &self.sack, Some(self.cumulative_seq))
    }

    fn encoded_len(&self) -> usize {
        ACK_FIXED_LEN + RANGE_LEN * self.sack.len()
    }

    fn encode(&self, out: &mut [u8]) -> Result<usize, FrameError> {
        self.validate()?;
        let mut w = Writer::new(out, self.encoded_len())?;
        let count = u16::try_from(self.sack.len()).unwrap_or(u16::MAX);
        w.put(&self.stream_id.to_be_bytes())?;
        w.put(&count.to_be_bytes())?;
        w.put(&self.ack_delay_us.to_be_bytes())?;
        w.put(&self.cumulative_seq.to_be_bytes())?;
        w.put(&self.recv_timestamp_ns.to_be_bytes())?;
        w.put(&self.receive_rate.to_be_bytes())?;
        write_ranges(&mut w, &self.sack)?;
        Ok(w.pos)
    }

    fn decode(buf: &[u8]) -> Result<Self, FrameError> {
        let ft = Self::FRAME_TYPE;
        let mut r = Reader::new(buf, ft);
        let stream_id = r.u16()?;
        let count = usize::from(r.u16()?);
        let ack_delay_us = r.u32()?;
        let cumulative_seq = r.u64()?;
        let recv_timestamp_ns = r.u64()?;
        let receive_rate = r.u64()?;
        if count > MAX_SACK_RANGES {
            return Err(bad(ft, "sack_count", count as u64, "at most 32 ranges"));
        }
        let sack = read_ranges(&mut r, count)?;
        r.finish()?;
        let ack = Self {
            stream_id,
            ack_delay_us,
            cumulative_seq,
            recv_timestamp_ns,
            receive_rate,
            sack,
        };
        ack.validate()?;
        Ok(ack)
    }
}

// ---------------------------------------------------------------------------------------
// NACK.

/// NACK payload: seq ranges of one stream the receiver found missing.
///
/// Layout (big-endian): stream_id u16, count u16, reserved u32 (0), then `count` ranges of
/// (start u64, end u64).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Nack {
    /// Data stream concerned (not [`CONTROL_STREAM`]).
    pub stream_id: u16,
    /// Missing ranges: 1..=[`MAX_NACK_RANGES`], ascending, non-adjacent.
    pub missing: Vec<SeqRange>,
}

impl WirePayload for Nack {
    const FRAME_TYPE: FrameType = FrameType::Nack;

    fn validate(&self) -> Result<(), FrameError> {
        let ft = Self::FRAME_TYPE;
        if self.stream_id == CONTROL_STREAM {
            return Err(bad(
                ft,
                "stream_id",
                self.stream_id.into(),
                "must name a data stream",
            ));
        }
        if self.missing.is_empty() || self.missing.len() > MAX_NACK_RANGES {
            return Err(bad(
                ft,
                "count",
                self.missing.len() as u64,
                "1 to 64 ranges",
            ));
        }
        check_ranges(ft, &self.missing, None)
    }

    fn encoded_len(&self) -> usize {
        NACK_FIXED_LEN + RANGE_LEN * self.missing.len()
    }

    fn encode(&self, out: &mut [u8]) -> Result<usize, FrameError> {
        self.validate()?;
        let mut w = Writer::new(out, self.encoded_len())?;
        let count = u16::try_from(self.missing.len()).unwrap_or(u16::MAX);
        w.put(&self.stream_id.to_be_bytes())?;
        w.put(&count.to_be_bytes())?;
        w.zeros(4)?;
        write_ranges(&mut w, &self.missing)?;
        Ok(w.pos)
    }

    fn decode(buf: &[u8]) -> Result<Self, FrameError> {
        let ft = Self::FRAME_TYPE;
        let mut r = Reader::new(buf, ft);
        let stream_id = r.u16()?;
        let count = usize::from(r.u16()?);
        let reserved = r.u32()?;
        if reserved != 0 {
            return Err(bad(ft, "reserved", reserved.into(), "must be 0"));
        }
        if count == 0 || count > MAX_NACK_RANGES {
            return Err(bad(ft, "count", count as u64, "1 to 64 ranges"));
        }
        let missing = read_ranges(&mut r, count)?;
        r.finish()?;
        let nack = Self { stream_id, missing };
        nack.validate()?;
        Ok(nack)
    }
}

// ---------------------------------------------------------------------------------------
// PROBE / PROBE_ACK.

/// PROBE payload: path probe for RTT, bandwidth (packet pairs) and path MTU.
///
/// Layout (big-endian): send_timestamp_ns u64, probe_seq u64, then `padding` zero bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Probe {
    /// Sender's monotonic clock (ns) when sent; echoed in PROBE_ACK.
    pub send_timestamp_ns: u64,
    /// Probe sequence number (per connection and direction), echoed in PROBE_ACK.
    pub probe_seq: u64,
    /// Zero bytes appended to reach the size being probed.
    pub padding: u16,
}

impl Probe {
    /// A probe padded so its payload is `payload_len` bytes (at least 16).
    #[must_use]
    pub fn padded_to(send_timestamp_ns: u64, probe_seq: u64, payload_len: usize) -> Self {
        let pad = payload_len.saturating_sub(PROBE_FIXED_LEN);
        Self {
            send_timestamp_ns,
            probe_seq,
            padding: u16::try_from(pad).unwrap_or(u16::MAX),
        }
    }
}

impl WirePayload for Probe {
    const FRAME_TYPE: FrameType = FrameType::Probe;

    fn validate(&self) -> Result<(), FrameError> {
        if self.encoded_len() > MAX_PAYLOAD {
            return Err(bad(
                Self::FRAME_TYPE,
                "padding",
                self.padding.into(),
                "payload exceeds the maximum",
            ));
        }
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        PROBE_FIXED_LEN + usize::from(self.padding)
    }

    fn encode(&self, out: &mut [u8]) -> Result<usize, FrameError> {
        self.validate()?;
        let mut w = Writer::new(out, self.encoded_len())?;
        w.put(&self.send_timestamp_ns.to_be_bytes())?;
        w.put(&self.probe_seq.to_be_bytes())?;
        w.zeros(self.padding.into())?;
        Ok(w.pos)
    }

    fn decode(buf: &[u8]) -> Result<Self, FrameError> {
        let ft = Self::FRAME_TYPE;
        let mut r = Reader::new(buf, ft);
        let send_timestamp_ns = r.u64()?;
        let probe_seq = r.u64()?;
        let pad = r.rest();
        check_zero_padding(ft, pad)?;
        let padding = u16::try_from(pad.len()).map_err(|_| {
            bad(
                ft,
                "padding",
                pad.len() as u64,
                "at most 65535 padding bytes",
            )
        })?;
        let p = Self {
            send_timestamp_ns,
            probe_seq,
            padding,
        };
        p.validate()?;
        Ok(p)
    }
}

/// PROBE_ACK payload: answer to one PROBE. Never padded.
///
/// Layout (big-endian): echo_timestamp_ns u64, probe_seq u64, probe_len u32,
/// ack_delay_us u32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ProbeAck {
    /// The probe's `send_timestamp_ns`, unchanged.
    pub echo_timestamp_ns: u64,
    /// The probe's `probe_seq`, unchanged.
    pub probe_seq: u64,
    /// UDP payload length of the probe as received (frame length).
    pub probe_len: u32,
    /// Microseconds between receiving the probe and sending this answer.
    pub ack_delay_us: u32,
}

impl WirePayload for ProbeAck {
    const FRAME_TYPE: FrameType = FrameType::ProbeAck;

    fn validate(&self) -> Result<(), FrameError> {
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        PROBE_ACK_LEN
    }

    fn encode(&self, out: &mut [u8]) -> Result<usize, FrameError> {
        let mut w = Writer::new(out, PROBE_ACK_LEN)?;
        w.put(&self.echo_timestamp_ns.to_be_bytes())?;
        w.put(&self.probe_seq.to_be_bytes())?;
        w.put(&self.probe_len.to_be_bytes())?;
        w.put(&self.ack_delay_us.to_be_bytes())?;
        Ok(w.pos)
    }

    fn decode(buf: &[u8]) -> Result<Self, FrameError> {
        let mut r = Reader::new(buf, Self::FRAME_TYPE);
        let p = Self {
            echo_timestamp_ns: r.u64()?,
            probe_seq: r.u64()?,
            probe_len: r.u32()?,
            ack_delay_us: r.u32()?,
        };
        r.finish()?;
        Ok(p)
    }
}

// ---------------------------------------------------------------------------------------
// KEEPALIVE.

/// Length of a KEEPALIVE payload that carries an [`ObjectDigest`].
pub const KEEPALIVE_DIGEST_LEN: usize = 32;
/// [`ObjectDigest::algorithm`] value of XXH3-128, the only one defined.
pub const DIGEST_XXH3_128: u8 = 1;

/// The digest of a whole object, sent by a sender at the end of a LATE_DIGEST session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ObjectDigest {
    /// Object the digest is of.
    pub object_id: u64,
    /// XXH3-128 of the object's bytes in offset order.
    pub xxh3_128: u128,
}

/// KEEPALIVE payload: empty, or (only from a sender, only on a session that negotiated
/// LATE_DIGEST) the object's digest.
///
/// Digest layout (big-endian, 32 bytes): object_id u64, algorithm u8 (1 = XXH3-128),
/// 7 reserved zero bytes, digest [u8; 16].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Keepalive {
    /// The object's digest, when this KEEPALIVE carries one.
    pub digest: Option<ObjectDigest>,
}

impl WirePayload for Keepalive {
    const FRAME_TYPE: FrameType = FrameType::Keepalive;

    fn validate(&self) -> Result<(), FrameError> {
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        if self.digest.is_some() {
            KEEPALIVE_DIGEST_LEN
        } else {
            0
        }
    }

    fn encode(&self, out: &mut [u8]) -> Result<usize, FrameError> {
        let Some(d) = self.digest else {
            return Ok(0);
        };
        let mut w = Writer::new(out, KEEPALIVE_DIGEST_LEN)?;
        w.put(&d.object_id.to_be_bytes())?;
        w.put(&[DIGEST_XXH3_128])?;
        w.zeros(7)?;
        w.put(&d.xxh3_128.to_be_bytes())?;
        Ok(w.pos)
    }

    fn decode(buf: &[u8]) -> Result<Self, FrameError> {
        let ft = Self::FRAME_TYPE;
        let mut r = Reader::new(buf, ft);
        if buf.is_empty() {
            return Ok(Self::default());
        }
        let object_id = r.u64()?;
        let [algorithm] = r.array::<1>()?;
        if algorithm != DIGEST_XXH3_128 {
            return Err(bad(
                ft,
                "algorithm",
                algorithm.into(),
                "1 (XXH3-128) is the only digest algorithm",
            ));
        }
        check_zero_padding(ft, r.take(7)?)?;
        let xxh3_128 = u128::from_be_bytes(r.array()?);
        r.finish()?;
        Ok(Self {
            digest: Some(ObjectDigest {
                object_id,
                xxh3_128,
            }),
        })
    }
}

// ---------------------------------------------------------------------------------------
// CLOSE.

/// CLOSE reason code. Unknown codes are accepted and treated like [`CloseCode::PROTOCOL_ERROR`]
/// by a receiver that does not know them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// Orderly close, all transfers done or abandoned on purpose.
    pub const NORMAL: Self = Self(0);
    /// The peer broke this specification.
    pub const PROTOCOL_ERROR: Self = Self(1);
    /// No common protocol version.
    pub const NO_COMMON_VERSION: Self = Self(2);
    /// A required capability is missing (e.g. local policy demands SEALED).
    pub const CAPABILITY_REQUIRED: Self = Self(3);
    /// Idle timeout.
    pub const IDLE_TIMEOUT: Self = Self(4);
    /// Too many authentication failures.
    pub const AUTH_FAILURE: Self = Self(5);
    /// Out of resources (streams, memory, baselines).
    pub const RESOURCE_EXHAUSTED: Self = Self(6);
    /// The endpoint is shutting down.
    pub const SHUTDOWN: Self = Self(7);
    /// An application-level (transfer engine) error.
    pub const APPLICATION_ERROR: Self = Self(8);
}

/// CLOSE payload.
///
/// Layout (big-endian): code u16, message_len u16, message [u8; message_len] (UTF-8).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Close {
    /// Reason code.
    pub code: CloseCode,
    /// Human-readable detail, at most [`MAX_CLOSE_MESSAGE_LEN`] bytes.
    pub message: String,
}

impl WirePayload for Close {
    const FRAME_TYPE: FrameType = FrameType::Close;

    fn validate(&self) -> Result<(), FrameError> {
        if self.message.len() > MAX_CLOSE_MESSAGE_LEN {
            return Err(bad(
                Self::FRAME_TYPE,
                "message_len",
                self.message.len() as u64,
                "at most 256 bytes",
            ));
        }
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        CLOSE_FIXED_LEN + self.message.len()
    }

    fn encode(&self, out: &mut [u8]) -> Result<usize, FrameError> {
        self.validate()?;
        let mut w = Writer::new(out, self.encoded_len())?;
        let len = u16::try_from(self.message.len()).unwrap_or(u16::MAX);
        w.put(&self.code.0.to_be_bytes())?;
        w.put(&len.to_be_bytes())?;
        w.put(self.message.as_bytes())?;
        Ok(w.pos)
    }

    fn decode(buf: &[u8]) -> Result<Self, FrameError> {
        let ft = Self::FRAME_TYPE;
        let mut r = Reader::new(buf, ft);
        let code = CloseCode(r.u16()?);
        let len = usize::from(r.u16()?);
        if len > MAX_CLOSE_MESSAGE_LEN {
            return Err(bad(ft, "message_len", len as u64, "at most 256 bytes"));
        }
        let msg = r.take(len)?;
        r.finish()?;
        let message = std::str::from_utf8(msg)
            .map_err(|source| FrameError::InvalidUtf8 {
                frame_type: ft,
                source,
            })?
            .to_owned();
        Ok(Self { code, message })
    }
}

// ---------------------------------------------------------------------------------------
// Dispatch.

/// A decoded payload of any frame type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload<'a> {
    /// HELLO.
    Hello(Hello),
    /// HELLO_ACK.
    HelloAck(Hello),
    /// DATA: encoded chunk bytes, opaque here.
    Data(&'a [u8]),
    /// ACK.
    Ack(Ack),
    /// NACK.
    Nack(Nack),
    /// PROBE.
    Probe(Probe),
    /// PROBE_ACK.
    ProbeAck(ProbeAck),
    /// KEEPALIVE.
    Keepalive(Keepalive),
    /// CLOSE.
    Close(Close),
}

impl<'a> Payload<'a> {
    /// Decodes `buf` as the payload of a frame of type `ft`.
    pub fn decode(ft: FrameType, buf: &'a [u8]) -> Result<Self, FrameError> {
        Ok(match ft {
            FrameType::Hello => Self::Hello(Hello::decode(buf)?),
            FrameType::HelloAck => Self::HelloAck(Hello::decode(buf)?),
            FrameType::Data => Self::Data(buf),
            FrameType::Ack => Self::Ack(Ack::decode(buf)?),
            FrameType::Nack => Self::Nack(Nack::decode(buf)?),
            FrameType::Probe => Self::Probe(Probe::decode(buf)?),
            FrameType::ProbeAck => Self::ProbeAck(ProbeAck::decode(buf)?),
            FrameType::Keepalive => Self::Keepalive(Keepalive::decode(buf)?),
            FrameType::Close => Self::Close(Close::decode(buf)?),
        })
    }

    /// The frame type that carries this payload.
    #[must_use]
    pub fn frame_type(&self) -> FrameType {
        match self {
            Self::Hello(_) => FrameType::Hello,
            Self::HelloAck(_) => FrameType::HelloAck,
            Self::Data(_) => FrameType::Data,
            Self::Ack(_) => FrameType::Ack,
            Self::Nack(_) => FrameType::Nack,
            Self::Probe(_) => FrameType::Probe,
            Self::ProbeAck(_) => FrameType::ProbeAck,
            Self::Keepalive(_) => FrameType::Keepalive,
            Self::Close(_) => FrameType::Close,
        }
    }

    /// Encoded length in bytes.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        match self {
            Self::Hello(p) | Self::HelloAck(p) => p.encoded_len(),
            Self::Data(d) => d.len(),
            Self::Ack(p) => p.encoded_len(),
            Self::Nack(p) => p.encoded_len(),
            Self::Probe(p) => p.encoded_len(),
            Self::ProbeAck(p) => p.encoded_len(),
            Self::Keepalive(p) => p.encoded_len(),
            Self::Close(p) => p.encoded_len(),
        }
    }

    /// Validates and writes the payload at the start of `out`; returns the length written.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, FrameError> {
        match self {
            Self::Hello(p) | Self::HelloAck(p) => p.encode(out),
            Self::Data(d) => {
                let got = out.len();
                let dst = out
                    .get_mut(..d.len())
                    .ok_or(FrameError::BufferTooSmall { need: d.len(), got })?;
                dst.copy_from_slice(d);
                Ok(d.len())
            }
            Self::Ack(p) => p.encode(out),
            Self::Nack(p) => p.encode(out),
            Self::Probe(p) => p.encode(out),
            Self::ProbeAck(p) => p.encode(out),
            Self::Keepalive(p) => p.encode(out),
            Self::Close(p) => p.encode(out),
        }
    }
}
