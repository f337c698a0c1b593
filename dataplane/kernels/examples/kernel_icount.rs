//! Runs one kernel on 4 KiB inputs many times, for instruction counting under
//! `valgrind --tool=callgrind` (a load-independent cost measure on a shared machine):
//!   cargo build --release -p dwcp-kernels --example kernel_icount
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/kernel_icount <scalar|auto> <kernel> [iterations]
//! Kernels: crc32c, is_zero, xor_into, zrun_unchanged, zrun_sparse, zrun_dense,
//! zrun_decode_sparse, xxh3_64, xxh3_128.

use std::hint::black_box;

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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let k = if args.get(1).map(String::as_str) == Some("scalar") {
        Kernels::scalar()
    } else {
        Kernels::detect()
    };
    let kernel = args.get(2).map(String::as_str).unwrap_or("crc32c");
    let iters: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let n = 4096;
    let a = data(n, 1);
    let mut sparse = a.clone();
    for p in [100usize, 900, 1700, 2500, 3300] {
        for x in &mut sparse[p..p + 20] {
            *x = x.wrapping_add(1);
        }
    }
    let dense = data(n, 2);
    let zeros = vec![0u8; n];
    let mut dst = vec![0u8; n];
    let mut out = Vec::with_capacity(2 * n);
    let mut enc = Vec::new();
    k.xor_zrun_encode(&sparse, &a, &mut enc, usize::MAX)
        .unwrap();
    let mut acc = 0u64;
    for _ in 0..iters {
        match kernel {
            "crc32c" => acc += u64::from(k.crc32c(black_box(&a))),
            "is_zero" => acc += u64::from(k.is_zero(black_box(&zeros))),
            "xor_into" => k.xor_into(black_box(&mut dst), black_box(&a), black_box(&dense)),
            "zrun_unchanged" | "zrun_sparse" | "zrun_dense" => {
                let new = match kernel {
                    "zrun_unchanged" => &a,
                    "zrun_sparse" => &sparse,
                    _ => &dense,
                };
                out.clear();
                acc += k
                    .xor_zrun_encode(black_box(new), black_box(&a), &mut out, usize::MAX)
                    .unwrap() as u64;
            }
            "zrun_decode_sparse" => {
                acc += k
                    .zrun_decode_xor(black_box(&enc), black_box(&a), &mut dst)
                    .unwrap() as u64
            }
            "xxh3_64" => acc += dwcp_kernels::xxh3_64(black_box(&a)),
            "xxh3_128" => acc += dwcp_kernels::xxh3_128(black_box(&a)) as u64,
            other => panic!("unknown kernel {other}"),
        }
    }
    println!("{} {kernel} x{iters}: {acc}", k.name());
}
