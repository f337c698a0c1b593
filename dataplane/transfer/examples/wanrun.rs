//! The namespace lab's WAN profile in the simulator: 200 Mbit/s, 50 ms RTT, 1 % loss each way
//! dropped before the bottleneck (as the lab's emulator does), a one-BDP buffer, MTU 1500, and
//! optionally descheduled hosts. Prints a timeline (unless `QUIET` is set) and a summary.
//!
//! `cargo run --release -p dwcp-transfer --example wanrun -- SIZE_MB [SEED] [RECV_STALL_MS]
//! [RECV_PERIOD_MS] [SEND_STALL_MS] [SEND_PERIOD_MS]`

use std::time::{Duration, Instant};

use dwcp_transfer::sim::{HostStall, Link, LinkConfig, Sim, SimRng};
use dwcp_transfer::{
    MemJournal, MemSink, MemSource, Receiver, ReceiverConfig, Sender, SenderConfig,
};

fn main() {
    let a: Vec<f64> = std::env::args()
        .skip(1)
        .map(|s| s.parse().expect("number"))
        .collect();
    let get = |i: usize, d: f64| a.get(i).copied().unwrap_or(d);
    let size = (get(0, 100.0) * 1e6) as usize;
    let seed = get(1, 1.0) as u64;
    let stall = |len: f64, period: f64, phase: u64| {
        (len > 0.0).then(|| HostStall {
            period: Duration::from_secs_f64(period / 1e3),
            length: Duration::from_secs_f64(len / 1e3),
            phase: Duration::from_millis(phase),
        })
    };
    let rate = 200e6;
    let data = SimRng::new(seed).bytes(size);
    let epoch = Instant::now();
    let link = LinkConfig {
        loss: 0.01,
        loss_before_queue: true,
        ..LinkConfig::clean(rate, Duration::from_millis(50))
    };
    let mut sim = Sim::new(epoch, Link::new(link, seed), Link::new(link, seed ^ 0xFFFF));
    sim.receiver_stall = stall(get(2, 0.0), get(3, 10.0), 3);
    sim.sender_stall = stall(get(4, 0.0), get(5, 10.0), 7);
    let cfg = SenderConfig {
        conn_id: seed as u32,
        mtu: Some(1500),
        ..SenderConfig::default()
    };
    let s = Sender::new(cfg, Box::new(MemSource::new(data)), epoch).expect("sender");
    let rx = Receiver::new(
        ReceiverConfig::default(),
        Box::new(MemSink::new()),
        Box::new(MemJournal::new()),
    );
    sim.add_flow(s, rx, epoch);
    let step = Duration::from_millis(100);
    let mut last = 0u64;
    let mut last_q = 0u64;
    loop {
        let t = sim.now + step;
        let done = sim.run_until(t, |_| false);
        let st = sim.flows[0].sender.stats();
        if std::env::var_os("QUIET").is_none() {
            eprintln!(
                "t={:6.3}s acked {:6.1} Mbit/s {:?} btlbw {:.1} pacing {:.1} cwnd {} inflight {} \
                 srtt {:.1} ms qdrops +{}",
                sim.elapsed().as_secs_f64(),
                (st.bytes_acked - last) as f64 * 8.0 / step.as_secs_f64() / 1e6,
                st.cc_state,
                st.btlbw * 8e-6,
                st.pacing_rate * 8e-6,
                st.cwnd,
                st.bytes_in_flight,
                st.srtt.unwrap_or_default().as_secs_f64() * 1e3,
                sim.fwd.stats.dropped_queue - last_q,
            );
        }
        last = st.bytes_acked;
        last_q = sim.fwd.stats.dropped_queue;
        if done || sim.elapsed() > Duration::from_secs(120) {
            break;
        }
    }
    let f = &sim.flows[0];
    let st = f.sender.stats();
    let secs = f
        .done_at
        .map(|d| d.duration_since(f.start).as_secs_f64())
        .unwrap_or(f64::NAN);
    println!(
        "{:?} {secs:.3} s goodput {:.1} Mbit/s ({:.1} %) queue drops {} random {} losses {} \
         spurious {} rto {} congestion {} btlbw {:.1}",
        f.sender.state(),
        size as f64 * 8.0 / secs / 1e6,
        size as f64 * 8.0 / secs / rate * 100.0,
        sim.fwd.stats.dropped_queue,
        sim.fwd.stats.dropped_random,
        st.losses,
        st.spurious_losses,
        st.rto_count,
        st.congestion_events,
        st.btlbw * 8e-6,
    );
}
