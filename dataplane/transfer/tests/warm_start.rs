//! Warm start (`SenderConfig::path_hint`) on the simulated WAN profile (200 Mbit/s, 50 ms RTT,
//! 1 % loss each way, one-BDP buffer, MTU-sized frames): a hint learnt by an earlier
//! connection makes a small object finish clearly sooner; a hint 10x too high is caught by the
//! first train without a loss storm and the connection converges to the real rate; a hint far
//! too low is caught too. Virtual time, fixed seeds.

use std::time::{Duration, Instant};

use dwcp_transfer::cc::BbrState;
use dwcp_transfer::sim::{Link, LinkConfig, Sim, SimRng};
use dwcp_transfer::{
    MemJournal, MemSink, MemSource, PathHint, Receiver, ReceiverConfig, Sender, SenderConfig,
    SenderState, WarmOutcome,
};

const RATE: f64 = 200e6;

fn object(len: usize, seed: u64) -> Vec<u8> {
    SimRng::new(seed).bytes(len)
}

fn wan() -> LinkConfig {
    LinkConfig {
        loss: 0.01,
        ..LinkConfig::clean(RATE, Duration::from_millis(50))
    }
}

struct Run {
    secs: f64,
    sim: Sim,
}

/// One transfer of `len` bytes with an optional hint; returns the completion time (handshake
/// included) and the simulator for inspection.
fn transfer(len: usize, seed: u64, hint: Option<PathHint>) -> Run {
    let epoch = Instant::now();
    let data = object(len, seed);
    let mut sim = Sim::new(
        epoch,
        Link::new(wan(), seed),
        Link::new(wan(), seed ^ 0xFFFF),
    );
    let cfg = SenderConfig {
        conn_id: seed as u32,
        object_id: seed,
        mtu: Some(1500),
        path_hint: hint,
        ..SenderConfig::default()
    };
    let sender = Sender::new(cfg, Box::new(MemSource::new(data)), epoch).expect("sender");
    let receiver = Receiver::new(
        ReceiverConfig::default(),
        Box::new(MemSink::new()),
        Box::new(MemJournal::new()),
    );
    sim.add_flow(sender, receiver, epoch);
    sim.run(Duration::from_secs(60));
    let f = &sim.flows[0];
    assert_eq!(
        f.sender.state(),
        SenderState::Complete,
        "{:?} {:#?}",
        f.sender.error(),
        f.sender.stats()
    );
    let secs = f
        .done_at
        .expect("done")
        .duration_since(f.start)
        .as_secs_f64();
    Run { secs, sim }
}

/// The path estimate a 30 MB cold transfer leaves behind.
fn learnt_hint() -> PathHint {
    let r = transfer(30_000_000, 3, None);
    let h = r.sim.flows[0].sender.path_estimate().expect("estimate");
    let mbit = h.btl_bw_bytes_per_sec as f64 * 8e-6;
    eprintln!("learnt hint: {mbit:.1} Mbit/s, min_rtt {:?}", h.min_rtt);
    assert!((180.0..=210.0).contains(&mbit), "estimate {mbit:.1} Mbit/s");
    assert!(h.min_rtt >= Duration::from_millis(50) && h.min_rtt < Duration::from_millis(52));
    h
}

#[test]
fn path_estimate_is_none_before_any_sample() {
    let epoch = Instant::now();
    let s = Sender::new(
        SenderConfig::default(),
        Box::new(MemSource::new(vec![7u8; 1000])),
        epoch,
    )
    .expect("sender");
    assert!(s.path_estimate().is_none());
    assert!(s.warm_outcome().is_none());
}

#[test]
fn hinted_connection_finishes_a_small_object_sooner() {
    let hint = learnt_hint();
    let len = 2 << 20;
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for seed in [11u64, 12, 13] {
        cold.push(transfer(len, seed, None).secs);
        let w = transfer(len, seed, Some(hint));
        let s = &w.sim.flows[0].sender;
        assert_eq!(s.warm_outcome(), Some(WarmOutcome::Confirmed));
        assert_eq!(
            w.sim.fwd.stats.dropped_queue, 0,
            "warm start overflowed the queue"
        );
        warm.push(w.secs);
    }
    eprintln!("2 MiB: cold {cold:.3?} s, warm {warm:.3?} s");
    for (c, w) in cold.iter().zip(&warm) {
        // handshake + one RTT for the train + 2 MiB at the rate + the last ack is ~0.24 s;
        // a cold Startup needs several more round trips
        assert!(w < &(c * 0.8), "warm {w:.3} s vs cold {c:.3} s");
    }
}

#[test]
fn ten_times_too_high_hint_is_caught_without_a_loss_storm() {
    let true_hint = learnt_hint();
    let hint = PathHint {
        btl_bw_bytes_per_sec: true_hint.btl_bw_bytes_per_sec * 10,
        ..true_hint
    };
    let len = 30_000_000;
    let cold = transfer(len, 21, None);
    let w = transfer(len, 21, Some(hint));
    let s = w.sim.flows[0].sender.stats();
    let est = w.sim.flows[0].sender.path_estimate().expect("estimate");
    let (wq, cq) = (
        w.sim.fwd.stats.dropped_queue,
        cold.sim.fwd.stats.dropped_queue,
    );
    eprintln!(
        "10x hint: {:.3} s (cold {:.3} s), queue drops {wq} (cold {cq}), losses {}, rto {}, \
         estimate {:.1} Mbit/s, outcome {:?}",
        w.secs,
        cold.secs,
        s.losses,
        s.rto_count,
        est.btl_bw_bytes_per_sec as f64 * 8e-6,
        w.sim.flows[0].sender.warm_outcome()
    );
    assert_eq!(
        w.sim.flows[0].sender.warm_outcome(),
        Some(WarmOutcome::TooHigh)
    );
    // the train is one real BDP: the one-BDP buffer takes it; no more drops than a cold start
    assert!(wq <= cq + 20, "queue drops {wq} vs cold {cq}");
    assert!(s.rto_count <= 1, "rto storm: {}", s.rto_count);
    let mbit = est.btl_bw_bytes_per_sec as f64 * 8e-6;
    assert!(
        (170.0..=215.0).contains(&mbit),
        "did not converge: {mbit:.1}"
    );
    assert_eq!(s.cc_state, BbrState::ProbeBw);
    assert!(
        w.secs <= cold.secs * 1.05,
        "{:.3} vs {:.3}",
        w.secs,
        cold.secs
    );
}

#[test]
fn far_too_low_hint_falls_back_to_startup() {
    let true_hint = learnt_hint();
    let hint = PathHint {
        btl_bw_bytes_per_sec: true_hint.btl_bw_bytes_per_sec / 10,
        ..true_hint
    };
    let len = 30_000_000;
    let cold = transfer(len, 31, None);
    let w = transfer(len, 31, Some(hint));
    let f = &w.sim.flows[0].sender;
    let est = f.path_estimate().expect("estimate");
    eprintln!(
        "0.1x hint: {:.3} s (cold {:.3} s), estimate {:.1} Mbit/s, outcome {:?}",
        w.secs,
        cold.secs,
        est.btl_bw_bytes_per_sec as f64 * 8e-6,
        f.warm_outcome()
    );
    assert_eq!(f.warm_outcome(), Some(WarmOutcome::TooLow));
    assert!(
        w.secs <= cold.secs * 1.05,
        "{:.3} vs {:.3}",
        w.secs,
        cold.secs
    );
}

#[test]
fn hint_for_another_path_is_ignored() {
    let true_hint = learnt_hint();
    // a hint learnt on a 10 ms path does not fit a 50 ms handshake
    let hint = PathHint {
        min_rtt: Duration::from_millis(10),
        ..true_hint
    };
    let w = transfer(1 << 20, 41, Some(hint));
    assert_eq!(
        w.sim.flows[0].sender.warm_outcome(),
        Some(WarmOutcome::Ignored)
    );
}
