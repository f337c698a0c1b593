//! Property tests: the detected (SIMD) kernel set gives exactly the scalar reference's
//! results, on random and edge inputs, lengths 0..=300 and larger, at unaligned starts.

use dwcp_kernels::{Kernels, zrun};
use proptest::prelude::*;

fn sets() -> (Kernels, Kernels) {
    let d = Kernels::detect();
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        assert_eq!(d.name(), "avx2", "AVX2 CPU must get the AVX2 set");
    }
    (Kernels::scalar(), d)
}

/// Checks every kernel on `a` (and `b` of the same length) with both sets.
fn check_all(a: &[u8], b: &[u8]) {
    let (s, d) = sets();
    assert_eq!(s.is_zero(a), d.is_zero(a), "is_zero len {}", a.len());
    assert_eq!(s.is_zero(a), a.iter().all(|&x| x == 0));
    assert_eq!(s.crc32c(a), d.crc32c(a), "crc32c len {}", a.len());
    assert_eq!(s.equal(a, b), d.equal(a, b), "equal len {}", a.len());
    assert_eq!(s.equal(a, b), a == b);

    let mut xs = vec![0u8; a.len()];
    let mut xd = vec![0u8; a.len()];
    s.xor_into(&mut xs, a, b);
    d.xor_into(&mut xd, a, b);
    assert_eq!(xs, xd, "xor_into len {}", a.len());
    let mut ips = a.to_vec();
    let mut ipd = a.to_vec();
    s.xor_in_place(&mut ips, b);
    d.xor_in_place(&mut ipd, b);
    assert_eq!(ips, xs);
    assert_eq!(ipd, xs);

    let reference = zrun::reference_encode(&xs);
    for k in [s, d] {
        let mut enc = vec![0x5A]; // appending must keep what is there
        let n = k.xor_zrun_encode(a, b, &mut enc, usize::MAX).unwrap();
        assert_eq!(
            &enc[1..],
            &reference[..],
            "{} xor_zrun_encode len {}",
            k.name(),
            a.len()
        );
        assert_eq!(n, reference.len());
        let mut enc2 = Vec::new();
        k.zrun_encode(&xs, &mut enc2, usize::MAX).unwrap();
        assert_eq!(enc2, reference, "{} zrun_encode", k.name());

        let mut out = vec![0xEEu8; a.len()];
        assert_eq!(
            k.zrun_decode_xor(&reference, b, &mut out),
            Ok(reference.len())
        );
        assert_eq!(out, a);
        let mut delta = vec![0xEEu8; a.len()];
        assert_eq!(k.zrun_decode(&reference, &mut delta), Ok(reference.len()));
        assert_eq!(delta, xs);

        // A limit one byte short of the real size is refused, the exact size accepted.
        if !reference.is_empty() {
            let mut lim = Vec::new();
            assert!(
                k.xor_zrun_encode(a, b, &mut lim, reference.len() - 1)
                    .is_err()
            );
            assert!(lim.is_empty());
            assert!(k.xor_zrun_encode(a, b, &mut lim, reference.len()).is_ok());
        }
    }
}

/// A delta-like buffer: `base` with sparse runs of changes.
fn sparse_change() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    (0usize..5000, any::<u64>()).prop_map(|(n, seed)| {
        let mut x = seed | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let base: Vec<u8> = (0..n).map(|_| next() as u8).collect();
        let mut new = base.clone();
        let runs = (next() % 12) as usize;
        for _ in 0..runs {
            if n == 0 {
                break;
            }
            let s = (next() as usize) % n;
            let l = ((next() % 40) as usize).min(n - s);
            for b in &mut new[s..s + l] {
                *b ^= (next() as u8) | (next() as u8 & 1);
            }
        }
        (new, base)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_unaligned(buf in proptest::collection::vec(any::<u8>(), 0..=332),
                        other in proptest::collection::vec(any::<u8>(), 332),
                        off in 0usize..32) {
        let off = off.min(buf.len());
        let a = &buf[off..];
        let b = &other[..a.len()];
        check_all(a, b);
    }

    #[test]
    fn sparse_deltas((new, base) in sparse_change(), off in 0usize..32) {
        let off = off.min(new.len());
        check_all(&new[off..], &base[off..]);
    }

    #[test]
    fn few_distinct_bytes(buf in proptest::collection::vec(prop_oneof![Just(0u8), Just(0xFFu8), Just(1u8)], 0..=1100),
                          off in 0usize..32) {
        let off = off.min(buf.len());
        let zeros = vec![0u8; buf.len() - off];
        check_all(&buf[off..], &zeros);
        check_all(&zeros, &buf[off..]);
    }

    #[test]
    fn corrupted_payloads_never_panic(enc in proptest::collection::vec(any::<u8>(), 0..64),
                                      n in 0usize..300) {
        let (s, d) = sets();
        let base = vec![3u8; n];
        let mut o1 = vec![0u8; n];
        let mut o2 = vec![0u8; n];
        let r1 = s.zrun_decode_xor(&enc, &base, &mut o1);
        let r2 = d.zrun_decode_xor(&enc, &base, &mut o2);
        prop_assert_eq!(r1, r2);
        if r1.is_ok() {
            prop_assert_eq!(o1, o2);
        }
    }
}

#[test]
fn edge_buffers_all_lengths() {
    let mut buf = vec![0u8; 300 + 32];
    for off in 0..32 {
        for len in 0..=300 {
            let a = &buf[off..off + len];
            let zeros = vec![0u8; len];
            check_all(a, &zeros);
        }
    }
    buf.fill(0xFF);
    for off in [0, 1, 7, 31] {
        for len in 0..=300 {
            let a = &buf[off..off + len];
            check_all(a, &vec![0u8; len]);
            check_all(a, a);
        }
    }
}

#[test]
fn single_nonzero_byte_each_position() {
    for len in [1usize, 31, 32, 33, 64, 65, 127, 128, 129, 300, 4096] {
        let zeros = vec![0u8; len + 32];
        for off in [0usize, 3, 31] {
            for pos in 0..len {
                let mut a = vec![0u8; len + 32];
                a[off + pos] = 0x40;
                check_all(&a[off..off + len], &zeros[..len]);
            }
        }
    }
}

#[test]
fn large_buffers() {
    for len in [4096usize, 65_536 + 17, 1 << 20] {
        let a: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let mut b = a.clone();
        for i in (0..len).step_by(997) {
            b[i] ^= 0x11;
        }
        check_all(&a, &b);
        check_all(&a, &a);
    }
}
