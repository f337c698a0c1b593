//! Whole frames: header + payload + trailer (CRC32C or AEAD tag).
//!
//! Owns building frames into caller buffers and parsing datagrams into borrowed views, with
//! exact length and CRC32C checks. It does not do any cryptography: SEALED frames are split
//! into header bytes (the AEAD associated data), payload and tag by
//! [`parse_frame_unverified`], and built by [`build_sealed_frame`] with a caller-supplied
//! sealing function. Allocation-free.

use crate::error::FrameError;
use crate::header::{Flags, HEADER_LEN, Header};
use crate::payload::WirePayload;

/// CRC32C trailer length.
pub const CRC_LEN: usize = 4;
/// AEAD tag trailer length (SEALED frames).
pub const TAG_LEN: usize = 16;
/// Largest payload of any frame: 65 536 - 48 - 16.
pub const MAX_PAYLOAD: usize = 65_536 - HEADER_LEN - TAG_LEN;
/// Largest frame (header + [`MAX_PAYLOAD`] + tag).
pub const MAX_FRAME_LEN: usize = HEADER_LEN + MAX_PAYLOAD + TAG_LEN;
/// Smallest frame (header + empty payload + CRC).
pub const MIN_FRAME_LEN: usize = HEADER_LEN + CRC_LEN;
/// Default UDP port.
pub const DEFAULT_PORT: u16 = 7470;

/// A parsed, checksum-verified, unsealed frame borrowing its payload from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Validated header.
    pub header: Header,
    /// Payload bytes (`header.payload_len` of them).
    pub payload: &'a [u8],
}

impl Frame<'_> {
    /// Decodes the payload according to the frame type.
    pub fn typed_payload(&self) -> Result<crate::Payload<'_>, FrameError> {
        crate::Payload::decode(self.header.frame_type, self.payload)
    }
}

/// The trailer of a frame, not verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trailer<'a> {
    /// CRC32C value read from the trailer (big-endian).
    Crc32c(u32),
    /// AEAD tag of a SEALED frame.
    Tag(&'a [u8; TAG_LEN]),
}

/// A structurally valid frame whose trailer has not been verified. For SEALED frames the
/// payload is ciphertext and `header_bytes` is the AEAD associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnverifiedFrame<'a> {
    /// Validated header.
    pub header: Header,
    /// The 48 header bytes as received (AEAD associated data).
    pub header_bytes: &'a [u8; HEADER_LEN],
    /// Payload bytes.
    pub payload: &'a [u8],
    /// Trailer bytes.
    pub trailer: Trailer<'a>,
}

/// Like [`UnverifiedFrame`] with a mutable payload, for in-place AEAD decryption.
#[derive(Debug)]
pub struct UnverifiedFrameMut<'a> {
    /// Validated header.
    pub header: Header,
    /// The 48 header bytes as received (AEAD associated data).
    pub header_bytes: &'a [u8; HEADER_LEN],
    /// Payload bytes.
    pub payload: &'a mut [u8],
    /// Trailer bytes: a CRC32C (big-endian) or a SEALED tag.
    pub trailer: &'a [u8],
}

/// CRC32C (Castagnoli) of header + payload, as carried in the trailer.
#[must_use]
pub fn frame_crc(header_bytes: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(header_bytes), payload)
}

fn payload_len_u32(len: usize) -> Result<u32, FrameError> {
    if len > MAX_PAYLOAD {
        return Err(FrameError::PayloadTooLarge {
            len,
            max: MAX_PAYLOAD,
        });
    }
    u32::try_from(len).map_err(|_| FrameError::PayloadTooLarge {
        len,
        max: MAX_PAYLOAD,
    })
}

/// Builds an unsealed frame: writes `header` (with `payload_len` set to `payload.len()`),
/// the payload and the CRC32C trailer into `out`; returns the frame length.
///
/// The header is validated first ([`Header::validate`]); a SEALED header is refused (use
/// [`build_sealed_frame`]).
pub fn build_frame(header: &Header, payload: &[u8], out: &mut [u8]) -> Result<usize, FrameError> {
    // header rules first, as before: a bad header is reported as such whatever the buffer
    let mut h = *header;
    h.payload_len = payload_len_u32(payload.len())?;
    if h.flags.contains(Flags::SEALED) {
        return Err(FrameError::SealedNotVerified);
    }
    h.validate()?;
    let got = out.len();
    let dst =
        out.get_mut(HEADER_LEN..HEADER_LEN + payload.len())
            .ok_or(FrameError::BufferTooSmall {
                need: HEADER_LEN + payload.len() + CRC_LEN,
                got,
            })?;
    dst.copy_from_slice(payload);
    finish_frame_in_place(header, payload.len(), out)
}

/// Completes an unsealed frame whose payload the caller already wrote at
/// `out[HEADER_LEN..HEADER_LEN + payload_len]` (no copy: a sender reads or encodes a chunk
/// straight into its transmit buffer): writes `header` with `payload_len` set, then the
/// CRC32C trailer; returns the frame length. Same header rules as [`build_frame`].
pub fn finish_frame_in_place(
    header: &Header,
    payload_len: usize,
    out: &mut [u8],
) -> Result<usize, FrameError> {
    let mut h = *header;
    if h.flags.contains(Flags::SEALED) {
        return Err(FrameError::SealedNotVerified);
    }
    let (total, hdr, body, trailer) = frame_parts(&mut h, payload_len, out)?;
    h.write(hdr)?;
    let crc = frame_crc(hdr, body);
    trailer.copy_from_slice(&crc.to_be_bytes());
    Ok(total)
}

/// A frame's length and its header, payload and trailer slices.
type FrameParts<'o> = (usize, &'o mut [u8], &'o mut [u8], &'o mut [u8]);

/// Sets `payload_len`, checks the header rules and the room in `out`, and splits the frame
/// into header, payload and trailer; returns the frame length with the three parts.
fn frame_parts<'o>(
    h: &mut Header,
    payload_len: usize,
    out: &'o mut [u8],
) -> Result<FrameParts<'o>, FrameError> {
    h.payload_len = payload_len_u32(payload_len)?;
    h.validate()?;
    let total = h.frame_len();
    let got = out.len();
    let Some(frame) = out.get_mut(..total) else {
        return Err(FrameError::BufferTooSmall { need: total, got });
    };
    let (hdr, rest) = frame.split_at_mut(HEADER_LEN);
    let (body, trailer) = rest.split_at_mut(payload_len);
    Ok((total, hdr, body, trailer))
}

/// [`finish_frame_in_place`] for a SEALED frame: the plaintext payload is already at
/// `out[HEADER_LEN..HEADER_LEN + payload_len]`; writes the header (SEALED flag set), calls
/// `seal` as [`build_sealed_frame`] does and writes the tag. Returns the frame length.
pub fn seal_frame_in_place<F>(
    header: &Header,
    payload_len: usize,
    out: &mut [u8],
    seal: F,
) -> Result<usize, FrameError>
where
    F: FnOnce(&[u8; HEADER_LEN], &mut [u8]) -> [u8; TAG_LEN],
{
    let mut h = *header;
    h.flags.insert(Flags::SEALED);
    let (total, hdr, body, trailer) = frame_parts(&mut h, payload_len, out)?;
    let hdr_bytes = h.to_bytes();
    hdr.copy_from_slice(&hdr_bytes);
    let tag = seal(&hdr_bytes, body);
    trailer.copy_from_slice(&tag);
    Ok(total)
}

/// Builds an unsealed frame whose payload is the typed `payload`, encoded straight into `out`
/// (no intermediate buffer); sets `payload_len`, writes the CRC32C trailer and returns the
/// frame length. `header.frame_type` must be one that carries `P` (HELLO or HELLO_ACK for
/// [`crate::Hello`]), else [`FrameError::InvalidField`].
pub fn build_typed_frame<P: WirePayload>(
    header: &Header,
    payload: &P,
    out: &mut [u8],
) -> Result<usize, FrameError> {
    if !P::frame_type_allowed(header.frame_type) {
        return Err(FrameError::InvalidField {
            frame_type: header.frame_type,
            field: "frame_type",
            value: header.frame_type.as_u8().into(),
            rule: "payload type does not match the frame type",
        });
    }
    let len = payload.encoded_len();
    let mut h = *header;
    h.payload_len = payload_len_u32(len)?;
    if h.flags.contains(Flags::SEALED) {
        return Err(FrameError::SealedNotVerified);
    }
    h.validate()?;
    let total = h.frame_len();
    let got = out.len();
    let Some(frame) = out.get_mut(..total) else {
        return Err(FrameError::BufferTooSmall { need: total, got });
    };
    let (hdr, rest) = frame.split_at_mut(HEADER_LEN);
    let (body, trailer) = rest.split_at_mut(len);
    h.write(hdr)?;
    payload.encode(body)?;
    let crc = frame_crc(hdr, body);
    trailer.copy_from_slice(&crc.to_be_bytes());
    Ok(total)
}

/// Builds a SEALED frame. Writes the header (SEALED flag set, `payload_len` set), copies
/// `plaintext` after it, then calls `seal(header_bytes, payload)`, which must encrypt the
/// payload in place with the header bytes as associated data and
/// [`Header::aead_nonce`] as nonce, and return the tag; the tag is written as trailer.
/// Returns the frame length.
pub fn build_sealed_frame<F>(
    header: &Header,
    plaintext: &[u8],
    out: &mut [u8],
    seal: F,
) -> Result<usize, FrameError>
where
    F: FnOnce(&[u8; HEADER_LEN], &mut [u8]) -> [u8; TAG_LEN],
{
    let mut h = *header;
    h.payload_len = payload_len_u32(plaintext.len())?;
    h.flags.insert(Flags::SEALED);
    h.validate()?;
    let got = out.len();
    let dst = out
        .get_mut(HEADER_LEN..HEADER_LEN + plaintext.len())
        .ok_or(FrameError::BufferTooSmall {
            need: HEADER_LEN + plaintext.len() + TAG_LEN,
            got,
        })?;
    dst.copy_from_slice(plaintext);
    seal_frame_in_place(header, plaintext.len(), out, seal)
}

/// Splits `buf` into header, payload and trailer after checking the header and the exact
/// length (the datagram is 48 + payload length + trailer length bytes, no more, no less).
fn split(buf: &[u8]) -> Result<(Header, usize), FrameError> {
    let header = Header::parse(buf)?;
    let total = header.frame_len();
    if buf.len() < total {
        return Err(FrameError::Truncated {
            need: total,
            got: buf.len(),
        });
    }
    if buf.len() > total {
        return Err(FrameError::LengthMismatch {
            expected: total,
            got: buf.len(),
        });
    }
    Ok((header, total))
}

/// Parses and verifies an unsealed frame: magic, version, type, flags and reserved bits,
/// header field rules, exact length, CRC32C. A SEALED frame gives
/// [`FrameError::SealedNotVerified`].
pub fn parse_frame(buf: &[u8]) -> Result<Frame<'_>, FrameError> {
    let f = parse_frame_unverified(buf)?;
    match f.trailer {
        Trailer::Tag(_) => Err(FrameError::SealedNotVerified),
        Trailer::Crc32c(expected) => {
            let actual = frame_crc(f.header_bytes, f.payload);
            if expected != actual {
                return Err(FrameError::ChecksumMismatch { expected, actual });
            }
            Ok(Frame {
                header: f.header,
                payload: f.payload,
            })
        }
    }
}

/// Parses a frame without verifying its trailer: every check of [`parse_frame`] except the
/// CRC. For SEALED frames the caller must verify the AEAD tag over `header_bytes` (associated
/// data) and `payload` (ciphertext) before using anything but the header.
pub fn parse_frame_unverified(buf: &[u8]) -> Result<UnverifiedFrame<'_>, FrameError> {
    let (header, total) = split(buf)?;
    let too_short = || FrameError::Truncated {
        need: total,
        got: buf.len(),
    };
    let (hdr, rest) = buf
        .split_first_chunk::<HEADER_LEN>()
        .ok_or_else(too_short)?;
    let (payload, trailer) = rest
        .split_at_checked(header.payload_len as usize)
        .ok_or_else(too_short)?;
    let trailer = if header.flags.contains(Flags::SEALED) {
        Trailer::Tag(trailer.first_chunk::<TAG_LEN>().ok_or_else(too_short)?)
    } else {
        Trailer::Crc32c(u32::from_be_bytes(
            *trailer.first_chunk::<CRC_LEN>().ok_or_else(too_short)?,
        ))
    };
    Ok(UnverifiedFrame {
        header,
        header_bytes: hdr,
        payload,
        trailer,
    })
}

/// [`parse_frame_unverified`] with a mutable payload (in-place decryption of SEALED frames).
pub fn parse_frame_unverified_mut(buf: &mut [u8]) -> Result<UnverifiedFrameMut<'_>, FrameError> {
    let (header, total) = split(buf)?;
    let got = buf.len();
    let too_short = || FrameError::Truncated { need: total, got };
    let (hdr, rest) = buf
        .split_first_chunk_mut::<HEADER_LEN>()
        .ok_or_else(too_short)?;
    let (payload, trailer) = rest
        .split_at_mut_checked(header.payload_len as usize)
        .ok_or_else(too_short)?;
    Ok(UnverifiedFrameMut {
        header,
        header_bytes: hdr,
        payload,
        trailer,
    })
}
