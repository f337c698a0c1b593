//! Two flows over one shared bottleneck; prints each flow's rate over a window.
//!
//! `cargo run --release -p dwcp-transfer --example fairrun -- RATE_MBIT RTT_MS SEED [LATE_START_MS]`

use std::time::{Duration, Instant};

use dwcp_transfer::sim::{Link, LinkConfig, Sim, SimRng};
use dwcp_transfer::{
    MemJournal, MemSink, MemSource, Receiver, ReceiverConfig, Sender, SenderConfig,
};

fn main() {
    let a: Vec<f64> = std::env::args()
        .skip(1)
        .map(|s| s.parse().expect("number"))
        .collect();
    let get = |i: usize, d: f64| a.get(i).copied().unwrap_or(d);
    let rate = get(0, 100.0) * 1e6;
    let rtt = Duration::from_secs_f64(get(1, 20.0) / 1e3);
    let seed = get(2, 21.0) as u64;
    let late = Duration::from_secs_f64(get(3, 500.0) / 1e3);
    let epoch = Instant::now();
    let link = LinkConfig::clean(rate, rtt);
    let mut sim = Sim::new(epoch, Link::new(link, seed), Link::new(link, seed + 1));
    let data = SimRng::new(4).bytes(200_000_000);
    for i in 0..2u32 {
        let scfg = SenderConfig {
            conn_id: 10 + i,
            object_id: u64::from(i),
            ..SenderConfig::default()
        };
        let s = Sender::new(scfg, Box::new(MemSource::new(data.clone())), epoch).expect("sender");
        let rx = Receiver::new(
            ReceiverConfig::default(),
            Box::new(MemSink::new()),
            Box::new(MemJournal::new()),
        );
        sim.add_flow(s, rx, epoch + late * i);
    }
    let t1 = epoch + Duration::from_secs(4);
    let t2 = epoch + Duration::from_secs(10);
    sim.run_until(t1, |_| false);
    let a1: Vec<u64> = sim
        .flows
        .iter()
        .map(|f| f.sender.stats().bytes_acked)
        .collect();
    sim.run_until(t2, |_| false);
    let a2: Vec<u64> = sim
        .flows
        .iter()
        .map(|f| f.sender.stats().bytes_acked)
        .collect();
    let rates: Vec<f64> = (0..2)
        .map(|i| (a2[i] - a1[i]) as f64 * 8.0 / (t2 - t1).as_secs_f64() / 1e6)
        .collect();
    println!(
        "seed {seed}: {:.1} / {:.1} Mbit/s, ratio {:.2}, queue drops {}",
        rates[0],
        rates[1],
        rates[0] / rates[1],
        sim.fwd.stats.dropped_queue
    );
}
