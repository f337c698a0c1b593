//! Frame-level tests: samples parse, every error variant, every single-bit flip, every
//! truncation.

mod common;

use common::{fake_seal, sample_frames};
use dwcp_proto::*;

fn valid_data_frame() -> Vec<u8> {
    let mut h = Header::new(Version::V3, FrameType::Data);
    h.stream_id = 1;
    h.conn_id = 0xAABB_CCDD;
    h.seq = 99;
    h.object_id = 5;
    h.offset = 4096;
    let mut out = vec![0u8; 256];
    let n = build_frame(&h, b"0123456789abcdef", &mut out).unwrap();
    out.truncate(n);
    out
}

/// Rewrites the CRC so that only the intended corruption is seen.
fn fix_crc(f: &mut [u8]) {
    let n = f.len();
    let crc = frame_crc(&f[..HEADER_LEN], &f[HEADER_LEN..n - CRC_LEN]);
    f[n - CRC_LEN..].copy_from_slice(&crc.to_be_bytes());
}

fn rebuild(f: &UnverifiedFrame<'_>) -> Vec<u8> {
    let mut v = f.header.to_bytes().to_vec();
    v.extend_from_slice(f.payload);
    match f.trailer {
        Trailer::Crc32c(c) => v.extend_from_slice(&c.to_be_bytes()),
        Trailer::Tag(t) => v.extend_from_slice(t),
    }
    v
}

#[test]
fn samples_parse_and_rebuild_identically() {
    for (name, bytes) in sample_frames() {
        let u = parse_frame_unverified(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(rebuild(&u), bytes, "{name}");
        assert_eq!(u.header_bytes, &u.header.to_bytes());
        if name.starts_with("sealed_") {
            assert_eq!(parse_frame(&bytes), Err(FrameError::SealedNotVerified));
            assert!(matches!(u.trailer, Trailer::Tag(_)));
            continue;
        }
        let f = parse_frame(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let p = f.typed_payload().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(p.frame_type(), f.header.frame_type);
        let mut out = vec![0u8; bytes.len()];
        let n = build_frame(&f.header, f.payload, &mut out).unwrap();
        assert_eq!(&out[..n], &bytes[..], "{name}");
        let mut enc = vec![0u8; p.encoded_len()];
        assert_eq!(p.encode(&mut enc).unwrap(), f.payload.len());
        assert_eq!(enc, f.payload, "{name}");
    }
}

#[test]
fn sealed_frame_layout_nonce_and_in_place_open() {
    let mut h = Header::new(Version::V3, FrameType::Data);
    h.conn_id = 0x0102_0304;
    h.stream_id = 0x0506;
    h.seq = 0x0000_0708_090A_0B0C;
    let mut buf = vec![0u8; 128];
    let n = build_sealed_frame(&h, b"hello", &mut buf, fake_seal).unwrap();
    assert_eq!(n, HEADER_LEN + 5 + TAG_LEN);
    buf.truncate(n);
    let u = parse_frame_unverified(&buf).unwrap();
    assert!(u.header.flags.contains(Flags::SEALED));
    assert_eq!(
        u.header.aead_nonce(),
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    );
    // Ciphertext differs from plaintext; tag is what the sealer returned.
    assert_ne!(u.payload, b"hello");
    let mut expect_ct = *b"hello";
    let tag = fake_seal(u.header_bytes, &mut expect_ct);
    assert_eq!(u.payload, &expect_ct);
    assert_eq!(u.trailer, Trailer::Tag(&tag));
    // In-place "open".
    let m = parse_frame_unverified_mut(&mut buf).unwrap();
    assert_eq!(m.trailer, &tag);
    for b in m.payload.iter_mut() {
        *b ^= 0x5A;
    }
    assert_eq!(&buf[HEADER_LEN..HEADER_LEN + 5], b"hello");
    // A sealed seq must fit in 48 bits.
    h.seq = SEALED_SEQ_LIMIT;
    let e = build_sealed_frame(&h, b"x", &mut [0u8; 128], fake_seal).unwrap_err();
    assert!(
        matches!(e, FrameError::InvalidField { field: "seq", .. }),
        "{e}"
    );
    // build_frame refuses SEALED headers.
    h.seq = 1;
    h.flags = Flags::SEALED;
    assert_eq!(
        build_frame(&h, b"x", &mut [0u8; 128]),
        Err(FrameError::SealedNotVerified)
    );
}

#[test]
fn every_single_bit_flip_is_rejected_or_round_trips() {
    for (name, bytes) in sample_frames() {
        let sealed = name.starts_with("sealed_");
        let mut accepted = 0usize;
        for bit in 0..bytes.len() * 8 {
            let mut f = bytes.clone();
            f[bit / 8] ^= 1 << (bit % 8);
            match parse_frame(&f) {
                // CRC32C detects every single-bit error: nothing unsealed may pass.
                Ok(_) => panic!("{name}: flip of bit {bit} accepted"),
                Err(e) => {
                    let _ = e.reason();
                    let _ = e.to_string();
                }
            }
            if let Ok(u) = parse_frame_unverified(&f) {
                assert_eq!(rebuild(&u), f, "{name} bit {bit}");
                accepted += 1;
            }
        }
        if sealed {
            // At least every flip inside the tag is structurally acceptable.
            assert!(accepted >= TAG_LEN * 8, "{name}: {accepted}");
        }
    }
}

#[test]
fn every_single_bit_flip_of_a_typed_payload_is_rejected_or_canonical() {
    for (name, bytes) in sample_frames() {
        if name.starts_with("sealed_") {
            continue;
        }
        let f = parse_frame(&bytes).unwrap();
        let ft = f.header.frame_type;
        for bit in 0..f.payload.len() * 8 {
            let mut p = f.payload.to_vec();
            p[bit / 8] ^= 1 << (bit % 8);
            if let Ok(decoded) = Payload::decode(ft, &p) {
                let mut out = vec![0u8; decoded.encoded_len()];
                let n = decoded.encode(&mut out).unwrap();
                assert_eq!(&out[..n], &p[..], "{name} bit {bit}");
            }
        }
    }
}

#[test]
fn every_truncation_is_rejected_with_truncated() {
    for (name, bytes) in sample_frames() {
        for len in 0..bytes.len() {
            let e = parse_frame_unverified(&bytes[..len]).unwrap_err();
            assert!(
                matches!(e, FrameError::Truncated { got, .. } if got == len),
                "{name} len {len}: {e:?}"
            );
            assert_eq!(e.reason(), DropReason::Truncated);
            assert_eq!(parse_frame(&bytes[..len]).unwrap_err(), e);
        }
    }
}

#[test]
fn every_truncation_of_an_unpadded_payload_is_rejected() {
    for (name, bytes) in sample_frames() {
        // Padding (PROBE) and the HELLO extension run to the end of the payload, so a shorter
        // one is still well-formed.
        if name.starts_with("sealed_") || name.contains("padded") || name.contains("_ext") {
            continue;
        }
        let f = parse_frame(&bytes).unwrap();
        if f.header.frame_type == FrameType::Data {
            continue;
        }
        for len in 0..f.payload.len() {
            if f.header.frame_type == FrameType::Keepalive && len == 0 {
                // a digest KEEPALIVE cut to nothing is a plain KEEPALIVE
                assert!(Payload::decode(f.header.frame_type, &[]).is_ok());
                continue;
            }
            let e = Payload::decode(f.header.frame_type, &f.payload[..len]).unwrap_err();
            assert!(
                matches!(e, FrameError::PayloadTruncated { got, .. } if got == len),
                "{name} len {len}: {e:?}"
            );
            assert_eq!(e.reason(), DropReason::MalformedPayload);
        }
    }
}

#[test]
fn error_truncated() {
    assert_eq!(
        parse_frame(&[0xDC, 0x57, 3]),
        Err(FrameError::Truncated { need: 48, got: 3 })
    );
    let f = valid_data_frame();
    assert_eq!(
        parse_frame(&f[..f.len() - 1]),
        Err(FrameError::Truncated {
            need: f.len(),
            got: f.len() - 1
        })
    );
}

#[test]
fn error_bad_magic() {
    let mut f = valid_data_frame();
    f[0] = 0xDD;
    fix_crc(&mut f);
    let e = parse_frame(&f).unwrap_err();
    assert_eq!(e, FrameError::BadMagic(0xDD57));
    assert_eq!(e.reason(), DropReason::BadMagic);
}

#[test]
fn error_unsupported_version() {
    for v in [0u8, 2, 4, 255] {
        let mut f = valid_data_frame();
        f[2] = v;
        fix_crc(&mut f);
        let e = parse_frame(&f).unwrap_err();
        assert_eq!(e, FrameError::UnsupportedVersion(v));
        assert_eq!(e.reason(), DropReason::UnsupportedVersion);
    }
}

#[test]
fn error_unknown_frame_type() {
    let known: Vec<u8> = FrameType::ALL.iter().map(|t| t.as_u8()).collect();
    for t in 0..=255u8 {
        let mut f = valid_data_frame();
        f[3] = t;
        fix_crc(&mut f);
        let r = parse_frame(&f);
        if known.contains(&t) {
            assert!(!matches!(r, Err(FrameError::UnknownFrameType(_))));
        } else {
            assert_eq!(r, Err(FrameError::UnknownFrameType(t)));
            assert_eq!(r.unwrap_err().reason(), DropReason::UnknownFrameType);
        }
    }
}

#[test]
fn error_reserved_bits_set() {
    let cases: [(usize, u8, &str, u16); 4] = [
        (4, 0x80, "flags", 0x8000),
        (5, 0x08, "flags", 0x0008),
        (41, 1, "reserved41", 1),
        (43, 2, "reserved42", 2),
    ];
    for (off, val, field, value) in cases {
        let mut f = valid_data_frame();
        f[off] |= val;
        fix_crc(&mut f);
        let e = parse_frame(&f).unwrap_err();
        assert_eq!(e, FrameError::ReservedBitsSet { field, value });
        assert_eq!(e.reason(), DropReason::ReservedBitsSet);
    }
}

#[test]
fn error_unknown_codec() {
    let mut f = valid_data_frame();
    f[40] = 6;
    fix_crc(&mut f);
    let e = parse_frame(&f).unwrap_err();
    assert_eq!(e, FrameError::UnknownCodec(6));
    assert_eq!(e.reason(), DropReason::UnknownCodec);
}

#[test]
fn error_payload_too_large() {
    let mut f = valid_data_frame();
    f[12..16].copy_from_slice(&(MAX_PAYLOAD as u32 + 1).to_be_bytes());
    let e = parse_frame(&f).unwrap_err();
    assert_eq!(
        e,
        FrameError::PayloadTooLarge {
            len: MAX_PAYLOAD + 1,
            max: MAX_PAYLOAD
        }
    );
    assert_eq!(e.reason(), DropReason::PayloadTooLarge);
    let h = Header::new(Version::V3, FrameType::Data);
    let big = vec![0u8; MAX_PAYLOAD + 1];
    assert!(matches!(
        build_frame(&h, &big, &mut vec![0u8; MAX_FRAME_LEN + 64]),
        Err(FrameError::PayloadTooLarge { .. })
    ));
    // The largest payload builds and parses.
    let mut out = vec![0u8; MAX_FRAME_LEN];
    let n = build_frame(&h, &big[..MAX_PAYLOAD], &mut out).unwrap();
    assert_eq!(n, HEADER_LEN + MAX_PAYLOAD + CRC_LEN);
    assert_eq!(parse_frame(&out[..n]).unwrap().payload.len(), MAX_PAYLOAD);
}

#[test]
fn error_invalid_field_rules() {
    let data = Header::new(Version::V3, FrameType::Data);
    let ctl = Header::new(Version::V3, FrameType::Ack);
    let v1 = Header::new(Version::V1, FrameType::Data);
    let mut cases: Vec<(Header, &str)> = Vec::new();
    let mut h = ctl;
    h.stream_id = 0;
    cases.push((h, "stream_id"));
    let mut h = ctl;
    h.object_id = 1;
    cases.push((h, "object_id"));
    let mut h = ctl;
    h.offset = 1;
    cases.push((h, "offset"));
    let mut h = ctl;
    h.baseline = 1;
    cases.push((h, "baseline"));
    let mut h = ctl;
    h.codec = Codec::Zstd;
    cases.push((h, "codec"));
    let mut h = ctl;
    h.flags = Flags::LAST;
    cases.push((h, "flags"));
    let mut h = Header::new(Version::V3, FrameType::Hello);
    h.flags = Flags::SEALED;
    cases.push((h, "flags"));
    let mut h = data;
    h.stream_id = CONTROL_STREAM;
    cases.push((h, "stream_id"));
    let mut h = data;
    h.codec = Codec::XorDeltaZeroRun;
    cases.push((h, "baseline"));
    let mut h = data;
    h.baseline = 3;
    cases.push((h, "baseline"));
    let mut h = v1;
    h.stream_id = 1;
    cases.push((h, "stream_id"));
    let mut h = v1;
    h.codec = Codec::Zero;
    cases.push((h, "codec"));
    let mut h = Header::new(Version::V1, FrameType::Keepalive);
    h.flags = Flags::SEALED;
    cases.push((h, "flags"));
    let mut h = data;
    h.flags = Flags::SEALED;
    h.seq = u64::MAX;
    cases.push((h, "seq"));
    for (h, field) in cases {
        let e = h.validate().unwrap_err();
        assert!(
            matches!(e, FrameError::InvalidField { field: f, .. } if f == field),
            "{h:?}: {e:?}"
        );
        assert_eq!(e.reason(), DropReason::InvalidField);
        // The same header is refused on the wire too.
        let mut raw = h.to_bytes().to_vec();
        raw[12..16].copy_from_slice(&0u32.to_be_bytes());
        raw.extend_from_slice(&[0u8; TAG_LEN]);
        if !h.flags.contains(Flags::SEALED) {
            raw.truncate(HEADER_LEN + CRC_LEN);
        }
        assert_eq!(Header::parse(&raw).unwrap_err(), e);
        assert_eq!(parse_frame_unverified(&raw).unwrap_err(), e);
    }
}

#[test]
fn error_length_mismatch() {
    let mut f = valid_data_frame();
    let n = f.len();
    f.push(0);
    let e = parse_frame(&f).unwrap_err();
    assert_eq!(
        e,
        FrameError::LengthMismatch {
            expected: n,
            got: n + 1
        }
    );
    assert_eq!(e.reason(), DropReason::LengthMismatch);
}

#[test]
fn error_checksum_mismatch() {
    let mut f = valid_data_frame();
    let n = f.len();
    let good = u32::from_be_bytes(f[n - 4..].try_into().unwrap());
    f[HEADER_LEN] ^= 1;
    let e = parse_frame(&f).unwrap_err();
    assert!(
        matches!(e, FrameError::ChecksumMismatch { expected, actual } if expected == good && actual != good)
    );
    assert_eq!(e.reason(), DropReason::ChecksumMismatch);
}

#[test]
fn error_sealed_not_verified() {
    let (_, f) = sample_frames()
        .into_iter()
        .find(|(n, _)| n.starts_with("sealed_"))
        .unwrap();
    let e = parse_frame(&f).unwrap_err();
    assert_eq!(e, FrameError::SealedNotVerified);
    assert_eq!(e.reason(), DropReason::Unauthenticated);
}

#[test]
fn error_payload_variants() {
    // PayloadTruncated
    let e = Ack::decode(&[0; 10]).unwrap_err();
    assert!(matches!(
        e,
        FrameError::PayloadTruncated {
            frame_type: FrameType::Ack,
            got: 10,
            ..
        }
    ));
    // TrailingBytes
    let mut digest = [0u8; 33];
    digest[8] = 1; // XXH3-128
    let e = Keepalive::decode(&digest).unwrap_err();
    assert_eq!(
        e,
        FrameError::TrailingBytes {
            frame_type: FrameType::Keepalive,
            extra: 1
        }
    );
    // a KEEPALIVE is empty or a whole digest
    assert!(matches!(
        Keepalive::decode(&[0]).unwrap_err(),
        FrameError::PayloadTruncated {
            frame_type: FrameType::Keepalive,
            ..
        }
    ));
    let mut pa = ProbeAck::default().to_vec().unwrap();
    pa.push(0);
    assert!(matches!(
        ProbeAck::decode(&pa),
        Err(FrameError::TrailingBytes { extra: 1, .. })
    ));
    // InvalidPayloadField: too many SACK ranges, bad order, below cumulative, NACK empty.
    let mut ack = Ack {
        stream_id: 1,
        cumulative_seq: 10,
        ..Ack::default()
    };
    ack.sack = (0..33)
        .map(|i| SeqRange::new(20 + 3 * i, 21 + 3 * i))
        .collect();
    assert!(matches!(
        ack.to_vec(),
        Err(FrameError::InvalidPayloadField {
            field: "sack_count",
            ..
        })
    ));
    ack.sack = vec![SeqRange::new(10, 12)];
    assert!(matches!(
        ack.to_vec(),
        Err(FrameError::InvalidPayloadField { field: "range", .. })
    ));
    ack.sack = vec![SeqRange::new(12, 14), SeqRange::new(14, 15)];
    assert!(matches!(
        ack.to_vec(),
        Err(FrameError::InvalidPayloadField { field: "range", .. })
    ));
    ack.sack = vec![SeqRange::new(12, 12)];
    assert!(matches!(
        ack.to_vec(),
        Err(FrameError::InvalidPayloadField { field: "range", .. })
    ));
    // Wire-level: a count above the limit is refused before reading ranges.
    let mut raw = Ack {
        stream_id: 1,
        ..Ack::default()
    }
    .to_vec()
    .unwrap();
    raw[2..4].copy_from_slice(&33u16.to_be_bytes());
    let e = Ack::decode(&raw).unwrap_err();
    assert!(matches!(
        e,
        FrameError::InvalidPayloadField {
            field: "sack_count",
            value: 33,
            ..
        }
    ));
    assert_eq!(e.reason(), DropReason::MalformedPayload);
    let nack = Nack {
        stream_id: 1,
        missing: vec![],
    };
    assert!(matches!(
        nack.to_vec(),
        Err(FrameError::InvalidPayloadField { field: "count", .. })
    ));
    let nack = Nack {
        stream_id: CONTROL_STREAM,
        missing: vec![SeqRange::new(1, 2)],
    };
    assert!(matches!(
        nack.to_vec(),
        Err(FrameError::InvalidPayloadField {
            field: "stream_id",
            ..
        })
    ));
    let mut raw = Nack {
        stream_id: 1,
        missing: vec![SeqRange::new(1, 2)],
    }
    .to_vec()
    .unwrap();
    raw[7] = 1;
    assert!(matches!(
        Nack::decode(&raw),
        Err(FrameError::InvalidPayloadField {
            field: "reserved",
            ..
        })
    ));
    // HELLO limits and padding.
    let mut h = common::sample_hello();
    h.max_streams = 0;
    assert!(matches!(
        h.to_vec(),
        Err(FrameError::InvalidPayloadField {
            field: "max_streams",
            ..
        })
    ));
    let mut h = common::sample_hello();
    h.chunk_size = h.max_payload + 1;
    assert!(matches!(
        h.to_vec(),
        Err(FrameError::InvalidPayloadField {
            field: "chunk_size",
            ..
        })
    ));
    let mut h = common::sample_hello();
    h.max_payload = MAX_PAYLOAD as u32 + 1;
    assert!(matches!(
        h.to_vec(),
        Err(FrameError::InvalidPayloadField {
            field: "max_payload",
            ..
        })
    ));
    let mut h = common::sample_hello();
    h.key_exchange = vec![1; MAX_KEY_EXCHANGE_LEN + 1];
    assert!(matches!(
        h.to_vec(),
        Err(FrameError::InvalidPayloadField {
            field: "key_exchange_len",
            ..
        })
    ));
    let mut h = common::sample_hello();
    h.extension = vec![0; MAX_PAYLOAD];
    assert!(matches!(
        h.to_vec(),
        Err(FrameError::InvalidPayloadField {
            field: "extension",
            ..
        })
    ));
    let mut raw = common::sample_hello().to_vec().unwrap();
    raw[6..8].copy_from_slice(&(MAX_KEY_EXCHANGE_LEN as u16 + 1).to_be_bytes());
    assert!(matches!(
        Hello::decode(&raw),
        Err(FrameError::InvalidPayloadField {
            field: "key_exchange_len",
            ..
        })
    ));
    let mut raw = Probe::padded_to(1, 2, 40).to_vec().unwrap();
    raw[30] = 9;
    assert!(matches!(
        Probe::decode(&raw),
        Err(FrameError::InvalidPayloadField {
            field: "padding",
            value: 9,
            ..
        })
    ));
    let c = Close {
        code: CloseCode::NORMAL,
        message: "x".repeat(MAX_CLOSE_MESSAGE_LEN + 1),
    };
    assert!(matches!(
        c.to_vec(),
        Err(FrameError::InvalidPayloadField {
            field: "message_len",
            ..
        })
    ));
}

#[test]
fn error_invalid_utf8() {
    let e = Close::decode(&[0, 1, 0, 2, 0xC3, 0x28]).unwrap_err();
    assert!(matches!(
        e,
        FrameError::InvalidUtf8 {
            frame_type: FrameType::Close,
            ..
        }
    ));
    assert!(std::error::Error::source(&e).is_some());
    assert_eq!(e.reason(), DropReason::MalformedPayload);
}

#[test]
fn error_buffer_too_small() {
    let h = Header::new(Version::V3, FrameType::Data);
    let mut out = [0u8; 60];
    let e = build_frame(&h, &[0u8; 9], &mut out).unwrap_err();
    assert_eq!(e, FrameError::BufferTooSmall { need: 61, got: 60 });
    assert_eq!(e.reason(), DropReason::LocalError);
    assert!(matches!(
        h.write(&mut [0u8; 47]),
        Err(FrameError::BufferTooSmall { need: 48, got: 47 })
    ));
    assert!(matches!(
        ProbeAck::default().encode(&mut [0u8; 23]),
        Err(FrameError::BufferTooSmall { need: 24, .. })
    ));
    let ack_hdr = Header::new(Version::V3, FrameType::Ack);
    assert!(matches!(
        build_typed_frame(&ack_hdr, &Ack::default(), &mut [0u8; 83]),
        Err(FrameError::BufferTooSmall { need: 84, got: 83 })
    ));
}

#[test]
fn typed_frame_type_must_match_payload() {
    let h = Header::new(Version::V3, FrameType::Nack);
    let e = build_typed_frame(&h, &Ack::default(), &mut [0u8; 256]).unwrap_err();
    assert!(matches!(
        e,
        FrameError::InvalidField {
            field: "frame_type",
            ..
        }
    ));
    let h = Header::new(Version::V3, FrameType::HelloAck);
    assert!(build_typed_frame(&h, &common::sample_hello(), &mut [0u8; 256]).is_ok());
}

#[test]
fn drop_reasons_are_dense_and_uniquely_labelled() {
    assert_eq!(DropReason::ALL.len(), DropReason::COUNT);
    let mut labels = std::collections::HashSet::new();
    for (i, r) in DropReason::ALL.iter().enumerate() {
        assert_eq!(r.index(), i);
        assert!(labels.insert(r.as_str()), "duplicate label {r}");
    }
}

#[test]
fn header_wire_layout_is_as_specified() {
    let h = Header {
        version: Version::V3,
        frame_type: FrameType::Data,
        flags: Flags::LAST | Flags::RETRANSMIT,
        stream_id: 0x0102,
        conn_id: 0x0304_0506,
        payload_len: 0x0000_0708,
        seq: 0x1112_1314_1516_1718,
        object_id: 0x2122_2324_2526_2728,
        offset: 0x3132_3334_3536_3738,
        codec: Codec::HdeContainer,
        baseline: 0x4142_4344,
    };
    let b = h.to_bytes();
    let expect: [u8; 48] = [
        0xDC, 0x57, 3, 0x10, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 7, 8, 0x11, 0x12, 0x13, 0x14, 0x15,
        0x16, 0x17, 0x18, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x31, 0x32, 0x33, 0x34,
        0x35, 0x36, 0x37, 0x38, 5, 0, 0, 0, 0x41, 0x42, 0x43, 0x44,
    ];
    assert_eq!(b, expect);
    assert_eq!(Header::parse(&b), Ok(h));
    // CRC32C is the Castagnoli polynomial (check value of "123456789" is 0xE3069283).
    assert_eq!(frame_crc(b"1234", b"56789"), 0xE306_9283);
}

#[test]
fn route_reads_the_connection_and_refuses_what_is_not_dwcp() {
    let f = valid_data_frame();
    let r = Header::route(&f).unwrap();
    assert_eq!(r.conn_id, 0xAABB_CCDD);
    assert_eq!(r.frame_type, FrameType::Data);
    assert!(matches!(
        Header::route(&f[..HEADER_LEN - 1]),
        Err(FrameError::Truncated { .. })
    ));
    let mut bad = f.clone();
    bad[0] ^= 0xFF;
    assert!(matches!(Header::route(&bad), Err(FrameError::BadMagic(_))));
    let mut bad = f.clone();
    bad[3] = 0x77;
    assert!(matches!(
        Header::route(&bad),
        Err(FrameError::UnknownFrameType(0x77))
    ));
}
