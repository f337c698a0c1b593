//! HDE on real data: the ext4 images made by scripts/make-test-image.sh, plus zstd levels 1
//! and 3 through the same library, per core (single thread).
//! Run: `scripts/make-test-image.sh && cargo bench -p dwcp-hde` (figures in docs/perf-codecs.md).
//! Without the images the benchmark says so and measures nothing.

use std::hint::black_box;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dwcp_hde::{Baseline, BlockKind, Decoder, DecoderConfig, Encoder, EncoderConfig, Policy};
use dwcp_kernels::Kernels;

const CHUNK: usize = 16 * 4096; // one container per 64 KiB, like a streaming sender
// Criterion runs on 32 MiB from 64 MiB into the image: file data, not the metadata and
// mostly-zero groups at the start.
const BENCH_OFFSET: usize = 64 << 20;
const BENCH_SLICE: usize = 32 << 20;

fn image_dir() -> PathBuf {
    std::env::var_os("DWCP_TEST_IMAGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-images")
        })
}

fn load() -> Option<(Vec<u8>, Vec<u8>)> {
    let d = image_dir();
    match (
        std::fs::read(d.join("image-v1.ext4")),
        std::fs::read(d.join("image-v2.ext4")),
    ) {
        (Ok(a), Ok(b)) if a.len() == b.len() => Some((a, b)),
        _ => {
            eprintln!(
                "hde bench: SKIPPED: no test images in {} (run scripts/make-test-image.sh)",
                d.display()
            );
            None
        }
    }
}

fn encode_all(
    data: &[u8],
    policy: Policy,
    base: Option<&Arc<[u8]>>,
    k: Kernels,
) -> (Vec<Vec<u8>>, Encoder) {
    let mut enc = Encoder::with_kernels(
        EncoderConfig {
            block_size: 4096,
            policy,
        },
        k,
    )
    .unwrap();
    if let Some(b) = base {
        enc.set_baseline(Some(Baseline::new(1, b.clone()).unwrap()));
    }
    let mut out = Vec::new();
    for (i, chunk) in data.chunks(CHUNK).enumerate() {
        let mut buf = Vec::with_capacity(CHUNK + 64);
        enc.encode_chunk((i * CHUNK / 4096) as u64, chunk, &mut buf)
            .unwrap();
        out.push(buf);
    }
    (out, enc)
}

/// Streaming-sender shape: each container goes into one reused buffer (as into a frame),
/// so the figure is the encoder's, not the allocator's. Returns the total bytes produced.
fn encode_stream(
    data: &[u8],
    policy: Policy,
    base: Option<&Arc<[u8]>>,
    k: Kernels,
    buf: &mut Vec<u8>,
) -> usize {
    let mut enc = Encoder::with_kernels(
        EncoderConfig {
            block_size: 4096,
            policy,
        },
        k,
    )
    .unwrap();
    if let Some(b) = base {
        enc.set_baseline(Some(Baseline::new(1, b.clone()).unwrap()));
    }
    let mut total = 0;
    for (i, chunk) in data.chunks(CHUNK).enumerate() {
        buf.clear();
        total += enc
            .encode_chunk((i * CHUNK / 4096) as u64, chunk, buf)
            .unwrap();
    }
    total
}

fn decode_all(containers: &[Vec<u8>], base: Option<&Arc<[u8]>>) -> Decoder {
    let mut dec = Decoder::new(DecoderConfig::default()).unwrap();
    if let Some(b) = base {
        dec.add_baseline(1, b.clone());
    }
    for c in containers {
        dec.decode(c).unwrap();
    }
    dec
}

fn cli_zstd(level: u32, path: &std::path::Path) -> Option<(u64, f64)> {
    let t = Instant::now();
    let out = Command::new("zstd")
        .arg(format!("-{level}"))
        .args(["-T1", "-c", "-q"])
        .arg(path)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| (out.stdout.len() as u64, t.elapsed().as_secs_f64()))
}

/// One pass over the whole image per configuration: ratios and single-pass speed.
fn report(v1: &[u8], v2: &[u8]) {
    let n = v1.len() as f64;
    let mib = n / (1 << 20) as f64;
    let b1: Arc<[u8]> = v1.into();
    println!(
        "\n== HDE on {:.0} MiB ext4 image (4 KiB blocks, 64 KiB containers), one pass each ==",
        mib
    );
    println!(
        "{:<34} {:>12} {:>8} {:>10} {:>10}  blocks zero/dup/xor/zstd/raw",
        "config", "bytes out", "ratio", "enc MB/s", "dec MB/s"
    );
    let runs: [(&str, &[u8], Policy, bool); 6] = [
        ("v1 datacenter", v1, Policy::Datacenter, false),
        (
            "v1 hybrid (zstd-1 if entropy<=6.5)",
            v1,
            Policy::HYBRID_DEFAULT,
            false,
        ),
        (
            "v1 internet zstd-1",
            v1,
            Policy::Internet { level: 1 },
            false,
        ),
        (
            "v1 internet zstd-3",
            v1,
            Policy::Internet { level: 3 },
            false,
        ),
        ("v2 vs v1 datacenter (delta)", v2, Policy::Datacenter, true),
        (
            "v2 vs v1 internet zstd-1 (delta)",
            v2,
            Policy::Internet { level: 1 },
            true,
        ),
    ];
    for (name, data, policy, with_base) in runs {
        let base = with_base.then_some(&b1);
        let (cs, enc) = encode_all(data, policy, base, Kernels::detect());
        let mut buf = Vec::with_capacity(2 * CHUNK);
        let t = Instant::now();
        let total = encode_stream(data, policy, base, Kernels::detect(), &mut buf);
        let te = t.elapsed().as_secs_f64();
        assert_eq!(total as u64, enc.stats().out_bytes());
        let mut dec = decode_all(&cs, base);
        assert!(dec.object() == data, "round trip");
        dec.reset(); // time a warmed receiver (buffer already faulted in)
        let t = Instant::now();
        for c in &cs {
            dec.decode(c).unwrap();
        }
        let td = t.elapsed().as_secs_f64();
        let s = enc.stats();
        let kinds: Vec<String> = BlockKind::ALL
            .iter()
            .map(|k| s.kind(*k).blocks.to_string())
            .collect();
        println!(
            "{:<34} {:>12} {:>8.3} {:>10.0} {:>10.0}  {}",
            name,
            s.out_bytes(),
            s.out_bytes() as f64 / n,
            n / te / 1e6,
            n / td / 1e6,
            kinds.join("/")
        );
    }
    let p = image_dir().join("image-v1.ext4");
    for level in [1, 3] {
        match cli_zstd(level, &p) {
            Some((bytes, secs)) => println!(
                "{:<34} {:>12} {:>8.3} {:>10.0} {:>10}",
                format!("zstd -{level} -T1 (CLI, whole file)"),
                bytes,
                bytes as f64 / n,
                n / secs / 1e6,
                "-"
            ),
            None => println!("zstd -{level}: CLI not available"),
        }
    }
    println!();
}

fn benches(c: &mut Criterion) {
    let Some((v1, v2)) = load() else { return };
    if std::env::var_os("DWCP_HDE_REPORT") != Some("0".into()) {
        report(&v1, &v2);
    }
    if v1.len() < BENCH_OFFSET + BENCH_SLICE {
        eprintln!(
            "hde bench: SKIPPED: images shorter than {} bytes",
            BENCH_OFFSET + BENCH_SLICE
        );
        return;
    }
    let s1 = &v1[BENCH_OFFSET..BENCH_OFFSET + BENCH_SLICE];
    let s2 = &v2[BENCH_OFFSET..BENCH_OFFSET + BENCH_SLICE];
    let b1: Arc<[u8]> = s1.into();

    let mut g = c.benchmark_group("hde-32MiB@64MiB");
    g.throughput(Throughput::Bytes(s1.len() as u64));
    g.sample_size(10);
    let cfgs: [(&str, &[u8], Policy, bool); 3] = [
        ("v1-datacenter", s1, Policy::Datacenter, false),
        ("v1-hybrid", s1, Policy::HYBRID_DEFAULT, false),
        ("v2-delta-datacenter", s2, Policy::Datacenter, true),
    ];
    for (name, data, policy, with_base) in cfgs {
        let base = with_base.then_some(&b1);
        let mut buf = Vec::with_capacity(2 * CHUNK);
        for k in [Kernels::scalar(), Kernels::detect()] {
            g.bench_function(BenchmarkId::new(format!("encode/{name}"), k.name()), |b| {
                b.iter(|| encode_stream(black_box(data), policy, base, k, &mut buf))
            });
        }
        let (cs, _) = encode_all(data, policy, base, Kernels::detect());
        // A long-lived receiver: the object buffer is reused (reset), not faulted in anew.
        let mut dec = decode_all(&cs, base);
        g.bench_function(BenchmarkId::new(format!("decode/{name}"), "auto"), |b| {
            b.iter(|| {
                dec.reset();
                for c in &cs {
                    dec.decode(black_box(c)).unwrap();
                }
            })
        });
    }
    g.finish();

    // zstd through the library, on the first 8 MiB of the same slice, in 4 KiB blocks (what
    // HDE does) and 128 KiB chunks.
    let zs = &s1[..8 << 20];
    let mut g = c.benchmark_group("zstd-8MiB@64MiB");
    g.throughput(Throughput::Bytes(zs.len() as u64));
    g.sample_size(10);
    for level in [1, 3] {
        for piece in [4096usize, 128 << 10] {
            let mut comp = zstd::bulk::Compressor::new(level).unwrap();
            let mut buf = vec![0u8; zstd::zstd_safe::compress_bound(piece)];
            g.bench_function(BenchmarkId::new(format!("compress-l{level}"), piece), |b| {
                b.iter(|| {
                    let mut total = 0;
                    for p in zs.chunks(piece) {
                        total += comp.compress_to_buffer(p, &mut buf[..]).unwrap();
                    }
                    total
                })
            });
            let frames: Vec<Vec<u8>> = zs
                .chunks(piece)
                .map(|p| zstd::bulk::compress(p, level).unwrap())
                .collect();
            let mut dec = zstd::bulk::Decompressor::new().unwrap();
            let mut out = vec![0u8; piece];
            g.bench_function(
                BenchmarkId::new(format!("decompress-l{level}"), piece),
                |b| {
                    b.iter(|| {
                        let mut total = 0;
                        for f in &frames {
                            total += dec.decompress_to_buffer(f, &mut out[..]).unwrap();
                        }
                        total
                    })
                },
            );
        }
    }
    g.finish();
}

criterion_group! {
    name = hde;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(hde);
