//! Round-trip and robustness tests for the HDE codec.

use std::sync::Arc;

use dwcp_hde::{
    Baseline, BlockKind, DecodeError, Decoder, DecoderConfig, Encoder, EncoderConfig, Policy,
};
use dwcp_kernels::Kernels;
use proptest::prelude::*;

#[derive(Debug, Clone, Copy)]
enum Blk {
    Zero,
    DupOf(usize),
    Random(u64),
    Text(u64),
    SameAsBase,
    Tweaked(u64),
}

fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

fn text(seed: u64, n: usize) -> Vec<u8> {
    const WORDS: [&str; 8] = [
        "block ", "delta ", "zero ", "frame ", "the ", "of ", "stream ", "\n",
    ];
    let mut r = rng(seed);
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        v.extend_from_slice(WORDS[(r() % 8) as usize].as_bytes());
    }
    v.truncate(n);
    v
}

fn random(seed: u64, n: usize) -> Vec<u8> {
    let mut r = rng(seed);
    (0..n).map(|_| r() as u8).collect()
}

/// Builds (baseline, new object) from a block plan.
fn build(plan: &[Blk], bs: usize, tail: usize) -> (Vec<u8>, Vec<u8>) {
    let mut base = Vec::new();
    let mut new: Vec<u8> = Vec::new();
    for (i, b) in plan.iter().enumerate() {
        let n = if i + 1 == plan.len() && tail > 0 {
            tail.min(bs)
        } else {
            bs
        };
        let base_blk = random(i as u64 * 7919 + 1, n);
        let blk = match *b {
            Blk::Zero => vec![0u8; n],
            Blk::DupOf(j) if j < i => {
                let src = &new[j * bs..j * bs + bs];
                src[..n].to_vec()
            }
            Blk::DupOf(_) => text(i as u64, n),
            Blk::Random(s) => random(s, n),
            Blk::Text(s) => text(s, n),
            Blk::SameAsBase => base_blk.clone(),
            Blk::Tweaked(s) => {
                let mut v = base_blk.clone();
                let mut r = rng(s);
                for _ in 0..(r() % 5 + 1) {
                    let p = (r() as usize) % n;
                    let l = ((r() % 50) as usize).min(n - p);
                    for x in &mut v[p..p + l] {
                        *x = x.wrapping_add(1 + (r() % 200) as u8);
                    }
                }
                v
            }
        };
        base.extend_from_slice(&base_blk);
        new.extend_from_slice(&blk);
    }
    (base, new)
}

fn blk() -> impl Strategy<Value = Blk> {
    prop_oneof![
        Just(Blk::Zero),
        (0usize..40).prop_map(Blk::DupOf),
        any::<u64>().prop_map(Blk::Random),
        any::<u64>().prop_map(Blk::Text),
        Just(Blk::SameAsBase),
        any::<u64>().prop_map(Blk::Tweaked),
    ]
}

fn policy() -> impl Strategy<Value = Policy> {
    prop_oneof![
        Just(Policy::Datacenter),
        (1i32..=3).prop_map(|level| Policy::Internet { level }),
        Just(Policy::HYBRID_DEFAULT),
    ]
}

/// Encodes `new` in containers of `chunk_blocks` blocks, decodes them in order, checks bytes.
fn round_trip(
    new: &[u8],
    base: Option<&[u8]>,
    bs: usize,
    policy: Policy,
    chunk_blocks: usize,
    enc_k: Kernels,
) -> (Encoder, Decoder) {
    let mut enc = Encoder::with_kernels(
        EncoderConfig {
            block_size: bs,
            policy,
        },
        enc_k,
    )
    .unwrap();
    let mut dec = Decoder::new(DecoderConfig::default()).unwrap();
    if let Some(b) = base {
        let arc: Arc<[u8]> = b.into();
        enc.set_baseline(Some(Baseline::new(42, arc.clone()).unwrap()));
        dec.add_baseline(42, arc);
    }
    let mut buf = Vec::new();
    for (c, chunk) in new.chunks(bs * chunk_blocks).enumerate() {
        buf.clear();
        let first = (c * chunk_blocks) as u64;
        let n = enc.encode_chunk(first, chunk, &mut buf).unwrap();
        assert_eq!(n, buf.len());
        let d = dec.decode(&buf).unwrap();
        assert_eq!(d.offset, first * bs as u64);
        assert_eq!(dec.chunk(&d), chunk);
    }
    assert_eq!(dec.object(), new);
    assert_eq!(
        enc.stats().kinds,
        dec.stats().kinds,
        "sender and receiver agree on what was sent"
    );
    assert_eq!(enc.stats().in_bytes(), new.len() as u64);
    (enc, dec)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn round_trips(plan in proptest::collection::vec(blk(), 0..40),
                   bs in prop_oneof![Just(64usize), Just(512), Just(4096)],
                   tail in 0usize..4096,
                   with_base in any::<bool>(),
                   policy in policy(),
                   chunk_blocks in 1usize..12,
                   scalar in any::<bool>()) {
        let (base, new) = build(&plan, bs, tail);
        let k = if scalar { Kernels::scalar() } else { Kernels::detect() };
        let (enc, _) = round_trip(&new, with_base.then_some(&base[..]), bs, policy, chunk_blocks, k);
        let s = enc.stats();
        if !with_base {
            prop_assert_eq!(s.kind(BlockKind::XorDelta).blocks, 0);
        }
        if policy == Policy::Datacenter {
            prop_assert_eq!(s.kind(BlockKind::Zstd).blocks, 0);
        }
        // Never worse than raw plus the per-record tag and the container headers.
        let blocks = new.len().div_ceil(bs) as u64;
        prop_assert!(s.out_bytes() <= new.len() as u64 + blocks + s.header_bytes);
    }

    #[test]
    fn corrupted_containers_never_panic(plan in proptest::collection::vec(blk(), 1..12),
                                        with_base in any::<bool>(),
                                        policy in policy(),
                                        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..4), 1..6)) {
        let bs = 256;
        let (base, new) = build(&plan, bs, 0);
        let mut enc = Encoder::new(EncoderConfig { block_size: bs, policy }).unwrap();
        let arc: Arc<[u8]> = base.into();
        if with_base {
            enc.set_baseline(Some(Baseline::new(9, arc.clone()).unwrap()));
        }
        let mut buf = Vec::new();
        enc.encode_chunk(0, &new, &mut buf).unwrap();
        for (pos, val, op) in edits {
            if buf.is_empty() { break; }
            let p = pos % buf.len();
            match op {
                0 => buf[p] ^= val | 1,
                1 => buf.truncate(p),
                2 => buf.insert(p, val),
                _ => { buf.remove(p); }
            }
        }
        for hold_base in [false, true] {
            let mut dec = Decoder::new(DecoderConfig { max_object_len: 1 << 20, ..DecoderConfig::default() }).unwrap();
            if hold_base {
                dec.add_baseline(9, arc.clone());
            }
            let before = dec.object().to_vec();
            match dec.decode(&buf) {
                Ok(d) => prop_assert_eq!(dec.chunk(&d).len(), d.len),
                Err(_) => prop_assert_eq!(dec.object(), &before[..], "nothing committed on error"),
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut dec = Decoder::new(DecoderConfig { max_object_len: 1 << 20, ..DecoderConfig::default() }).unwrap();
        dec.add_baseline(1, vec![5u8; 4096].into());
        let _ = dec.decode(&bytes);
        // A plausible header followed by arbitrary records.
        let mut c = vec![1u8, 0, 0x80, 0x02, 0, 0x80, 0x08, 1];
        c.extend_from_slice(&bytes);
        let _ = dec.decode(&c);
    }
}

#[test]
fn stats_count_each_kind() {
    let bs = 4096;
    let base = random(1, bs * 6);
    let mut new = base.clone();
    new[..bs].fill(0); // 0: zero
    new[bs..2 * bs].copy_from_slice(&text(5, bs)); // 1: text (zstd under Internet)
    let b1 = new[bs..2 * bs].to_vec();
    new[2 * bs..3 * bs].copy_from_slice(&b1); // 2: dup of 1
    new[3 * bs + 100] ^= 0xFF; // 3: tweaked -> xor delta
    new[4 * bs..5 * bs].copy_from_slice(&random(77, bs)); // 4: new random -> raw
    // 5: unchanged -> xor delta (empty delta)
    let (enc, _) = round_trip(
        &new,
        Some(&base),
        bs,
        Policy::Internet { level: 1 },
        6,
        Kernels::detect(),
    );
    let s = enc.stats();
    assert_eq!(s.kind(BlockKind::Zero).blocks, 1);
    assert_eq!(s.kind(BlockKind::Zstd).blocks, 1);
    assert_eq!(s.kind(BlockKind::Dup).blocks, 1);
    assert_eq!(s.kind(BlockKind::XorDelta).blocks, 2);
    assert_eq!(s.kind(BlockKind::Raw).blocks, 1);
    assert!(
        s.kind(BlockKind::XorDelta).out_bytes < 40,
        "{:?}",
        s.kind(BlockKind::XorDelta)
    );
    assert_eq!(s.kind(BlockKind::Zero).out_bytes, 1);
}

#[test]
fn datacenter_policy_sends_text_raw() {
    let data = text(3, 4096 * 4);
    let (enc, _) = round_trip(&data, None, 4096, Policy::Datacenter, 4, Kernels::detect());
    assert_eq!(enc.stats().kind(BlockKind::Raw).blocks, 4);
    let (enc, _) = round_trip(
        &data,
        None,
        4096,
        Policy::HYBRID_DEFAULT,
        4,
        Kernels::detect(),
    );
    assert_eq!(enc.stats().kind(BlockKind::Zstd).blocks, 4);
    // Hybrid skips zstd on incompressible data.
    let data = random(3, 4096 * 4);
    let (enc, _) = round_trip(
        &data,
        None,
        4096,
        Policy::HYBRID_DEFAULT,
        4,
        Kernels::detect(),
    );
    assert_eq!(enc.stats().kind(BlockKind::Raw).blocks, 4);
}

#[test]
fn refuses_unknown_baseline_and_unseen_dup() {
    let bs = 4096;
    let base: Arc<[u8]> = random(1, bs * 2).into();
    let mut new = base.to_vec();
    new[5] ^= 1;
    let mut enc = Encoder::new(EncoderConfig {
        block_size: bs,
        policy: Policy::Datacenter,
    })
    .unwrap();
    enc.set_baseline(Some(Baseline::new(7, base.clone()).unwrap()));
    let mut buf = Vec::new();
    enc.encode_chunk(0, &new, &mut buf).unwrap();
    let mut dec = Decoder::new(DecoderConfig::default()).unwrap();
    match dec.decode(&buf) {
        Err(
            e @ DecodeError::UnknownBaseline {
                block: 0,
                baseline_id: 7,
            },
        ) => {
            assert!(e.to_string().contains("baseline 7"), "{e}");
        }
        other => panic!("expected UnknownBaseline, got {other:?}"),
    }
    dec.add_baseline(7, base);
    assert!(dec.decode(&buf).is_ok());

    // Dup to a block in an earlier container the receiver never got.
    let blk = text(9, bs);
    let obj = [blk.clone(), blk].concat();
    let mut enc = Encoder::new(EncoderConfig {
        block_size: bs,
        policy: Policy::Datacenter,
    })
    .unwrap();
    let (mut c0, mut c1) = (Vec::new(), Vec::new());
    enc.encode_chunk(0, &obj[..bs], &mut c0).unwrap();
    enc.encode_chunk(1, &obj[bs..], &mut c1).unwrap();
    let mut dec = Decoder::new(DecoderConfig::default()).unwrap();
    assert!(matches!(
        dec.decode(&c1),
        Err(DecodeError::DupUnseen {
            block: 1,
            reference: 0
        })
    ));
    assert!(!dec.has_block(1));
    dec.decode(&c0).unwrap();
    dec.decode(&c1).unwrap();
    assert_eq!(dec.object(), &obj[..]);
}

#[test]
fn rejects_bad_headers() {
    let mut dec = Decoder::new(DecoderConfig {
        max_object_len: 1 << 20,
        ..DecoderConfig::default()
    })
    .unwrap();
    assert!(matches!(
        dec.decode(&[]),
        Err(DecodeError::Truncated { at: 0, .. })
    ));
    assert!(matches!(
        dec.decode(&[2, 0]),
        Err(DecodeError::UnsupportedVersion { version: 2 })
    ));
    assert!(matches!(
        dec.decode(&[1, 4]),
        Err(DecodeError::BadFlags { flags: 4 })
    ));
    assert!(matches!(
        dec.decode(&[1, 0, 3]),
        Err(DecodeError::BadBlockSize { block_size: 3, .. })
    ));
    // first block 2^20 at 4 KiB blocks is far beyond 1 MiB.
    assert!(matches!(
        dec.decode(&[1, 0, 0x80, 0x20, 0x80, 0x80, 0x40, 1, 0]),
        Err(DecodeError::TooLarge { .. })
    ));
    // One raw 64-byte block, then a trailing byte.
    let mut c = vec![1, 0, 64, 0, 64, 0, 4];
    c.extend_from_slice(&[9u8; 64]);
    c.push(0);
    assert!(matches!(
        dec.decode(&c),
        Err(DecodeError::TrailingBytes { extra: 1, .. })
    ));
    c.pop();
    assert_eq!(dec.decode(&c).unwrap().len, 64);
}

#[test]
fn spec_example_bytes() {
    // docs/hde.md "Example": block 5 differs from the baseline in bytes 100..104.
    let bs = 4096;
    let base: Arc<[u8]> = random(11, bs * 6).into();
    let mut blk = base[5 * bs..6 * bs].to_vec();
    for (i, d) in [0xa1u8, 0xb2, 0xc3, 0xd4].iter().enumerate() {
        blk[100 + i] ^= d;
    }
    let mut enc = Encoder::new(EncoderConfig {
        block_size: bs,
        policy: Policy::Datacenter,
    })
    .unwrap();
    enc.set_baseline(Some(Baseline::new(3, base).unwrap()));
    let mut out = Vec::new();
    assert_eq!(
        enc.encode_block(5, &blk, &mut out).unwrap(),
        BlockKind::XorDelta
    );
    assert_eq!(
        out,
        [
            0x02, 0x09, 0x64, 0x04, 0xa1, 0xb2, 0xc3, 0xd4, 0x98, 0x1f, 0x00
        ]
    );
}
