//! Cruise control and the Startup window on the namespace lab's WAN profile in the simulator:
//! 200 Mbit/s, 50 ms RTT, 1 % random loss each way dropped *before* the one-BDP bottleneck
//! queue (as the lab's emulator does), MTU-sized frames, and hosts that deschedule the
//! endpoints now and then — the ack timing noise that makes the max-filtered bandwidth
//! estimate read a few percent high. The property: the flow keeps the bottleneck busy
//! without overflowing its queue (queue drops stay near zero while random loss is still not
//! taken as congestion), alone and with a second flow on the same bottleneck. Virtual time,
//! fixed seeds.

use std::time::{Duration, Instant};

use dwcp_transfer::sim::{HostStall, Link, LinkConfig, Sim, SimRng};
use dwcp_transfer::{
    MemJournal, MemSink, MemSource, Receiver, ReceiverConfig, Sender, SenderConfig, SenderState,
};

const RATE: f64 = 200e6;
/// Object bytes per datagram byte at MTU 1500 (1420-byte chunks in 1472-byte datagrams on an
/// unsealed connection): the most goodput the simulated link (which counts datagram bytes) can
/// give.
const CEILING: f64 = 1420.0 / 1472.0;

fn object(len: usize, seed: u64) -> Vec<u8> {
    SimRng::new(seed).bytes(len)
}

fn lab_link() -> LinkConfig {
    LinkConfig {
        loss: 0.01,
        loss_before_queue: true,
        ..LinkConfig::clean(RATE, Duration::from_millis(50))
    }
}

fn lab_sim(seed: u64) -> Sim {
    let epoch = Instant::now();
    let mut sim = Sim::new(
        epoch,
        Link::new(lab_link(), seed),
        Link::new(lab_link(), seed ^ 0xFFFF),
    );
    // 1 ms out of every 8 ms (receiver) and 12 ms (sender) without the CPU
    sim.receiver_stall = Some(HostStall {
        period: Duration::from_millis(8),
        length: Duration::from_millis(1),
        phase: Duration::from_millis(3),
    });
    sim.sender_stall = Some(HostStall {
        period: Duration::from_millis(12),
        length: Duration::from_millis(1),
        phase: Duration::from_millis(7),
    });
    sim
}

fn flow(data: &[u8], conn_id: u32, epoch: Instant) -> (Sender, Receiver) {
    let cfg = SenderConfig {
        conn_id,
        object_id: u64::from(conn_id),
        mtu: Some(1500),
        ..SenderConfig::default()
    };
    (
        Sender::new(cfg, Box::new(MemSource::new(data.to_vec())), epoch).expect("sender"),
        Receiver::new(
            ReceiverConfig::default(),
            Box::new(MemSink::new()),
            Box::new(MemJournal::new()),
        ),
    )
}

#[test]
fn one_flow_fills_the_lab_bottleneck_without_overflowing_its_queue() {
    for seed in [1u64, 2] {
        let mut sim = lab_sim(seed);
        let epoch = sim.epoch;
        let len = 60_000_000;
        let data = object(len, seed);
        let (s, r) = flow(&data, seed as u32, epoch);
        sim.add_flow(s, r, epoch);
        // steady state: from 1 s (Startup and Drain are over) to the end
        sim.run_until(epoch + Duration::from_secs(1), |_| false);
        let (acked0, drops0) = (
            sim.flows[0].sender.stats().bytes_acked,
            sim.fwd.stats.dropped_queue,
        );
        sim.run(Duration::from_secs(30));
        let f = &sim.flows[0];
        assert_eq!(
            f.sender.state(),
            SenderState::Complete,
            "{:?}",
            f.sender.error()
        );
        let s = f.sender.stats();
        let done = f.done_at.expect("done");
        let secs = done.duration_since(f.start).as_secs_f64();
        let goodput = len as f64 * 8.0 / secs;
        // the last round trip carries no new data; leave it out of the steady-state rate
        let steady_secs = done.duration_since(epoch).as_secs_f64() - 1.0 - 0.05;
        let steady = (s.bytes_acked - acked0) as f64 * 8.0 / steady_secs;
        let drops = sim.fwd.stats.dropped_queue;
        eprintln!(
            "seed {seed}: goodput {:.1} Mbit/s ({:.1} % of the ceiling), steady {:.1} Mbit/s \
             ({:.1} %), queue drops {drops} (after 1 s: {}), random {}, congestion events {}, \
             btlbw {:.1} Mbit/s",
            goodput / 1e6,
            goodput / (RATE * CEILING) * 100.0,
            steady / 1e6,
            steady / (RATE * CEILING) * 100.0,
            drops - drops0,
            sim.fwd.stats.dropped_random,
            s.congestion_events,
            s.btlbw * 8e-6,
        );
        // the Startup window (2 x BDP) and cruise control: no overflow at all, where
        // Startup at a 2.885 window and cruising at the estimate dropped 890-990 frames at
        // the queue per 100 MB
        assert!(drops <= 20, "queue drops {drops}");
        assert!(
            drops - drops0 <= 5,
            "steady-state queue drops {}",
            drops - drops0
        );
        // random loss is not congestion, and the bottleneck stays busy
        assert_eq!(s.congestion_events, 0);
        assert!(
            steady >= 0.97 * RATE * CEILING,
            "steady state {:.1} Mbit/s",
            steady / 1e6
        );
        assert!(goodput >= 0.85 * RATE * CEILING, "{:.1}", goodput / 1e6);
    }
}

#[test]
fn two_flows_share_the_lab_bottleneck_without_overflowing_its_queue() {
    // The second flow (started 1 s after the first) takes a few seconds to reach its share:
    // over 2..7 s after its start the first flow still gets 1.3-2.1x as much (seeds 1-10);
    // over 4..10 s after its start the ratio is 0.90-1.30 on the same seeds. This checks the
    // converged share, on four seeds, with a tighter bound than the old 3..7 s window's 0.5-2.
    for seed in 1u64..=4 {
        two_flows(seed);
    }
}

fn two_flows(seed: u64) {
    let mut sim = lab_sim(seed);
    let epoch = sim.epoch;
    let data = object(300_000_000, 5);
    for i in 0..2u32 {
        let (s, r) = flow(&data, 40 + i, epoch);
        sim.add_flow(s, r, epoch + Duration::from_secs(1) * i);
    }
    // both running and past the second flow's Startup
    let (t1, t2) = (
        epoch + Duration::from_secs(5),
        epoch + Duration::from_secs(11),
    );
    let secs = (t2 - t1).as_secs_f64();
    sim.run_until(t1, |_| false);
    let a1: Vec<u64> = sim
        .flows
        .iter()
        .map(|f| f.sender.stats().bytes_acked)
        .collect();
    let d1 = sim.fwd.stats.dropped_queue;
    sim.run_until(t2, |_| false);
    let rates: Vec<f64> = sim
        .flows
        .iter()
        .zip(&a1)
        .map(|(f, a)| (f.sender.stats().bytes_acked - a) as f64 * 8.0 / secs)
        .collect();
    let drops = sim.fwd.stats.dropped_queue - d1;
    let total = rates[0] + rates[1];
    let ratio = rates[0] / rates[1];
    eprintln!(
        "seed {seed}, two flows: {:.1} / {:.1} Mbit/s (ratio {ratio:.2}), {:.1} % of the \
         ceiling; queue drops in 5..11 s {drops} (before {d1}); congestion events {} / {}",
        rates[0] / 1e6,
        rates[1] / 1e6,
        total / (RATE * CEILING) * 100.0,
        sim.flows[0].sender.stats().congestion_events,
        sim.flows[1].sender.stats().congestion_events,
    );
    assert!(drops <= 50, "queue drops {drops}");
    assert!(total >= 0.95 * RATE * CEILING, "{:.1}", total / 1e6);
    assert!(
        (0.67..=1.5).contains(&ratio),
        "seed {seed}: unfair: {ratio:.2}"
    );
}
