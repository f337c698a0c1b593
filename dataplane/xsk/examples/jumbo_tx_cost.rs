//! User-space cost of one jumbo datagram on the AF_XDP transmit path, on the fake kernel's
//! rings (no privileges, no kernel work: what is left is the port's and the writer's).
//!
//! - `scratch`: the datagram is written into a scratch buffer and `push_gather` copies it
//!   into three UMEM frames (the engine's path before tx runs);
//! - `run`: the datagram is written once, straight into a run of three contiguous frames
//!   (`try_push_with_run`, the engine's path now).
//!
//! In both, the writer copies the datagram from a 1 MiB block (the sender's read-ahead
//! block) and the "kernel" completes every descriptor right after each commit.
//!
//! `cargo run --release -p dwcp-xsk --example jumbo_tx_cost [DATAGRAMS]`

use std::time::Instant;

use dwcp_xsk::XdpDesc;
use dwcp_xsk::fake::{FakeConfig, FakeKernel};

/// Ethernet + IPv4 + UDP headers (42 B) and an 8952-byte UDP payload: MTU 9000.
const LEN: usize = 42 + 8952;
const BLOCK: usize = 1 << 20;

fn run(in_place: bool, n: usize) -> f64 {
    let (mut port, k) = FakeKernel::port(FakeConfig {
        frames: 4096,
        ring_size: 2048,
        batch: 64,
        start: 0,
        tx_max_len: if in_place { LEN } else { 0 },
    })
    .expect("fake port");
    let block: Vec<u8> = (0..BLOCK + LEN).map(|i| (i * 31 + i / 7) as u8).collect();
    let mut scratch = vec![0u8; LEN];
    let mut descs = vec![XdpDesc::default(); 2048];
    let mut addrs = vec![0u64; 2048];
    let (mut off, mut sent) = (0usize, 0usize);
    let t = Instant::now();
    while sent < n {
        let mut tx = port.tx_batch();
        loop {
            let src = &block[off..off + LEN];
            let ok = if in_place {
                tx.try_push_with_run(LEN, |buf| {
                    buf.copy_from_slice(src);
                    Some(LEN)
                }) == Some(true)
            } else if tx.room() >= LEN.div_ceil(4096) {
                scratch.copy_from_slice(src);
                tx.push_gather(&[&scratch])
            } else {
                false
            };
            if !ok {
                break;
            }
            off = (off + 8952) % BLOCK;
            sent += 1;
        }
        tx.commit();
        let m = k.tx.borrow_mut().consume(&mut descs);
        for (a, d) in addrs.iter_mut().zip(&descs[..m]) {
            *a = d.addr;
        }
        k.comp.borrow_mut().produce(&addrs[..m]);
        port.poll();
    }
    let ns = t.elapsed().as_nanos() as f64 / sent as f64;
    assert_eq!(port.stats().bad_frames, 0);
    assert_eq!(port.tx_in_flight(), 0);
    ns
}

fn main() {
    let n = std::env::args()
        .nth(1)
        .map_or(2_000_000, |s| s.parse().expect("DATAGRAMS"));
    for round in 1..=3 {
        let a = run(false, n);
        let b = run(true, n);
        println!(
            "round {round}: {LEN} B datagrams: scratch + push_gather {a:.0} ns, \
             in place (try_push_with_run) {b:.0} ns, saved {:.0} ns ({:.3} ns/B)",
            a - b,
            (a - b) / LEN as f64
        );
    }
}
