//! Fuzz target: the HDE container decoder on arbitrary bytes, with and without the baseline it
//! may name, and on valid containers with fuzzer-chosen corruption.
//!
//! Input: byte 0 selects the mode. Even: the rest is a container, decoded by a decoder that
//! holds no baseline and by one that holds baseline 1. Odd: the rest is split into an object
//! and edits; the object is encoded against a baseline close to it (each policy in turn),
//! decoded unchanged (must round-trip exactly), then with the edits applied (must not panic,
//! and on success must report the same range). Memory is capped by `max_object_len`.
#![no_main]

use std::sync::Arc;

use dwcp_hde::{Baseline, Decoder, DecoderConfig, Encoder, EncoderConfig, Policy};
use libfuzzer_sys::fuzz_target;

fn decoder(with_base: Option<&Arc<[u8]>>) -> Decoder {
    let cfg = DecoderConfig {
        max_object_len: 4 << 20,
        max_block_size: 1 << 16,
    };
    let mut d = Decoder::new(cfg).expect("decoder");
    if let Some(b) = with_base {
        d.add_baseline(1, b.clone());
    }
    d
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let base: Arc<[u8]> = rest
            .iter()
            .rev()
            .copied()
            .chain(std::iter::repeat_n(7u8, 8192))
            .collect();
        for b in [None, Some(&base)] {
            let mut d = decoder(b);
            if let Ok(r) = d.decode(rest) {
                assert_eq!(d.chunk(&r).len(), r.len);
            }
        }
        return;
    }
    let split = rest.len() * 3 / 4;
    let (object, edits) = rest.split_at(split);
    // A baseline close to the object (every 37th byte differs), so XorDelta blocks appear.
    let base: Arc<[u8]> = object
        .iter()
        .enumerate()
        .map(|(i, &b)| if i % 37 == 0 { b ^ 0x55 } else { b })
        .collect();
    let policy = match mode >> 1 & 3 {
        0 => Policy::Datacenter,
        1 => Policy::Internet { level: 1 },
        _ => Policy::HYBRID_DEFAULT,
    };
    let mut enc = Encoder::new(EncoderConfig {
        block_size: 64,
        policy,
    })
    .expect("encoder");
    enc.set_baseline(Some(Baseline::new(1, base.clone()).expect("id")));
    let mut c = Vec::new();
    enc.encode_chunk(0, object, &mut c).expect("encode");
    let mut d = decoder(Some(&base));
    let r = d.decode(&c).expect("valid container decodes");
    assert_eq!(d.chunk(&r), object);
    for pair in edits.chunks(2) {
        if c.is_empty() {
            break;
        }
        let p = usize::from(pair[0]) * 7 % c.len();
        c[p] ^= pair.get(1).copied().unwrap_or(0x80) | 1;
    }
    for b in [None, Some(&base)] {
        let mut d = decoder(b);
        if let Ok(r) = d.decode(&c) {
            assert_eq!(d.chunk(&r).len(), r.len);
        }
    }
});
