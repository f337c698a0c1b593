//! Long lossy paths in the simulator: goodput as a fraction of the bottleneck × (1 − loss)
//! for a grid of random loss (each way), RTT and bottleneck, with the RTOs per transfer.
//! Virtual time, fixed seeds; prints a Markdown table.
//!
//! `cargo run --release -p dwcp-transfer --example lossy_grid [MiB] [seeds]` (`WIN=n`: the
//! receiver's window in chunks instead of its default)

use std::time::{Duration, Instant};

use dwcp_transfer::sim::{Link, LinkConfig, Sim, SimRng};
use dwcp_transfer::{
    MemJournal, MemSink, MemSource, Receiver, ReceiverConfig, Sender, SenderConfig, SenderState,
};

fn main() {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(32);
    let seeds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    println!(
        "| rate Mbit/s | RTT ms | loss each way | goodput / (rate × (1 − loss)) min / median / max | RTOs per transfer (max) | spurious losses (max) |"
    );
    println!("|---|---|---|---|---|---|");
    for rate in [100e6, 500e6] {
        for rtt_ms in [100u64, 250, 500] {
            for loss in [0.02, 0.05, 0.10] {
                let mut fr = Vec::new();
                let (mut rto, mut spur) = (0u64, 0u64);
                for seed in 1..=seeds {
                    let data = SimRng::new(seed).bytes(mib << 20);
                    let link = LinkConfig {
                        loss,
                        ..LinkConfig::clean(rate, Duration::from_millis(rtt_ms))
                    };
                    let epoch = Instant::now();
                    let mut sim =
                        Sim::new(epoch, Link::new(link, seed), Link::new(link, seed ^ 0xFFFF));
                    let cfg = SenderConfig {
                        mtu: Some(1500),
                        ..SenderConfig::default()
                    };
                    let s =
                        Sender::new(cfg, Box::new(MemSource::new(data)), epoch).expect("sender");
                    let r = Receiver::new(
                        ReceiverConfig {
                            window_chunks: std::env::var("WIN")
                                .ok()
                                .and_then(|v| v.parse().ok())
                                .unwrap_or(ReceiverConfig::default().window_chunks),
                            ..ReceiverConfig::default()
                        },
                        Box::new(MemSink::new()),
                        Box::new(MemJournal::new()),
                    );
                    sim.add_flow(s, r, epoch);
                    sim.run(Duration::from_secs(3600));
                    let f = &sim.flows[0];
                    let st = f.sender.stats();
                    if f.sender.state() != SenderState::Complete {
                        fr.push(0.0);
                        continue;
                    }
                    let t = f.done_at.expect("done").duration_since(epoch).as_secs_f64();
                    let goodput = (mib << 20) as f64 * 8.0 / t;
                    fr.push(goodput / (rate * (1.0 - loss)));
                    rto = rto.max(st.rto_count);
                    spur = spur.max(st.spurious_losses);
                }
                fr.sort_by(f64::total_cmp);
                println!(
                    "| {} | {rtt_ms} | {:.0} % | {:.2} / {:.2} / {:.2} | {rto} | {spur} |",
                    rate / 1e6,
                    loss * 100.0,
                    fr[0],
                    fr[fr.len() / 2],
                    fr[fr.len() - 1]
                );
            }
        }
    }
}
