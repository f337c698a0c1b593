//! Valid sample frames of every type, shared by the tests and the fuzz seed-corpus writer.
#![allow(dead_code)]

use dwcp_proto::*;

/// A stand-in for the AEAD: only the wire layout matters here (XOR "encryption", tag derived
/// from the header and payload). Not cryptography.
pub fn fake_seal(aad: &[u8; HEADER_LEN], payload: &mut [u8]) -> [u8; TAG_LEN] {
    for b in payload.iter_mut() {
        *b ^= 0x5A;
    }
    let c = frame_crc(aad, payload).to_be_bytes();
    let mut tag = [0u8; TAG_LEN];
    for (i, t) in tag.iter_mut().enumerate() {
        *t = c[i % 4] ^ (i as u8);
    }
    tag
}

fn ctl(version: Version, ft: FrameType, conn: u32, seq: u64) -> Header {
    let mut h = Header::new(version, ft);
    h.conn_id = conn;
    h.seq = seq;
    h
}

fn typed<P: WirePayload>(h: Header, p: &P) -> Vec<u8> {
    let mut out = vec![0u8; MAX_FRAME_LEN];
    let n = build_typed_frame(&h, p, &mut out).expect("sample builds");
    out.truncate(n);
    out
}

fn data(h: Header, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; MAX_FRAME_LEN];
    let n = build_frame(&h, payload, &mut out).expect("sample builds");
    out.truncate(n);
    out
}

fn sealed(h: Header, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; MAX_FRAME_LEN];
    let n = build_sealed_frame(&h, payload, &mut out, fake_seal).expect("sample builds");
    out.truncate(n);
    out
}

pub fn sample_hello() -> Hello {
    let mut h = Hello::new(16, 8952, 8192);
    h.session_nonce = core::array::from_fn(|i| i as u8 * 7 + 1);
    h
}

/// (name, frame bytes). Every unsealed one parses with `parse_frame`; sealed ones (name starts
/// with `sealed_`) parse with `parse_frame_unverified`.
pub fn sample_frames() -> Vec<(&'static str, Vec<u8>)> {
    let conn = 0x1234_5678;
    let mut v = Vec::new();

    let mut hello_v1 = sample_hello();
    hello_v1.versions = VersionSet::V1;
    hello_v1.capabilities = Capabilities::EMPTY;
    hello_v1.max_streams = 1;
    hello_v1.chunk_size = 1400;
    hello_v1.max_payload = 1400;
    v.push((
        "hello_v1",
        typed(ctl(Version::V1, FrameType::Hello, conn, 0), &hello_v1),
    ));
    let mut hello_v3 = sample_hello();
    hello_v3.key_exchange = (0..32u8).collect();
    hello_v3.extension = (0..200u8).map(|i| i % 7).collect();
    v.push((
        "hello_v3_kex_ext",
        typed(ctl(Version::V1, FrameType::Hello, conn, 0), &hello_v3),
    ));
    let mut hello_ack = sample_hello();
    hello_ack.max_streams = 4;
    hello_ack.key_exchange = vec![0xAB; 32];
    v.push((
        "hello_ack_v3",
        typed(ctl(Version::V1, FrameType::HelloAck, conn, 0), &hello_ack),
    ));

    let mut d = Header::new(Version::V1, FrameType::Data);
    d.conn_id = conn;
    d.seq = 1;
    d.object_id = 42;
    d.offset = 0;
    v.push(("data_v1_raw", data(d, b"plain v1 chunk bytes")));

    let mut d = Header::new(Version::V3, FrameType::Data);
    d.conn_id = conn;
    d.stream_id = 3;
    d.seq = 1000;
    d.object_id = 7;
    d.offset = 3 * 8192;
    d.codec = Codec::XorDeltaZeroRun;
    d.baseline = 9;
    d.flags = Flags::LAST;
    v.push((
        "data_v3_xor_delta_last",
        data(d, &[0, 0, 0, 3, 1, 2, 3, 0, 0]),
    ));
    d.codec = Codec::Zstd;
    d.baseline = 0;
    d.flags = Flags::RETRANSMIT;
    d.seq = 1001;
    v.push((
        "data_v3_zstd_retransmit",
        data(d, &[0x28, 0xB5, 0x2F, 0xFD, 0, 0, 1, 0, 0]),
    ));
    d.codec = Codec::HdeContainer;
    d.baseline = 2;
    d.flags = Flags::EMPTY;
    v.push(("data_v3_hde", data(d, &[1, 2, 3, 4, 5, 6, 7, 8])));
    d.codec = Codec::Zero;
    d.baseline = 0;
    v.push(("data_v3_zero_empty", data(d, &[])));
    d.codec = Codec::Raw;
    d.seq = 77;
    v.push(("sealed_data_v3", sealed(d, b"secret chunk")));

    v.push((
        "ack_cumulative",
        typed(
            ctl(Version::V3, FrameType::Ack, conn, 5),
            &Ack {
                stream_id: 3,
                ack_delay_us: 250,
                cumulative_seq: 1001,
                recv_timestamp_ns: 123_456_789,
                receive_rate: 1_250_000_000,
                sack: vec![],
            },
        ),
    ));
    v.push((
        "ack_sack",
        typed(
            ctl(Version::V3, FrameType::Ack, conn, 6),
            &Ack {
                stream_id: 0,
                ack_delay_us: 10,
                cumulative_seq: 100,
                recv_timestamp_ns: 5,
                receive_rate: 9,
                sack: vec![SeqRange::new(102, 110), SeqRange::new(111, 112)],
            },
        ),
    ));
    v.push((
        "nack",
        typed(
            ctl(Version::V3, FrameType::Nack, conn, 7),
            &Nack {
                stream_id: 1,
                missing: vec![SeqRange::new(100, 102), SeqRange::new(110, 111)],
            },
        ),
    ));
    v.push((
        "probe_padded",
        typed(
            ctl(Version::V3, FrameType::Probe, conn, 8),
            &Probe::padded_to(1_000_000, 1, 1200),
        ),
    ));
    v.push((
        "probe_ack",
        typed(
            ctl(Version::V3, FrameType::ProbeAck, conn, 9),
            &ProbeAck {
                echo_timestamp_ns: 1_000_000,
                probe_seq: 1,
                probe_len: 1268,
                ack_delay_us: 3,
            },
        ),
    ));
    v.push((
        "keepalive_v1",
        typed(
            ctl(Version::V1, FrameType::Keepalive, conn, 10),
            &Keepalive::default(),
        ),
    ));
    v.push((
        "keepalive_digest",
        typed(
            ctl(Version::V3, FrameType::Keepalive, conn, 13),
            &Keepalive {
                digest: Some(ObjectDigest {
                    object_id: 7,
                    xxh3_128: 0x0011_2233_4455_6677_8899_aabb_ccdd_eeff,
                }),
            },
        ),
    ));
    v.push((
        "close",
        typed(
            ctl(Version::V3, FrameType::Close, conn, 11),
            &Close {
                code: CloseCode::SHUTDOWN,
                message: "node draining".into(),
            },
        ),
    ));
    let mut k = ctl(Version::V3, FrameType::Keepalive, conn, 12);
    k.flags = Flags::SEALED;
    v.push(("sealed_keepalive", sealed(k, &[])));
    v
}
