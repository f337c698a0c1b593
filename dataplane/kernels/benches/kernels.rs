//! Kernel throughput, SIMD set against the scalar references, per core (single thread).
//! Run: `cargo bench -p dwcp-kernels` (figures in docs/perf-codecs.md).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dwcp_kernels::Kernels;

fn data(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sets() -> [Kernels; 2] {
    [Kernels::scalar(), Kernels::detect()]
}

fn checksums(c: &mut Criterion) {
    let mut g = c.benchmark_group("checksum");
    for n in [4096usize, 65536] {
        let buf = data(n, 1);
        g.throughput(Throughput::Bytes(n as u64));
        for k in sets() {
            let id = if k.name() == "scalar" {
                "crc32c-scalar-table"
            } else {
                "crc32c-hw"
            };
            g.bench_with_input(BenchmarkId::new(id, n), &buf, |b, buf| {
                b.iter(|| k.crc32c(black_box(buf)))
            });
        }
        g.bench_with_input(BenchmarkId::new("xxh3-64", n), &buf, |b, buf| {
            b.iter(|| dwcp_kernels::xxh3_64(black_box(buf)))
        });
        g.bench_with_input(BenchmarkId::new("xxh3-128", n), &buf, |b, buf| {
            b.iter(|| dwcp_kernels::xxh3_128(black_box(buf)))
        });
    }
    g.finish();
}

fn zero_and_xor(c: &mut Criterion) {
    let n = 4096;
    let zeros = vec![0u8; n];
    let a = data(n, 2);
    let b2 = data(n, 3);
    let mut dst = vec![0u8; n];
    let mut g = c.benchmark_group("kernel-4k");
    g.throughput(Throughput::Bytes(n as u64));
    for k in sets() {
        g.bench_function(BenchmarkId::new("is_zero(all zero)", k.name()), |b| {
            b.iter(|| k.is_zero(black_box(&zeros)))
        });
        g.bench_function(BenchmarkId::new("xor_into", k.name()), |b| {
            b.iter(|| k.xor_into(black_box(&mut dst), black_box(&a), black_box(&b2)))
        });
    }
    g.finish();
}

/// Deltas: unchanged block, 5 small edits (typical dirty block), every byte changed.
fn deltas(n: usize) -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    let base = data(n, 4);
    let mut sparse = base.clone();
    let r = data(64, 5);
    for e in 0..5 {
        let p = (r[e] as usize * 13) % (n - 40);
        for x in &mut sparse[p..p + 1 + r[e + 5] as usize % 32] {
            *x = x.wrapping_add(1);
        }
    }
    vec![
        ("unchanged", base.clone(), base.clone()),
        ("sparse-5-edits", sparse, base.clone()),
        ("dense", data(n, 6), base),
    ]
}

fn zrun(c: &mut Criterion) {
    let n = 4096;
    let mut g = c.benchmark_group("xor-zrun-4k");
    g.throughput(Throughput::Bytes(n as u64));
    let mut out = Vec::with_capacity(2 * n);
    let mut dec = vec![0u8; n];
    for (name, new, base) in deltas(n) {
        for k in sets() {
            g.bench_function(BenchmarkId::new(format!("encode/{name}"), k.name()), |b| {
                b.iter(|| {
                    out.clear();
                    k.xor_zrun_encode(black_box(&new), black_box(&base), &mut out, usize::MAX)
                        .unwrap()
                })
            });
            let mut enc = Vec::new();
            k.xor_zrun_encode(&new, &base, &mut enc, usize::MAX)
                .unwrap();
            g.bench_function(BenchmarkId::new(format!("decode/{name}"), k.name()), |b| {
                b.iter(|| {
                    k.zrun_decode_xor(black_box(&enc), black_box(&base), &mut dec)
                        .unwrap()
                })
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(30);
    targets = checksums, zero_and_xor, zrun
}
criterion_main!(benches);
