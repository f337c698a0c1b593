//! Benchmark input: writes a copy of an image with a given share of its 4 KiB blocks changed
//! (half are 16..512-byte edits at a random offset, half whole-block rewrites; the new bytes
//! come from real files under a pool directory, e.g. /usr/bin), and prints the zstd
//! reference: the size of exactly the changed blocks (end to end, new content) compressed
//! with zstd at level 3 (the `zstd` command's default).
//!
//! `cargo run --release -p dwcp-migrate --example mkchange -- V1 V2 PERMILLE SEED POOL_DIR`
//! prints `changed_blocks changed_bytes zstd3_bytes`.

use std::io::Read;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 6 {
        eprintln!("usage: mkchange V1 V2 PERMILLE SEED POOL_DIR");
        std::process::exit(2);
    }
    let mut img = std::fs::read(&a[1]).expect("read v1");
    let permille: usize = a[3].parse().expect("permille");
    let mut x: u64 = a[4].parse::<u64>().expect("seed") | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut pool = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&a[5])
        .expect("pool dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    for p in entries {
        if pool.len() >= 256 << 20 {
            break;
        }
        if let Ok(mut f) = std::fs::File::open(&p) {
            let _ = f.read_to_end(&mut pool);
        }
    }
    assert!(pool.len() > 1 << 20, "pool too small");
    const BS: usize = 4096;
    let blocks = img.len() / BS;
    let want = blocks * permille / 1000;
    let mut chosen = std::collections::BTreeSet::new();
    while chosen.len() < want {
        chosen.insert((next() % blocks as u64) as usize);
    }
    for &b in &chosen {
        let p = (next() % (pool.len() / BS - 1) as u64) as usize * BS;
        if next() % 2 == 0 {
            let len = 16 + (next() % 497) as usize;
            let off = (next() % (BS - len) as u64) as usize;
            img[b * BS + off..b * BS + off + len].copy_from_slice(&pool[p + off..p + off + len]);
        } else {
            img[b * BS..(b + 1) * BS].copy_from_slice(&pool[p..p + BS]);
        }
    }
    std::fs::write(&a[2], &img).expect("write v2");
    let mut changed = Vec::with_capacity(chosen.len() * BS);
    for &b in &chosen {
        changed.extend_from_slice(&img[b * BS..(b + 1) * BS]);
    }
    let z = zstd::bulk::compress(&changed, 3).expect("zstd");
    println!("{} {} {}", chosen.len(), changed.len(), z.len());
}
