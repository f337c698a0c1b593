//! End-to-end transfer tests over the simulated link (virtual time, fixed seeds).

use std::time::{Duration, Instant};

use dwcp_transfer::sim::{Link, LinkConfig, Sim, SimRng};
use dwcp_transfer::{
    LinkMode, MemJournal, MemSink, MemSource, Receiver, ReceiverConfig, ReceiverState, Sender,
    SenderConfig, SenderState, VERSION_1, VERSION_3,
};

fn object(len: usize, seed: u64) -> Vec<u8> {
    SimRng::new(seed).bytes(len)
}

struct Outcome {
    sim: Sim,
    sink: MemSink,
}

fn run_one(
    data: &[u8],
    link: LinkConfig,
    scfg: SenderConfig,
    rcfg: ReceiverConfig,
    seed: u64,
    limit: Duration,
) -> Outcome {
    let epoch = Instant::now();
    let sink = MemSink::new();
    let journal = MemJournal::new();
    let sender = Sender::new(scfg, Box::new(MemSource::new(data.to_vec())), epoch).expect("sender");
    let receiver = Receiver::new(rcfg, Box::new(sink.clone()), Box::new(journal.clone()));
    let mut sim = Sim::new(epoch, Link::new(link, seed), Link::new(link, seed ^ 0xFFFF));
    sim.add_flow(sender, receiver, epoch);
    sim.run(limit);
    Outcome { sim, sink }
}

fn assert_complete(o: &Outcome, data: &[u8]) {
    let f = &o.sim.flows[0];
    assert_eq!(
        f.sender.state(),
        SenderState::Complete,
        "sender {:?} error {:?} stats {:#?}",
        f.sender.state(),
        f.sender.error(),
        f.sender.stats()
    );
    assert_eq!(f.receiver.state(), ReceiverState::Complete);
    assert!(o.sink.contents() == data, "sink differs from source");
}

fn lossy(loss: f64) -> LinkConfig {
    LinkConfig {
        loss,
        ..LinkConfig::clean(100e6, Duration::from_millis(20))
    }
}

#[test]
fn completes_byte_identical_under_random_loss() {
    let data = object(3_000_000 + 1234, 1);
    for (i, loss) in [0.0, 0.01, 0.05, 0.10].into_iter().enumerate() {
        let o = run_one(
            &data,
            lossy(loss),
            SenderConfig::default(),
            ReceiverConfig::default(),
            100 + i as u64,
            Duration::from_secs(60),
        );
        assert_complete(&o, &data);
        let s = o.sim.flows[0].sender.stats();
        let l = &o.sim.fwd.stats;
        let dropped = l.dropped_queue + l.dropped_random;
        eprintln!(
            "loss {loss}: link dropped {dropped}, sender declared {} lost",
            s.losses
        );
        if loss > 0.0 {
            assert!(
                s.losses > 0 && s.bytes_retransmitted > 0,
                "loss {loss}: {s:?}"
            );
        }
        // loss detection is accurate: few spurious retransmissions
        assert!(
            s.losses <= dropped + dropped / 20 + 3,
            "loss {loss}: declared {} lost, link dropped {dropped}",
            s.losses
        );
        assert!(
            s.losses >= dropped * 9 / 10,
            "missed losses: {} < {dropped}",
            s.losses
        );
    }
}

#[test]
fn survives_reordering_duplication_and_corruption() {
    let data = object(2_000_000, 2);
    let link = LinkConfig {
        jitter: Duration::from_millis(2),
        reorder: 0.05,
        reorder_delay: Duration::from_millis(7),
        duplicate: 0.05,
        corrupt: 0.03,
        loss: 0.01,
        ..LinkConfig::clean(50e6, Duration::from_millis(10))
    };
    let o = run_one(
        &data,
        link,
        SenderConfig::default(),
        ReceiverConfig::default(),
        7,
        Duration::from_secs(60),
    );
    assert_complete(&o, &data);
    let r = o.sim.flows[0].receiver.stats();
    assert!(o.sim.fwd.stats.corrupted > 0 && o.sim.fwd.stats.duplicated > 0);
    assert!(
        r.frames_corrupt > 0,
        "corrupted frames must be detected: {r:?}"
    );
    assert!(
        r.duplicate_chunks > 0,
        "duplicates must be seen and tolerated: {r:?}"
    );
    // every corrupted datagram toward the receiver was caught by the CRC
    let corrupted_to_receiver = o.sim.fwd.stats.corrupted;
    assert_eq!(r.frames_corrupt + r.frames_malformed, corrupted_to_receiver);
}

#[test]
fn long_fat_pipe_with_one_percent_loss_reaches_ninety_percent() {
    let rate = 200e6;
    let data = object(200_000_000, 3);
    let link = LinkConfig {
        loss: 0.01,
        ..LinkConfig::clean(rate, Duration::from_millis(50))
    };
    let o = run_one(
        &data,
        link,
        SenderConfig::default(),
        ReceiverConfig::default(),
        11,
        Duration::from_secs(60),
    );
    assert_complete(&o, &data);
    let f = &o.sim.flows[0];
    let secs = f
        .done_at
        .expect("done")
        .duration_since(f.start)
        .as_secs_f64();
    let goodput = data.len() as f64 * 8.0 / secs;
    let s = f.sender.stats();
    eprintln!(
        "goodput {:.1} Mbit/s = {:.1} % of {:.0} Mbit/s in {secs:.2} s virtual; {s:?}",
        goodput / 1e6,
        goodput / rate * 100.0,
        rate / 1e6
    );
    assert!(
        goodput >= 0.90 * rate,
        "goodput {:.1} Mbit/s",
        goodput / 1e6
    );
    assert_eq!(s.mode, LinkMode::Internet);
}

#[test]
fn two_flows_share_a_bottleneck_fairly() {
    let epoch = Instant::now();
    let link = LinkConfig::clean(100e6, Duration::from_millis(20));
    let mut sim = Sim::new(epoch, Link::new(link, 21), Link::new(link, 22));
    let data = object(200_000_000, 4);
    for i in 0..2u32 {
        let scfg = SenderConfig {
            conn_id: 10 + i,
            object_id: u64::from(i),
            ..SenderConfig::default()
        };
        let s = Sender::new(scfg, Box::new(MemSource::new(data.clone())), epoch).expect("sender");
        let r = Receiver::new(
            ReceiverConfig::default(),
            Box::new(MemSink::new()),
            Box::new(MemJournal::new()),
        );
        sim.add_flow(s, r, epoch + Duration::from_millis(500) * i);
    }
    // let the late flow converge, then measure a window
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
        .map(|i| (a2[i] - a1[i]) as f64 * 8.0 / (t2 - t1).as_secs_f64())
        .collect();
    let ratio = rates[0] / rates[1];
    let total = rates[0] + rates[1];
    eprintln!(
        "flow rates {:.1} / {:.1} Mbit/s, ratio {ratio:.2}, total {:.1} Mbit/s; queue drops {}",
        rates[0] / 1e6,
        rates[1] / 1e6,
        total / 1e6,
        sim.fwd.stats.dropped_queue
    );
    assert!((0.5..=2.0).contains(&ratio), "unfair: ratio {ratio:.2}");
    assert!(
        total >= 0.80 * 100e6,
        "bottleneck underused: {:.1} Mbit/s",
        total / 1e6
    );
}

#[test]
fn v3_sender_talks_v1_to_a_v1_receiver_and_back() {
    // Half the object is zeros: v3 elides them (codec 1), v1 must send raw bytes.
    let mut data = object(1_500_000, 5);
    data[200_000..900_000].fill(0);
    let link = LinkConfig {
        loss: 0.01,
        ..LinkConfig::clean(100e6, Duration::from_millis(10))
    };
    let mut sent = Vec::new();
    for (smax, rmax) in [
        (VERSION_3, VERSION_1),
        (VERSION_1, VERSION_3),
        (VERSION_3, VERSION_3),
    ] {
        let scfg = SenderConfig {
            max_version: smax,
            initial_streams: 4,
            ..SenderConfig::default()
        };
        let rcfg = ReceiverConfig {
            max_version: rmax,
            ..ReceiverConfig::default()
        };
        let o = run_one(&data, link, scfg, rcfg, 31, Duration::from_secs(60));
        assert_complete(&o, &data);
        let s = o.sim.flows[0].sender.stats();
        let expect_v = smax.min(rmax);
        assert_eq!(s.version, expect_v);
        assert_eq!(o.sim.flows[0].receiver.stats().version, expect_v);
        if expect_v == VERSION_1 {
            assert_eq!(s.max_streams, 1);
            assert_eq!(s.per_stream_acked.len(), 1);
        } else {
            assert!(s.per_stream_acked.iter().filter(|b| **b > 0).count() > 1);
        }
        sent.push(s.bytes_sent);
    }
    // v3 sent far fewer bytes thanks to zero-chunk elision
    assert!(
        sent[2] < sent[0] * 7 / 10,
        "v3 {} vs v1 {}",
        sent[2],
        sent[0]
    );
}

#[test]
fn receiver_restart_resumes_without_resending_durable_chunks() {
    let data = object(8_000_000, 6);
    let link = LinkConfig::clean(100e6, Duration::from_millis(10));
    let epoch = Instant::now();
    let sink = MemSink::new();
    let journal = MemJournal::new();
    let rcfg = ReceiverConfig {
        durable_batch_bytes: 512 * 1024,
        ..ReceiverConfig::default()
    };
    let mk_sender = |conn: u32, now: Instant| {
        let cfg = SenderConfig {
            conn_id: conn,
            object_id: 77,
            ..SenderConfig::default()
        };
        Sender::new(cfg, Box::new(MemSource::new(data.clone())), now).expect("sender")
    };
    let mut sim = Sim::new(epoch, Link::new(link, 41), Link::new(link, 42));
    sim.add_flow(
        mk_sender(1, epoch),
        Receiver::new(
            rcfg.clone(),
            Box::new(sink.clone()),
            Box::new(journal.clone()),
        ),
        epoch,
    );
    // kill the receiver once about half the object is held
    let half = data.len() as u64 / 2 / 8000;
    sim.run_until(epoch + Duration::from_secs(30), |s| {
        s.flows[0].receiver.stats().chunks_held >= half
    });
    assert!(!sim.flows[0].receiver.is_complete());
    sink.crash(); // lose whatever was not flushed
    let durable = journal.durable_bytes(77);
    assert!(
        durable > 0 && durable < data.len() as u64,
        "durable {durable}"
    );
    // restart both endpoints on the surviving sink + journal
    let now = sim.now;
    sim.clear_in_flight(0);
    sim.flows[0].sender = mk_sender(2, now);
    sim.flows[0].receiver = Receiver::new(rcfg, Box::new(sink.clone()), Box::new(journal.clone()));
    sim.flows[0].done_at = None;
    sim.run_until(now + Duration::from_secs(30), |_| false);
    let s = sim.flows[0].sender.stats();
    let r = sim.flows[0].receiver.stats();
    assert_eq!(sim.flows[0].sender.state(), SenderState::Complete);
    assert!(sink.contents() == data);
    let durable_chunks = durable / 8000;
    assert_eq!(s.chunks_skipped, durable_chunks);
    assert_eq!(r.chunks_resumed, durable_chunks);
    // the second session sent each non-durable chunk once (plus retransmissions of lost
    // frames) and no durable chunk at all
    let missing = data.len() as u64 - durable;
    let new_frames = s.data_frames_sent - s.data_frames_retransmitted;
    assert_eq!(new_frames * 8000, missing);
    assert!(
        s.data_frames_retransmitted * 8000 <= missing / 4,
        "retransmitted {} frames for {missing} missing bytes",
        s.data_frames_retransmitted
    );
    assert_eq!(r.bytes_written, missing);
}

#[test]
fn partial_or_corrupted_object_is_never_reported_complete() {
    // The journal claims a range durable but the sink holds wrong bytes there (disk corruption):
    // the receiver must refuse completion.
    let data = object(1_000_000, 8);
    let epoch = Instant::now();
    let sink = MemSink::new();
    let mut journal = MemJournal::new();
    let source = MemSource::new(data.clone());
    let hash = {
        let mut s = source.clone();
        dwcp_transfer::sender::hash_source(&mut s).expect("hash")
    };
    use dwcp_transfer::Journal;
    journal.begin(5, data.len() as u64, hash).expect("begin");
    sink.poke(0, &data[..160_000]);
    sink.poke(8_000, &[0xAA; 10]);
    journal.record_durable(5, 0..160_000).expect("record");
    let link = LinkConfig::clean(100e6, Duration::from_millis(4));
    let mut sim = Sim::new(epoch, Link::new(link, 51), Link::new(link, 52));
    let cfg = SenderConfig {
        object_id: 5,
        ..SenderConfig::default()
    };
    sim.add_flow(
        Sender::new(cfg, Box::new(source), epoch).expect("sender"),
        Receiver::new(
            ReceiverConfig::default(),
            Box::new(sink.clone()),
            Box::new(journal.clone()),
        ),
        epoch,
    );
    sim.run(Duration::from_secs(10));
    let f = &sim.flows[0];
    assert_eq!(f.receiver.state(), ReceiverState::Failed);
    assert_eq!(f.sender.state(), SenderState::Failed);
    assert!(matches!(
        f.receiver.error(),
        Some(dwcp_transfer::TransferError::HashMismatch { .. })
    ));
}

#[test]
fn datacenter_link_is_detected_and_streams_adapt_within_bounds() {
    let data = object(20_000_000, 9);
    let link = LinkConfig::clean(10e9, Duration::from_micros(200));
    let scfg = SenderConfig {
        initial_streams: 1,
        max_streams: 8,
        ..SenderConfig::default()
    };
    let o = run_one(
        &data,
        link,
        scfg,
        ReceiverConfig::default(),
        61,
        Duration::from_secs(20),
    );
    assert_complete(&o, &data);
    let s = o.sim.flows[0].sender.stats();
    assert_eq!(s.mode, LinkMode::Datacenter, "{}", s.mode_reason);
    assert!(s.streams >= 1 && s.streams <= 8);
    assert!(s.btlbw > 0.5e9 / 8.0, "btlbw {}", s.btlbw);
}

#[test]
fn empty_object_and_tiny_object_complete() {
    for len in [0usize, 1, 7999, 8000, 8001] {
        let data = object(len, 10);
        let o = run_one(
            &data,
            LinkConfig::clean(10e6, Duration::from_millis(5)),
            SenderConfig::default(),
            ReceiverConfig::default(),
            71,
            Duration::from_secs(10),
        );
        assert_complete(&o, &data);
    }
}

#[test]
fn live_sender_reconnects_to_a_restarted_receiver_and_resumes() {
    let data = object(8_000_000, 12);
    let link = LinkConfig {
        loss: 0.01,
        ..LinkConfig::clean(100e6, Duration::from_millis(10))
    };
    let epoch = Instant::now();
    let sink = MemSink::new();
    let journal = MemJournal::new();
    let rcfg = ReceiverConfig {
        durable_batch_bytes: 512 * 1024,
        ..ReceiverConfig::default()
    };
    let scfg = SenderConfig {
        object_id: 78,
        ..SenderConfig::default()
    };
    let sender = Sender::new(scfg, Box::new(MemSource::new(data.clone())), epoch).expect("sender");
    let mut sim = Sim::new(epoch, Link::new(link, 81), Link::new(link, 82));
    sim.add_flow(
        sender,
        Receiver::new(
            rcfg.clone(),
            Box::new(sink.clone()),
            Box::new(journal.clone()),
        ),
        epoch,
    );
    let half = data.len() as u64 / 2 / 8000;
    sim.run_until(epoch + Duration::from_secs(30), |s| {
        s.flows[0].receiver.stats().chunks_held >= half
    });
    // the receiver process dies: endpoint dropped, unflushed writes lost, sink + journal kept
    sink.crash();
    let durable = journal.durable_bytes(78);
    assert!(durable > 0 && durable < data.len() as u64);
    sim.flows[0].receiver = Receiver::new(rcfg, Box::new(sink.clone()), Box::new(journal.clone()));
    // the sender notices (consecutive RTOs) and opens a new connection by itself
    sim.run_until(sim.now + Duration::from_secs(30), |s| {
        s.flows[0].sender.stats().reconnects > 0
    });
    let at_reconnect = sim.flows[0].sender.stats();
    assert_eq!(at_reconnect.reconnects, 1);
    assert_eq!(sim.flows[0].sender.state(), SenderState::Handshake);
    assert!(sim.run(Duration::from_secs(30)), "did not finish");
    let s = sim.flows[0].sender.stats();
    let r = sim.flows[0].receiver.stats();
    assert_eq!(sim.flows[0].sender.state(), SenderState::Complete);
    assert!(sink.contents() == data);
    let durable_chunks = durable / 8000;
    let missing = data.len() as u64 - durable;
    assert_eq!(r.chunks_resumed, durable_chunks);
    assert_eq!(
        r.bytes_written, missing,
        "a durable chunk was written again"
    );
    let new_frames = (s.data_frames_sent - s.data_frames_retransmitted)
        - (at_reconnect.data_frames_sent - at_reconnect.data_frames_retransmitted);
    let frames_after = s.data_frames_sent - at_reconnect.data_frames_sent;
    eprintln!(
        "durable {durable} B, missing {missing} B; after reconnect: {frames_after} data frames \
         ({new_frames} first sends), receiver duplicates {}",
        r.duplicate_chunks
    );
    assert!(
        frames_after * 8000 <= missing + missing / 4,
        "{frames_after} frames"
    );
    assert_ne!(s.conn_id, 1);
}

#[test]
fn malformed_forged_and_foreign_frames_are_counted_and_never_written() {
    use dwcp_transfer::wire::{self, Caps, Data, Frame, Hello};
    let data = object(40_000, 13);
    let hash = {
        let mut s = MemSource::new(data.clone());
        dwcp_transfer::sender::hash_source(&mut s).expect("hash")
    };
    let now = Instant::now();
    let sink = MemSink::new();
    let mut r = Receiver::new(
        ReceiverConfig::default(),
        Box::new(sink.clone()),
        Box::new(MemJournal::new()),
    );
    let hello = Frame::Hello(Hello {
        caps: Caps::new(4, 9000, 8000),
        initial_streams: 1,
        object_id: 3,
        object_len: data.len() as u64,
        object_hash: hash,
    });
    r.handle_frame(now, &wire::encode(1, 9, 0, &hello).expect("hello"));
    assert_eq!(r.state(), ReceiverState::Receiving);
    let data_frame = |conn: u32,
                      version: u8,
                      stream: u16,
                      object_id: u64,
                      offset: u64,
                      codec: u8,
                      payload: Vec<u8>| {
        wire::encode(
            version,
            conn,
            0,
            &Frame::Data(Data {
                stream,
                seq: 0,
                object_id,
                offset,
                codec,
                last: false,
                retransmit: false,
                payload,
            }),
        )
        .expect("data")
    };
    let good = data_frame(9, 3, 0, 3, 0, 0, data[..8000].to_vec());
    let mut corrupt = good.clone();
    corrupt[60] ^= 0x10;
    let bad: Vec<Vec<u8>> = vec![
        corrupt,
        good[..good.len() - 1].to_vec(), // truncated
        data_frame(8, 3, 0, 3, 0, 0, data[..8000].to_vec()), // other connection
        data_frame(9, 1, 0, 3, 0, 0, data[..8000].to_vec()), // wrong version
        data_frame(9, 3, 0, 4, 0, 0, data[..8000].to_vec()), // other object
        data_frame(9, 3, 0, 3, 4000, 0, data[..8000].to_vec()), // misaligned offset
        data_frame(9, 3, 0, 3, 80_000, 0, data[..8000].to_vec()), // beyond the object
        data_frame(9, 3, 9, 3, 0, 0, data[..8000].to_vec()), // stream not negotiated
        data_frame(9, 3, 0, 3, 0, 0, data[..7999].to_vec()), // short chunk
        data_frame(9, 3, 0, 3, 0, 1, vec![1, 2, 3]), // zero codec with payload
        data_frame(9, 3, 0, 3, 0, 4, data[..8000].to_vec()), // zstd, not negotiated
        vec![0xAB; 100],                 // garbage
    ];
    for b in &bad {
        r.handle_frame(now, b);
    }
    let st = r.stats();
    assert_eq!(sink.counters().0, 0, "nothing may be written: {st:?}");
    assert_eq!(st.frames_corrupt, 1);
    assert_eq!(
        st.frames_corrupt + st.frames_malformed + st.frames_foreign,
        bad.len() as u64,
        "{st:?}"
    );
    // the genuine frame is accepted, and its replay is a duplicate, not a second write
    r.handle_frame(now, &good);
    r.handle_frame(now, &good);
    assert_eq!(sink.counters().0, 1);
    assert_eq!(r.stats().duplicate_chunks, 1);
    assert_ne!(r.state(), ReceiverState::Complete);
}

#[test]
fn huge_announced_object_costs_no_memory_up_front() {
    use dwcp_transfer::wire::{self, Caps, Frame, Hello};
    let now = Instant::now();
    let mut r = Receiver::new(
        ReceiverConfig::default(),
        Box::new(MemSink::new()),
        Box::new(MemJournal::new()),
    );
    let hello = Frame::Hello(Hello {
        caps: Caps::new(4, 9000, 8000),
        initial_streams: 1,
        object_id: 1,
        object_len: u64::MAX,
        object_hash: 0,
    });
    // a per-chunk table for 2^64 bytes would abort the process here
    r.handle_frame(now, &wire::encode(1, 5, 0, &hello).expect("hello"));
    assert_eq!(r.state(), ReceiverState::Receiving);
    assert!(r.poll_transmit(now).is_some(), "HELLO_ACK expected");
}
