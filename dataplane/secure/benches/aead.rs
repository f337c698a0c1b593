//! Per-core throughput of the SEALED-frame AEAD (seal and open of one frame payload in
//! place, header as associated data), for both suites and typical frame sizes.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dwcp_secure::Suite;
use dwcp_secure::aead::Cipher;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("aead");
    let key = [7u8; 32];
    let aad = [1u8; 48];
    for suite in [Suite::Aes128Gcm, Suite::ChaCha20Poly1305] {
        let Some(cipher) = Cipher::new(suite, &key) else {
            continue;
        };
        for size in [1400usize, 8000] {
            let mut buf = vec![0x5au8; size];
            let mut seq = 0u64;
            g.throughput(Throughput::Bytes(size as u64));
            g.bench_function(
                BenchmarkId::new(format!("seal/{}", suite.name()), size),
                |b| {
                    b.iter(|| {
                        seq += 1;
                        let mut nonce = [0u8; 12];
                        nonce[4..].copy_from_slice(&seq.to_be_bytes());
                        cipher.seal(&nonce, &aad, &mut buf)
                    });
                },
            );
            let nonce = [3u8; 12];
            let plain = vec![0x5au8; size];
            let mut sealed = plain.clone();
            let tag = cipher.seal(&nonce, &aad, &mut sealed);
            g.bench_function(
                BenchmarkId::new(format!("open/{}", suite.name()), size),
                |b| {
                    b.iter(|| {
                        buf.copy_from_slice(&sealed);
                        cipher.open(&nonce, &aad, &mut buf, &tag)
                    });
                },
            );
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
