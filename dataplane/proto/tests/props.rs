//! Property tests: every type round-trips; arbitrary bytes never panic and, when accepted,
//! are the canonical encoding of what they decode to.

mod common;

use dwcp_proto::*;
use proptest::collection::vec;
use proptest::prelude::*;

fn arb_version() -> impl Strategy<Value = Version> {
    prop_oneof![Just(Version::V1), Just(Version::V3)]
}

fn arb_codec() -> impl Strategy<Value = Codec> {
    proptest::sample::select(Codec::ALL.to_vec())
}

/// Any header that passes `Header::validate` (payload_len is set by the builder).
fn arb_header() -> impl Strategy<Value = Header> {
    (
        arb_version(),
        proptest::sample::select(FrameType::ALL.to_vec()),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        0..CONTROL_STREAM,
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        arb_codec(),
        1..=u32::MAX,
    )
        .prop_map(
            |(version, ft, sealed, last, retx, stream, conn, seq, obj, off, codec, base)| {
                let mut h = Header::new(version, ft);
                h.conn_id = conn;
                h.seq = seq;
                let can_seal =
                    version == Version::V3 && !matches!(ft, FrameType::Hello | FrameType::HelloAck);
                if sealed && can_seal {
                    h.flags.insert(Flags::SEALED);
                    h.seq = seq % SEALED_SEQ_LIMIT;
                }
                if ft == FrameType::Data {
                    h.flags.set(Flags::LAST, last);
                    h.flags.set(Flags::RETRANSMIT, retx);
                    h.object_id = obj;
                    h.offset = off;
                    if version == Version::V3 {
                        h.stream_id = stream;
                        h.codec = codec;
                        h.baseline = match codec {
                            Codec::Raw | Codec::Zero | Codec::Zstd => 0,
                            Codec::XorDeltaZeroRun => base,
                            Codec::Dup | Codec::HdeContainer => base % 3,
                        };
                    }
                }
                h
            },
        )
}

fn arb_ranges(floor: u64, min: usize, max: usize) -> impl Strategy<Value = Vec<SeqRange>> {
    vec((1u64..1000, 1u64..1000), min..=max).prop_map(move |steps| {
        let mut at = floor;
        steps
            .into_iter()
            .map(|(gap, len)| {
                let start = at + gap;
                at = start + len;
                SeqRange::new(start, at)
            })
            .collect()
    })
}

fn arb_hello() -> impl Strategy<Value = Hello> {
    (
        any::<u16>(),
        any::<u16>(),
        1..=u16::MAX,
        1..=MAX_PAYLOAD as u32,
        any::<u32>(),
        any::<[u8; 32]>(),
        prop_oneof![
            vec(any::<u8>(), 0..64),
            vec(any::<u8>(), 0..=MAX_KEY_EXCHANGE_LEN)
        ],
        vec(any::<u8>(), 0..300),
    )
        .prop_map(|(v, c, ms, mp, chunk, nonce, kex, extension)| Hello {
            versions: VersionSet::from_bits_retain(v),
            capabilities: Capabilities::from_bits_retain(c),
            max_streams: ms,
            max_payload: mp,
            chunk_size: chunk % mp + 1,
            session_nonce: nonce,
            key_exchange: kex,
            extension,
        })
}

fn arb_ack() -> impl Strategy<Value = Ack> {
    (
        0..CONTROL_STREAM,
        any::<u32>(),
        0u64..u64::MAX / 2,
        any::<u64>(),
        any::<u64>(),
    )
        .prop_flat_map(|(stream_id, delay, cum, ts, rate)| {
            arb_ranges(cum, 0, MAX_SACK_RANGES).prop_map(move |sack| Ack {
                stream_id,
                ack_delay_us: delay,
                cumulative_seq: cum,
                recv_timestamp_ns: ts,
                receive_rate: rate,
                sack,
            })
        })
}

fn arb_nack() -> impl Strategy<Value = Nack> {
    (0..CONTROL_STREAM, 0u64..u64::MAX / 2).prop_flat_map(|(stream_id, base)| {
        arb_ranges(base, 1, MAX_NACK_RANGES).prop_map(move |missing| Nack { stream_id, missing })
    })
}

fn arb_close() -> impl Strategy<Value = Close> {
    (any::<u16>(), "\\PC{0,80}").prop_map(|(code, mut message)| {
        while message.len() > MAX_CLOSE_MESSAGE_LEN {
            message.pop();
        }
        Close {
            code: CloseCode(code),
            message,
        }
    })
}

fn arb_payload() -> impl Strategy<Value = Payload<'static>> {
    prop_oneof![
        arb_hello().prop_map(Payload::Hello),
        arb_hello().prop_map(Payload::HelloAck),
        arb_ack().prop_map(Payload::Ack),
        arb_nack().prop_map(Payload::Nack),
        (any::<u64>(), any::<u64>(), 0u16..2000).prop_map(|(t, s, padding)| Payload::Probe(
            Probe {
                send_timestamp_ns: t,
                probe_seq: s,
                padding
            }
        )),
        any::<(u64, u64, u32, u32)>().prop_map(|(a, b, c, d)| Payload::ProbeAck(ProbeAck {
            echo_timestamp_ns: a,
            probe_seq: b,
            probe_len: c,
            ack_delay_us: d
        })),
        Just(Payload::Keepalive(Keepalive::default())),
        any::<(u64, u128)>().prop_map(|(object_id, xxh3_128)| Payload::Keepalive(Keepalive {
            digest: Some(ObjectDigest {
                object_id,
                xxh3_128
            })
        })),
        arb_close().prop_map(Payload::Close),
    ]
}

fn check_payload_round_trip<P: WirePayload + PartialEq + std::fmt::Debug>(p: &P) {
    let bytes = p.to_vec().unwrap();
    assert_eq!(bytes.len(), p.encoded_len());
    assert_eq!(&P::decode(&bytes).unwrap(), p);
}

/// If `buf` decodes, re-encoding gives `buf` back exactly.
fn check_canonical(ft: FrameType, buf: &[u8]) {
    match Payload::decode(ft, buf) {
        Ok(p) => {
            let mut out = vec![0u8; p.encoded_len()];
            let n = p.encode(&mut out).unwrap();
            assert_eq!(&out[..n], buf);
        }
        Err(e) => {
            let _ = (e.reason(), e.to_string());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn header_round_trips(h in arb_header(), len in 0u32..=MAX_PAYLOAD as u32) {
        let mut h = h;
        h.payload_len = len;
        let b = h.to_bytes();
        prop_assert_eq!(Header::parse(&b), Ok(h));
    }

    #[test]
    fn route_agrees_with_parse(h in arb_header(), noise in vec(any::<u8>(), 0..64)) {
        let b = h.to_bytes();
        let r = Header::route(&b).unwrap();
        prop_assert_eq!(r, Route { conn_id: h.conn_id, frame_type: h.frame_type });
        // Any bytes: routing never panics, and whatever parses also routes, to the same
        // connection.
        if let Ok(p) = Header::parse(&noise) {
            prop_assert_eq!(Header::route(&noise).map(|r| r.conn_id), Ok(p.conn_id));
        }
    }

    #[test]
    fn data_frame_round_trips(h in arb_header(), payload in vec(any::<u8>(), 0..2048)) {
        let mut h = h;
        h.frame_type = FrameType::Data;
        if h.stream_id == CONTROL_STREAM { h.stream_id = 0; }
        let h = Header { ..Header::new(h.version, FrameType::Data) }.clone_fields_from(&h);
        let mut out = vec![0u8; MAX_FRAME_LEN];
        let sealed = h.flags.contains(Flags::SEALED);
        let n = if sealed {
            build_sealed_frame(&h, &payload, &mut out, common::fake_seal).unwrap()
        } else {
            build_frame(&h, &payload, &mut out).unwrap()
        };
        prop_assert_eq!(n, HEADER_LEN + payload.len() + h.trailer_len());
        let u = parse_frame_unverified(&out[..n]).unwrap();
        let mut expect = h;
        expect.payload_len = payload.len() as u32;
        prop_assert_eq!(u.header, expect);
        if !sealed {
            let f = parse_frame(&out[..n]).unwrap();
            prop_assert_eq!(f.payload, &payload[..]);
            prop_assert_eq!(f.header, expect);
        }
    }

    #[test]
    fn control_frame_round_trips(h in arb_header(), p in arb_payload()) {
        let mut h = Header::new(h.version, p.frame_type()).clone_fields_from(&h);
        h.flags.remove(Flags::SEALED);
        let mut body = vec![0u8; p.encoded_len()];
        let len = p.encode(&mut body).unwrap();
        prop_assert_eq!(len, p.encoded_len());
        let mut out = vec![0u8; MAX_FRAME_LEN];
        let n = build_frame(&h, &body, &mut out).unwrap();
        let f = parse_frame(&out[..n]).unwrap();
        prop_assert_eq!(f.typed_payload().unwrap(), p);
    }

    #[test]
    fn hello_round_trips(p in arb_hello()) { check_payload_round_trip(&p); }

    #[test]
    fn ack_round_trips(p in arb_ack()) {
        check_payload_round_trip(&p);
        if let Some(l) = p.largest_acked() { prop_assert!(p.acks(l)); }
    }

    #[test]
    fn nack_round_trips(p in arb_nack()) { check_payload_round_trip(&p); }

    #[test]
    fn probe_round_trips(t in any::<u64>(), s in any::<u64>(), size in 0usize..9000) {
        let p = Probe::padded_to(t, s, size);
        prop_assert_eq!(p.encoded_len(), size.max(16));
        check_payload_round_trip(&p);
    }

    #[test]
    fn probe_ack_round_trips(a in any::<(u64, u64, u32, u32)>()) {
        check_payload_round_trip(&ProbeAck { echo_timestamp_ns: a.0, probe_seq: a.1, probe_len: a.2, ack_delay_us: a.3 });
    }

    #[test]
    fn close_round_trips(p in arb_close()) { check_payload_round_trip(&p); }

    #[test]
    fn arbitrary_bytes_never_panic(buf in vec(any::<u8>(), 0..400)) {
        if let Ok(h) = Header::parse(&buf) {
            prop_assert_eq!(&h.to_bytes()[..], &buf[..HEADER_LEN]);
        }
        if let Ok(f) = parse_frame(&buf) {
            let mut out = vec![0u8; buf.len()];
            prop_assert_eq!(build_frame(&f.header, f.payload, &mut out), Ok(buf.len()));
            prop_assert_eq!(&out, &buf);
        }
        let _ = parse_frame_unverified(&buf);
        for ft in FrameType::ALL {
            check_canonical(ft, &buf);
        }
    }

    /// Random bytes behind a valid-looking header (right magic, version, type, length, CRC)
    /// reach the payload decoders and the deeper header rules.
    #[test]
    fn arbitrary_frames_with_valid_framing_never_panic(
        ft in proptest::sample::select(FrameType::ALL.to_vec()),
        version in arb_version(),
        mut hdr in any::<[u8; HEADER_LEN]>(),
        payload in vec(any::<u8>(), 0..300),
    ) {
        hdr[0] = 0xDC; hdr[1] = 0x57; hdr[2] = version.as_u8(); hdr[3] = ft.as_u8();
        hdr[12..16].copy_from_slice(&(payload.len() as u32).to_be_bytes());
        let mut f = hdr.to_vec();
        f.extend_from_slice(&payload);
        let crc = frame_crc(&hdr, &payload);
        f.extend_from_slice(&crc.to_be_bytes());
        if let Ok(fr) = parse_frame(&f) {
            let mut out = vec![0u8; f.len()];
            prop_assert_eq!(build_frame(&fr.header, fr.payload, &mut out), Ok(f.len()));
            prop_assert_eq!(&out, &f);
        }
        check_canonical(ft, &payload);
    }
}

/// Copies the per-frame fields of `src` into a header of `self`'s version and type, keeping
/// the rules of that type.
trait CloneFields {
    fn clone_fields_from(self, src: &Header) -> Header;
}

impl CloneFields for Header {
    fn clone_fields_from(self, src: &Header) -> Header {
        let mut h = self;
        h.conn_id = src.conn_id;
        h.seq = src.seq;
        if src.flags.contains(Flags::SEALED)
            && h.version == Version::V3
            && !matches!(h.frame_type, FrameType::Hello | FrameType::HelloAck)
        {
            h.flags.insert(Flags::SEALED);
        }
        if h.frame_type == FrameType::Data {
            h.flags.set(Flags::LAST, src.flags.contains(Flags::LAST));
            h.flags
                .set(Flags::RETRANSMIT, src.flags.contains(Flags::RETRANSMIT));
            h.object_id = src.object_id;
            h.offset = src.offset;
            if h.version == Version::V3 && src.frame_type == FrameType::Data {
                h.stream_id = src.stream_id;
                h.codec = src.codec;
                h.baseline = src.baseline;
            }
        }
        h
    }
}
