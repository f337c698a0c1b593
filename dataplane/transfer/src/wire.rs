//! The transfer engine's view of DWCP frames: typed [`Frame`]s mapped onto the shared wire
//! format of `dwcp-proto` (48-byte header, CRC32C trailer, typed HELLO / ACK / KEEPALIVE / CLOSE
//! payloads, version and capability negotiation).
//!
//! Owns: the mapping between engine events and datagrams, and the layout of the *transfer
//! extension* carried in the `extension` field of HELLO / HELLO_ACK (docs/protocol.md 8.1): the
//! object descriptor (id, length, XXH3-128, initial streams) in HELLO, and the receive window
//! plus the chunk ranges the receiver already holds (resume) in HELLO_ACK. Everything else is
//! encoded and validated by `dwcp-proto`. HELLO and HELLO_ACK always go out with header version
//! 1 (docs/protocol.md 9.2); control frames are numbered in the control stream's own sequence
//! space, data frames in their stream's.
//!
//! SEALED connections (docs/protocol.md 13, docs/security.md): this module defines the small
//! interface through which the engine reaches the crypto ([`Security`] for the handshake,
//! [`FrameKeys`] for one connection's AEAD keys) and applies it in the receive order of the
//! protocol: stateless header rules, connection, `unauthenticated`, tag verification
//! (`auth_failed`), replay window (`replay`, updated only after verification), payload decode.
//! It holds no keys and does no cryptography itself: the implementation lives in `dwcp-secure`,
//! so this crate stays free of crypto dependencies and of I/O. Drops are counted by
//! [`DropReason`] in [`DropCounts`].

use std::ops::Range;

use dwcp_proto::{
    CONTROL_STREAM, Codec, DropReason, Flags, FrameError, FrameType, Header, ReplayWindow, TAG_LEN,
    Version, WirePayload,
};

pub use dwcp_proto::{CloseCode, HEADER_LEN, Hello as Caps, MAX_PAYLOAD, MAX_SACK_RANGES, Session};

/// CRC32C trailer length.
pub const TRAILER_LEN: usize = dwcp_proto::CRC_LEN;
/// Most resume ranges carried by one HELLO_ACK.
pub const MAX_HELLO_RANGES: usize = 2048;

/// Sender's opening frame: standard capabilities plus the object descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Versions, capabilities and limits (standard HELLO payload).
    pub caps: Caps,
    /// Streams the sender wants to start with.
    pub initial_streams: u16,
    /// Object id.
    pub object_id: u64,
    /// Object length.
    pub object_len: u64,
    /// XXH3-128 of the object in offset order.
    pub object_hash: u128,
}

/// Receiver's answer: its capabilities plus window and held chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloAck {
    /// Versions, capabilities and limits (standard HELLO_ACK payload).
    pub caps: Caps,
    /// Receive window in chunks beyond the first chunk not yet acknowledged.
    pub window_chunks: u32,
    /// Chunk index ranges the receiver already holds (resume), ascending.
    pub held: Vec<Range<u64>>,
}

/// A data chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    /// Stream id.
    pub stream: u16,
    /// Per-stream sequence number (never reused).
    pub seq: u64,
    /// Object id.
    pub object_id: u64,
    /// Byte offset of the chunk in the object.
    pub offset: u64,
    /// Codec id of the payload.
    pub codec: u8,
    /// Last chunk of the object.
    pub last: bool,
    /// Retransmission of a chunk sent before.
    pub retransmit: bool,
    /// Encoded payload.
    pub payload: Vec<u8>,
}

/// A received DATA frame whose payload borrows the datagram (or the decryption buffer): the
/// receiver's hot path, with no allocation and no copy before the chunk is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataRef<'a> {
    /// Stream id.
    pub stream: u16,
    /// Per-stream sequence number.
    pub seq: u64,
    /// Object id.
    pub object_id: u64,
    /// Byte offset of the chunk in the object.
    pub offset: u64,
    /// Codec id of the payload.
    pub codec: u8,
    /// Last chunk of the object.
    pub last: bool,
    /// Retransmission of a chunk sent before.
    pub retransmit: bool,
    /// Encoded payload.
    pub payload: &'a [u8],
}

impl DataRef<'_> {
    /// An owned copy.
    pub fn to_owned_data(&self) -> Data {
        Data {
            stream: self.stream,
            seq: self.seq,
            object_id: self.object_id,
            offset: self.offset,
            codec: self.codec,
            last: self.last,
            retransmit: self.retransmit,
            payload: self.payload.to_vec(),
        }
    }

    fn of<'p>(h: &Header, payload: &'p [u8]) -> DataRef<'p> {
        DataRef {
            stream: h.stream_id,
            seq: h.seq,
            object_id: h.object_id,
            offset: h.offset,
            codec: h.codec.as_u8(),
            last: h.flags.contains(Flags::LAST),
            retransmit: h.flags.contains(Flags::RETRANSMIT),
            payload,
        }
    }
}

/// A decoded datagram as the receive path sees it: DATA borrowed, anything else owned.
#[derive(Debug)]
pub enum Received<'a> {
    /// A DATA frame (trailer verified).
    Data {
        /// Version byte.
        version: u8,
        /// Connection id.
        conn_id: u32,
        /// The frame.
        data: DataRef<'a>,
    },
    /// Any other frame.
    Other(Envelope),
}

/// The header of a DATA frame (payload length filled in when the frame is finished).
pub fn data_header(version: u8, conn_id: u32, d: &DataRef<'_>) -> Result<Header, FrameError> {
    let mut h = Header::new(version_of(version), FrameType::Data);
    h.conn_id = conn_id;
    h.stream_id = d.stream;
    h.seq = d.seq;
    h.object_id = d.object_id;
    h.offset = d.offset;
    h.codec = Codec::from_u8(d.codec)?;
    if d.last {
        h.flags.insert(Flags::LAST);
    }
    if d.retransmit {
        h.flags.insert(Flags::RETRANSMIT);
    }
    Ok(h)
}

/// Selective acknowledgement of one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Stream acknowledged.
    pub stream: u16,
    /// Every sequence number below this was received.
    pub cumulative: u64,
    /// Received ranges above `cumulative`, ascending, at most [`MAX_SACK_RANGES`].
    pub ranges: Vec<Range<u64>>,
    /// Time between receiving the newest frame and sending this ack, microseconds.
    pub ack_delay_us: u32,
    /// Receiver clock (ns, arbitrary origin) when the newest frame arrived.
    pub recv_timestamp_ns: u64,
    /// Payload bytes per second received on this stream.
    pub receive_rate: u64,
}

/// End of the transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// Reason code.
    pub code: CloseCode,
    /// Detail; a verified completion says `verified xxh3-128 <32 hex digits>`.
    pub message: String,
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// HELLO.
    Hello(Hello),
    /// HELLO_ACK.
    HelloAck(HelloAck),
    /// DATA.
    Data(Data),
    /// ACK.
    Ack(Ack),
    /// KEEPALIVE; from a LATE_DIGEST sender whose data is all sent, with the object's
    /// digest.
    Keepalive(Option<dwcp_proto::ObjectDigest>),
    /// CLOSE.
    Close(Close),
}

/// A frame with the connection-level header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Version byte of the frame.
    pub version: u8,
    /// Connection id.
    pub conn_id: u32,
    /// The frame.
    pub frame: Frame,
    /// For HELLO / HELLO_ACK: the handshake transcript ([`hello_transcript`]); else empty.
    pub transcript: Vec<u8>,
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Refused by a session rule of a SEALED connection (docs/protocol.md 13): an unsealed
    /// frame on a sealed connection (`unauthenticated`), a SEALED frame for an unknown
    /// connection, a tag that does not verify (`auth_failed`) or a replayed sequence number
    /// (`replay`).
    #[error("frame refused: {reason}")]
    Session {
        /// Counter label.
        reason: DropReason,
    },
    /// Rejected by the wire-format crate (framing, header rules, CRC, payload rules).
    #[error("frame rejected: {reason}")]
    Frame {
        /// Counter label.
        reason: dwcp_proto::DropReason,
        /// Details.
        #[source]
        source: FrameError,
    },
    /// The transfer extension of HELLO / HELLO_ACK is malformed, or a frame type this engine
    /// does not use arrived.
    #[error("malformed transfer frame: {what}")]
    Malformed {
        /// What is wrong.
        what: &'static str,
    },
}

impl WireError {
    /// The counter index of this drop.
    pub fn reason(&self) -> DropReason {
        match self {
            WireError::Session { reason } | WireError::Frame { reason, .. } => *reason,
            WireError::Malformed { .. } => DropReason::MalformedPayload,
        }
    }

    /// True for a CRC mismatch (corruption on the path).
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            WireError::Frame {
                reason: dwcp_proto::DropReason::ChecksumMismatch,
                ..
            }
        )
    }
}

impl From<FrameError> for WireError {
    fn from(source: FrameError) -> Self {
        WireError::Frame {
            reason: source.reason(),
            source,
        }
    }
}

fn version_of(v: u8) -> Version {
    if v == 1 { Version::V1 } else { Version::V3 }
}

fn put_ranges(p: &mut Vec<u8>, ranges: &[Range<u64>]) {
    for r in ranges {
        p.extend_from_slice(&r.start.to_be_bytes());
        p.extend_from_slice(&r.end.to_be_bytes());
    }
}

/// Header and payload of `frame` (before the trailer).
fn parts<'a>(
    version: u8,
    conn_id: u32,
    ctrl_seq: u64,
    frame: &'a Frame,
) -> Result<(Header, std::borrow::Cow<'a, [u8]>), FrameError> {
    let v = version_of(version);
    let (mut h, payload): (Header, Vec<u8>) = match frame {
        Frame::Hello(x) => {
            let mut ext = Vec::with_capacity(48);
            ext.extend_from_slice(&x.initial_streams.to_be_bytes());
            ext.extend_from_slice(&[0; 6]);
            ext.extend_from_slice(&x.object_id.to_be_bytes());
            ext.extend_from_slice(&x.object_len.to_be_bytes());
            ext.extend_from_slice(&x.object_hash.to_be_bytes());
            let mut caps = x.caps.clone();
            caps.extension = ext;
            (Header::new(Version::V1, FrameType::Hello), caps.to_vec()?)
        }
        Frame::HelloAck(x) => {
            let held = &x.held[..x.held.len().min(MAX_HELLO_RANGES)];
            let mut ext = Vec::with_capacity(8 + 16 * held.len());
            ext.extend_from_slice(&x.window_chunks.to_be_bytes());
            ext.extend_from_slice(&(held.len() as u32).to_be_bytes());
            put_ranges(&mut ext, held);
            let mut caps = x.caps.clone();
            caps.extension = ext;
            (
                Header::new(Version::V1, FrameType::HelloAck),
                caps.to_vec()?,
            )
        }
        Frame::Data(d) => {
            let r = DataRef {
                stream: d.stream,
                seq: d.seq,
                object_id: d.object_id,
                offset: d.offset,
                codec: d.codec,
                last: d.last,
                retransmit: d.retransmit,
                payload: &d.payload,
            };
            let h = data_header(version, conn_id, &r)?;
            return Ok((h, std::borrow::Cow::Borrowed(&d.payload)));
        }
        Frame::Ack(a) => {
            let n = a.ranges.len().min(MAX_SACK_RANGES);
            let ack = dwcp_proto::Ack {
                stream_id: a.stream,
                ack_delay_us: a.ack_delay_us,
                cumulative_seq: a.cumulative,
                recv_timestamp_ns: a.recv_timestamp_ns,
                receive_rate: a.receive_rate,
                sack: a.ranges[a.ranges.len() - n..]
                    .iter()
                    .map(|r| dwcp_proto::SeqRange::new(r.start, r.end))
                    .collect(),
            };
            (Header::new(v, FrameType::Ack), ack.to_vec()?)
        }
        Frame::Keepalive(digest) => (
            Header::new(v, FrameType::Keepalive),
            dwcp_proto::Keepalive { digest: *digest }.to_vec()?,
        ),
        Frame::Close(c) => {
            let close = dwcp_proto::Close {
                code: c.code,
                message: c.message.clone(),
            };
            (Header::new(v, FrameType::Close), close.to_vec()?)
        }
    };
    h.stream_id = CONTROL_STREAM;
    h.conn_id = conn_id;
    h.seq = ctrl_seq;
    Ok((h, std::borrow::Cow::Owned(payload)))
}

/// Encode a frame into a datagram. `ctrl_seq` is the next sequence number of the sender's
/// control stream (ignored for DATA, which carries its own).
pub fn encode(
    version: u8,
    conn_id: u32,
    ctrl_seq: u64,
    frame: &Frame,
) -> Result<Vec<u8>, FrameError> {
    let (h, payload) = parts(version, conn_id, ctrl_seq, frame)?;
    build(&h, &payload)
}

/// [`encode`] for a SEALED connection: every frame but HELLO / HELLO_ACK is sealed with
/// `keys` (nonce = conn id ‖ stream id ‖ seq48, associated data = the 48 header bytes, tag =
/// trailer; docs/protocol.md 13).
pub fn encode_sealed(
    version: u8,
    conn_id: u32,
    ctrl_seq: u64,
    frame: &Frame,
    keys: &mut dyn FrameKeys,
) -> Result<Vec<u8>, FrameError> {
    let (h, payload) = parts(version, conn_id, ctrl_seq, frame)?;
    if matches!(frame, Frame::Hello(_) | Frame::HelloAck(_)) {
        return build(&h, &payload);
    }
    let mut out = vec![0u8; HEADER_LEN + payload.len() + TAG_LEN];
    let nonce = h.aead_nonce();
    let n = dwcp_proto::build_sealed_frame(&h, &payload, &mut out, |hdr, body| {
        keys.seal(&nonce, hdr, body)
    })?;
    out.truncate(n);
    Ok(out)
}

fn build(h: &Header, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    let mut out = vec![0u8; HEADER_LEN + payload.len() + TRAILER_LEN];
    let n = dwcp_proto::build_frame(h, payload, &mut out)?;
    out.truncate(n);
    Ok(out)
}

/// The handshake transcript of a HELLO / HELLO_ACK payload: every byte of the payload except
/// the key-exchange length field (bytes 6..8) and the key-exchange bytes themselves. Both ends
/// feed it to the key exchange, so a changed offer (versions, capabilities, limits, nonce,
/// transfer extension) changes the keys or fails the handshake. `None` if the payload is too
/// short to be a HELLO.
pub fn hello_transcript(payload: &[u8]) -> Option<Vec<u8>> {
    let fixed = dwcp_proto::payload::HELLO_FIXED_LEN;
    let head = payload.get(..fixed)?;
    let kex_len = usize::from(u16::from_be_bytes([*head.get(6)?, *head.get(7)?]));
    let rest = payload.get(fixed + kex_len..)?;
    let mut t = Vec::with_capacity(fixed - 2 + rest.len());
    t.extend_from_slice(head.get(..6)?);
    t.extend_from_slice(head.get(8..)?);
    t.extend_from_slice(rest);
    Some(t)
}

/// [`hello_transcript`] of a HELLO / HELLO_ACK this endpoint is about to send (its key
/// exchange field, if any, is left out).
pub fn transcript_of(frame: &Frame) -> Result<Vec<u8>, FrameError> {
    let (_, payload) = parts(VERSION_FOR_HELLO, 0, 0, frame)?;
    hello_transcript(&payload).ok_or(FrameError::PayloadTruncated {
        frame_type: FrameType::Hello,
        need: dwcp_proto::payload::HELLO_FIXED_LEN,
        got: payload.len(),
    })
}

const VERSION_FOR_HELLO: u8 = 1;

struct Rd<'a> {
    b: &'a [u8],
}

impl<'a> Rd<'a> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let (a, rest) = self
            .b
            .split_first_chunk::<N>()
            .ok_or(WireError::Malformed {
                what: "transfer extension too short",
            })?;
        self.b = rest;
        Ok(*a)
    }
    fn ranges(&mut self, n: usize) -> Result<Vec<Range<u64>>, WireError> {
        if n > MAX_HELLO_RANGES || self.b.len() < n * 16 {
            return Err(WireError::Malformed {
                what: "resume range count does not match the payload",
            });
        }
        let mut v = Vec::with_capacity(n);
        let mut prev = 0u64;
        for i in 0..n {
            let s = u64::from_be_bytes(self.take()?);
            let e = u64::from_be_bytes(self.take()?);
            if s >= e || (i > 0 && s <= prev) {
                return Err(WireError::Malformed {
                    what: "resume ranges must ascend and be non-empty",
                });
            }
            prev = e;
            v.push(s..e);
        }
        Ok(v)
    }
}

/// Decode a HELLO / HELLO_ACK payload; returns the standard part (extension emptied) and the
/// extension bytes.
fn split_hello(payload: &[u8]) -> Result<(Caps, Vec<u8>), WireError> {
    let mut caps = Caps::decode(payload)?;
    let ext = std::mem::take(&mut caps.extension);
    Ok((caps, ext))
}

/// Bytes after the transfer extension may only be zero padding (anti-amplification).
fn check_padding(rest: &[u8]) -> Result<(), WireError> {
    if rest.iter().any(|b| *b != 0) {
        return Err(WireError::Malformed {
            what: "non-zero bytes after the HELLO extension",
        });
    }
    Ok(())
}

/// Decode and verify a datagram (framing, CRC and header rules by `dwcp-proto`). A SEALED
/// frame is refused (`unauthenticated`); use [`decode_with`] on a sealed connection.
pub fn decode(buf: &[u8]) -> Result<Envelope, WireError> {
    let f = dwcp_proto::parse_frame(buf)?;
    decode_verified(f.header, f.payload)
}

/// Decode a datagram for an endpoint whose current connection may be SEALED, in the receive
/// order of docs/protocol.md 13: stateless header rules and exact length → connection
/// (`unknown_connection` for a SEALED frame of another connection) → an unsealed frame other
/// than HELLO / HELLO_ACK on the sealed connection is `unauthenticated` → tag verification and
/// decryption (`auth_failed`) → replay window of the (connection, direction, stream), updated
/// only now (`replay`) → payload decode. With `sealed` = `None` this is [`decode`].
pub fn decode_with(buf: &[u8], sealed: Option<&mut SealedConn>) -> Result<Envelope, WireError> {
    let mut plain = Vec::new();
    Ok(match decode_ref(buf, sealed, &mut plain)? {
        Received::Data {
            version,
            conn_id,
            data,
        } => Envelope {
            version,
            conn_id,
            frame: Frame::Data(data.to_owned_data()),
            transcript: Vec::new(),
        },
        Received::Other(e) => e,
    })
}

/// [`decode_with`] without a copy for DATA: the header is parsed once, the trailer checked,
/// and the payload is borrowed from `buf` (unsealed) or decrypted into `plain` (SEALED; the
/// buffer is reused across calls). Every other frame is decoded as by [`decode_with`].
pub fn decode_ref<'a>(
    buf: &'a [u8],
    sealed: Option<&mut SealedConn>,
    plain: &'a mut Vec<u8>,
) -> Result<Received<'a>, WireError> {
    let uf = dwcp_proto::parse_frame_unverified(buf)?;
    let h = uf.header;
    let unsealed = |uf: dwcp_proto::UnverifiedFrame<'a>| -> Result<Received<'a>, WireError> {
        let dwcp_proto::Trailer::Crc32c(expected) = uf.trailer else {
            return Err(FrameError::SealedNotVerified.into());
        };
        let actual = dwcp_proto::frame_crc(uf.header_bytes, uf.payload);
        if expected != actual {
            return Err(FrameError::ChecksumMismatch { expected, actual }.into());
        }
        verified(uf.header, uf.payload)
    };
    let Some(conn) = sealed else {
        return unsealed(uf);
    };
    if !h.flags.contains(Flags::SEALED) {
        if h.conn_id == conn.conn_id
            && !matches!(h.frame_type, FrameType::Hello | FrameType::HelloAck)
        {
            return Err(WireError::Session {
                reason: DropReason::Unauthenticated,
            });
        }
        return unsealed(uf);
    }
    if h.conn_id != conn.conn_id {
        return Err(WireError::Session {
            reason: DropReason::UnknownConnection,
        });
    }
    let dwcp_proto::Trailer::Tag(tag) = uf.trailer else {
        return Err(WireError::Session {
            reason: DropReason::Unauthenticated,
        });
    };
    let slot = conn.window_slot(h.stream_id).ok_or(WireError::Session {
        reason: DropReason::NotNegotiated,
    })?;
    plain.clear();
    plain.extend_from_slice(uf.payload);
    conn.keys
        .open(&h.aead_nonce(), uf.header_bytes, plain, tag)
        .map_err(|TagMismatch| WireError::Session {
            reason: DropReason::AuthFailed,
        })?;
    conn.windows[slot]
        .accept(h.seq)
        .map_err(|reason| WireError::Session { reason })?;
    verified(h, plain)
}

/// A frame whose trailer was verified: DATA borrowed, the rest decoded.
fn verified(h: Header, payload: &[u8]) -> Result<Received<'_>, WireError> {
    if h.frame_type == FrameType::Data {
        return Ok(Received::Data {
            version: h.version.as_u8(),
            conn_id: h.conn_id,
            data: DataRef::of(&h, payload),
        });
    }
    decode_verified(h, payload).map(Received::Other)
}

/// Decode the payload of a frame whose trailer was verified.
fn decode_verified(h: Header, payload: &[u8]) -> Result<Envelope, WireError> {
    let frame = match h.frame_type {
        FrameType::Hello => {
            let (caps, ext) = split_hello(payload)?;
            let mut r = Rd { b: &ext };
            let initial_streams = u16::from_be_bytes(r.take()?);
            let _reserved: [u8; 6] = r.take()?;
            let object_id = u64::from_be_bytes(r.take()?);
            let object_len = u64::from_be_bytes(r.take()?);
            let object_hash = u128::from_be_bytes(r.take()?);
            check_padding(r.b)?;
            Frame::Hello(Hello {
                caps,
                initial_streams,
                object_id,
                object_len,
                object_hash,
            })
        }
        FrameType::HelloAck => {
            let (caps, ext) = split_hello(payload)?;
            let mut r = Rd { b: &ext };
            let window_chunks = u32::from_be_bytes(r.take()?);
            let n = u32::from_be_bytes(r.take()?) as usize;
            let held = r.ranges(n)?;
            check_padding(r.b)?;
            Frame::HelloAck(HelloAck {
                caps,
                window_chunks,
                held,
            })
        }
        FrameType::Data => Frame::Data(Data {
            stream: h.stream_id,
            seq: h.seq,
            object_id: h.object_id,
            offset: h.offset,
            codec: h.codec.as_u8(),
            last: h.flags.contains(Flags::LAST),
            retransmit: h.flags.contains(Flags::RETRANSMIT),
            payload: payload.to_vec(),
        }),
        FrameType::Ack => {
            let a = dwcp_proto::Ack::decode(payload)?;
            Frame::Ack(Ack {
                stream: a.stream_id,
                cumulative: a.cumulative_seq,
                ranges: a.sack.iter().map(|r| r.start..r.end).collect(),
                ack_delay_us: a.ack_delay_us,
                recv_timestamp_ns: a.recv_timestamp_ns,
                receive_rate: a.receive_rate,
            })
        }
        FrameType::Keepalive => Frame::Keepalive(dwcp_proto::Keepalive::decode(payload)?.digest),
        FrameType::Close => {
            let c = dwcp_proto::Close::decode(payload)?;
            Frame::Close(Close {
                code: c.code,
                message: c.message,
            })
        }
        FrameType::Nack | FrameType::Probe | FrameType::ProbeAck => {
            return Err(WireError::Malformed {
                what: "frame type not used by the transfer engine",
            });
        }
    };
    let transcript = match h.frame_type {
        FrameType::Hello | FrameType::HelloAck => hello_transcript(payload).unwrap_or_default(),
        _ => Vec::new(),
    };
    Ok(Envelope {
        version: h.version.as_u8(),
        conn_id: h.conn_id,
        frame,
        transcript,
    })
}

/// Bytes a data frame of `payload` bytes occupies on the wire (UDP payload).
pub fn data_frame_len(payload: usize) -> usize {
    HEADER_LEN + payload + TRAILER_LEN
}

/// Why a handshake's key exchange was refused (wrong or unknown key, bad PSK, tampered or
/// replayed message, policy).
#[derive(Debug, thiserror::Error)]
#[error("authentication failed: {what}")]
pub struct AuthError {
    /// What failed, for people.
    pub what: String,
    /// Counter index: `auth_failed`, or `replay` for a replayed handshake message.
    pub reason: DropReason,
    /// False when a genuine handshake message may still follow (e.g. a HELLO_ACK whose
    /// key exchange verified but whose other fields were rewritten on the path): the
    /// initiator then keeps waiting instead of failing.
    pub fatal: bool,
    /// Underlying error, if any.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// An AEAD tag did not verify (forged, corrupted or truncated frame, or another key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("AEAD tag does not verify")]
pub struct TagMismatch;

/// The AEAD keys of one SEALED connection, one per direction, as seen by one endpoint.
pub trait FrameKeys: Send + std::fmt::Debug {
    /// Encrypts `payload` in place with this endpoint's sending key, `nonce` and the header
    /// bytes `aad` as associated data; returns the tag.
    fn seal(
        &mut self,
        nonce: &[u8; 12],
        aad: &[u8; HEADER_LEN],
        payload: &mut [u8],
    ) -> [u8; TAG_LEN];
    /// Verifies `tag` and decrypts `payload` in place with the receiving key; on `Err` the
    /// payload content is unspecified and must not be used.
    fn open(
        &mut self,
        nonce: &[u8; 12],
        aad: &[u8; HEADER_LEN],
        payload: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), TagMismatch>;
    /// Name of the AEAD suite (for stats and logs).
    fn suite(&self) -> &'static str;
}

/// An initiator's handshake in progress (HELLO sent, HELLO_ACK awaited).
pub trait PendingHandshake: Send + std::fmt::Debug {
    /// Processes the key exchange of a HELLO_ACK whose [`hello_transcript`] is
    /// `ack_transcript`. On error the handshake stays usable for a genuine HELLO_ACK.
    fn finish(
        &mut self,
        ack_transcript: &[u8],
        key_exchange: &[u8],
    ) -> Result<Box<dyn FrameKeys>, AuthError>;
}

/// Peer authentication and key agreement for SEALED connections, carried in the
/// `key_exchange` field of HELLO / HELLO_ACK (one round trip). Implemented by `dwcp-secure`.
pub trait Security: Send + std::fmt::Debug {
    /// Refuse sessions that did not negotiate SEALED (CLOSE code 3).
    fn require_sealed(&self) -> bool;
    /// Initiator: the key exchange of the HELLO opening connection `conn_id`, whose
    /// [`hello_transcript`] is `transcript`. HELLO retransmissions reuse it.
    fn initiate(
        &mut self,
        conn_id: u32,
        transcript: &[u8],
    ) -> Result<(Vec<u8>, Box<dyn PendingHandshake>), AuthError>;
    /// Responder: checks the key exchange of a HELLO (`hello_transcript`, `key_exchange`) for
    /// connection `conn_id`: this authenticates the initiator. Nothing of the endpoint's
    /// state may change before it succeeds.
    fn accept(
        &mut self,
        conn_id: u32,
        hello_transcript: &[u8],
        key_exchange: &[u8],
    ) -> Result<Box<dyn PendingResponse>, AuthError>;
}

/// A responder's handshake after an accepted HELLO, before its HELLO_ACK is built.
pub trait PendingResponse: Send + std::fmt::Debug {
    /// The key exchange of the HELLO_ACK whose transcript is `ack_transcript`, and the
    /// connection's keys.
    fn finish(
        self: Box<Self>,
        ack_transcript: &[u8],
    ) -> Result<(Vec<u8>, Box<dyn FrameKeys>), AuthError>;
}

/// Makes the [`Security`] of each endpoint built from a configuration (like quinn's crypto
/// configs): instances made by one factory may share state, e.g. the handshake replay memory.
#[derive(Clone)]
pub struct SecurityFactory(std::sync::Arc<dyn Fn() -> Box<dyn Security> + Send + Sync>);

impl SecurityFactory {
    /// A factory calling `make` once per endpoint.
    pub fn new(make: impl Fn() -> Box<dyn Security> + Send + Sync + 'static) -> Self {
        Self(std::sync::Arc::new(make))
    }

    /// A new endpoint's security.
    pub fn make(&self) -> Box<dyn Security> {
        (self.0)()
    }
}

impl std::fmt::Debug for SecurityFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecurityFactory(..)")
    }
}

/// A keyed SEALED connection: its keys and the replay windows of the frames it receives (one
/// per data stream, one for the control stream).
#[derive(Debug)]
pub struct SealedConn {
    conn_id: u32,
    keys: Box<dyn FrameKeys>,
    windows: Vec<ReplayWindow>,
}

impl SealedConn {
    /// A connection `conn_id` keyed with `keys`, accepting data streams `0..max_streams`.
    pub fn new(conn_id: u32, keys: Box<dyn FrameKeys>, max_streams: u16) -> Self {
        Self {
            conn_id,
            keys,
            windows: vec![ReplayWindow::new(); usize::from(max_streams) + 1],
        }
    }

    /// Connection id.
    pub fn conn_id(&self) -> u32 {
        self.conn_id
    }

    /// The keys (to seal outgoing frames).
    pub fn keys(&mut self) -> &mut dyn FrameKeys {
        self.keys.as_mut()
    }

    fn window_slot(&self, stream: u16) -> Option<usize> {
        let data = self.windows.len() - 1;
        if stream == CONTROL_STREAM {
            Some(data)
        } else if usize::from(stream) < data {
            Some(usize::from(stream))
        } else {
            None
        }
    }
}

/// Dropped frames by [`DropReason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropCounts([u64; DropReason::COUNT]);

impl Default for DropCounts {
    fn default() -> Self {
        Self([0; DropReason::COUNT])
    }
}

impl DropCounts {
    /// Counts one drop.
    pub fn add(&mut self, reason: DropReason) {
        if let Some(c) = self.0.get_mut(reason.index()) {
            *c += 1;
        }
    }
    /// Drops for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0.get(reason.index()).copied().unwrap_or(0)
    }
    /// All drops.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
    /// Non-zero counters with their labels, in index order.
    pub fn nonzero(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|r| (r.as_str(), self.get(*r)))
            .filter(|(_, n)| *n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(f: Frame) {
        let b = encode(3, 77, 4, &f).expect("encode");
        let e = decode(&b).expect("decode");
        assert_eq!(e.frame, f);
        assert_eq!(e.conn_id, 77);
        for bit in [0usize, 13, 100, b.len() * 8 - 1] {
            if bit / 8 >= b.len() {
                continue;
            }
            let mut c = b.clone();
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&c).is_err(), "bit {bit} flip accepted");
        }
    }

    #[test]
    fn frames_roundtrip_and_reject_bit_flips() {
        roundtrip(Frame::Hello(Hello {
            caps: Caps::new(8, MAX_PAYLOAD as u32, 8000),
            initial_streams: 2,
            object_id: 9,
            object_len: 123_456,
            object_hash: 0x1234_5678_9abc_def0_1122_3344_5566_7788,
        }));
        roundtrip(Frame::HelloAck(HelloAck {
            caps: Caps::new(4, 9000, 8000),
            window_chunks: 1000,
            held: vec![0..4, 9..12],
        }));
        roundtrip(Frame::Data(Data {
            stream: 3,
            seq: 42,
            object_id: 9,
            offset: 16_000,
            codec: 0,
            last: true,
            retransmit: true,
            payload: vec![7; 1000],
        }));
        roundtrip(Frame::Ack(Ack {
            stream: 1,
            cumulative: 100,
            ranges: vec![102..105, 110..120],
            ack_delay_us: 250,
            recv_timestamp_ns: 5,
            receive_rate: 6,
        }));
        roundtrip(Frame::Keepalive(None));
        roundtrip(Frame::Keepalive(Some(dwcp_proto::ObjectDigest {
            object_id: 9,
            xxh3_128: 0xfeed_beef,
        })));
        roundtrip(Frame::Close(Close {
            code: CloseCode::NORMAL,
            message: "done".into(),
        }));
    }

    #[test]
    fn corruption_is_reported_as_such() {
        let mut b = encode(1, 1, 0, &Frame::Keepalive(None)).expect("encode");
        let last = b.len() - 1;
        b[last] ^= 1;
        assert!(decode(&b).expect_err("must fail").is_corruption());
        let mut b = encode(1, 1, 0, &Frame::Keepalive(None)).expect("encode");
        b.push(0);
        assert!(!decode(&b).expect_err("must fail").is_corruption());
    }

    #[test]
    fn hello_extension_must_be_exact() {
        let h = Frame::Hello(Hello {
            caps: Caps::new(8, 9000, 8000),
            initial_streams: 1,
            object_id: 1,
            object_len: 2,
            object_hash: 3,
        });
        let b = encode(3, 5, 0, &h).expect("encode");
        assert_eq!(b[2], 1, "HELLO goes out with header version 1");
        let f = dwcp_proto::parse_frame(&b).expect("parse");
        let mut p = f.payload.to_vec();
        p.push(1);
        let mut hdr = f.header;
        hdr.payload_len = p.len() as u32;
        let b2 = build(&hdr, &p).expect("build");
        assert!(decode(&b2).is_err());
        // zero padding after the extension is accepted
        p.pop();
        p.extend_from_slice(&[0; 100]);
        hdr.payload_len = p.len() as u32;
        let b3 = build(&hdr, &p).expect("build");
        assert_eq!(decode(&b3).expect("padded HELLO").frame, h);
    }
}

/// The security state of one endpoint (sender or receiver): the configured [`Security`], the
/// initiator's handshake in progress, the current keyed connection and the drop counters.
/// The endpoints' frame-in / frame-out paths go through [`SecState::encode`] and
/// [`SecState::decode`].
#[derive(Debug, Default)]
pub struct SecState {
    security: Option<Box<dyn Security>>,
    pending: Option<(u32, Vec<u8>, Box<dyn PendingHandshake>)>,
    conn: Option<SealedConn>,
    suite: Option<&'static str>,
    /// Dropped received frames by reason.
    pub drops: DropCounts,
    /// Last handshake authentication failure (kept for the final error).
    pub last_auth_error: Option<AuthError>,
}

impl SecState {
    /// Configures the security provider; SEALED is offered from then on.
    pub fn set(&mut self, security: Box<dyn Security>) {
        self.security = Some(security);
    }

    /// True when SEALED is offered (keys are configured).
    pub fn offers_sealed(&self) -> bool {
        self.security.is_some()
    }

    /// True when unsealed sessions must be refused.
    pub fn require_sealed(&self) -> bool {
        self.security.as_ref().is_some_and(|s| s.require_sealed())
    }

    /// True when the current connection is sealed.
    pub fn is_sealed(&self) -> bool {
        self.conn.is_some()
    }

    /// AEAD suite of the current connection.
    pub fn suite(&self) -> Option<&'static str> {
        self.suite
    }

    /// Forgets the connection and any handshake in progress (reconnect).
    pub fn reset(&mut self) {
        self.pending = None;
        self.conn = None;
        self.suite = None;
    }

    /// Initiator: the key exchange for the HELLO `hello` of connection `conn_id` (empty when
    /// no keys are configured). Computed once per connection; retransmissions reuse it.
    pub fn initiator_kex(&mut self, conn_id: u32, hello: &Frame) -> Result<Vec<u8>, AuthError> {
        let Some(sec) = self.security.as_mut() else {
            return Ok(Vec::new());
        };
        if let Some((c, kex, _)) = &self.pending
            && *c == conn_id
        {
            return Ok(kex.clone());
        }
        let transcript = transcript_of(hello).map_err(|e| AuthError {
            fatal: true,
            what: "cannot encode the HELLO transcript".into(),
            reason: DropReason::LocalError,
            source: Some(Box::new(e)),
        })?;
        let (kex, pending) = sec.initiate(conn_id, &transcript)?;
        self.pending = Some((conn_id, kex.clone(), pending));
        Ok(kex)
    }

    /// Initiator: completes the handshake with a HELLO_ACK of a session that negotiated
    /// SEALED. On failure the reason is counted and the handshake stays open for a genuine
    /// HELLO_ACK.
    pub fn initiator_finish(
        &mut self,
        conn_id: u32,
        ack_transcript: &[u8],
        key_exchange: &[u8],
        max_streams: u16,
    ) -> Result<(), Option<AuthError>> {
        let res = match &mut self.pending {
            Some((c, _, p)) if *c == conn_id => p.finish(ack_transcript, key_exchange),
            _ => Err(AuthError {
                fatal: false,
                what: "HELLO_ACK for a connection with no handshake in progress".into(),
                reason: DropReason::UnknownConnection,
                source: None,
            }),
        };
        match res {
            Ok(keys) => {
                self.suite = Some(keys.suite());
                self.conn = Some(SealedConn::new(conn_id, keys, max_streams));
                self.pending = None;
                Ok(())
            }
            Err(e) => {
                self.drops.add(e.reason);
                if e.fatal {
                    Err(Some(e))
                } else {
                    self.last_auth_error = Some(e);
                    Err(None)
                }
            }
        }
    }

    /// Responder, step 1: checks a HELLO's key exchange (the caller decided that SEALED was
    /// negotiated). On failure the reason is counted and nothing else changes.
    pub fn accept(
        &mut self,
        conn_id: u32,
        hello_transcript: &[u8],
        key_exchange: &[u8],
    ) -> Result<Box<dyn PendingResponse>, AuthError> {
        let res = match self.security.as_mut() {
            Some(sec) => sec.accept(conn_id, hello_transcript, key_exchange),
            None => Err(AuthError {
                fatal: true,
                what: "no keys configured".into(),
                reason: DropReason::NotNegotiated,
                source: None,
            }),
        };
        if let Err(e) = &res {
            self.drops.add(e.reason);
        }
        res
    }

    /// Responder, step 2: the key exchange of the HELLO_ACK `ack` (built without one), keying
    /// connection `conn_id`.
    pub fn complete(
        &mut self,
        conn_id: u32,
        pending: Box<dyn PendingResponse>,
        ack: &Frame,
        max_streams: u16,
    ) -> Result<Vec<u8>, AuthError> {
        let t = transcript_of(ack).map_err(|e| AuthError {
            fatal: true,
            what: "cannot encode the HELLO_ACK transcript".into(),
            reason: DropReason::LocalError,
            source: Some(Box::new(e)),
        })?;
        let (kex, keys) = pending.finish(&t)?;
        self.suite = Some(keys.suite());
        self.conn = Some(SealedConn::new(conn_id, keys, max_streams));
        Ok(kex)
    }

    /// Responder: the new connection is unsealed (forget the keys of an earlier one).
    pub fn set_unsealed(&mut self) {
        self.conn = None;
        self.suite = None;
    }

    /// Encodes a frame, sealed when the connection `conn_id` is keyed.
    pub fn encode(
        &mut self,
        version: u8,
        conn_id: u32,
        ctrl_seq: u64,
        frame: &Frame,
    ) -> Result<Vec<u8>, FrameError> {
        match &mut self.conn {
            Some(c) if c.conn_id == conn_id => {
                encode_sealed(version, conn_id, ctrl_seq, frame, c.keys())
            }
            _ => encode(version, conn_id, ctrl_seq, frame),
        }
    }

    /// Decodes a datagram ([`decode_with`] on the current connection); a drop is counted
    /// by reason.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Envelope, WireError> {
        let r = decode_with(buf, self.conn.as_mut());
        if let Err(e) = &r {
            self.drops.add(e.reason());
        }
        r
    }

    /// [`decode_ref`] on the current connection (DATA borrowed, no copy unless SEALED, whose
    /// plaintext goes to `plain`); a drop is counted by reason.
    pub fn decode_ref<'a>(
        &mut self,
        buf: &'a [u8],
        plain: &'a mut Vec<u8>,
    ) -> Result<Received<'a>, WireError> {
        let r = decode_ref(buf, self.conn.as_mut(), plain);
        if let Err(e) = &r {
            self.drops.add(e.reason());
        }
        r
    }

    /// Finishes a frame whose payload (`payload_len` bytes) is already in place after the
    /// header in `out`: header and CRC32C, or sealed in place when the connection
    /// `header.conn_id` is keyed. Returns the frame length.
    pub fn finish_in_place(
        &mut self,
        header: &Header,
        payload_len: usize,
        out: &mut [u8],
    ) -> Result<usize, FrameError> {
        match &mut self.conn {
            Some(c) if c.conn_id == header.conn_id => {
                let nonce = header.aead_nonce();
                let keys = c.keys();
                dwcp_proto::seal_frame_in_place(header, payload_len, out, |hdr, body| {
                    keys.seal(&nonce, hdr, body)
                })
            }
            _ => dwcp_proto::finish_frame_in_place(header, payload_len, out),
        }
    }

    /// Trailer length of frames on connection `conn_id`: the AEAD tag when it is keyed, else
    /// the CRC32C.
    pub fn trailer_len(&self, conn_id: u32) -> usize {
        match &self.conn {
            Some(c) if c.conn_id == conn_id => TAG_LEN,
            _ => TRAILER_LEN,
        }
    }
}
