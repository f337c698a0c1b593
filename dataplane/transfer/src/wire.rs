//! The transfer engine's view of DWCP frames: typed [`Frame`]s and their encoding into the
//! fixed 48-byte header + payload + CRC32C trailer layout of the DWCP frame.
//!
//! Owns: the mapping between engine events (hello, data chunk, ack, close) and datagrams, and the
//! payload layouts of the control frames as this engine uses them. Does not do: sealing (AEAD),
//! which belongs to the wire-format crate; frames with the SEALED flag are rejected here.
//! The layout is kept in one place so swapping in the shared wire-format crate is a thin change.

use std::ops::Range;

/// Frame magic.
pub const MAGIC: u16 = 0xDC57;
/// Header length.
pub const HEADER_LEN: usize = 48;
/// CRC32C trailer length.
pub const TRAILER_LEN: usize = 4;
/// Largest payload in one UDP datagram.
pub const MAX_PAYLOAD: usize = 65_536 - HEADER_LEN - 16;

/// Frame type codes.
pub mod ftype {
    /// HELLO.
    pub const HELLO: u8 = 0x01;
    /// HELLO_ACK.
    pub const HELLO_ACK: u8 = 0x02;
    /// DATA.
    pub const DATA: u8 = 0x10;
    /// ACK.
    pub const ACK: u8 = 0x11;
    /// NACK.
    pub const NACK: u8 = 0x12;
    /// KEEPALIVE.
    pub const KEEPALIVE: u8 = 0x30;
    /// CLOSE.
    pub const CLOSE: u8 = 0x3F;
}

/// Header flag: trailer is an AEAD tag.
pub const FLAG_SEALED: u16 = 1;
/// Header flag: last chunk of the object.
pub const FLAG_LAST: u16 = 2;
/// Header flag: retransmission.
pub const FLAG_RETRANSMIT: u16 = 4;

/// Most SACK ranges carried by one ACK.
pub const MAX_ACK_RANGES: usize = 64;
/// Most resume ranges carried by one HELLO_ACK.
pub const MAX_HELLO_RANGES: usize = 2048;

/// Close codes.
pub mod close_code {
    /// Object received completely and its hash verified.
    pub const COMPLETE: u8 = 0;
    /// Object received but its hash did not match.
    pub const HASH_MISMATCH: u8 = 1;
    /// Transfer aborted (local error).
    pub const ABORT: u8 = 2;
    /// No common version.
    pub const VERSION: u8 = 3;
}

/// Sender's opening frame: capabilities and object identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Highest version the sender speaks.
    pub max_version: u8,
    /// Most streams the sender can use.
    pub max_streams: u16,
    /// Streams the sender wants to start with.
    pub initial_streams: u16,
    /// Proposed chunk payload size (raw bytes per chunk).
    pub chunk_size: u32,
    /// Bitmask of codec ids the sender may emit (bit n = codec n).
    pub codecs: u32,
    /// Object id.
    pub object_id: u64,
    /// Object length.
    pub object_len: u64,
    /// XXH3-128 of the object in offset order.
    pub object_hash: u128,
}

/// Receiver's answer: chosen parameters and the chunks it already holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloAck {
    /// Version chosen (min of both sides).
    pub version: u8,
    /// Most streams the sender may use.
    pub max_streams: u16,
    /// Chunk size to use.
    pub chunk_size: u32,
    /// Codecs the receiver decodes (bitmask).
    pub codecs: u32,
    /// Receive window in chunks beyond the first missing chunk.
    pub window_chunks: u32,
    /// Chunk index ranges the receiver already holds (resume).
    pub held: Vec<Range<u64>>,
}

/// A data chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
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
    /// Retransmission.
    pub retransmit: bool,
    /// Encoded payload.
    pub payload: Vec<u8>,
}

/// Selective acknowledgement of one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Stream acknowledged.
    pub stream: u16,
    /// Every sequence number below this was received.
    pub cumulative: u64,
    /// Received ranges above `cumulative`, newest first, at most [`MAX_ACK_RANGES`].
    pub ranges: Vec<Range<u64>>,
    /// Time between receiving the newest frame and sending this ack, microseconds.
    pub ack_delay_us: u32,
    /// Flow control: the sender may send chunk indices below this.
    pub max_chunk: u64,
    /// Chunks the receiver holds in total.
    pub chunks_held: u64,
}

/// End of transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// A [`close_code`].
    pub code: u8,
    /// Hash the receiver computed (0 if none).
    pub hash: u128,
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
    /// KEEPALIVE.
    Keepalive,
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
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than header + trailer.
    #[error("datagram of {len} bytes is too short")]
    TooShort {
        /// Datagram length.
        len: usize,
    },
    /// Magic mismatch.
    #[error("bad magic {magic:#06x}")]
    BadMagic {
        /// What was found.
        magic: u16,
    },
    /// CRC32C mismatch (corruption).
    #[error("checksum mismatch: computed {computed:#010x}, trailer {trailer:#010x}")]
    BadChecksum {
        /// Computed CRC.
        computed: u32,
        /// Trailer CRC.
        trailer: u32,
    },
    /// Length field does not match the datagram.
    #[error("payload length {declared} does not fit datagram of {len} bytes")]
    BadLength {
        /// Declared payload length.
        declared: usize,
        /// Datagram length.
        len: usize,
    },
    /// Unsupported version, type or flags, or a malformed payload.
    #[error("malformed frame: {what}")]
    Malformed {
        /// What is wrong.
        what: &'static str,
    },
}

struct Hdr {
    ftype: u8,
    flags: u16,
    stream: u16,
    seq: u64,
    object_id: u64,
    offset: u64,
    codec: u8,
}

fn put_header(out: &mut Vec<u8>, version: u8, conn_id: u32, h: &Hdr, payload_len: usize) {
    out.extend_from_slice(&MAGIC.to_be_bytes());
    out.push(version);
    out.push(h.ftype);
    out.extend_from_slice(&h.flags.to_be_bytes());
    out.extend_from_slice(&h.stream.to_be_bytes());
    out.extend_from_slice(&conn_id.to_be_bytes());
    out.extend_from_slice(&(payload_len as u32).to_be_bytes());
    out.extend_from_slice(&h.seq.to_be_bytes());
    out.extend_from_slice(&h.object_id.to_be_bytes());
    out.extend_from_slice(&h.offset.to_be_bytes());
    out.push(h.codec);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&0u32.to_be_bytes());
}

fn put_ranges(p: &mut Vec<u8>, ranges: &[Range<u64>]) {
    for r in ranges {
        p.extend_from_slice(&r.start.to_be_bytes());
        p.extend_from_slice(&r.end.to_be_bytes());
    }
}

/// Encode a frame into a datagram.
pub fn encode(version: u8, conn_id: u32, frame: &Frame) -> Vec<u8> {
    let mut p = Vec::new();
    let empty = Hdr {
        ftype: 0,
        flags: 0,
        stream: 0,
        seq: 0,
        object_id: 0,
        offset: 0,
        codec: 0,
    };
    let (hdr, payload): (Hdr, &[u8]) = match frame {
        Frame::Hello(h) => {
            p.push(h.max_version);
            p.push(0);
            p.extend_from_slice(&h.max_streams.to_be_bytes());
            p.extend_from_slice(&h.initial_streams.to_be_bytes());
            p.extend_from_slice(&[0, 0]);
            p.extend_from_slice(&h.chunk_size.to_be_bytes());
            p.extend_from_slice(&h.codecs.to_be_bytes());
            p.extend_from_slice(&h.object_len.to_be_bytes());
            p.extend_from_slice(&h.object_hash.to_be_bytes());
            (
                Hdr {
                    ftype: ftype::HELLO,
                    object_id: h.object_id,
                    ..empty
                },
                &p,
            )
        }
        Frame::HelloAck(a) => {
            let held = &a.held[..a.held.len().min(MAX_HELLO_RANGES)];
            p.push(a.version);
            p.push(0);
            p.extend_from_slice(&a.max_streams.to_be_bytes());
            p.extend_from_slice(&a.chunk_size.to_be_bytes());
            p.extend_from_slice(&a.codecs.to_be_bytes());
            p.extend_from_slice(&a.window_chunks.to_be_bytes());
            p.extend_from_slice(&(held.len() as u32).to_be_bytes());
            put_ranges(&mut p, held);
            (
                Hdr {
                    ftype: ftype::HELLO_ACK,
                    ..empty
                },
                &p,
            )
        }
        Frame::Data(d) => {
            let mut flags = 0;
            if d.last {
                flags |= FLAG_LAST;
            }
            if d.retransmit {
                flags |= FLAG_RETRANSMIT;
            }
            (
                Hdr {
                    ftype: ftype::DATA,
                    flags,
                    stream: d.stream,
                    seq: d.seq,
                    object_id: d.object_id,
                    offset: d.offset,
                    codec: d.codec,
                },
                &d.payload,
            )
        }
        Frame::Ack(a) => {
            let ranges = &a.ranges[..a.ranges.len().min(MAX_ACK_RANGES)];
            p.extend_from_slice(&a.cumulative.to_be_bytes());
            p.extend_from_slice(&a.ack_delay_us.to_be_bytes());
            p.extend_from_slice(&(ranges.len() as u16).to_be_bytes());
            p.extend_from_slice(&[0, 0]);
            p.extend_from_slice(&a.max_chunk.to_be_bytes());
            p.extend_from_slice(&a.chunks_held.to_be_bytes());
            put_ranges(&mut p, ranges);
            (
                Hdr {
                    ftype: ftype::ACK,
                    stream: a.stream,
                    ..empty
                },
                &p,
            )
        }
        Frame::Keepalive => (
            Hdr {
                ftype: ftype::KEEPALIVE,
                ..empty
            },
            &p,
        ),
        Frame::Close(c) => {
            p.push(c.code);
            p.extend_from_slice(&[0; 7]);
            p.extend_from_slice(&c.hash.to_be_bytes());
            (
                Hdr {
                    ftype: ftype::CLOSE,
                    ..empty
                },
                &p,
            )
        }
    };
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + TRAILER_LEN);
    put_header(&mut out, version, conn_id, &hdr, payload.len());
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

struct Rd<'a> {
    b: &'a [u8],
}

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.b.len() < n {
            return Err(WireError::Malformed {
                what: "payload too short",
            });
        }
        let (a, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().unwrap_or([0; 2])))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap_or([0; 4])))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().unwrap_or([0; 8])))
    }
    fn u128(&mut self) -> Result<u128, WireError> {
        Ok(u128::from_be_bytes(
            self.take(16)?.try_into().unwrap_or([0; 16]),
        ))
    }
    fn ranges(&mut self, n: usize, max: usize) -> Result<Vec<Range<u64>>, WireError> {
        if n > max {
            return Err(WireError::Malformed {
                what: "too many ranges",
            });
        }
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let s = self.u64()?;
            let e = self.u64()?;
            if s >= e {
                return Err(WireError::Malformed {
                    what: "empty range",
                });
            }
            v.push(s..e);
        }
        Ok(v)
    }
}

/// Decode and verify a datagram.
pub fn decode(buf: &[u8]) -> Result<Envelope, WireError> {
    if buf.len() < HEADER_LEN + TRAILER_LEN {
        return Err(WireError::TooShort { len: buf.len() });
    }
    let be16 = |o: usize| u16::from_be_bytes([buf[o], buf[o + 1]]);
    let be32 = |o: usize| u32::from_be_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
    let be64 = |o: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&buf[o..o + 8]);
        u64::from_be_bytes(a)
    };
    let magic = be16(0);
    if magic != MAGIC {
        return Err(WireError::BadMagic { magic });
    }
    let flags = be16(4);
    if flags & FLAG_SEALED != 0 {
        return Err(WireError::Malformed {
            what: "sealed frames are not handled by the transfer engine",
        });
    }
    if flags & !(FLAG_LAST | FLAG_RETRANSMIT) != 0 {
        return Err(WireError::Malformed {
            what: "unknown flags",
        });
    }
    let declared = be32(12) as usize;
    if HEADER_LEN + declared + TRAILER_LEN != buf.len() {
        return Err(WireError::BadLength {
            declared,
            len: buf.len(),
        });
    }
    let body = &buf[..HEADER_LEN + declared];
    let trailer = be32(HEADER_LEN + declared);
    let computed = crc32c::crc32c(body);
    if computed != trailer {
        return Err(WireError::BadChecksum { computed, trailer });
    }
    let version = buf[2];
    if version != 1 && version != 3 {
        return Err(WireError::Malformed { what: "version" });
    }
    if buf[41] != 0 || be16(42) != 0 {
        return Err(WireError::Malformed {
            what: "reserved bytes",
        });
    }
    let conn_id = be32(8);
    let stream = be16(6);
    let seq = be64(16);
    let object_id = be64(24);
    let offset = be64(32);
    let codec = buf[40];
    let payload = &buf[HEADER_LEN..HEADER_LEN + declared];
    let mut r = Rd { b: payload };
    let frame = match buf[3] {
        ftype::HELLO => {
            let max_version = r.u8()?;
            r.u8()?;
            let max_streams = r.u16()?;
            let initial_streams = r.u16()?;
            r.u16()?;
            Frame::Hello(Hello {
                max_version,
                max_streams,
                initial_streams,
                chunk_size: r.u32()?,
                codecs: r.u32()?,
                object_id,
                object_len: r.u64()?,
                object_hash: r.u128()?,
            })
        }
        ftype::HELLO_ACK => {
            let version = r.u8()?;
            r.u8()?;
            let max_streams = r.u16()?;
            let chunk_size = r.u32()?;
            let codecs = r.u32()?;
            let window_chunks = r.u32()?;
            let n = r.u32()? as usize;
            Frame::HelloAck(HelloAck {
                version,
                max_streams,
                chunk_size,
                codecs,
                window_chunks,
                held: r.ranges(n, MAX_HELLO_RANGES)?,
            })
        }
        ftype::DATA => Frame::Data(Data {
            stream,
            seq,
            object_id,
            offset,
            codec,
            last: flags & FLAG_LAST != 0,
            retransmit: flags & FLAG_RETRANSMIT != 0,
            payload: payload.to_vec(),
        }),
        ftype::ACK => {
            let cumulative = r.u64()?;
            let ack_delay_us = r.u32()?;
            let n = r.u16()? as usize;
            r.u16()?;
            let max_chunk = r.u64()?;
            let chunks_held = r.u64()?;
            Frame::Ack(Ack {
                stream,
                cumulative,
                ack_delay_us,
                max_chunk,
                chunks_held,
                ranges: r.ranges(n, MAX_ACK_RANGES)?,
            })
        }
        ftype::KEEPALIVE => Frame::Keepalive,
        ftype::CLOSE => {
            let code = r.u8()?;
            r.take(7)?;
            Frame::Close(Close {
                code,
                hash: r.u128()?,
            })
        }
        _ => {
            return Err(WireError::Malformed {
                what: "frame type not used by the transfer engine",
            });
        }
    };
    Ok(Envelope {
        version,
        conn_id,
        frame,
    })
}

/// Bytes a data frame of `payload` bytes occupies on the wire (UDP payload).
pub fn data_frame_len(payload: usize) -> usize {
    HEADER_LEN + payload + TRAILER_LEN
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(f: Frame) {
        let b = encode(3, 77, &f);
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
            max_version: 3,
            max_streams: 8,
            initial_streams: 2,
            chunk_size: 8000,
            codecs: 3,
            object_id: 9,
            object_len: 123_456,
            object_hash: 0x1234_5678_9abc_def0_1122_3344_5566_7788,
        }));
        roundtrip(Frame::HelloAck(HelloAck {
            version: 3,
            max_streams: 4,
            chunk_size: 8000,
            codecs: 1,
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
            ranges: vec![110..120, 102..105],
            ack_delay_us: 250,
            max_chunk: 5000,
            chunks_held: 300,
        }));
        roundtrip(Frame::Keepalive);
        roundtrip(Frame::Close(Close { code: 0, hash: 5 }));
    }

    #[test]
    fn wrong_length_rejected() {
        let mut b = encode(1, 1, &Frame::Keepalive);
        b.push(0);
        assert!(matches!(decode(&b), Err(WireError::BadLength { .. })));
    }
}
