//! The receiver hashes the object as its held prefix grows, from the bytes it has just
//! written while they are in memory; only chunks that arrived ahead of a gap (or were held
//! from before a restart) are read back from the sink, once each, in offset order, so
//! completion never waits for a read of the whole object. An object that differs from the
//! one the sender hashed still fails verification.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dwcp_transfer::sim::{Link, LinkConfig, Sim, SimRng};
use dwcp_transfer::{
    MemJournal, MemSink, MemSource, Receiver, ReceiverConfig, ReceiverState, Sender, SenderConfig,
    SenderState, Sink,
};

fn object(len: usize, seed: u64) -> Vec<u8> {
    SimRng::new(seed).bytes(len)
}

#[derive(Debug, Default)]
struct Counts {
    written: u64,
    /// (offset, len, bytes written before the read)
    reads: Vec<(u64, usize, u64)>,
}

/// A memory sink that records its reads.
#[derive(Debug, Clone)]
struct CountingSink {
    inner: MemSink,
    counts: Arc<Mutex<Counts>>,
}

impl Sink for CountingSink {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.counts.lock().expect("lock").written += data.len() as u64;
        self.inner.write_at(offset, data)
    }
    fn flush_durable(&mut self) -> io::Result<()> {
        self.inner.flush_durable()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read_at(offset, buf)?;
        let mut c = self.counts.lock().expect("lock");
        let w = c.written;
        c.reads.push((offset, n, w));
        Ok(n)
    }
}

fn run(len: usize, flip: Option<u64>) -> (Sim, Arc<Mutex<Counts>>) {
    run_on(len, flip, 0.01)
}

/// A source whose byte `flip` reads differently after the first pass (the sender's hash).
#[derive(Debug)]
struct ChangingSource {
    inner: MemSource,
    flip: Option<u64>,
    passes: u32,
}

impl dwcp_transfer::Source for ChangingSource {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read_at(offset, buf)?;
        if offset == 0 {
            self.passes += 1;
        }
        if let Some(f) = self.flip
            && self.passes > 1
            && (offset..offset + n as u64).contains(&f)
        {
            buf[(f - offset) as usize] ^= 1;
        }
        Ok(n)
    }
}

fn run_on(len: usize, flip: Option<u64>, loss: f64) -> (Sim, Arc<Mutex<Counts>>) {
    let data = object(len, 11);
    let epoch = Instant::now();
    let counts = Arc::new(Mutex::new(Counts::default()));
    let sink = CountingSink {
        inner: MemSink::new(),
        counts: counts.clone(),
    };
    let cfg = SenderConfig {
        mtu: Some(1500),
        ..SenderConfig::default()
    };
    let source = ChangingSource {
        inner: MemSource::new(data),
        flip,
        passes: 0,
    };
    let sender = Sender::new(cfg, Box::new(source), epoch).expect("sender");
    let receiver = Receiver::new(
        ReceiverConfig::default(),
        Box::new(sink),
        Box::new(MemJournal::new()),
    );
    let link = LinkConfig {
        loss,
        // no loss asked for: a buffer that never overflows, so nothing is lost at all
        buffer_bytes: if loss == 0.0 { 1 << 30 } else { 500_000 },
        ..LinkConfig::clean(200e6, Duration::from_millis(20))
    };
    let mut sim = Sim::new(epoch, Link::new(link, 1), Link::new(link, 2));
    sim.add_flow(sender, receiver, epoch);
    sim.run(Duration::from_secs(20));
    (sim, counts)
}

fn complete(sim: &Sim) {
    let f = &sim.flows[0];
    assert_eq!(
        f.sender.state(),
        SenderState::Complete,
        "{:?}",
        f.sender.error()
    );
    assert_eq!(f.receiver.state(), ReceiverState::Complete);
}

#[test]
fn a_clean_path_hashes_every_byte_from_memory_and_reads_nothing_back() {
    let len = 10_000_000;
    let (sim, counts) = run_on(len, None, 0.0);
    complete(&sim);
    let st = sim.flows[0].receiver.stats();
    assert_eq!(st.bytes_hashed_in_memory, len as u64);
    assert_eq!(st.bytes_read_back, 0);
    assert!(counts.lock().expect("lock").reads.is_empty());
}

#[test]
fn with_loss_only_chunks_held_ahead_of_a_gap_are_read_back_once_in_order() {
    let len = 30_000_000;
    let (sim, counts) = run(len, None);
    complete(&sim);
    let st = sim.flows[0].receiver.stats();
    let c = counts.lock().expect("lock");
    // every byte hashed exactly once: from memory or read back
    assert_eq!(st.bytes_hashed_in_memory + st.bytes_read_back, len as u64);
    let read: u64 = c.reads.iter().map(|r| r.1 as u64).sum();
    assert_eq!(read, st.bytes_read_back);
    // reads ascend and never overlap
    let mut next = 0u64;
    for &(off, n, _) in &c.reads {
        assert!(off >= next, "reads out of order or overlapping");
        next = off + n as u64;
    }
    // what is left for completion: the last stretch of the held prefix, not the object
    let at_end: u64 = c
        .reads
        .iter()
        .filter(|r| r.2 == c.written)
        .map(|r| r.1 as u64)
        .sum();
    eprintln!(
        "{} B hashed in memory, {} B read back in {} reads, {at_end} B after the last write",
        st.bytes_hashed_in_memory,
        st.bytes_read_back,
        c.reads.len()
    );
    assert!(at_end <= 4 << 20, "{at_end} B read back at completion");
}

#[test]
fn a_source_that_changes_under_the_sender_fails_verification() {
    // the sender hashed the object first; one byte differs when the chunk is read to be sent
    let (sim, _) = run_on(5_000_000, Some(123_457), 0.01);
    let f = &sim.flows[0];
    assert_eq!(f.receiver.state(), ReceiverState::Failed);
    assert_ne!(f.sender.state(), SenderState::Complete);
}
