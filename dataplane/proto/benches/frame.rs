//! Cost of building and parsing frames (header validation + CRC32C) and of decoding an ACK.
//!
//! `cargo bench -p dwcp-proto --bench frame`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dwcp_proto::*;
use std::hint::black_box;

fn frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame");
    for size in [64usize, 1400, 8192] {
        let mut h = Header::new(Version::V3, FrameType::Data);
        h.stream_id = 1;
        h.seq = 12345;
        h.object_id = 9;
        h.offset = 1 << 20;
        let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
        let mut buf = vec![0u8; MAX_FRAME_LEN];
        let n = build_frame(&h, &payload, &mut buf).unwrap();
        g.throughput(Throughput::Bytes(n as u64));
        g.bench_function(format!("parse_frame/{size}"), |b| {
            b.iter(|| parse_frame(black_box(&buf[..n])).unwrap().payload.len())
        });
        g.bench_function(format!("parse_frame_unverified/{size}"), |b| {
            b.iter(|| {
                parse_frame_unverified(black_box(&buf[..n]))
                    .unwrap()
                    .payload
                    .len()
            })
        });
        let mut out = vec![0u8; MAX_FRAME_LEN];
        g.bench_function(format!("build_frame/{size}"), |b| {
            b.iter(|| build_frame(black_box(&h), black_box(&payload), &mut out).unwrap())
        });
    }
    g.finish();

    let ack = Ack {
        stream_id: 2,
        ack_delay_us: 100,
        cumulative_seq: 1000,
        recv_timestamp_ns: 1,
        receive_rate: 2,
        sack: (0..8)
            .map(|i| SeqRange::new(1002 + 4 * i, 1004 + 4 * i))
            .collect(),
    };
    let bytes = ack.to_vec().unwrap();
    c.bench_function("ack_decode/8_ranges", |b| {
        b.iter(|| Ack::decode(black_box(&bytes)).unwrap().sack.len())
    });
}

criterion_group!(benches, frames);
criterion_main!(benches);
