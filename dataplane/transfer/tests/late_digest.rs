//! LATE_DIGEST (docs/protocol.md 8.3): the sender names the object by its source's identity in
//! HELLO, hashes the chunks as they go out and sends the digest at the end; the receiver
//! resumes by that identity and verifies against the digest. Over the simulated link
//! (virtual time, fixed seeds).

use std::time::{Duration, Instant};

use dwcp_transfer::sim::{Link, LinkConfig, Sim, SimRng};
use dwcp_transfer::{
    Journal, MemJournal, MemSink, MemSource, Receiver, ReceiverConfig, ReceiverState, Sender,
    SenderConfig, SenderState, TransferError, VERSION_1,
};

const IDENTITY: u128 = 0x1de1_7171;
/// `SenderConfig::default().object_id`.
const OBJECT: u64 = 1;

fn object(len: usize, seed: u64) -> Vec<u8> {
    SimRng::new(seed).bytes(len)
}

fn xxh3(data: &[u8]) -> u128 {
    let mut s = MemSource::new(data.to_vec());
    dwcp_transfer::sender::hash_source(&mut s).expect("hash")
}

/// Runs one transfer of `source` into `sink`/`journal`; returns the simulator.
fn run(
    source: MemSource,
    scfg: SenderConfig,
    rcfg: ReceiverConfig,
    sink: &MemSink,
    journal: &MemJournal,
    link: LinkConfig,
    seed: u64,
) -> Sim {
    let epoch = Instant::now();
    let sender = Sender::new(scfg, Box::new(source), epoch).expect("sender");
    let receiver = Receiver::new(rcfg, Box::new(sink.clone()), Box::new(journal.clone()));
    let mut sim = Sim::new(epoch, Link::new(link, seed), Link::new(link, seed ^ 0xFFFF));
    sim.add_flow(sender, receiver, epoch);
    sim.run(Duration::from_secs(30));
    sim
}

fn assert_complete(sim: &Sim, sink: &MemSink, data: &[u8]) {
    let f = &sim.flows[0];
    assert_eq!(
        f.sender.state(),
        SenderState::Complete,
        "sender error {:?} stats {:#?}",
        f.sender.error(),
        f.sender.stats()
    );
    assert_eq!(
        f.receiver.state(),
        ReceiverState::Complete,
        "{:?}",
        f.receiver.error()
    );
    assert!(sink.contents() == data, "sink differs from source");
    assert_eq!(f.sender.object_hash(), Some(xxh3(data)));
}

fn lossy(loss: f64) -> LinkConfig {
    LinkConfig {
        loss,
        ..LinkConfig::clean(100e6, Duration::from_millis(10))
    }
}

#[test]
fn the_digest_comes_at_the_end_and_verifies() {
    // empty, one byte, chunk edges, and a larger object over a lossy link (the digest's
    // KEEPALIVE may be lost too: the sender repeats it while it waits for the CLOSE)
    for (i, (len, loss)) in [
        (0usize, 0.0),
        (1, 0.0),
        (7999, 0.0),
        (8000, 0.05),
        (8001, 0.05),
        (3_000_000, 0.05),
    ]
    .into_iter()
    .enumerate()
    {
        let data = object(len, 20 + i as u64);
        let (sink, journal) = (MemSink::new(), MemJournal::new());
        let sim = run(
            MemSource::new(data.clone()).with_identity(IDENTITY),
            SenderConfig::default(),
            ReceiverConfig::default(),
            &sink,
            &journal,
            lossy(loss),
            100 + i as u64,
        );
        assert_complete(&sim, &sink, &data);
        let s = sim.flows[0].sender.stats();
        // nothing was read before HELLO, and the digest was known once the last byte left
        assert_eq!(s.timeline.source_hashed, None, "len {len}");
        assert!(s.timeline.digest_known.is_some(), "len {len}");
        assert_eq!(s.reconnects, 0);
    }
}

#[test]
fn a_receiver_without_late_digest_gets_the_hash_in_a_second_hello() {
    let data = object(2_000_000, 31);
    for rcfg in [
        ReceiverConfig {
            late_digest: false,
            ..ReceiverConfig::default()
        },
        ReceiverConfig {
            max_version: VERSION_1,
            ..ReceiverConfig::default()
        },
    ] {
        let (sink, journal) = (MemSink::new(), MemJournal::new());
        let sim = run(
            MemSource::new(data.clone()).with_identity(IDENTITY),
            SenderConfig::default(),
            rcfg,
            &sink,
            &journal,
            lossy(0.01),
            32,
        );
        assert_complete(&sim, &sink, &data);
        let s = sim.flows[0].sender.stats();
        assert!(s.timeline.source_hashed.is_some());
        assert_eq!(s.timeline.digest_known, None);
        // a second HELLO on a new connection, not counted as a reconnect
        assert_eq!(s.timeline.hellos_sent, 2);
        assert_eq!(s.reconnects, 0);
    }
}

#[test]
fn resume_is_keyed_by_the_identity_and_the_digest_covers_the_held_bytes() {
    let data = object(1_000_000, 41);
    let (sink, mut journal) = (MemSink::new(), MemJournal::new());
    // an earlier session made the first 400 kB durable
    journal
        .begin(OBJECT, data.len() as u64, IDENTITY)
        .expect("begin");
    sink.poke(0, &data[..400_000]);
    journal.record_durable(OBJECT, 0..400_000).expect("record");
    let sim = run(
        MemSource::new(data.clone()).with_identity(IDENTITY),
        SenderConfig::default(),
        ReceiverConfig::default(),
        &sink,
        &journal,
        lossy(0.0),
        42,
    );
    assert_complete(&sim, &sink, &data);
    let s = sim.flows[0].sender.stats();
    let r = sim.flows[0].receiver.stats();
    assert_eq!(s.chunks_skipped, 50, "400 kB of 8000 B chunks");
    assert_eq!(r.chunks_resumed, 50);
    assert_eq!(r.bytes_written, 600_000);
}

#[test]
fn a_source_changed_under_the_same_identity_fails_and_is_not_resumed_again() {
    let old = object(1_000_000, 51);
    let mut data = old.clone();
    data[100] ^= 0xFF; // changed in the part the receiver holds
    let (sink, mut journal) = (MemSink::new(), MemJournal::new());
    journal
        .begin(OBJECT, old.len() as u64, IDENTITY)
        .expect("begin");
    sink.poke(0, &old[..400_000]);
    journal.record_durable(OBJECT, 0..400_000).expect("record");
    let sim = run(
        MemSource::new(data.clone()).with_identity(IDENTITY),
        SenderConfig::default(),
        ReceiverConfig::default(),
        &sink,
        &journal,
        lossy(0.0),
        52,
    );
    let f = &sim.flows[0];
    assert_eq!(f.receiver.state(), ReceiverState::Failed);
    assert!(matches!(
        f.receiver.error(),
        Some(TransferError::HashMismatch { .. })
    ));
    assert_eq!(f.sender.state(), SenderState::Failed);
    // the journal forgot the object: the next attempt sends everything and verifies
    assert!(journal.ranges(OBJECT).is_empty());
    let sim = run(
        MemSource::new(data.clone()).with_identity(IDENTITY),
        SenderConfig::default(),
        ReceiverConfig::default(),
        &sink,
        &journal,
        lossy(0.0),
        53,
    );
    assert_complete(&sim, &sink, &data);
    assert_eq!(sim.flows[0].receiver.stats().chunks_resumed, 0);
}

#[test]
fn a_sender_told_not_to_offer_late_digest_hashes_first() {
    let data = object(100_000, 61);
    let (sink, journal) = (MemSink::new(), MemJournal::new());
    let sim = run(
        MemSource::new(data.clone()).with_identity(IDENTITY),
        SenderConfig {
            late_digest: false,
            ..SenderConfig::default()
        },
        ReceiverConfig::default(),
        &sink,
        &journal,
        lossy(0.0),
        62,
    );
    assert_complete(&sim, &sink, &data);
    let s = sim.flows[0].sender.stats();
    assert!(s.timeline.source_hashed.is_some());
    assert_eq!(s.timeline.hellos_sent, 1);
}
