//! Run one simulated transfer and print a timeline.
//!
//! `cargo run --release -p dwcp-transfer --example simrun -- RATE_MBIT RTT_MS LOSS_PCT SIZE_MB [STREAMS] [SEED]`

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
    let rate = get(0, 200.0) * 1e6;
    let rtt = Duration::from_secs_f64(get(1, 50.0) / 1e3);
    let loss = get(2, 1.0) / 100.0;
    let size = (get(3, 100.0) * 1e6) as usize;
    let streams = get(4, 2.0) as u16;
    let seed = get(5, 11.0) as u64;
    let mut r = SimRng::new(1);
    let data: Vec<u8> = (0..size).map(|_| r.next_u64() as u8).collect();
    let epoch = Instant::now();
    let link = LinkConfig {
        loss,
        ..LinkConfig::clean(rate, rtt)
    };
    let mut sim = Sim::new(epoch, Link::new(link, seed), Link::new(link, seed + 1));
    let cfg = SenderConfig {
        initial_streams: streams,
        ..SenderConfig::default()
    };
    let s = Sender::new(cfg, Box::new(MemSource::new(data)), epoch).expect("sender");
    let rx = Receiver::new(
        ReceiverConfig::default(),
        Box::new(MemSink::new()),
        Box::new(MemJournal::new()),
    );
    sim.add_flow(s, rx, epoch);
    let step = Duration::from_millis(250);
    let mut last = 0u64;
    let wall = Instant::now();
    loop {
        let t = sim.now + step;
        let done = sim.run_until(t, |_| false);
        let st = sim.flows[0].sender.stats();
        if std::env::var_os("QUIET").is_none() {
            eprintln!(
                "t={:6.3}s acked {:6.1} Mbit/s cc {:?} btlbw {:.1} Mbit/s pacing {:.1} cwnd {} inflight {} srtt {:?} losses {} qdrops {} rdrops {} mode {} streams {}",
                sim.elapsed().as_secs_f64(),
                (st.bytes_acked - last) as f64 * 8.0 / step.as_secs_f64() / 1e6,
                st.cc_state,
                st.btlbw * 8.0 / 1e6,
                st.pacing_rate * 8.0 / 1e6,
                st.cwnd,
                st.bytes_in_flight,
                st.srtt,
                st.losses,
                sim.fwd.stats.dropped_queue,
                sim.fwd.stats.dropped_random,
                st.mode,
                st.streams
            );
        }
        last = st.bytes_acked;
        if done || sim.elapsed() > Duration::from_secs(120) {
            break;
        }
    }
    let f = &sim.flows[0];
    let st = f.sender.stats();
    eprintln!(
        "mode {} ({}) rto {} tlp {} spurious {} frames sent {} recv {} receiver {:?}",
        st.mode,
        st.mode_reason,
        st.rto_count,
        st.tail_probes,
        st.spurious_losses,
        st.frames_sent,
        st.frames_received,
        f.receiver.stats()
    );
    let secs = f
        .done_at
        .map(|d| d.duration_since(f.start).as_secs_f64())
        .unwrap_or(f64::NAN);
    println!(
        "state {:?} time {secs:.3} s goodput {:.1} Mbit/s ({:.1} %), wall {:?}",
        f.sender.state(),
        size as f64 * 8.0 / secs / 1e6,
        size as f64 * 8.0 / secs / rate * 100.0,
        wall.elapsed()
    );
}
